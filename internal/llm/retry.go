package llm

import (
	"context"
	"errors"
	"net"
	"strconv"
	"strings"
	"time"

	"charm.land/fantasy"

	"github.com/execlaw/execlaw/internal/egress"
)

// RetryPolicy says how a failed model call is retried.
type RetryPolicy struct {
	// Max is how many times a call is retried; 0 turns retrying off.
	Max int
	// Base is the first backoff when the provider does not say how long to
	// wait (default 1s); it doubles each time.
	Base time.Duration
	// OnRetry is told about each retry before its wait.
	OnRetry func(err error, wait time.Duration)
}

// maxRetryWait caps a provider's Retry-After: past it the failure is reported
// instead of holding the turn.
const maxRetryWait = 60 * time.Second

// WithRetry wraps a model so that a stream that fails before producing
// anything is tried again: rate limits, overloaded or failing servers, refused
// connections. A stream that fails part-way is not retried, since what it
// already said has reached the user; the failure is passed on.
//
// fantasy's agent can retry too, but it re-runs a step after its text has
// been streamed, waits at least 5 s, and reads Retry-After only some of the
// time; this wrapper does none of that.
func WithRetry(m fantasy.LanguageModel, p RetryPolicy) fantasy.LanguageModel {
	if p.Max <= 0 {
		return m
	}
	if p.Base <= 0 {
		p.Base = time.Second
	}
	return retryModel{LanguageModel: m, policy: p}
}

type retryModel struct {
	fantasy.LanguageModel
	policy RetryPolicy
}

func (r retryModel) Stream(ctx context.Context, call fantasy.Call) (fantasy.StreamResponse, error) {
	return func(yield func(fantasy.StreamPart) bool) {
		for attempt := 0; ; attempt++ {
			var failure error
			started := false
			stream, err := r.LanguageModel.Stream(ctx, call)
			if err != nil {
				failure = err
			} else {
				for part := range stream {
					if part.Type == fantasy.StreamPartTypeError && !started {
						failure = part.Error
						break
					}
					if part.Type != fantasy.StreamPartTypeWarnings {
						started = true
					}
					if !yield(part) {
						return
					}
				}
			}
			if failure == nil {
				return
			}
			wait, ok := r.retryWait(ctx, failure, attempt)
			if !ok {
				yield(fantasy.StreamPart{Type: fantasy.StreamPartTypeError, Error: failure})
				return
			}
			if r.policy.OnRetry != nil {
				r.policy.OnRetry(failure, wait)
			}
			select {
			case <-time.After(wait):
			case <-ctx.Done():
				yield(fantasy.StreamPart{Type: fantasy.StreamPartTypeError, Error: ctx.Err()})
				return
			}
		}
	}, nil
}

// retryWait decides whether to retry after attempt (0-based) failed with err,
// and how long to wait first.
func (r retryModel) retryWait(ctx context.Context, err error, attempt int) (time.Duration, bool) {
	if attempt >= r.policy.Max || ctx.Err() != nil || !retryable(err) {
		return 0, false
	}
	wait := r.policy.Base << attempt
	var pe *fantasy.ProviderError
	if errors.As(err, &pe) {
		if d, ok := retryAfter(pe.ResponseHeaders); ok {
			if d > maxRetryWait {
				return 0, false
			}
			wait = d
		}
	}
	return wait, true
}

func retryable(err error) bool {
	if errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
		return false
	}
	// The outbound policy refuses the same address every time, and an
	// endpoint that redirects will redirect again.
	var refused *egress.RefusedError
	var redirect *egress.RedirectError
	if errors.As(err, &refused) || errors.As(err, &redirect) {
		return false
	}
	var pe *fantasy.ProviderError
	if errors.As(err, &pe) {
		return pe.IsRetryable()
	}
	var ne net.Error
	var oe *net.OpError
	return errors.As(err, &oe) || (errors.As(err, &ne) && ne.Timeout())
}

// retryAfter reads Retry-After-Ms or Retry-After (seconds), whatever the
// header name's case.
func retryAfter(h map[string]string) (time.Duration, bool) {
	var ms, s string
	for k, v := range h {
		switch strings.ToLower(k) {
		case "retry-after-ms":
			ms = v
		case "retry-after":
			s = v
		}
	}
	if f, err := strconv.ParseFloat(ms, 64); err == nil && f >= 0 {
		return time.Duration(f * float64(time.Millisecond)), true
	}
	if f, err := strconv.ParseFloat(s, 64); err == nil && f >= 0 {
		return time.Duration(f * float64(time.Second)), true
	}
	return 0, false
}

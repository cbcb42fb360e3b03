package llm

import (
	"context"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"sync"
	"testing"
	"time"

	"charm.land/fantasy"

	"github.com/execlaw/execlaw/internal/llm/llmtest"
)

// retries records OnRetry calls.
type retries struct {
	mu    sync.Mutex
	waits []time.Duration
	errs  []error
}

func (r *retries) record(err error, wait time.Duration) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.waits = append(r.waits, wait)
	r.errs = append(r.errs, err)
}

func (r *retries) count() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.waits)
}

func (r *retries) wait(i int) time.Duration {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.waits[i]
}

type fakeCase struct {
	provider, model string
	fake            func(...llmtest.Turn) *llmtest.Server
}

var fakeProviders = []fakeCase{
	{Anthropic, "claude-sonnet-4-20250514", llmtest.NewAnthropic},
	{OpenAI, "gpt-4o", llmtest.NewOpenAI},
}

// retrying builds a model from NewModel against fake, wrapped in WithRetry.
func retrying(t *testing.T, c fakeCase, fake *llmtest.Server, p RetryPolicy) fantasy.LanguageModel {
	t.Helper()
	return WithRetry(newModel(t, Config{Provider: c.provider, Model: c.model, APIKey: NewSecret("sk-test-key-000"), BaseURL: fake.BaseURL()}), p)
}

func TestRetryRecoversFromFailuresBeforeAnyPart(t *testing.T) {
	failures := map[string]llmtest.ErrorReply{
		"429 rate limited": {Status: http.StatusTooManyRequests, Message: "slow down"},
		"500 server error": {Status: http.StatusInternalServerError, Message: "internal"},
		"503 unavailable":  {Status: http.StatusServiceUnavailable, Message: "try later"},
		"529 overloaded":   {Status: 529, Type: "overloaded_error", Message: "Overloaded"},
	}
	for _, c := range fakeProviders {
		for name, reply := range failures {
			t.Run(c.provider+"/"+name, func(t *testing.T) {
				fake := c.fake(llmtest.Turn{Error: &reply}, llmtest.Turn{Text: "Recovered."}).Attach(t)
				var rec retries
				m := retrying(t, c, fake, RetryPolicy{Max: 3, Base: time.Millisecond, OnRetry: rec.record})

				r := streamTurn(t, t.Context(), m, "hi")
				if r.err != nil || r.text != "Recovered." {
					t.Fatalf("text %q, err %v; want the second attempt's answer", r.text, r.err)
				}
				if n := len(fake.Requests()); n != 2 {
					t.Errorf("%d requests, want 2", n)
				}
				if rec.count() != 1 || rec.wait(0) != time.Millisecond {
					t.Errorf("OnRetry calls %v, want one with the base wait of 1ms", rec.waits)
				}
				var pe *fantasy.ProviderError
				if rec.count() == 1 && (!errors.As(rec.errs[0], &pe) || pe.StatusCode != reply.Status) {
					t.Errorf("OnRetry got %v, want the provider's %d", rec.errs[0], reply.Status)
				}
				// Nothing of the failed attempt reaches the caller.
				for _, p := range r.parts {
					if p.Type == fantasy.StreamPartTypeError {
						t.Errorf("an error part was passed on: %v", p.Error)
					}
				}
			})
		}
	}
}

func TestRetryHonoursRetryAfterHeaders(t *testing.T) {
	cases := []struct {
		name   string
		c      fakeCase
		header http.Header
		want   time.Duration
	}{
		{"openai retry-after-ms", fakeProviders[1], http.Header{"Retry-After-Ms": {"25"}}, 25 * time.Millisecond},
		{"anthropic retry-after-ms", fakeProviders[0], http.Header{"retry-after-ms": {"40"}}, 40 * time.Millisecond},
		{"ms wins over seconds", fakeProviders[1], http.Header{"Retry-After-Ms": {"15"}, "Retry-After": {"30"}}, 15 * time.Millisecond},
		{"retry-after seconds", fakeProviders[0], http.Header{"Retry-After": {"1"}}, time.Second},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			fake := tc.c.fake(
				llmtest.Turn{Error: &llmtest.ErrorReply{Status: http.StatusTooManyRequests, Header: tc.header}},
				llmtest.Turn{Text: "ok"},
			).Attach(t)
			var rec retries
			m := retrying(t, tc.c, fake, RetryPolicy{Max: 2, Base: 5 * time.Second, OnRetry: rec.record})
			start := time.Now()
			r := streamTurn(t, t.Context(), m, "hi")
			if r.err != nil || r.text != "ok" {
				t.Fatalf("text %q, err %v", r.text, r.err)
			}
			if rec.count() != 1 || rec.wait(0) != tc.want {
				t.Errorf("waits %v, want [%v] as the header says (not the 5s base)", rec.waits, tc.want)
			}
			if elapsed := time.Since(start); elapsed < tc.want {
				t.Errorf("retried after %v, before the %v the provider asked for", elapsed, tc.want)
			}
		})
	}
}

func TestRetryGivesUpWhenRetryAfterIsTooLong(t *testing.T) {
	c := fakeProviders[1]
	fake := c.fake(
		llmtest.Turn{Error: &llmtest.ErrorReply{Status: http.StatusTooManyRequests, Header: http.Header{"Retry-After": {"3600"}}}},
		llmtest.Turn{Text: "never asked for"},
	)
	defer fake.Close()
	var rec retries
	m := retrying(t, c, fake, RetryPolicy{Max: 3, Base: time.Millisecond, OnRetry: rec.record})
	r := streamTurn(t, t.Context(), m, "hi")
	if r.err == nil || rec.count() != 0 || fake.Pending() != 1 {
		t.Errorf("err %v, %d retries, %d turns left; want the 429 reported at once", r.err, rec.count(), fake.Pending())
	}
}

// stubModel streams whatever its function returns, for failures the fakes
// cannot produce (odd header spellings).
type stubModel struct {
	fantasy.LanguageModel
	calls  int
	stream func(call int) fantasy.StreamResponse
}

func (s *stubModel) Stream(ctx context.Context, _ fantasy.Call) (fantasy.StreamResponse, error) {
	s.calls++
	return s.stream(s.calls), nil
}

func failWith(err error) fantasy.StreamResponse {
	return func(yield func(fantasy.StreamPart) bool) {
		yield(fantasy.StreamPart{Type: fantasy.StreamPartTypeError, Error: err})
	}
}

func answer(text string) fantasy.StreamResponse {
	return func(yield func(fantasy.StreamPart) bool) {
		_ = yield(fantasy.StreamPart{Type: fantasy.StreamPartTypeTextDelta, ID: "0", Delta: text}) &&
			yield(fantasy.StreamPart{Type: fantasy.StreamPartTypeFinish, FinishReason: fantasy.FinishReasonStop})
	}
}

func TestRetryAfterHeaderCaseDoesNotMatter(t *testing.T) {
	cases := []struct {
		headers map[string]string
		want    time.Duration
	}{
		{map[string]string{"RETRY-AFTER-MS": "12"}, 12 * time.Millisecond},
		{map[string]string{"retry-after-ms": "7.5"}, 7500 * time.Microsecond},
		{map[string]string{"rEtRy-AfTeR": "0.02"}, 20 * time.Millisecond},
		{map[string]string{"Retry-After": "soon"}, time.Millisecond}, // unreadable: the backoff
	}
	for _, c := range cases {
		var rec retries
		stub := &stubModel{stream: func(call int) fantasy.StreamResponse {
			if call == 1 {
				return failWith(&fantasy.ProviderError{StatusCode: 429, Message: "rate limited", ResponseHeaders: c.headers})
			}
			return answer("ok")
		}}
		r := streamTurn(t, t.Context(), WithRetry(stub, RetryPolicy{Max: 1, Base: time.Millisecond, OnRetry: rec.record}), "hi")
		if r.err != nil || r.text != "ok" || rec.count() != 1 || rec.wait(0) != c.want {
			t.Errorf("headers %v: text %q, err %v, waits %v; want one wait of %v", c.headers, r.text, r.err, rec.waits, c.want)
		}
	}
}

func TestRetryGivesUpAfterMax(t *testing.T) {
	for _, c := range fakeProviders {
		t.Run(c.provider, func(t *testing.T) {
			fail := llmtest.Turn{Error: &llmtest.ErrorReply{Status: http.StatusInternalServerError, Message: "still broken"}}
			fake := c.fake(fail, fail, fail, llmtest.Turn{Text: "too late"})
			defer fake.Close()
			var rec retries
			m := retrying(t, c, fake, RetryPolicy{Max: 2, Base: time.Millisecond, OnRetry: rec.record})

			r := streamTurn(t, t.Context(), m, "hi")
			var pe *fantasy.ProviderError
			if !errors.As(r.err, &pe) || pe.StatusCode != http.StatusInternalServerError {
				t.Errorf("final error %v, want the provider's 500", r.err)
			}
			if n := len(fake.Requests()); n != 3 {
				t.Errorf("%d requests, want 3 (the first and two retries)", n)
			}
			if fake.Pending() != 1 {
				t.Errorf("%d turns left, want the success turn untouched", fake.Pending())
			}
			if rec.count() != 2 || rec.wait(0) != time.Millisecond || rec.wait(1) != 2*time.Millisecond {
				t.Errorf("waits %v, want [1ms 2ms] (doubling)", rec.waits)
			}
			if last := r.parts[len(r.parts)-1]; last.Type != fantasy.StreamPartTypeError {
				t.Errorf("last part %v, want the error", last.Type)
			}
		})
	}
}

func TestRetryNeverAfterPartsWereYielded(t *testing.T) {
	for _, c := range fakeProviders {
		for name, turn := range map[string]llmtest.Turn{
			"hangup":                        {Text: "This answer is cut off half way through.", Hangup: true},
			"in-band overloaded":            {Text: "This answer fails half way through.", StreamError: "Overloaded"},
			"overloaded after small chunks": {Text: "Started fine, then the provider failed.", StreamError: "Overloaded", ChunkSize: 5},
		} {
			t.Run(c.provider+"/"+name, func(t *testing.T) {
				fake := c.fake(turn, llmtest.Turn{Text: "A second attempt would repeat the start."})
				defer fake.Close()
				var rec retries
				m := retrying(t, c, fake, RetryPolicy{Max: 3, Base: time.Millisecond, OnRetry: rec.record})

				r := streamTurn(t, t.Context(), m, "hi")
				if !r.started() || r.text == "" {
					t.Fatalf("no text was streamed before the failure (parts %v); the test needs a mid-stream failure", r.parts)
				}
				if r.err == nil {
					t.Error("the mid-stream failure was not passed on")
				}
				if rec.count() != 0 || len(fake.Requests()) != 1 || fake.Pending() != 1 {
					t.Errorf("%d retries, %d requests, %d turns left; a stream that already yielded text must not be retried",
						rec.count(), len(fake.Requests()), fake.Pending())
				}
			})
		}
	}
}

func TestRetryStopsWaitingWhenCancelled(t *testing.T) {
	c := fakeProviders[1]
	fake := c.fake(
		llmtest.Turn{Error: &llmtest.ErrorReply{Status: http.StatusTooManyRequests, Header: http.Header{"Retry-After": {"59"}}}},
		llmtest.Turn{Text: "never asked for"},
	)
	defer fake.Close()

	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	waiting := make(chan time.Duration, 1)
	go func() {
		<-waiting // the wrapper is about to wait
		cancel()
	}()
	m := retrying(t, c, fake, RetryPolicy{Max: 3, Base: time.Millisecond, OnRetry: func(_ error, d time.Duration) { waiting <- d }})

	start := time.Now()
	r := streamTurn(t, ctx, m, "hi")
	if !errors.Is(r.err, context.Canceled) {
		t.Errorf("err = %v, want context.Canceled", r.err)
	}
	if fake.Pending() != 1 {
		t.Error("the retry was sent although the caller had gone")
	}
	if elapsed := time.Since(start); elapsed > 30*time.Second {
		t.Errorf("took %v: the 59s wait was not cut short", elapsed)
	}
}

func TestRetryDoesNotRetryPermanentErrors(t *testing.T) {
	for _, c := range fakeProviders {
		t.Run(c.provider+"/401", func(t *testing.T) {
			fake := c.fake(llmtest.Turn{Text: "never"})
			defer fake.Close()
			fake.RequireKey("the-right-key")
			var rec retries
			m := retrying(t, c, fake, RetryPolicy{Max: 3, Base: time.Millisecond, OnRetry: rec.record})
			r := streamTurn(t, t.Context(), m, "hi")
			var pe *fantasy.ProviderError
			if !errors.As(r.err, &pe) || pe.StatusCode != http.StatusUnauthorized {
				t.Errorf("err %v, want the 401", r.err)
			}
			if rec.count() != 0 || len(fake.Requests()) != 1 {
				t.Errorf("%d retries, %d requests; a 401 is not retried", rec.count(), len(fake.Requests()))
			}
		})
		t.Run(c.provider+"/400", func(t *testing.T) {
			fake := c.fake(llmtest.Turn{Error: &llmtest.ErrorReply{Status: http.StatusBadRequest, Message: "bad request"}})
			defer fake.Close()
			var rec retries
			m := retrying(t, c, fake, RetryPolicy{Max: 3, Base: time.Millisecond, OnRetry: rec.record})
			if r := streamTurn(t, t.Context(), m, "hi"); r.err == nil || rec.count() != 0 {
				t.Errorf("err %v, %d retries; a 400 is not retried", r.err, rec.count())
			}
		})
	}
}

func TestRetryDoesNotRetryCancellation(t *testing.T) {
	t.Run("cancelled before the call", func(t *testing.T) {
		c := fakeProviders[0]
		fake := c.fake(llmtest.Turn{Text: "never"})
		defer fake.Close()
		var rec retries
		m := retrying(t, c, fake, RetryPolicy{Max: 3, Base: time.Millisecond, OnRetry: rec.record})
		ctx, cancel := context.WithCancel(t.Context())
		cancel()
		r := streamTurn(t, ctx, m, "hi")
		if !errors.Is(r.err, context.Canceled) || rec.count() != 0 {
			t.Errorf("err %v, %d retries; want context.Canceled and no retry", r.err, rec.count())
		}
	})

	t.Run("cancelled while waiting for the answer", func(t *testing.T) {
		arrived := make(chan struct{}, 4)
		release := make(chan struct{})
		srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			// The server notices a client going away only once the body is read.
			_, _ = io.Copy(io.Discard, r.Body)
			arrived <- struct{}{}
			select { // never answers
			case <-r.Context().Done():
			case <-release:
			}
		}))
		defer srv.Close()
		defer close(release)
		ctx, cancel := context.WithCancel(t.Context())
		defer cancel()
		go func() {
			<-arrived
			cancel()
		}()
		var rec retries
		m := WithRetry(newModel(t, Config{Provider: OpenAICompatible, Model: "m", BaseURL: srv.URL + "/v1", APIKey: NewSecret("k")}),
			RetryPolicy{Max: 3, Base: time.Millisecond, OnRetry: rec.record})
		r := streamTurn(t, ctx, m, "hi")
		if !errors.Is(r.err, context.Canceled) || rec.count() != 0 {
			t.Errorf("err %v, %d retries; want context.Canceled and no retry", r.err, rec.count())
		}
		if len(arrived) != 0 {
			t.Errorf("%d more requests after the cancellation", len(arrived))
		}
	})
}

func TestRetryRetriesRefusedConnections(t *testing.T) {
	var rec retries
	m := WithRetry(newModel(t, Config{Provider: OpenAI, Model: "gpt-4o", BaseURL: closedURL(t) + "/v1", APIKey: NewSecret("k")}),
		RetryPolicy{Max: 2, Base: time.Millisecond, OnRetry: rec.record})
	r := streamTurn(t, t.Context(), m, "hi")
	if r.err == nil || rec.count() != 2 {
		t.Errorf("err %v, %d retries; a refused connection is retried up to Max", r.err, rec.count())
	}
}

func TestRetryCallerStopsEarly(t *testing.T) {
	c := fakeProviders[1]
	fake := c.fake(llmtest.Turn{Text: "a long answer the caller stops reading"}, llmtest.Turn{Text: "never"})
	defer fake.Close()
	var rec retries
	m := retrying(t, c, fake, RetryPolicy{Max: 3, Base: time.Millisecond, OnRetry: rec.record})
	stream, err := m.Stream(t.Context(), fantasy.Call{Prompt: fantasy.Prompt{fantasy.NewUserMessage("hi")}})
	if err != nil {
		t.Fatal(err)
	}
	for p := range stream {
		if p.Type == fantasy.StreamPartTypeTextDelta {
			break
		}
	}
	if rec.count() != 0 || fake.Pending() != 1 {
		t.Errorf("%d retries, %d turns left after the caller stopped reading", rec.count(), fake.Pending())
	}
}

func TestWithRetryOffReturnsTheModel(t *testing.T) {
	stub := &stubModel{}
	if m := WithRetry(stub, RetryPolicy{Max: 0}); m != fantasy.LanguageModel(stub) {
		t.Error("WithRetry with Max 0 wrapped the model anyway")
	}
}

func TestRetryDefaultBase(t *testing.T) {
	var rec retries
	ctx, cancel := context.WithCancel(t.Context())
	stub := &stubModel{stream: func(int) fantasy.StreamResponse {
		return failWith(&fantasy.ProviderError{StatusCode: 503, Message: "unavailable"})
	}}
	m := WithRetry(stub, RetryPolicy{Max: 1, OnRetry: func(err error, d time.Duration) {
		rec.record(err, d)
		cancel() // do not actually wait the default second
	}})
	streamTurn(t, ctx, m, "hi")
	if rec.count() != 1 || rec.wait(0) != time.Second {
		t.Errorf("waits %v, want the default base of 1s", rec.waits)
	}
}

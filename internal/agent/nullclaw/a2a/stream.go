package a2a

import (
	"context"
	"errors"
	"fmt"
	"io"
	"mime"
	"net/http"
	"unicode/utf8"
)

// Stream sends text as a user message with message/stream and calls on with
// every event of the task, in order, until a final event arrives. contextID
// ties turns into one conversation (nullclaw keeps history per contextId);
// when empty nullclaw starts a new one. Stream returns nil after a final
// event, the error on returned, an *RPCError the stream carried, an
// *HTTPError, or an error wrapping ErrProtocol, ErrTooLarge, ErrIdle or
// ErrStreamEnded.
func (c *Client) Stream(ctx context.Context, contextID, text string, on func(Event) error) error {
	if c.baseErr != nil {
		return c.baseErr
	}
	if on == nil {
		return fmt.Errorf("%w: no event callback", ErrRequest)
	}
	if contextID != "" && !ValidContextID(contextID) {
		return fmt.Errorf("%w: context id %q", ErrRequest, contextID)
	}
	if text == "" || !utf8.ValidString(text) {
		return fmt.Errorf("%w: message text is empty or not UTF-8", ErrRequest)
	}
	lim := c.limits()
	id := c.nextID()
	body, err := encodeRequest(rpcRequest{
		JSONRPC: "2.0",
		ID:      id,
		Method:  "message/stream",
		Params: sendParams{Message: Message{
			Kind:      "message",
			MessageID: "msg-" + randHex(12),
			Role:      "user",
			Parts:     []Part{{Kind: "text", Text: text}},
			ContextID: contextID,
		}},
	}, lim.MaxRequestBytes)
	if err != nil {
		return err
	}

	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var idle *idleWatch
	if c.IdleTimeout > 0 {
		idle = newIdleWatch(c.IdleTimeout, cancel)
		defer idle.stop()
	}
	resp, err := c.post(ctx, body, "text/event-stream")
	if err != nil {
		if idle != nil && idle.fired() {
			return ErrIdle
		}
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return c.httpError(resp)
	}

	st := &streamState{lim: lim, id: id, contextID: contextID, on: on}
	ct, _, _ := mime.ParseMediaType(resp.Header.Get("Content-Type"))
	switch ct {
	case "text/event-stream":
	case "application/json":
		// Some A2A servers answer a streaming call with one plain response.
		b, err := readBounded(resp.Body, lim.MaxResponseBytes)
		if err != nil {
			return err
		}
		if err := st.handleData(b); err != nil {
			return err
		}
		if !st.done {
			return ErrStreamEnded
		}
		return nil
	default:
		return protoErr("content type %q is not text/event-stream", resp.Header.Get("Content-Type"))
	}

	sr := newSSEReader(resp.Body, lim)
	for {
		data, err := sr.next(idle)
		if err != nil {
			if idle != nil && idle.fired() {
				return ErrIdle
			}
			if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
				return ErrStreamEnded
			}
			if ctx.Err() != nil && !errors.Is(err, ErrTooLarge) && !errors.Is(err, ErrProtocol) {
				return fmt.Errorf("nullclaw: %w", context.Cause(ctx))
			}
			return err
		}
		if err := st.handleData(data); err != nil {
			return err
		}
		if st.done {
			return nil
		}
	}
}

// streamState checks the events of one stream against each other.
type streamState struct {
	lim       Limits
	id        string // our JSON-RPC id
	contextID string // requested context, "" for any
	on        func(Event) error

	taskID     string
	taskCtx    string
	seenTask   bool
	events     int
	done       bool
	lastStatus TaskState
}

func (st *streamState) handleData(data []byte) error {
	st.events++
	if st.events > st.lim.MaxEvents {
		return fmt.Errorf("%w: more than %d events", ErrTooLarge, st.lim.MaxEvents)
	}
	ev, err := decodeResponse(data, st.id, st.lim)
	if err != nil {
		return err
	}
	if err := st.check(ev); err != nil {
		return err
	}
	if ev.Final() {
		st.done = true
	}
	return st.on(ev)
}

func (st *streamState) check(ev Event) error {
	if !st.seenTask {
		switch ev.Kind {
		case KindTask:
			if st.contextID != "" && ev.Task.ContextID != st.contextID {
				return protoErr("task context %q, asked for %q", ev.Task.ContextID, st.contextID)
			}
			st.seenTask, st.taskID, st.taskCtx = true, ev.Task.ID, ev.Task.ContextID
			return nil
		case KindMessage:
			// A Message result is the whole answer (A2A: the stream then ends).
			if st.contextID != "" && ev.Message.ContextID != "" && ev.Message.ContextID != st.contextID {
				return protoErr("message context %q, asked for %q", ev.Message.ContextID, st.contextID)
			}
			return nil
		default:
			return protoErr("stream starts with %s, not a task", ev.Kind)
		}
	}
	var taskID, ctxID string
	switch ev.Kind {
	case KindTask:
		taskID, ctxID = ev.Task.ID, ev.Task.ContextID
	case KindStatusUpdate:
		taskID, ctxID = ev.StatusUpdate.TaskID, ev.StatusUpdate.ContextID
	case KindArtifactUpdate:
		taskID, ctxID = ev.ArtifactUpdate.TaskID, ev.ArtifactUpdate.ContextID
	case KindMessage:
		taskID, ctxID = ev.Message.TaskID, ev.Message.ContextID
		if taskID == "" {
			taskID = st.taskID
		}
		if ctxID == "" {
			ctxID = st.taskCtx
		}
	}
	if taskID != st.taskID || ctxID != st.taskCtx {
		return protoErr("event for task %q/%q in the stream of %q/%q", taskID, ctxID, st.taskID, st.taskCtx)
	}
	return nil
}

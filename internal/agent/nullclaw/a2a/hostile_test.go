package a2a

import (
	"context"
	"errors"
	"strings"
	"testing"

	"github.com/execlaw/execlaw/internal/agent/nullclaw/nullclawtest"
)

// What a broken or hostile gateway answers, one answer at a time. The same
// answers through a whole turn, mapper included, are tested in package
// nullclaw (hostile_test.go).

// A broken or hostile gateway's answers (nullclawtest.RawServer), by the
// short names the cases below use.
var (
	rawServer = nullclawtest.RawServer
	data      = nullclawtest.Data
	result    = nullclawtest.Result
	taskEv    = nullclawtest.TaskEvent

	okTask, okChunk, okFinal = nullclawtest.OKTask, nullclawtest.OKChunk, nullclawtest.OKFinal
	chunkWithParts           = nullclawtest.ChunkWithParts
)

const sseHead = nullclawtest.SSEHead

func TestCancelAnswerValidation(t *testing.T) {
	for _, tc := range []struct {
		name, reply string
		check       func(error) bool
	}{
		{"canceled", "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n\r\n" + `{"jsonrpc":"2.0","id":{{ID}},"result":{"id":"task-1","kind":"task","contextId":"c","status":{"state":"canceled"}}}`, isNil},
		{"other task", "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n\r\n" + `{"jsonrpc":"2.0","id":{{ID}},"result":{"id":"task-2","kind":"task","contextId":"c","status":{"state":"canceled"}}}`, isProto},
		{"still working", "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n\r\n" + `{"jsonrpc":"2.0","id":{{ID}},"result":{"id":"task-1","kind":"task","contextId":"c","status":{"state":"working"}}}`, isProto},
		{"not a task", "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n\r\n" + `{"jsonrpc":"2.0","id":{{ID}},"result":{"kind":"status-update","taskId":"task-1","contextId":"c","status":{"state":"canceled"},"final":true}}`, isProto},
		{"terminal", "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n\r\n" + `{"jsonrpc":"2.0","id":{{ID}},"error":{"code":-32002,"message":"Task already in terminal state"}}`, IsNotCancelable},
		{"huge", "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n\r\n" + strings.Repeat(" ", 5<<20), isTooLarge},
		// nullclaw drops answers larger than its 2 KiB buffer and just closes.
		{"closed without answer", "", func(err error) bool { return err != nil && !errors.Is(err, ErrProtocol) }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			srv := rawServer(t, tc.reply)
			err := NewClient(srv.URL, nil, "t").Cancel(context.Background(), "task-1")
			if !tc.check(err) {
				t.Errorf("err = %v", err)
			}
		})
	}
}

// FuzzDecodeResponse: any data line is either an error or a complete,
// valid event; never a panic.
func FuzzDecodeResponse(f *testing.F) {
	for _, s := range []string{okTask, okChunk, okFinal, chunkWithParts(`{"kind":"data","data":{}}`),
		result(`{"kind":"message","messageId":"m","role":"agent","parts":[]}`),
		data(`{"jsonrpc":"2.0","id":{{ID}},"error":{"code":1,"message":"x","data":{}}}`)} {
		s = strings.TrimSuffix(strings.TrimPrefix(s, "data: "), "\n\n")
		f.Add([]byte(strings.ReplaceAll(s, "{{ID}}", `"id-1"`)))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		ev, err := decodeResponse(b, "id-1", DefaultLimits)
		if err != nil {
			return
		}
		var ok bool
		switch ev.Kind {
		case KindTask:
			ok = ev.Task != nil && ev.Task.Status.State.valid()
		case KindStatusUpdate:
			ok = ev.StatusUpdate != nil && ev.StatusUpdate.Status.State.valid()
		case KindArtifactUpdate:
			ok = ev.ArtifactUpdate != nil && ev.ArtifactUpdate.Artifact.ArtifactID != ""
		case KindMessage:
			ok = ev.Message != nil
		}
		if !ok {
			t.Fatalf("accepted an incomplete event %+v from %q", ev, b)
		}
		_ = ev.TaskID()
		_ = ev.Final()
	})
}

func isNil(err error) bool      { return err == nil }
func isProto(err error) bool    { return errors.Is(err, ErrProtocol) }
func isTooLarge(err error) bool { return errors.Is(err, ErrTooLarge) }

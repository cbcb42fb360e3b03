package nullclaw

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/execlaw/execlaw/internal/agent/agenttest"
	"github.com/execlaw/execlaw/internal/agent/nullclaw/a2a"
	"github.com/execlaw/execlaw/internal/agent/nullclaw/nullclawtest"
	"github.com/execlaw/execlaw/internal/event"
)

// These tests give the whole turn, client and mapper, what a broken or
// hostile gateway may send; the client's own checks of single answers are
// in package a2a.

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

func TestHostileServerOutput(t *testing.T) {
	tooManyParts := strings.TrimSuffix(strings.Repeat(`{"kind":"text","text":"x"},`, 65), ",")
	nested := strings.Repeat("[", 20000) + strings.Repeat("]", 20000)
	small := a2a.Limits{MaxLineBytes: 1024, MaxEventBytes: 2048, MaxEvents: 3, MaxStreamBytes: 4096}

	cases := []struct {
		name   string
		reply  string
		limits a2a.Limits
		check  func(error) bool
		events int // events delivered before the error
	}{
		{"not JSON", sseHead + data("{not json}"), a2a.Limits{}, isProto, 0},
		{"not an object", sseHead + data(`["jsonrpc"]`), a2a.Limits{}, isProto, 0},
		{"binary garbage", sseHead + "data: \x00\xff\xfe\x01\n\n", a2a.Limits{}, isProto, 0},
		{"jsonrpc 1.0", sseHead + data(`{"jsonrpc":"1.0","id":{{ID}},"result":{"kind":"task"}}`), a2a.Limits{}, isProto, 0},
		{"no jsonrpc", sseHead + data(`{"id":{{ID}},"result":{}}`), a2a.Limits{}, isProto, 0},
		{"wrong id", sseHead + data(`{"jsonrpc":"2.0","id":"someone-else","result":{"kind":"task"}}`), a2a.Limits{}, isProto, 0},
		{"numeric id", sseHead + data(`{"jsonrpc":"2.0","id":7,"result":{"kind":"task"}}`), a2a.Limits{}, isProto, 0},
		{"result and error", sseHead + data(`{"jsonrpc":"2.0","id":{{ID}},"result":{},"error":{"code":1,"message":"x"}}`), a2a.Limits{}, isProto, 0},
		{"neither", sseHead + data(`{"jsonrpc":"2.0","id":{{ID}}}`), a2a.Limits{}, isProto, 0},
		{"null result", sseHead + data(`{"jsonrpc":"2.0","id":{{ID}},"result":null}`), a2a.Limits{}, isProto, 0},
		{"result not object", sseHead + data(`{"jsonrpc":"2.0","id":{{ID}},"result":"task"}`), a2a.Limits{}, isProto, 0},
		{"no kind", sseHead + result(`{"id":"t","contextId":"c1","status":{"state":"working"}}`), a2a.Limits{}, isProto, 0},
		{"unknown kind", sseHead + result(`{"kind":"surprise"}`), a2a.Limits{}, isProto, 0},
		{"starts with status", sseHead + okFinal, a2a.Limits{}, isProto, 0},
		{"task without id", sseHead + taskEv("", "c1", "submitted"), a2a.Limits{}, isProto, 0},
		{"task id with newline", sseHead + taskEv("task\n1", "c1", "submitted"), a2a.Limits{}, isProto, 0},
		{"task id too long", sseHead + taskEv(strings.Repeat("t", 300), "c1", "submitted"), a2a.Limits{}, isProto, 0},
		{"other context", sseHead + taskEv("task-1", "c2", "submitted"), a2a.Limits{}, isProto, 0},
		{"unknown state", sseHead + taskEv("task-1", "c1", "pondering"), a2a.Limits{}, isProto, 0},
		{"event of another task", sseHead + okTask + result(`{"kind":"artifact-update","taskId":"task-2","contextId":"c1","artifact":{"artifactId":"a","parts":[]},"append":true}`), a2a.Limits{}, isProto, 1},
		{"event of another context", sseHead + okTask + result(`{"kind":"status-update","taskId":"task-1","contextId":"c9","status":{"state":"working"},"final":false}`), a2a.Limits{}, isProto, 1},
		{"unknown part kind", sseHead + okTask + chunkWithParts(`{"kind":"video","text":"x"}`), a2a.Limits{}, isProto, 1},
		{"text not a string", sseHead + okTask + chunkWithParts(`{"kind":"text","text":42}`), a2a.Limits{}, isProto, 1},
		{"data part not object", sseHead + okTask + chunkWithParts(`{"kind":"data","data":[1]}`), a2a.Limits{}, isProto, 1},
		{"file part missing", sseHead + okTask + chunkWithParts(`{"kind":"file"}`), a2a.Limits{}, isProto, 1},
		{"too many parts", sseHead + okTask + chunkWithParts(tooManyParts), a2a.Limits{}, isProto, 1},
		{"artifact without id", sseHead + okTask + result(`{"kind":"artifact-update","taskId":"task-1","contextId":"c1","artifact":{"parts":[]},"append":true}`), a2a.Limits{}, isProto, 1},
		{"system role", sseHead + okTask + result(`{"kind":"status-update","taskId":"task-1","contextId":"c1","status":{"state":"working","message":{"role":"system","parts":[]}},"final":false}`), a2a.Limits{}, isProto, 1},
		{"deep nesting", sseHead + okTask + result(`{"kind":"status-update","taskId":"task-1","contextId":"c1","status":{"state":"working"},"final":false,"metadata":`+nested+`}`), a2a.Limits{}, isProto, 1},
		{"line too long", sseHead + okTask + data(`{"jsonrpc":"2.0","id":{{ID}},"result":{"kind":"task","pad":"`+strings.Repeat("x", 2000)+`"}}`), small, isTooLarge, 1},
		{"event too large", sseHead + okTask + strings.Repeat("data: "+strings.Repeat("y", 500)+"\n", 6) + "\n", small, isTooLarge, 1},
		{"stream too long", sseHead + strings.Repeat(": keep-alive "+strings.Repeat("z", 900)+"\n", 6), small, isTooLarge, 0},
		{"too many events", sseHead + okTask + okChunk + okChunk + okChunk + okFinal, small, isTooLarge, 3},
		{"ends without final", sseHead + okTask + okChunk, a2a.Limits{}, isEnded, 2},
		{"ends mid-line", sseHead + okTask + `data: {"jsonrpc":"2.0"`, a2a.Limits{}, isEnded, 1},
		{"ends mid-event", sseHead + okTask + "data: {}\n", a2a.Limits{}, isEnded, 1},
		{"empty stream", sseHead, a2a.Limits{}, isEnded, 0},
		{"wrong content type", "HTTP/1.1 200 OK\r\nContent-Type: text/html\r\n\r\n<html>", a2a.Limits{}, isProto, 0},
		{"no content type", "HTTP/1.1 200 OK\r\n\r\n" + okTask, a2a.Limits{}, isProto, 0},
		{"error without code", sseHead + data(`{"jsonrpc":"2.0","id":{{ID}},"error":{"message":"x"}}`), a2a.Limits{}, isProto, 0},
		{"error code not int", sseHead + data(`{"jsonrpc":"2.0","id":{{ID}},"error":{"code":"boom","message":"x"}}`), a2a.Limits{}, isProto, 0},
		{"error with null id", sseHead + data(`{"jsonrpc":"2.0","id":null,"error":{"code":-32600,"message":"Missing method"}}`), a2a.Limits{}, isRPC(-32600, "Missing method"), 0},
		{"error after output", sseHead + okTask + okChunk + data(`{"jsonrpc":"2.0","id":{{ID}},"error":{"code":-32603,"message":"Agent processing failed"}}`), a2a.Limits{}, isRPC(-32603, "Agent processing failed"), 2},
		{"hostile error message", sseHead + data(`{"jsonrpc":"2.0","id":{{ID}},"error":{"code":1,"message":"a\u0000b\u001b[31mc`+strings.Repeat("m", 5000)+`"}}`), a2a.Limits{}, func(err error) bool {
			var re *a2a.RPCError
			return errors.As(err, &re) && len(re.Message) <= 2048+3 && !strings.ContainsAny(re.Message, "\x00\x1b")
		}, 0},
		{"HTTP 500 huge body", "HTTP/1.1 500 Internal Server Error\r\nContent-Type: application/json\r\n\r\n{\"error\":\"" + strings.Repeat("e", 1<<20) + "\"}", a2a.Limits{}, func(err error) bool {
			var he *a2a.HTTPError
			return errors.As(err, &he) && he.StatusCode == 500 && len(he.Message) <= 2048+3
		}, 0},
		{"HTTP 429", "HTTP/1.1 429 Too Many Requests\r\nContent-Type: application/json\r\nContent-Length: 24\r\n\r\n{\"error\":\"rate limited\"}", a2a.Limits{}, func(err error) bool {
			var he *a2a.HTTPError
			return errors.As(err, &he) && he.StatusCode == 429 && he.Message == "rate limited"
		}, 0},
		{"not HTTP", "SSH-2.0-OpenSSH\r\n", a2a.Limits{}, func(err error) bool { return err != nil }, 0},
		// Accepted variants.
		{"CRLF, comments, other fields", "HTTP/1.1 200 OK\r\nContent-Type: text/event-stream; charset=utf-8\r\n\r\n" +
			": hello\r\nevent: message\r\nid: 1\r\nretry: 10\r\n" + strings.ReplaceAll(okTask+okChunk+okFinal, "\n", "\r\n"), a2a.Limits{}, isNil, 3},
		{"data over several lines", sseHead + okTask +
			"data: {\"jsonrpc\":\"2.0\",\"id\":{{ID}},\ndata: \"result\":{\"kind\":\"status-update\",\"taskId\":\"task-1\",\"contextId\":\"c1\",\ndata: \"status\":{\"state\":\"completed\"},\"final\":true}}\n\n", a2a.Limits{}, isNil, 2},
		{"plain JSON answer", "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n\r\n" +
			strings.TrimSpace(strings.TrimPrefix(strings.TrimSpace(taskEv("task-1", "c1", "completed")), "data: ")), a2a.Limits{}, isNil, 1},
		{"message result", sseHead + result(`{"kind":"message","messageId":"m1","role":"agent","parts":[{"kind":"text","text":"hey"}],"contextId":"c1"}`), a2a.Limits{}, isNil, 1},
		{"events after final ignored", sseHead + okTask + okFinal + data("garbage"), a2a.Limits{}, isNil, 2},
		{"unknown fields", sseHead + taskEv("task-1", "c1", "submitted") + result(`{"kind":"status-update","taskId":"task-1","contextId":"c1","status":{"state":"completed","extra":[1,2]},"final":true,"future":{"x":1}}`), a2a.Limits{}, isNil, 2},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			srv := rawServer(t, tc.reply)
			c := a2a.NewClient(srv.URL, nil, "t")
			c.Limits = tc.limits
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			n := 0
			err := c.Stream(ctx, "c1", "hi", func(ev a2a.Event) error {
				n++
				if ev.Kind == "" || ev.TaskID() == "" && ev.Kind != a2a.KindMessage {
					t.Errorf("delivered an empty event %+v", ev)
				}
				return nil
			})
			if !tc.check(err) {
				t.Errorf("err = %v", err)
			}
			if n != tc.events {
				t.Errorf("%d events delivered, want %d", n, tc.events)
			}

			// The same through the mapper: a clean log, one error_event at most.
			rec := agenttest.NewRecorder(t)
			out, ferr := runTurn(ctx, c, rec, "c1", "hi", turnOptions{})
			if ferr != nil {
				t.Fatal(ferr)
			}
			checkPairing(t, rec.Events())
			errs := 0
			for _, e := range rec.Events() {
				if e.Type == event.Error {
					errs++
				}
			}
			if want := map[bool]int{true: 0, false: 1}[err == nil]; errs != want {
				t.Errorf("%d error events, want %d: %q", errs, want, summary(rec.Events()))
			}
			if (out.Err == nil) != (err == nil) {
				t.Errorf("outcome err %v, stream err %v", out.Err, err)
			}
		})
	}
}

func isNil(err error) bool      { return err == nil }
func isProto(err error) bool    { return errors.Is(err, a2a.ErrProtocol) }
func isTooLarge(err error) bool { return errors.Is(err, a2a.ErrTooLarge) }
func isEnded(err error) bool    { return errors.Is(err, a2a.ErrStreamEnded) }
func isRPC(code int, msg string) func(error) bool {
	return func(err error) bool {
		var re *a2a.RPCError
		return errors.As(err, &re) && re.Code == code && re.Message == msg
	}
}

// FuzzStreamAndMap: any stream body goes through the SSE reader, the stream
// checks and the mapper without a panic, and leaves a consistent log.
func FuzzStreamAndMap(f *testing.F) {
	f.Add([]byte(okTask + okChunk + okFinal))
	f.Add([]byte(okTask + result(`{"kind":"status-update","taskId":"task-1","contextId":"c1","status":{"state":"working","message":{"role":"agent","parts":[{"kind":"text","text":"Calling tool: shell"}]}},"final":false}`) + okChunk))
	f.Add([]byte("data: x\r\n\r\n:\n\nevent: y\n"))
	f.Fuzz(func(t *testing.T, body []byte) {
		c := a2a.NewClient("http://gateway", &http.Client{Transport: sseBody(body)}, "")
		c.Limits = a2a.Limits{MaxLineBytes: 4096, MaxEventBytes: 8192, MaxEvents: 64}
		rec := agenttest.NewRecorder(t)
		m := newMapper(rec, mapperLimits{MaxTurnTextBytes: 1024})
		err := c.Stream(context.Background(), "c1", "hi", m.Handle)
		if _, ferr := m.Finish(err, false); ferr != nil {
			t.Fatal(ferr)
		}
	})
}

// sseBody answers every request with itself as a 200 event stream, "{{ID}}"
// replaced by the request's JSON-RPC id: the fuzzer's streams need no
// sockets.
type sseBody []byte

func (b sseBody) RoundTrip(r *http.Request) (*http.Response, error) {
	raw, _ := io.ReadAll(r.Body)
	r.Body.Close()
	var req struct {
		ID json.RawMessage `json:"id"`
	}
	json.Unmarshal(raw, &req)
	return &http.Response{
		StatusCode: http.StatusOK,
		Header:     http.Header{"Content-Type": {"text/event-stream"}},
		Body:       io.NopCloser(bytes.NewReader(bytes.ReplaceAll(b, []byte("{{ID}}"), req.ID))),
		Request:    r,
	}, nil
}

package nullclaw

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/execlaw/execlaw/internal/agent/agenttest"
	"github.com/execlaw/execlaw/internal/event"
)

// rawServer answers every request with raw bytes (status line, headers and
// body, as nullclaw writes them to the socket) and closes the connection.
// "{{ID}}" in the reply becomes the request's JSON-RPC id.
func rawServer(t *testing.T, reply string) *httptest.Server {
	t.Helper()
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		var req struct {
			ID json.RawMessage `json:"id"`
		}
		json.Unmarshal(body, &req)
		conn, bw, err := http.NewResponseController(w).Hijack()
		if err != nil {
			t.Errorf("hijack: %v", err)
			return
		}
		defer conn.Close()
		bw.WriteString(strings.ReplaceAll(reply, "{{ID}}", string(req.ID)))
		bw.Flush()
	}))
	t.Cleanup(srv.Close)
	return srv
}

const sseHead = "HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nCache-Control: no-cache\r\nConnection: keep-alive\r\n\r\n"

func data(json string) string { return "data: " + json + "\n\n" }

func result(r string) string { return data(`{"jsonrpc":"2.0","id":{{ID}},"result":` + r + `}`) }

func taskEv(id, ctx, state string) string {
	return result(fmt.Sprintf(`{"id":%q,"kind":"task","contextId":%q,"status":{"state":%q,"timestamp":"2026-01-01T00:00:00Z"},"metadata":{}}`, id, ctx, state))
}

var (
	okTask  = taskEv("task-1", "c1", "submitted")
	okChunk = result(`{"kind":"artifact-update","taskId":"task-1","contextId":"c1","artifact":{"artifactId":"artifact-task-1","parts":[{"kind":"text","text":"hi"}]},"append":true,"lastChunk":false}`)
	okFinal = result(`{"kind":"status-update","taskId":"task-1","contextId":"c1","status":{"state":"completed","timestamp":"2026-01-01T00:00:00Z"},"final":true}`)
)

func chunkWithParts(parts string) string {
	return result(`{"kind":"artifact-update","taskId":"task-1","contextId":"c1","artifact":{"artifactId":"a","parts":[` + parts + `]},"append":true}`)
}

func TestHostileServerOutput(t *testing.T) {
	tooManyParts := strings.TrimSuffix(strings.Repeat(`{"kind":"text","text":"x"},`, 65), ",")
	nested := strings.Repeat("[", 20000) + strings.Repeat("]", 20000)
	small := Limits{MaxLineBytes: 1024, MaxEventBytes: 2048, MaxEvents: 3, MaxStreamBytes: 4096}

	cases := []struct {
		name   string
		reply  string
		limits Limits
		check  func(error) bool
		events int // events delivered before the error
	}{
		{"not JSON", sseHead + data("{not json}"), Limits{}, isProto, 0},
		{"not an object", sseHead + data(`["jsonrpc"]`), Limits{}, isProto, 0},
		{"binary garbage", sseHead + "data: \x00\xff\xfe\x01\n\n", Limits{}, isProto, 0},
		{"jsonrpc 1.0", sseHead + data(`{"jsonrpc":"1.0","id":{{ID}},"result":{"kind":"task"}}`), Limits{}, isProto, 0},
		{"no jsonrpc", sseHead + data(`{"id":{{ID}},"result":{}}`), Limits{}, isProto, 0},
		{"wrong id", sseHead + data(`{"jsonrpc":"2.0","id":"someone-else","result":{"kind":"task"}}`), Limits{}, isProto, 0},
		{"numeric id", sseHead + data(`{"jsonrpc":"2.0","id":7,"result":{"kind":"task"}}`), Limits{}, isProto, 0},
		{"result and error", sseHead + data(`{"jsonrpc":"2.0","id":{{ID}},"result":{},"error":{"code":1,"message":"x"}}`), Limits{}, isProto, 0},
		{"neither", sseHead + data(`{"jsonrpc":"2.0","id":{{ID}}}`), Limits{}, isProto, 0},
		{"null result", sseHead + data(`{"jsonrpc":"2.0","id":{{ID}},"result":null}`), Limits{}, isProto, 0},
		{"result not object", sseHead + data(`{"jsonrpc":"2.0","id":{{ID}},"result":"task"}`), Limits{}, isProto, 0},
		{"no kind", sseHead + result(`{"id":"t","contextId":"c1","status":{"state":"working"}}`), Limits{}, isProto, 0},
		{"unknown kind", sseHead + result(`{"kind":"surprise"}`), Limits{}, isProto, 0},
		{"starts with status", sseHead + okFinal, Limits{}, isProto, 0},
		{"task without id", sseHead + taskEv("", "c1", "submitted"), Limits{}, isProto, 0},
		{"task id with newline", sseHead + taskEv("task\n1", "c1", "submitted"), Limits{}, isProto, 0},
		{"task id too long", sseHead + taskEv(strings.Repeat("t", 300), "c1", "submitted"), Limits{}, isProto, 0},
		{"other context", sseHead + taskEv("task-1", "c2", "submitted"), Limits{}, isProto, 0},
		{"unknown state", sseHead + taskEv("task-1", "c1", "pondering"), Limits{}, isProto, 0},
		{"event of another task", sseHead + okTask + result(`{"kind":"artifact-update","taskId":"task-2","contextId":"c1","artifact":{"artifactId":"a","parts":[]},"append":true}`), Limits{}, isProto, 1},
		{"event of another context", sseHead + okTask + result(`{"kind":"status-update","taskId":"task-1","contextId":"c9","status":{"state":"working"},"final":false}`), Limits{}, isProto, 1},
		{"unknown part kind", sseHead + okTask + chunkWithParts(`{"kind":"video","text":"x"}`), Limits{}, isProto, 1},
		{"text not a string", sseHead + okTask + chunkWithParts(`{"kind":"text","text":42}`), Limits{}, isProto, 1},
		{"data part not object", sseHead + okTask + chunkWithParts(`{"kind":"data","data":[1]}`), Limits{}, isProto, 1},
		{"file part missing", sseHead + okTask + chunkWithParts(`{"kind":"file"}`), Limits{}, isProto, 1},
		{"too many parts", sseHead + okTask + chunkWithParts(tooManyParts), Limits{}, isProto, 1},
		{"artifact without id", sseHead + okTask + result(`{"kind":"artifact-update","taskId":"task-1","contextId":"c1","artifact":{"parts":[]},"append":true}`), Limits{}, isProto, 1},
		{"system role", sseHead + okTask + result(`{"kind":"status-update","taskId":"task-1","contextId":"c1","status":{"state":"working","message":{"role":"system","parts":[]}},"final":false}`), Limits{}, isProto, 1},
		{"deep nesting", sseHead + okTask + result(`{"kind":"status-update","taskId":"task-1","contextId":"c1","status":{"state":"working"},"final":false,"metadata":`+nested+`}`), Limits{}, isProto, 1},
		{"line too long", sseHead + okTask + data(`{"jsonrpc":"2.0","id":{{ID}},"result":{"kind":"task","pad":"`+strings.Repeat("x", 2000)+`"}}`), small, isTooLarge, 1},
		{"event too large", sseHead + okTask + strings.Repeat("data: "+strings.Repeat("y", 500)+"\n", 6) + "\n", small, isTooLarge, 1},
		{"stream too long", sseHead + strings.Repeat(": keep-alive "+strings.Repeat("z", 900)+"\n", 6), small, isTooLarge, 0},
		{"too many events", sseHead + okTask + okChunk + okChunk + okChunk + okFinal, small, isTooLarge, 3},
		{"ends without final", sseHead + okTask + okChunk, Limits{}, isEnded, 2},
		{"ends mid-line", sseHead + okTask + `data: {"jsonrpc":"2.0"`, Limits{}, isEnded, 1},
		{"ends mid-event", sseHead + okTask + "data: {}\n", Limits{}, isEnded, 1},
		{"empty stream", sseHead, Limits{}, isEnded, 0},
		{"wrong content type", "HTTP/1.1 200 OK\r\nContent-Type: text/html\r\n\r\n<html>", Limits{}, isProto, 0},
		{"no content type", "HTTP/1.1 200 OK\r\n\r\n" + okTask, Limits{}, isProto, 0},
		{"error without code", sseHead + data(`{"jsonrpc":"2.0","id":{{ID}},"error":{"message":"x"}}`), Limits{}, isProto, 0},
		{"error code not int", sseHead + data(`{"jsonrpc":"2.0","id":{{ID}},"error":{"code":"boom","message":"x"}}`), Limits{}, isProto, 0},
		{"error with null id", sseHead + data(`{"jsonrpc":"2.0","id":null,"error":{"code":-32600,"message":"Missing method"}}`), Limits{}, isRPC(-32600, "Missing method"), 0},
		{"error after output", sseHead + okTask + okChunk + data(`{"jsonrpc":"2.0","id":{{ID}},"error":{"code":-32603,"message":"Agent processing failed"}}`), Limits{}, isRPC(-32603, "Agent processing failed"), 2},
		{"hostile error message", sseHead + data(`{"jsonrpc":"2.0","id":{{ID}},"error":{"code":1,"message":"a\u0000b\u001b[31mc`+strings.Repeat("m", 5000)+`"}}`), Limits{}, func(err error) bool {
			var re *RPCError
			return errors.As(err, &re) && len(re.Message) <= 2048+3 && !strings.ContainsAny(re.Message, "\x00\x1b")
		}, 0},
		{"HTTP 500 huge body", "HTTP/1.1 500 Internal Server Error\r\nContent-Type: application/json\r\n\r\n{\"error\":\"" + strings.Repeat("e", 1<<20) + "\"}", Limits{}, func(err error) bool {
			var he *HTTPError
			return errors.As(err, &he) && he.StatusCode == 500 && len(he.Message) <= 2048+3
		}, 0},
		{"HTTP 429", "HTTP/1.1 429 Too Many Requests\r\nContent-Type: application/json\r\nContent-Length: 24\r\n\r\n{\"error\":\"rate limited\"}", Limits{}, func(err error) bool {
			var he *HTTPError
			return errors.As(err, &he) && he.StatusCode == 429 && he.Message == "rate limited"
		}, 0},
		{"not HTTP", "SSH-2.0-OpenSSH\r\n", Limits{}, func(err error) bool { return err != nil }, 0},
		// Accepted variants.
		{"CRLF, comments, other fields", "HTTP/1.1 200 OK\r\nContent-Type: text/event-stream; charset=utf-8\r\n\r\n" +
			": hello\r\nevent: message\r\nid: 1\r\nretry: 10\r\n" + strings.ReplaceAll(okTask+okChunk+okFinal, "\n", "\r\n"), Limits{}, isNil, 3},
		{"data over several lines", sseHead + okTask +
			"data: {\"jsonrpc\":\"2.0\",\"id\":{{ID}},\ndata: \"result\":{\"kind\":\"status-update\",\"taskId\":\"task-1\",\"contextId\":\"c1\",\ndata: \"status\":{\"state\":\"completed\"},\"final\":true}}\n\n", Limits{}, isNil, 2},
		{"plain JSON answer", "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n\r\n" +
			strings.TrimSpace(strings.TrimPrefix(strings.TrimSpace(taskEv("task-1", "c1", "completed")), "data: ")), Limits{}, isNil, 1},
		{"message result", sseHead + result(`{"kind":"message","messageId":"m1","role":"agent","parts":[{"kind":"text","text":"hey"}],"contextId":"c1"}`), Limits{}, isNil, 1},
		{"events after final ignored", sseHead + okTask + okFinal + data("garbage"), Limits{}, isNil, 2},
		{"unknown fields", sseHead + taskEv("task-1", "c1", "submitted") + result(`{"kind":"status-update","taskId":"task-1","contextId":"c1","status":{"state":"completed","extra":[1,2]},"final":true,"future":{"x":1}}`), Limits{}, isNil, 2},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			srv := rawServer(t, tc.reply)
			c := NewClient(srv.URL, nil, "t")
			c.Limits = tc.limits
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			n := 0
			err := c.Stream(ctx, "c1", "hi", func(ev Event) error {
				n++
				if ev.Kind == "" || ev.TaskID() == "" && ev.Kind != KindMessage {
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
			out, ferr := RunTurn(ctx, c, rec, "c1", "hi", TurnOptions{})
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
func isProto(err error) bool    { return errors.Is(err, ErrProtocol) }
func isTooLarge(err error) bool { return errors.Is(err, ErrTooLarge) }
func isEnded(err error) bool    { return errors.Is(err, ErrStreamEnded) }
func isRPC(code int, msg string) func(error) bool {
	return func(err error) bool {
		var re *RPCError
		return errors.As(err, &re) && re.Code == code && re.Message == msg
	}
}

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

// FuzzStreamAndMap: any stream body goes through the SSE reader, the stream
// checks and the mapper without a panic, and leaves a consistent log.
func FuzzStreamAndMap(f *testing.F) {
	f.Add([]byte(okTask + okChunk + okFinal))
	f.Add([]byte(okTask + result(`{"kind":"status-update","taskId":"task-1","contextId":"c1","status":{"state":"working","message":{"role":"agent","parts":[{"kind":"text","text":"Calling tool: shell"}]}},"final":false}`) + okChunk))
	f.Add([]byte("data: x\r\n\r\n:\n\nevent: y\n"))
	f.Fuzz(func(t *testing.T, body []byte) {
		body = bytes.ReplaceAll(body, []byte("{{ID}}"), []byte(`"id-1"`))
		lim := Limits{MaxLineBytes: 4096, MaxEventBytes: 8192, MaxEvents: 64}.withDefaults()
		rec := agenttest.NewRecorder(t)
		m := NewMapper(rec, MapperLimits{MaxTurnTextBytes: 1024})
		st := &streamState{lim: lim, id: "id-1", contextID: "c1", on: m.Handle}
		sr := newSSEReader(bytes.NewReader(body), lim)
		var err error
		for !st.done {
			var d []byte
			if d, err = sr.next(nil); err != nil {
				break
			}
			if err = st.handleData(d); err != nil {
				break
			}
		}
		if errors.Is(err, io.EOF) {
			err = ErrStreamEnded
		}
		if _, ferr := m.Finish(err, false); ferr != nil {
			t.Fatal(ferr)
		}
	})
}

package nullclawtest

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
)

// RawServer is a gateway that answers every request with the same raw bytes
// (status line, headers and body, as nullclaw writes them to the socket)
// and closes the connection: what a broken or hostile gateway may send,
// which Server, being well-behaved, never does. "{{ID}}" in reply becomes
// the request's JSON-RPC id. It is closed when the test ends.
func RawServer(t testing.TB, reply string) *httptest.Server {
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

// SSEHead is the head nullclaw writes before the events of a stream.
const SSEHead = "HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nCache-Control: no-cache\r\nConnection: keep-alive\r\n\r\n"

// Data is one server-sent event carrying json.
func Data(json string) string { return "data: " + json + "\n\n" }

// Result is an event answering the request ({{ID}}) with result r.
func Result(r string) string { return Data(`{"jsonrpc":"2.0","id":{{ID}},"result":` + r + `}`) }

// TaskEvent is an event with a Task as nullclaw starts a stream with it.
func TaskEvent(id, ctx, state string) string {
	return Result(fmt.Sprintf(`{"id":%q,"kind":"task","contextId":%q,"status":{"state":%q,"timestamp":"2026-01-01T00:00:00Z"},"metadata":{}}`, id, ctx, state))
}

// Well-formed answers of one short turn (task "task-1" in context "c1"),
// which hostile cases change one part of.
var (
	OKTask  = TaskEvent("task-1", "c1", "submitted")
	OKChunk = Result(`{"kind":"artifact-update","taskId":"task-1","contextId":"c1","artifact":{"artifactId":"artifact-task-1","parts":[{"kind":"text","text":"hi"}]},"append":true,"lastChunk":false}`)
	OKFinal = Result(`{"kind":"status-update","taskId":"task-1","contextId":"c1","status":{"state":"completed","timestamp":"2026-01-01T00:00:00Z"},"final":true}`)
)

// ChunkWithParts is an artifact chunk of task-1 with the given parts (JSON).
func ChunkWithParts(parts string) string {
	return Result(`{"kind":"artifact-update","taskId":"task-1","contextId":"c1","artifact":{"artifactId":"a","parts":[` + parts + `]},"append":true}`)
}

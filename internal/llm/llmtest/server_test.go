package llmtest

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"
)

func get(t *testing.T, url string, header http.Header) (int, map[string]any) {
	t.Helper()
	req, _ := http.NewRequest(http.MethodGet, url, nil)
	for k, v := range header {
		req.Header[k] = v
	}
	return do(t, req)
}

func post(t *testing.T, url, body string) (int, map[string]any) {
	t.Helper()
	req, _ := http.NewRequest(http.MethodPost, url, strings.NewReader(body))
	req.Header.Set("Content-Type", "application/json")
	return do(t, req)
}

func do(t *testing.T, req *http.Request) (int, map[string]any) {
	t.Helper()
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	var m map[string]any
	if err := json.Unmarshal(body, &m); err != nil {
		t.Fatalf("%s %s: not JSON: %s", req.Method, req.URL, body)
	}
	return resp.StatusCode, m
}

func TestModels(t *testing.T) {
	o := NewOpenAI().Attach(t)
	for _, path := range []string{"/v1/models", "/models"} {
		code, m := get(t, o.URL()+path, nil)
		data, _ := m["data"].([]any)
		if code != 200 || m["object"] != "list" || len(data) == 0 {
			t.Fatalf("%s: %d %v", path, code, m)
		}
		if got := strings.Join(keyPaths(data[0]), " "); got != "created:number id:string object:string owned_by:string" {
			t.Errorf("model shape %s", got)
		}
	}
	o.SetModels("gpt-x", "gpt-y")
	if _, m := get(t, o.BaseURL()+"/models", nil); len(m["data"].([]any)) != 2 {
		t.Errorf("after SetModels: %v", m)
	}
	if code, m := get(t, o.BaseURL()+"/models/gpt-y", nil); code != 200 || m["id"] != "gpt-y" {
		t.Errorf("one model: %d %v", code, m)
	}
	if code, _ := get(t, o.BaseURL()+"/models/gpt-z", nil); code != 404 {
		t.Errorf("unknown model: %d", code)
	}

	a := NewAnthropic().Attach(t)
	a.SetModels("claude-x")
	code, m := get(t, a.URL()+"/v1/models", nil)
	if code != 200 || m["first_id"] != "claude-x" || m["has_more"] != false || m["data"].([]any)[0].(map[string]any)["type"] != "model" {
		t.Errorf("anthropic models: %d %v", code, m)
	}
}

// TestErrorShapes pins the JSON each provider's errors have.
func TestErrorShapes(t *testing.T) {
	a := NewAnthropic(Turn{Error: &ErrorReply{Status: 429, Message: "slow down"}}).Attach(t)
	code, m := post(t, a.URL()+"/v1/messages", `{"stream":true}`)
	if got := strings.Join(keyPaths(m), " "); code != 429 ||
		got != "error.message:string error.type:string error:object request_id:string type:string" ||
		m["error"].(map[string]any)["type"] != "rate_limit_error" {
		t.Errorf("anthropic: %d %s %v", code, got, m)
	}
	o := NewOpenAI(Turn{Error: &ErrorReply{Status: 429, Message: "slow down"}}).Attach(t)
	code, m = post(t, o.URL()+"/v1/chat/completions", `{"stream":true}`)
	if got := strings.Join(keyPaths(m), " "); code != 429 ||
		got != "error.code:string error.message:string error.param:null error.type:string error:object" ||
		m["error"].(map[string]any)["code"] != "rate_limit_exceeded" {
		t.Errorf("openai: %d %s %v", code, got, m)
	}
	// Unknown paths and bodies that are not JSON get provider errors too,
	// and consume no turn.
	o.Enqueue(Turn{Text: "kept"})
	if code, m := post(t, o.URL()+"/v1/responses", `{}`); code != 404 || m["error"] == nil {
		t.Errorf("responses API: %d %v", code, m)
	}
	if code, _ := post(t, o.URL()+"/v1/chat/completions", `not json`); code != 400 {
		t.Errorf("bad JSON: %d", code)
	}
	if o.Pending() != 1 {
		t.Errorf("pending %d", o.Pending())
	}
}

func TestRequireKeyShapes(t *testing.T) {
	a := NewAnthropic().Attach(t)
	a.RequireKey("right")
	if code, m := get(t, a.URL()+"/v1/models", http.Header{"X-Api-Key": {"wrong"}}); code != 401 ||
		m["error"].(map[string]any)["type"] != "authentication_error" {
		t.Errorf("anthropic wrong key: %d %v", code, m)
	}
	if code, _ := get(t, a.URL()+"/v1/models", http.Header{"X-Api-Key": {"right"}}); code != 200 {
		t.Errorf("anthropic right key: %d", code)
	}
	if code, _ := get(t, a.URL()+"/v1/models", http.Header{"Authorization": {"Bearer right"}}); code != 200 {
		t.Errorf("anthropic bearer: %d", code)
	}
	o := NewOpenAI().Attach(t)
	o.RequireKey("sk-right-key")
	code, m := get(t, o.URL()+"/v1/models", http.Header{"Authorization": {"Bearer sk-wrong-key"}})
	e, _ := m["error"].(map[string]any)
	if code != 401 || e["code"] != "invalid_api_key" || strings.Contains(e["message"].(string), "sk-wrong-key") {
		t.Errorf("openai wrong key: %d %v", code, m)
	}
	if code, m := get(t, o.URL()+"/v1/models", nil); code != 401 || m["error"].(map[string]any)["code"] != nil {
		t.Errorf("openai no key: %d %v", code, m)
	}
	if n := len(o.Requests()); n != 2 {
		t.Errorf("rejected requests recorded: %d", n)
	}
}

// TestOpenAIStreamOptions: usage and obfuscation appear only as requested.
func TestOpenAIStreamOptions(t *testing.T) {
	for _, c := range []struct {
		opts               string
		usage, obfuscation bool
	}{
		{`{"include_usage":true}`, true, true},
		{`{"include_usage":false,"include_obfuscation":false}`, false, false},
		{`null`, false, true},
	} {
		fake := fakeStream(t, "openai", "/chat/completions",
			fmt.Sprintf(`{"model":"gpt-4o","stream":true,"stream_options":%s}`, c.opts), Turn{Text: "hello there"})
		kinds := []string{}
		for _, e := range fake {
			kinds = append(kinds, openaiKind(t, e))
			if e.data == "[DONE]" {
				continue
			}
			m := e.json(t)
			if _, ok := m["usage"]; ok != c.usage {
				t.Errorf("%s: usage key present=%v", c.opts, ok)
			}
			if _, ok := m["obfuscation"]; ok != c.obfuscation {
				t.Errorf("%s: obfuscation present=%v", c.opts, ok)
			}
		}
		if slices.Contains(kinds, "usage") != c.usage || kinds[len(kinds)-1] != "[DONE]" {
			t.Errorf("%s: kinds %v", c.opts, kinds)
		}
	}
}

func TestChunkingAndDelay(t *testing.T) {
	if got := chunks("héllo wörld", 0); !slices.Equal(got, []string{"hél", "lo w", "örld"}) {
		t.Errorf("default chunks %q", got)
	}
	if got := chunks("abcdef", 4); !slices.Equal(got, []string{"abcd", "ef"}) {
		t.Errorf("sized chunks %q", got)
	}
	if got := strings.Join(argFragments(`{"path":"naïve.go"}`), ""); got != `{"path":"naïve.go"}` {
		t.Errorf("fragments rejoin to %q", got)
	}
	start := time.Now()
	evs := fakeStream(t, "anthropic", "/v1/messages", `{"model":"m","stream":true}`,
		Turn{Text: "abcdefgh", ChunkSize: 2, Delay: 20 * time.Millisecond})
	if d := time.Since(start); d < 60*time.Millisecond {
		t.Errorf("4 deltas with 20ms between took %v", d)
	}
	if got := recordedTurn(t, "anthropic", evs); got.Text != "abcdefgh" {
		t.Errorf("text %q", got.Text)
	}
}

// TestConcurrent hammers one server from many goroutines; run with -race.
func TestConcurrent(t *testing.T) {
	const n = 24
	for _, pc := range providers {
		t.Run(pc.name, func(t *testing.T) {
			s := pc.new().Attach(t)
			m := pc.model(t, s)
			var wg sync.WaitGroup
			texts := make([]string, n)
			for i := range n {
				wg.Go(func() {
					s.Enqueue(Turn{Text: fmt.Sprintf("answer number %d", i), Delay: time.Millisecond})
					r := collect(t, m, t.Context(), userCall("q"))
					if r.err != nil {
						t.Error(r.err)
					}
					texts[i] = r.text
					_ = s.Requests()
					_ = s.Pending()
				})
			}
			wg.Wait()
			slices.Sort(texts)
			for i, txt := range texts {
				if !strings.HasPrefix(txt, "answer number ") {
					t.Errorf("text %d: %q", i, txt)
				}
			}
			if texts := slices.Compact(texts); len(texts) != n {
				t.Errorf("%d distinct answers, want %d", len(texts), n)
			}
			if len(s.Requests()) != n || s.Pending() != 0 {
				t.Errorf("%d requests, %d pending", len(s.Requests()), s.Pending())
			}
		})
	}
}

func TestRequestsAreCopies(t *testing.T) {
	s := NewOpenAI(Turn{Text: "x"}).Attach(t)
	post(t, s.URL()+"/chat/completions", `{"model":"gpt-4o"}`)
	r := s.Requests()
	r[0].Body[0] = 'X'
	r[0].JSON["model"] = "changed"
	r[0].Header.Set("Content-Type", "changed")
	again := s.Requests()[0]
	if again.Body[0] != '{' || again.JSON["model"] != "gpt-4o" || again.Header.Get("Content-Type") != "application/json" {
		t.Errorf("Requests shares state: %+v", again)
	}
}

// fakeTB records what Attach reports.
type fakeTB struct {
	testing.TB
	errs     []string
	cleanups []func()
}

func (f *fakeTB) Helper()                        {}
func (f *fakeTB) Cleanup(fn func())              { f.cleanups = append(f.cleanups, fn) }
func (f *fakeTB) Errorf(format string, a ...any) { f.errs = append(f.errs, fmt.Sprintf(format, a...)) }

func TestAttachReportsUnscripted(t *testing.T) {
	tb := &fakeTB{TB: t}
	s := NewAnthropic().Attach(tb)
	code, m := post(t, s.URL()+"/v1/messages", `{"model":"m","stream":true}`)
	if code != 500 || !strings.Contains(m["error"].(map[string]any)["message"].(string), "llmtest: no scripted turn left") {
		t.Errorf("empty queue: %d %v", code, m)
	}
	for _, fn := range tb.cleanups {
		fn()
	}
	if len(tb.errs) != 1 || !strings.Contains(tb.errs[0], "no scripted turn left") {
		t.Errorf("reported %q", tb.errs)
	}
	s.Close() // idempotent
}

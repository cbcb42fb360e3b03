package llm

import (
	"bufio"
	"context"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/execlaw/execlaw/internal/llm/llmtest"
)

func modelIDs(ms []Model) []string {
	out := make([]string, len(ms))
	for i, m := range ms {
		out[i] = m.ID
	}
	return out
}

// modelsEndpoint is a hand-written GET /models endpoint, for answers
// llmtest does not give (OpenRouter's names and prices, broken bodies).
type modelsEndpoint struct {
	*httptest.Server
	requests atomic.Int32
	auth     atomic.Value // the last Authorization header
}

func newModelsEndpoint(t *testing.T, handler http.HandlerFunc) *modelsEndpoint {
	t.Helper()
	e := &modelsEndpoint{}
	e.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		e.requests.Add(1)
		e.auth.Store(r.Header.Get("Authorization"))
		handler(w, r)
	}))
	t.Cleanup(e.Close)
	return e
}

// closedURL is the address of a port nothing listens on any more.
func closedURL(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	return "http://" + addr
}

func TestListerCatalogueProviders(t *testing.T) {
	var l Lister
	for _, p := range []string{Anthropic, OpenAI} {
		list, err := l.List(t.Context(), p, "", NewSecret("k"))
		if err != nil {
			t.Fatal(err)
		}
		if list.Source != SourceCatalogue || list.Warning != "" {
			t.Errorf("%s: source %q, warning %q; want the catalogue, no warning", p, list.Source, list.Warning)
		}
		if got, want := fmt.Sprint(modelIDs(list.Models)), fmt.Sprint(modelIDs(CatalogueModels(p))); got != want {
			t.Errorf("%s: models %s, want the catalogue's %s", p, got, want)
		}
	}
	if _, err := l.List(t.Context(), "acme", "", Secret{}); err == nil || !strings.Contains(err.Error(), "unknown provider") {
		t.Errorf("unknown provider: err = %v", err)
	}
	if _, err := l.List(t.Context(), OpenAICompatible, "", Secret{}); err == nil || !strings.Contains(err.Error(), "baseUrl") {
		t.Errorf("openai-compatible without baseUrl: err = %v", err)
	}
}

func TestListerOpenAICompatibleLive(t *testing.T) {
	const key = "sk-local-0123456789abcdef"
	fake := llmtest.NewOpenAI().Attach(t)
	fake.SetModels("qwen2.5-coder", "llama3.1:8b", "Mistral")
	fake.RequireKey(key)

	var l Lister
	list, err := l.List(t.Context(), OpenAICompatible, fake.BaseURL(), NewSecret(key))
	if err != nil {
		t.Fatal(err)
	}
	if list.Source != SourceLive || list.Warning != "" {
		t.Errorf("source %q, warning %q; want a live answer", list.Source, list.Warning)
	}
	// No names are given, so the ids serve as names, sorted case-blind.
	if got := fmt.Sprint(modelIDs(list.Models)); got != "[llama3.1:8b Mistral qwen2.5-coder]" {
		t.Errorf("models = %s", got)
	}
	for _, m := range list.Models {
		if m.Name != m.ID || m.Default {
			t.Errorf("model %+v: want name = id and no default", m)
		}
	}
	reqs := fake.Requests()
	if len(reqs) != 1 || reqs[0].Method != http.MethodGet || reqs[0].Path != "/v1/models" {
		t.Fatalf("requests = %+v, want one GET /v1/models", reqs)
	}
	if got := reqs[0].Header.Get("Authorization"); got != "Bearer "+key {
		t.Errorf("Authorization = %q, want the key as a bearer token", got)
	}

	// A trailing slash on the base URL makes no difference to the path.
	if list, _ := l.List(t.Context(), OpenAICompatible, fake.BaseURL()+"/", NewSecret(key)); list.Source != SourceLive {
		t.Errorf("base URL with a trailing slash: %+v", list)
	}
	if reqs := fake.Requests(); reqs[len(reqs)-1].Path != "/v1/models" {
		t.Errorf("with a trailing slash the path was %q", reqs[len(reqs)-1].Path)
	}
}

func TestListerWithoutKeySendsNoAuthorization(t *testing.T) {
	fake := llmtest.NewOpenAI().Attach(t)
	var l Lister
	if list, _ := l.List(t.Context(), OpenAICompatible, fake.BaseURL(), Secret{}); list.Source != SourceLive {
		t.Fatalf("list = %+v", list)
	}
	if h, ok := fake.Requests()[0].Header["Authorization"]; ok {
		t.Errorf("Authorization %q sent without a key", h)
	}
}

func TestListerOpenRouterBaseURLOverride(t *testing.T) {
	const key = "sk-or-v1-0123456789abcdef"
	fake := llmtest.NewOpenAI().Attach(t)
	fake.SetModels("vendor/model-b", "vendor/model-a")
	fake.RequireKey(key)

	var l Lister
	list, err := l.List(t.Context(), OpenRouter, fake.BaseURL(), NewSecret(key))
	if err != nil {
		t.Fatal(err)
	}
	if list.Source != SourceLive || fmt.Sprint(modelIDs(list.Models)) != "[vendor/model-a vendor/model-b]" {
		t.Errorf("list = %+v; want the override's two models, live", list)
	}
	if n := len(fake.Requests()); n != 1 {
		t.Errorf("the override got %d requests, want 1", n)
	}
}

func TestListerOpenRouterPricing(t *testing.T) {
	e := newModelsEndpoint(t, func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/api/v1/models" {
			http.NotFound(w, r)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		fmt.Fprint(w, `{"data":[
			{"id":"anthropic/claude-sonnet-4","name":"Anthropic: Claude Sonnet 4","context_length":200000,
			 "pricing":{"prompt":"0.000003","completion":"0.000015","request":"0","image":"0.0048"}},
			{"id":"meta-llama/llama-3.3-70b:free","name":"Meta: Llama 3.3 70B (free)","context_length":131072,
			 "pricing":{"prompt":"0","completion":"0"}},
			{"id":"odd/prices","pricing":{"prompt":"-1","completion":"lots"}},
			{"id":"no/pricing","name":"No Pricing"},
			{"id":"","name":"nameless"}
		]}`)
	})
	var l Lister
	list, err := l.List(t.Context(), OpenRouter, e.URL+"/api/v1", NewSecret("k-0123456789"))
	if err != nil {
		t.Fatal(err)
	}
	if list.Source != SourceLive {
		t.Fatalf("list = %+v", list)
	}
	byID := map[string]Model{}
	for _, m := range list.Models {
		byID[m.ID] = m
	}
	if len(byID) != 4 {
		t.Errorf("models %v; the one without an id should be dropped, the other four kept", modelIDs(list.Models))
	}
	sonnet := byID["anthropic/claude-sonnet-4"]
	if !near(sonnet.CostPer1MIn, 3) || !near(sonnet.CostPer1MOut, 15) || sonnet.ContextWindow != 200000 ||
		sonnet.Name != "Anthropic: Claude Sonnet 4" {
		t.Errorf("per-token prices not converted to per million: %+v", sonnet)
	}
	if free := byID["meta-llama/llama-3.3-70b:free"]; free.CostPer1MIn != 0 || free.CostPer1MOut != 0 {
		t.Errorf("free model: %+v", free)
	}
	if odd := byID["odd/prices"]; odd.CostPer1MIn != 0 || odd.CostPer1MOut != 0 || odd.Name != "odd/prices" {
		t.Errorf("unusable prices should read as 0 and the id stand in for the name: %+v", odd)
	}
	if np := byID["no/pricing"]; np.Name != "No Pricing" || np.CostPer1MIn != 0 {
		t.Errorf("model without pricing: %+v", np)
	}
}

func TestListerAnswersFromCacheWithinTTL(t *testing.T) {
	fake := llmtest.NewOpenAI().Attach(t)
	fake.SetModels("m1", "m2")
	var l Lister
	key := NewSecret("sk-first-user-key")

	first, _ := l.List(t.Context(), OpenAICompatible, fake.BaseURL(), key)
	fake.SetModels("m3")
	second, _ := l.List(t.Context(), OpenAICompatible, fake.BaseURL(), key)
	if first.Source != SourceLive || second.Source != SourceCache || second.Warning != "" {
		t.Errorf("sources %q then %q (warning %q); want live, then cache without a warning", first.Source, second.Source, second.Warning)
	}
	if fmt.Sprint(modelIDs(second.Models)) != "[m1 m2]" {
		t.Errorf("cached models = %v, want the first answer's [m1 m2]", modelIDs(second.Models))
	}
	if n := len(fake.Requests()); n != 1 {
		t.Errorf("%d requests to the endpoint, want 1: the second list comes from the cache", n)
	}

	// Another key does not get the first key's answer: the endpoint decides
	// what (and whether) it lists for that key.
	other, _ := l.List(t.Context(), OpenAICompatible, fake.BaseURL(), NewSecret("sk-second-user-key"))
	if other.Source != SourceLive || fmt.Sprint(modelIDs(other.Models)) != "[m3]" {
		t.Errorf("another key: %+v; want a live answer of its own", other)
	}
	if n := len(fake.Requests()); n != 2 {
		t.Errorf("%d requests after a second key, want 2", n)
	}
}

func TestListerServesCacheWhenEndpointGoesDown(t *testing.T) {
	fake := llmtest.NewOpenAI()
	defer fake.Close()
	fake.SetModels("m1", "m2")
	l := Lister{TTL: time.Nanosecond} // every call asks the endpoint again
	key := NewSecret("sk-0123456789")

	first, _ := l.List(t.Context(), OpenAICompatible, fake.BaseURL(), key)
	if first.Source != SourceLive {
		t.Fatalf("first list = %+v", first)
	}
	fake.Close()
	second, _ := l.List(t.Context(), OpenAICompatible, fake.BaseURL(), key)
	if second.Source != SourceCache || second.Warning == "" {
		t.Errorf("after the endpoint went down: source %q, warning %q; want the cache with a warning", second.Source, second.Warning)
	}
	if fmt.Sprint(modelIDs(second.Models)) != "[m1 m2]" {
		t.Errorf("cached models = %v", modelIDs(second.Models))
	}
}

func TestListerServesCacheWhenEndpointFails(t *testing.T) {
	var fail atomic.Bool
	e := newModelsEndpoint(t, func(w http.ResponseWriter, r *http.Request) {
		if fail.Load() {
			http.Error(w, `{"error":"upstream"}`, http.StatusBadGateway)
			return
		}
		fmt.Fprint(w, `{"data":[{"id":"m1"}]}`)
	})
	l := Lister{TTL: time.Nanosecond}
	if first, _ := l.List(t.Context(), OpenRouter, e.URL, Secret{}); first.Source != SourceLive {
		t.Fatalf("first list = %+v", first)
	}
	fail.Store(true)
	second, _ := l.List(t.Context(), OpenRouter, e.URL, Secret{})
	if second.Source != SourceCache || !strings.Contains(second.Warning, "502") || fmt.Sprint(modelIDs(second.Models)) != "[m1]" {
		t.Errorf("after a 502: %+v; want the cached [m1] with a warning naming the status", second)
	}
	if n := e.requests.Load(); n != 2 {
		t.Errorf("%d requests, want 2 (the TTL had passed)", n)
	}
}

func TestListerFallbackWhenNeverListed(t *testing.T) {
	var l Lister
	down := closedURL(t)

	or, err := l.List(t.Context(), OpenRouter, down, NewSecret("k"))
	if err != nil {
		t.Fatal(err)
	}
	if or.Source != SourceCatalogue || or.Warning == "" {
		t.Errorf("openrouter, endpoint down: source %q, warning %q; want the catalogue with a warning", or.Source, or.Warning)
	}
	if got, want := len(or.Models), len(CatalogueModels(OpenRouter)); got != want || got == 0 {
		t.Errorf("openrouter fallback has %d models, the catalogue %d", got, want)
	}

	oc, err := l.List(t.Context(), OpenAICompatible, down, NewSecret("k"))
	if err != nil {
		t.Fatal(err)
	}
	if len(oc.Models) != 0 || oc.Warning == "" {
		t.Errorf("openai-compatible, endpoint down: %+v; want no models and a warning", oc)
	}

	// A base URL that is no http(s) URL is never asked.
	bad, err := l.List(t.Context(), OpenAICompatible, "file:///etc/passwd", Secret{})
	if err != nil {
		t.Fatal(err)
	}
	if len(bad.Models) != 0 || !strings.Contains(bad.Warning, "baseUrl") {
		t.Errorf("file:// base URL: %+v", bad)
	}
}

func TestListerRejectsBadBodies(t *testing.T) {
	cases := map[string]struct {
		body func(w http.ResponseWriter)
		want string
	}{
		"invalid JSON": {func(w http.ResponseWriter) { fmt.Fprint(w, `{"data":[{"id":`) }, "not the expected JSON"},
		"HTML":         {func(w http.ResponseWriter) { fmt.Fprint(w, `<html>login</html>`) }, "not the expected JSON"},
		"wrong shape":  {func(w http.ResponseWriter) { fmt.Fprint(w, `{"data":"nope"}`) }, "not the expected JSON"},
		"oversized": {func(w http.ResponseWriter) {
			fmt.Fprint(w, `{"data":[`)
			chunk := []byte(strings.Repeat(`{"id":"padding-model"},`, 4096))
			for written := 0; written <= maxModelListBytes; written += len(chunk) {
				if _, err := w.Write(chunk); err != nil {
					return
				}
			}
			fmt.Fprint(w, `{"id":"last"}]}`)
		}, "larger than"},
	}
	for name, c := range cases {
		t.Run(name, func(t *testing.T) {
			e := newModelsEndpoint(t, func(w http.ResponseWriter, r *http.Request) { c.body(w) })
			var l Lister
			list, err := l.List(t.Context(), OpenAICompatible, e.URL, Secret{})
			if err != nil {
				t.Fatal(err)
			}
			if len(list.Models) != 0 || !strings.Contains(list.Warning, c.want) {
				t.Errorf("list = %d models, warning %q; want none and a warning with %q", len(list.Models), list.Warning, c.want)
			}
		})
	}
}

func TestListerScrubsKeyFromWarning(t *testing.T) {
	const key = "sk-gateway-Zq8vN3xK7wLm2RtY"

	t.Run("key in the base URL path", func(t *testing.T) {
		// Some gateways take the key in the path; a connection error quotes the URL.
		var l Lister
		list, _ := l.List(t.Context(), OpenAICompatible, closedURL(t)+"/"+key+"/v1", NewSecret(key))
		if list.Warning == "" || strings.Contains(list.Warning, "Zq8vN3xK") {
			t.Errorf("warning %q shows the key", list.Warning)
		}
		if !strings.Contains(list.Warning, "[redacted]") {
			t.Errorf("warning %q: expected the quoted URL with the key redacted", list.Warning)
		}
	})

	t.Run("key in the status line", func(t *testing.T) {
		// A server (or proxy) that echoes the key in its reason phrase.
		e := newModelsEndpoint(t, func(w http.ResponseWriter, r *http.Request) {
			conn, buf, err := w.(http.Hijacker).Hijack()
			if err != nil {
				t.Error(err)
				return
			}
			defer conn.Close()
			fmt.Fprintf(buf, "HTTP/1.1 401 Invalid key %s\r\nContent-Length: 0\r\nConnection: close\r\n\r\n", key)
			buf.Flush()
		})
		var l Lister
		list, _ := l.List(t.Context(), OpenAICompatible, e.URL, NewSecret(key))
		if !strings.Contains(list.Warning, "401") {
			t.Errorf("warning %q does not report the 401", list.Warning)
		}
		if strings.Contains(list.Warning, "Zq8vN3xK") {
			t.Errorf("warning %q shows the key", list.Warning)
		}
	})
}

func TestListerTimeout(t *testing.T) {
	release := make(chan struct{})
	e := newModelsEndpoint(t, func(w http.ResponseWriter, r *http.Request) {
		select { // never answers while the client waits
		case <-r.Context().Done():
		case <-release:
		}
	})
	t.Cleanup(func() { close(release) }) // runs before the server closes

	l := Lister{Timeout: 50 * time.Millisecond}
	start := time.Now()
	list, err := l.List(t.Context(), OpenAICompatible, e.URL, Secret{})
	elapsed := time.Since(start)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(list.Warning, "deadline exceeded") {
		t.Errorf("warning %q; want the timeout reported", list.Warning)
	}
	// The default is 5 s: finishing well before it shows Timeout was used.
	if elapsed > 4*time.Second {
		t.Errorf("List took %v with a 50ms timeout", elapsed)
	}
}

func TestListerCallerCancellation(t *testing.T) {
	arrived := make(chan struct{}, 1)
	e := newModelsEndpoint(t, func(w http.ResponseWriter, r *http.Request) {
		arrived <- struct{}{}
		<-r.Context().Done()
	})
	ctx, cancel := context.WithCancel(t.Context())
	go func() {
		<-arrived
		cancel()
	}()
	var l Lister
	list, err := l.List(ctx, OpenAICompatible, e.URL, Secret{})
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(list.Warning, "canceled") {
		t.Errorf("warning %q; want the cancellation reported", list.Warning)
	}
}

func TestListerConcurrentUse(t *testing.T) {
	fake := llmtest.NewOpenAI().Attach(t)
	fake.SetModels("a", "b", "c")
	l := Lister{TTL: time.Nanosecond}
	var wg sync.WaitGroup
	for i := 0; i < 16; i++ {
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			list, err := l.List(context.Background(), OpenAICompatible, fake.BaseURL(), NewSecret(fmt.Sprintf("key-%d", i%3)))
			if err != nil || len(list.Models) != 3 {
				t.Errorf("concurrent list %d: %+v, %v", i, list, err)
			}
		}(i)
	}
	wg.Wait()
}

// The status line reader is what the hijacking test relies on; make sure Go's
// client keeps a custom reason phrase, or that test proves nothing.
func TestCustomReasonPhraseReachesTheError(t *testing.T) {
	resp, err := http.ReadResponse(bufio.NewReader(strings.NewReader("HTTP/1.1 401 Invalid key xyz\r\nContent-Length: 0\r\n\r\n")), nil)
	if err != nil {
		t.Fatal(err)
	}
	if resp.Status != "401 Invalid key xyz" {
		t.Errorf("Status = %q", resp.Status)
	}
}

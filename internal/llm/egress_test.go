package llm

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/execlaw/execlaw/internal/egress"
	"github.com/execlaw/execlaw/internal/llm/llmtest"
)

func TestValidateBaseURLRefusesQueryFragmentUserinfo(t *testing.T) {
	for _, bad := range []string{
		"http://127.0.0.1:9/v1?x=",
		"http://127.0.0.1:9/admin?path=",
		"http://127.0.0.1:9/v1?",
		"http://127.0.0.1:9/v1#frag",
		"http://127.0.0.1:9/v1#",
		"http://user@127.0.0.1:9/v1",
		"http://user:pw@127.0.0.1:9/v1",
		"http://127.0.0.1:9/" + strings.Repeat("a", MaxBaseURLLen),
	} {
		if err := ValidateBaseURL(bad); err == nil {
			t.Errorf("ValidateBaseURL(%.60q) accepted", bad)
		}
		// Sessions and the model list use the same check.
		if _, err := NewModel(t.Context(), Config{Provider: OpenAICompatible, Model: "m", BaseURL: bad}); err == nil {
			t.Errorf("NewModel with %.60q accepted", bad)
		}
		var l Lister
		if list, _ := l.List(t.Context(), OpenAICompatible, bad, Secret{}); list.Warning == "" || list.Source != SourceCatalogue {
			t.Errorf("List with %.60q: %+v", bad, list)
		}
	}
	for _, good := range []string{"http://localhost:11434/v1", "https://api.example.com/v1/", "http://[::1]:8080", "https://openrouter.ai/api/v1"} {
		if err := ValidateBaseURL(good); err != nil {
			t.Errorf("ValidateBaseURL(%q): %v", good, err)
		}
	}
}

func TestCheckBaseURL(t *testing.T) {
	ctx := t.Context()
	public := HTTPClient(egress.PublicOnly())
	for _, tc := range []struct {
		client  *http.Client
		url     string
		refused string // "" when allowed
	}{
		{nil, "http://localhost:11434/v1", ""},
		{nil, "http://127.0.0.1:8080/v1", ""},
		{nil, "http://169.254.169.254/latest", "never"},
		{nil, "http://[::ffff:169.254.169.254]/", "never"},
		{nil, "http://10.0.0.1/v1", "private"},
		{public, "http://localhost:11434/v1", "loopback"},
		{public, "http://[::1]:11434/v1", "loopback"},
		{public, "http://192.168.1.10/v1", "private"},
		{HTTPClient(egress.PublicAndPrivate()), "http://192.168.1.10/v1", ""},
		// A client without a policy is not second-guessed.
		{&http.Client{}, "http://10.0.0.1/v1", ""},
	} {
		err := CheckBaseURL(ctx, tc.client, tc.url)
		switch {
		case tc.refused == "" && err != nil:
			t.Errorf("%s: %v", tc.url, err)
		case tc.refused != "" && (err == nil || !strings.Contains(err.Error(), tc.refused) || !strings.HasPrefix(err.Error(), "baseUrl ")):
			t.Errorf("%s: err %v, want a refusal mentioning %q", tc.url, err, tc.refused)
		}
	}
	if err := CheckBaseURL(ctx, nil, "http://127.0.0.1:9/v1?x=1"); err == nil {
		t.Error("CheckBaseURL skipped ValidateBaseURL")
	}
}

// Under the public policy a loopback endpoint, however it is named, is not
// asked: the model list answers an error (the API's 400), and nothing
// reaches the endpoint. Under loopback it is listed.
func TestListerFollowsThePolicy(t *testing.T) {
	fake := llmtest.NewOpenAI().Attach(t)
	fake.SetModels("m1")
	pub := Lister{Client: HTTPClient(egress.PublicOnly())}
	for _, base := range []string{fake.BaseURL(), strings.Replace(fake.BaseURL(), "127.0.0.1", "localhost", 1)} {
		list, err := pub.List(t.Context(), OpenAICompatible, base, Secret{})
		if err == nil || !strings.Contains(err.Error(), "outbound policy") || !strings.Contains(err.Error(), "loopback") {
			t.Errorf("%s under public: %+v, %v", base, list, err)
		}
	}
	if n := len(fake.Requests()); n != 0 {
		t.Fatalf("the endpoint got %d requests under public", n)
	}
	var def Lister // the default client: public and loopback
	if list, err := def.List(t.Context(), OpenAICompatible, fake.BaseURL(), Secret{}); err != nil || list.Source != SourceLive {
		t.Errorf("under the default policy: %+v, %v", list, err)
	}
	// Never reached, whatever the policy: the metadata address, a private one.
	for _, base := range []string{"http://169.254.169.254/latest/meta-data", "http://10.0.0.1/v1", "http://[::ffff:169.254.169.254]/v1"} {
		if _, err := def.List(t.Context(), OpenAICompatible, base, Secret{}); err == nil || !strings.Contains(err.Error(), "outbound policy") {
			t.Errorf("%s: %v", base, err)
		}
	}
}

func TestListerDoesNotFollowRedirects(t *testing.T) {
	target := newModelsEndpoint(t, func(w http.ResponseWriter, r *http.Request) { fmt.Fprint(w, `{"data":[{"id":"stolen"}]}`) })
	for _, to := range []string{target.URL + "/models", "http://169.254.169.254/latest/meta-data/"} {
		e := newModelsEndpoint(t, func(w http.ResponseWriter, r *http.Request) { http.Redirect(w, r, to, http.StatusFound) })
		var l Lister
		list, err := l.List(t.Context(), OpenAICompatible, e.URL, Secret{})
		if err != nil || len(list.Models) != 0 || !strings.Contains(list.Warning, "redirected (HTTP 302)") {
			t.Errorf("redirect to %s: %+v, %v", to, list, err)
		}
	}
	if n := target.requests.Load(); n != 0 {
		t.Errorf("the redirect target got %d requests", n)
	}
}

func TestListerErrorAnswers(t *testing.T) {
	for _, tc := range []struct {
		status              int
		body, want, notWant string
	}{
		{404, `<html>INTERNAL-PAGE</html>`, "HTTP 404 Not Found: " + NoErrorMessage, "INTERNAL"},
		{500, `{"rows":["INTERNAL-ROW"]}`, "HTTP 500 Internal Server Error: " + NoErrorMessage, "INTERNAL"},
		{401, `{"error":{"message":"invalid key","type":"auth"}}`, "HTTP 401 Unauthorized: invalid key", ""},
		{404, `{"error":"model not found"}`, "HTTP 404 Not Found: model not found", ""},
	} {
		e := newModelsEndpoint(t, func(w http.ResponseWriter, r *http.Request) {
			w.WriteHeader(tc.status)
			io.WriteString(w, tc.body)
		})
		for _, client := range []*http.Client{nil, {}} {
			l := Lister{Client: client}
			list, _ := l.List(t.Context(), OpenAICompatible, e.URL, Secret{})
			if !strings.Contains(list.Warning, tc.want) || (tc.notWant != "" && strings.Contains(list.Warning, tc.notWant)) {
				t.Errorf("HTTP %d %s: warning %q, want %q", tc.status, tc.body, list.Warning, tc.want)
			}
		}
	}
}

// Regression: every distinct base URL (or key) added a list to the cache for
// good (20 requests took the server from 43 to 822 MB). The cache keeps the
// most recently used lists within its bounds.
func TestListerCacheIsBounded(t *testing.T) {
	models := make([]string, 200)
	for i := range models {
		models[i] = fmt.Sprintf("vendor/model-with-a-longish-name-%03d", i)
	}
	var body strings.Builder
	body.WriteString(`{"data":[`)
	for i, m := range models {
		if i > 0 {
			body.WriteString(",")
		}
		fmt.Fprintf(&body, `{"id":%q,"name":%q}`, m, strings.ToUpper(m))
	}
	body.WriteString(`]}`)
	e := newModelsEndpoint(t, func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, body.String()) })
	base := func(i int) string { return fmt.Sprintf("%s/u%d", e.URL, i) }

	l := Lister{MaxEntries: 8}
	for i := range 100 {
		if list, err := l.List(t.Context(), OpenAICompatible, base(i), Secret{}); err != nil || list.Source != SourceLive || len(list.Models) != 200 {
			t.Fatalf("list %d: %d models from %s, %v", i, len(list.Models), list.Source, err)
		}
	}
	if n := l.cache.order.Len(); n != 8 || len(l.cache.entries) != 8 {
		t.Errorf("cache holds %d lists (map %d), want its cap of 8", n, len(l.cache.entries))
	}
	// The oldest lists are gone: asked again, the endpoint is asked again.
	before := e.requests.Load()
	if list, _ := l.List(t.Context(), OpenAICompatible, base(0), Secret{}); list.Source != SourceLive || e.requests.Load() != before+1 {
		t.Errorf("an evicted list came from %s", list.Source)
	}
	// Least recently used goes first: 93 is the oldest now, but used again
	// it stays, and 94 goes when the next list comes.
	if list, _ := l.List(t.Context(), OpenAICompatible, base(93), Secret{}); list.Source != SourceCache {
		t.Errorf("list 93 came from %s, want the cache", list.Source)
	}
	l.List(t.Context(), OpenAICompatible, base(100), Secret{})
	for i, want := range map[int]string{93: SourceCache, 99: SourceCache, 100: SourceCache, 94: SourceLive} {
		if list, _ := l.List(t.Context(), OpenAICompatible, base(i), Secret{}); list.Source != want {
			t.Errorf("list %d came from %s, want %s", i, list.Source, want)
		}
	}

	// The byte bound holds whatever the entry count.
	b := Lister{MaxEntries: 1000, MaxBytes: 100 << 10}
	for i := range 100 {
		b.List(t.Context(), OpenAICompatible, base(i), Secret{})
	}
	one := listSize(OpenAICompatible+" "+base(99)+" ", nil) + int64(len(models))*(112+2*int64(len(models[0])))
	if b.cache.bytes > 100<<10 || b.cache.bytes <= 100<<10-one || b.cache.order.Len() < 2 {
		t.Errorf("cache holds %d bytes in %d lists; bound 100 KiB, one list about %d bytes", b.cache.bytes, b.cache.order.Len(), one)
	}
	var sum int64
	for el := b.cache.order.Front(); el != nil; el = el.Next() {
		sum += el.Value.(*cachedList).size
	}
	if sum != b.cache.bytes {
		t.Errorf("byte count %d, entries add up to %d", b.cache.bytes, sum)
	}

	// A list older than TTL plus MaxStale is dropped, not served.
	s := Lister{TTL: time.Millisecond, MaxStale: time.Millisecond}
	s.List(t.Context(), OpenAICompatible, base(0), Secret{})
	s.mu.Lock()
	_, _, ok := s.cache.get(OpenAICompatible+" "+base(0)+" ", time.Now().Add(time.Second))
	n := s.cache.order.Len()
	s.mu.Unlock()
	if ok || n != 0 {
		t.Errorf("an expired list was kept (%v, %d lists)", ok, n)
	}
}

func TestListerBoundsModelCount(t *testing.T) {
	e := newModelsEndpoint(t, func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, `{"data":[`)
		for i := range maxModels + 1 {
			if i > 0 {
				io.WriteString(w, ",")
			}
			fmt.Fprintf(w, `{"id":"m%d"}`, i)
		}
		io.WriteString(w, `]}`)
	})
	var l Lister
	list, err := l.List(t.Context(), OpenAICompatible, e.URL, Secret{})
	if err != nil || len(list.Models) != 0 || !strings.Contains(list.Warning, "more than") {
		t.Errorf("%d models, warning %q, %v", len(list.Models), list.Warning, err)
	}
	if l.cache.order.Len() != 0 {
		t.Error("an oversized list was cached")
	}
}

// A refused address is refused again on every try: not retried.
func TestRetryDoesNotRetryRefusals(t *testing.T) {
	for _, base := range []string{"http://169.254.169.254/v1", "http://10.0.0.1/v1"} {
		var rec retries
		m := WithRetry(newModel(t, Config{Provider: OpenAI, Model: "gpt-4o", BaseURL: base, APIKey: NewSecret("k")}),
			RetryPolicy{Max: 3, Base: time.Millisecond, OnRetry: rec.record})
		r := streamTurn(t, t.Context(), m, "hi")
		var re *egress.RefusedError
		if !errors.As(r.err, &re) || rec.count() != 0 {
			t.Errorf("%s: err %v, %d retries; want the refusal, not retried", base, r.err, rec.count())
		}
	}
	var hits atomic.Int32
	e := newModelsEndpoint(t, func(w http.ResponseWriter, r *http.Request) {
		hits.Add(1)
		http.Redirect(w, r, "http://169.254.169.254/", http.StatusTemporaryRedirect)
	})
	var rec retries
	m := WithRetry(newModel(t, Config{Provider: OpenAI, Model: "gpt-4o", BaseURL: e.URL + "/v1", APIKey: NewSecret("k")}),
		RetryPolicy{Max: 3, Base: time.Millisecond, OnRetry: rec.record})
	r := streamTurn(t, t.Context(), m, "hi")
	var re *egress.RedirectError
	if !errors.As(r.err, &re) || rec.count() != 0 || hits.Load() != 1 {
		t.Errorf("redirect: err %v, %d retries, %d requests", r.err, rec.count(), hits.Load())
	}
}

func TestParseError(t *testing.T) {
	for _, tc := range []struct {
		body string
		want APIError
		ok   bool
	}{
		{`{"error":{"message":"m","type":"invalid_request_error","code":"context_length_exceeded"}}`, APIError{"m", "invalid_request_error", "context_length_exceeded"}, true},
		{`{"type":"error","error":{"type":"overloaded_error","message":"Overloaded"}}`, APIError{"Overloaded", "overloaded_error", ""}, true},
		{`{"error":{"code":404,"message":"not here","type":"not_found_error"}}`, APIError{"not here", "not_found_error", "404"}, true},
		{`{"error":"model not found"}`, APIError{Message: "model not found"}, true},
		{`{"object":"error","message":"no model","type":"NotFoundError","code":404}`, APIError{"no model", "NotFoundError", "404"}, true},
		{`{"error":{"message":"m","type":"<script>","code":"a b"}}`, APIError{Message: "m"}, true},
		{`{"error":{"message":"two\nlines\t and \u001b[31m"}}`, APIError{Message: "two lines and [31m"}, true},
		{`{"detail":"x"}`, APIError{}, false},
		{`{"error":{"message":""}}`, APIError{}, false},
		{`{"error":{"message":{"nested":"x"}}}`, APIError{}, false},
		{`{"error":null,"message":"top"}`, APIError{Message: "top"}, true},
		{`<html>x</html>`, APIError{}, false},
		{`"just a string"`, APIError{}, false},
		{``, APIError{}, false},
	} {
		got, ok := ParseError([]byte(tc.body))
		if ok != tc.ok || got != tc.want {
			t.Errorf("ParseError(%s) = %+v, %v; want %+v, %v", tc.body, got, ok, tc.want, tc.ok)
		}
	}
	long, _ := ParseError([]byte(`{"error":"` + strings.Repeat("é", 1000) + `"}`))
	if len(long.Message) > MaxErrorMessage+len("…") || !strings.HasSuffix(long.Message, "…") || !strings.HasPrefix(long.Message, "éé") {
		t.Errorf("long message: %d bytes", len(long.Message))
	}
}

// The provider client cuts every error answer down before the SDK sees it;
// headers and status stay.
func TestErrorGuard(t *testing.T) {
	e := newModelsEndpoint(t, func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Retry-After", "7")
		w.Header().Set("Content-Type", "text/html")
		switch r.URL.Path {
		case "/html":
			w.WriteHeader(503)
			io.WriteString(w, "<html>INTERNAL</html>")
		case "/json":
			w.WriteHeader(429)
			io.WriteString(w, `{"error":{"message":"slow down","type":"rate_limit_error"},"internal":"INTERNAL"}`)
		case "/big":
			w.WriteHeader(400)
			io.WriteString(w, `{"error":{"message":"`+strings.Repeat("x", maxErrorAnswer)+`"}}`)
		default:
			io.WriteString(w, "<html>a 200 answer is left alone</html>")
		}
	})
	c := DefaultHTTPClient()
	for path, want := range map[string]string{
		"/html": `{"error":{"message":"` + NoErrorMessage + `"},"type":"error"}`,
		"/json": `{"error":{"message":"slow down","type":"rate_limit_error"},"type":"error"}`,
		"/big":  `{"error":{"message":"` + NoErrorMessage + `"},"type":"error"}`,
		"/ok":   "<html>a 200 answer is left alone</html>",
	} {
		resp, err := c.Get(e.URL + path)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if string(b) != want || resp.Header.Get("Retry-After") != "7" {
			t.Errorf("%s: %d %q (Retry-After %q), want %q", path, resp.StatusCode, b, resp.Header.Get("Retry-After"), want)
		}
		if path != "/ok" && (resp.Header.Get("Content-Type") != "application/json" || resp.ContentLength != int64(len(b))) {
			t.Errorf("%s: Content-Type %q, length %d", path, resp.Header.Get("Content-Type"), resp.ContentLength)
		}
	}
	if egress.PolicyOf(c.Transport) == nil || egress.PolicyOf(c.Transport).String() != "loopback" {
		t.Errorf("the default client's policy is %v", egress.PolicyOf(c.Transport))
	}
}

func TestHTTPClientPolicyOnModelCalls(t *testing.T) {
	fake := llmtest.NewOpenAI(llmtest.Turn{Text: "allowed"}).Attach(t)
	m := newModel(t, Config{Provider: OpenAICompatible, Model: "m", BaseURL: fake.BaseURL(), HTTPClient: HTTPClient(egress.PublicOnly())})
	r := streamTurn(t, context.Background(), m, "hi")
	var re *egress.RefusedError
	if !errors.As(r.err, &re) || len(fake.Requests()) != 0 {
		t.Errorf("under public: err %v, %d requests", r.err, len(fake.Requests()))
	}
	m = newModel(t, Config{Provider: OpenAICompatible, Model: "m", BaseURL: fake.BaseURL(), HTTPClient: HTTPClient(egress.PublicAndLoopback())})
	if r := streamTurn(t, context.Background(), m, "hi"); r.err != nil || r.text != "allowed" {
		t.Errorf("under loopback: %q, %v", r.text, r.err)
	}
}

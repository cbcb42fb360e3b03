package builtin

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"charm.land/fantasy"

	"github.com/execlaw/execlaw/internal/llm"
)

// TestProviderErrorBodiesNotReflected: a base URL can point at anything,
// so an error answer reaches the error_event only as the message of a JSON
// error; of any other answer only its status is shown. Checked for every
// provider, through the client the server uses (llm.HTTPClient, which cuts
// answers down) and through a plain client (describeError on its own).
func TestProviderErrorBodiesNotReflected(t *testing.T) {
	sb := startSandbox(t)
	answers := []struct {
		name, contentType, body string
		status                  int
		want                    string // in the error_event
	}{
		{"HTML page", "text/html", "<html><body>INTERNAL-ADMIN-PAGE token=abc</body></html>", 500, "HTTP 500): " + llm.NoErrorMessage},
		{"plain text", "text/plain", "INTERNAL-PLAIN-SECRET", 404, "HTTP 404): " + llm.NoErrorMessage},
		{"JSON without a message", "application/json", `{"detail":"INTERNAL-JSON-DETAIL","rows":[1,2]}`, 404, "HTTP 404): " + llm.NoErrorMessage},
		{"JSON error message", "application/json", `{"error":{"message":"prompt is too long","type":"invalid_request_error"}}`, 400, "HTTP 400): prompt is too long"},
		{"Ollama-style error string", "application/json", `{"error":"model \"qwen9\" not found, try pulling it first"}`, 404, `HTTP 404): model "qwen9" not found, try pulling it first`},
		{"vLLM-style top-level message", "application/json", `{"object":"error","message":"The model does not exist.","type":"NotFoundError","code":404}`, 404, "HTTP 404): The model does not exist."},
		{"long JSON message", "application/json", `{"error":{"message":"` + strings.Repeat("x", 5000) + `INTERNAL-TAIL"}}`, 400, "HTTP 400): xxx"},
	}
	clients := map[string]*http.Client{"server client": nil, "plain client": {}}
	for _, provider := range llm.Providers {
		for clientName, client := range clients {
			for _, a := range answers {
				t.Run(provider+"/"+clientName+"/"+a.name, func(t *testing.T) {
					srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
						w.Header().Set("Content-Type", a.contentType)
						w.WriteHeader(a.status)
						fmt.Fprint(w, a.body)
					}))
					defer srv.Close()
					r, err := New(t.Context(), Config{LLM: llm.Config{
						Provider: provider, Model: "some-model", APIKey: llm.NewSecret(testKey), BaseURL: srv.URL + "/v1", HTTPClient: client,
					}}, nil)
					if err != nil {
						t.Fatal(err)
					}
					s := newSink(t)
					if err := runTurn(t, testCtx(t), r, sb, "hi", s); err != nil {
						t.Fatal(err)
					}
					msgs := errorMessages(t, s)
					if len(msgs) != 1 {
						t.Fatalf("error events %q, want one", msgs)
					}
					if !strings.Contains(msgs[0], a.want) {
						t.Errorf("error event %q, want it to contain %q", msgs[0], a.want)
					}
					for _, secret := range []string{"INTERNAL", "<html", "token=abc", "rows"} {
						if strings.Contains(msgs[0], secret) {
							t.Errorf("error event %q shows the answer's body (%q)", msgs[0], secret)
						}
					}
					if len(msgs[0]) > 200+llm.MaxErrorMessage {
						t.Errorf("error event of %d bytes", len(msgs[0]))
					}
					for _, h := range s.history() {
						if strings.Contains(string(h), "INTERNAL") {
							t.Errorf("history shows the answer's body: %s", h)
						}
					}
				})
			}
		}
	}
}

// sdkError stands in for the SDKs' HTTP errors, which keep the JSON they parsed.
type sdkError struct{ raw string }

func (e sdkError) Error() string   { return "sdk error" }
func (e sdkError) RawJSON() string { return e.raw }

func TestProviderMessage(t *testing.T) {
	for _, tc := range []struct {
		pe   *fantasy.ProviderError
		want string
	}{
		// The OpenAI SDK found no JSON message and fantasy used the body.
		{&fantasy.ProviderError{StatusCode: 502, Message: "<h1>INTERNAL</h1>", Cause: sdkError{""}}, llm.NoErrorMessage},
		{&fantasy.ProviderError{StatusCode: 404, Message: `{"detail":"INTERNAL"}`, Cause: sdkError{""}}, llm.NoErrorMessage},
		// It found one: Message is that, and so is the raw JSON's.
		{&fantasy.ProviderError{StatusCode: 400, Message: "bad", Cause: fmt.Errorf("wrapped: %w", sdkError{`{"message":"bad","type":"x"}`})}, "bad"},
		// Not an SDK error (an in-stream error event): the message stands, cleaned.
		{&fantasy.ProviderError{Message: "overloaded"}, "overloaded"},
		{&fantasy.ProviderError{StatusCode: 500, Message: ""}, llm.NoErrorMessage},
		{&fantasy.ProviderError{StatusCode: 500, Message: "line one\nline two\x1b[31m"}, "line one line two [31m"},
	} {
		if got := providerMessage(tc.pe); got != tc.want {
			t.Errorf("providerMessage(%q) = %q, want %q", tc.pe.Message, got, tc.want)
		}
	}
	if got := describeError(context.Background(), fmt.Errorf("x: %s", strings.Repeat("y", 3000))); len(got) > 600 {
		t.Errorf("describeError of a long error is %d bytes", len(got))
	}
}

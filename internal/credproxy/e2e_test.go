package credproxy_test

import (
	"context"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"charm.land/fantasy"

	"github.com/execlaw/execlaw/internal/credproxy"
	"github.com/execlaw/execlaw/internal/guest"
	"github.com/execlaw/execlaw/internal/llm"
	"github.com/execlaw/execlaw/internal/llm/llmtest"
)

// startGuest runs a real guest control server on a Unix socket, as the
// process driver does, and returns the host's client for it.
func startGuest(t *testing.T) *guest.Client {
	t.Helper()
	dir := t.TempDir()
	ws := filepath.Join(dir, "ws")
	if err := os.MkdirAll(ws, 0o755); err != nil {
		t.Fatal(err)
	}
	sock := filepath.Join(dir, "g.sock")
	ln, err := guest.Listen("unix:" + sock)
	if err != nil {
		t.Fatal(err)
	}
	srv := guest.NewServer(guest.ServerConfig{Workspace: ws})
	ctx, cancel := context.WithCancel(context.Background())
	served := make(chan error, 1)
	go func() { served <- srv.Serve(ctx, ln) }()
	c := guest.NewClient(guest.UnixDialer(sock))
	t.Cleanup(func() {
		cancel()
		if err := <-served; err != nil {
			t.Errorf("guest Serve: %v", err)
		}
		c.Close()
	})
	return c
}

func freePort(t *testing.T) int {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port
}

// TestThroughGuestTunnel is the whole path an agent CLI in a VM takes: its
// SDK, holding only the session token, calls 127.0.0.1:port in the guest;
// the guest carries the connection over the control channel to the host;
// the proxy adds the real key and streams the fake provider's answer back.
func TestThroughGuestTunnel(t *testing.T) {
	const realKey = "sk-real-key-for-the-e2e-test-0123456789"
	c := startGuest(t)
	tests := []struct {
		provider, model, tunnel string
		newFake                 func(...llmtest.Turn) *llmtest.Server
		base                    func(port int) string
		keyHeader, keyValue     string
	}{
		{llm.Anthropic, "claude-sonnet-4-20250514", "anthropic", llmtest.NewAnthropic,
			func(port int) string { return "http://127.0.0.1:" + strconv.Itoa(port) },
			"X-Api-Key", realKey},
		{llm.OpenAI, "gpt-4o", "openai", llmtest.NewOpenAI,
			func(port int) string { return "http://127.0.0.1:" + strconv.Itoa(port) + "/v1" },
			"Authorization", "Bearer " + realKey},
	}
	for _, tc := range tests {
		t.Run(tc.provider, func(t *testing.T) {
			turn := llmtest.Turn{Text: "Hello through the tunnel, in several deltas.", InputTokens: 12, OutputTokens: 6}
			fake := tc.newFake(turn).Attach(t)
			fakeBase := fake.URL()
			if tc.provider != llm.Anthropic {
				fakeBase = fake.BaseURL()
			}
			usage := make(chan credproxy.Usage, 4)
			token := credproxy.NewToken()
			p, err := credproxy.New(credproxy.Config{
				Provider: tc.provider,
				BaseURL:  fakeBase,
				APIKey:   llm.NewSecret(realKey),
				Token:    token,
				OnUsage:  func(u credproxy.Usage) { usage <- u },
			})
			if err != nil {
				t.Fatal(err)
			}

			ctx, cancel := context.WithCancel(t.Context())
			port := freePort(t)
			// Listening first means the agent below can connect at once.
			if err := c.TunnelListen(ctx, tc.tunnel, port); err != nil {
				t.Fatal(err)
			}
			tunnelDone := make(chan error, 1)
			go func() { tunnelDone <- guest.ServeTunnel(ctx, c, tc.tunnel, port, p.ServeConn) }()
			defer func() {
				cancel()
				if err := <-tunnelDone; err != nil {
					t.Errorf("ServeTunnel: %v", err)
				}
			}()

			// The agent: the provider's SDK with the token as its key.
			model, err := llm.NewModel(ctx, llm.Config{
				Provider: tc.provider,
				Model:    tc.model,
				APIKey:   llm.NewSecret(token),
				BaseURL:  tc.base(port),
			})
			if err != nil {
				t.Fatal(err)
			}
			sctx, scancel := context.WithTimeout(ctx, 30*time.Second)
			defer scancel()
			stream, err := model.Stream(sctx, fantasy.Call{Prompt: fantasy.Prompt{fantasy.NewUserMessage("hi")}})
			if err != nil {
				t.Fatal(err)
			}
			var text strings.Builder
			deltas := 0
			for part := range stream {
				switch part.Type {
				case fantasy.StreamPartTypeTextDelta:
					text.WriteString(part.Delta)
					deltas++
				case fantasy.StreamPartTypeError:
					t.Fatalf("stream error: %v", part.Error)
				}
			}
			if text.String() != turn.Text || deltas < 2 {
				t.Errorf("text %q in %d deltas, want %q", text.String(), deltas, turn.Text)
			}

			select {
			case u := <-usage:
				if u.Model != tc.model || u.InputTokens != 12 || u.OutputTokens != 6 {
					t.Errorf("usage %+v", u)
				}
			case <-time.After(10 * time.Second):
				t.Fatal("no usage counted")
			}
			reqs := fake.Requests()
			if len(reqs) != 1 {
				t.Fatalf("upstream got %d requests", len(reqs))
			}
			if got := reqs[0].Header.Get(tc.keyHeader); got != tc.keyValue {
				t.Errorf("upstream got %s %q, want the real key", tc.keyHeader, got)
			}
		})
	}
}

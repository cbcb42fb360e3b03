package vmtest

import (
	"context"
	"io"
	"net/http"
	"net/http/cookiejar"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/coder/websocket"

	"github.com/execlaw/execlaw/internal/apitest"
	"github.com/execlaw/execlaw/internal/guest"
	"github.com/execlaw/execlaw/internal/network"
	"github.com/execlaw/execlaw/internal/session"
	"github.com/execlaw/execlaw/internal/testutil"
)

// vmTerm reads a terminal WebSocket until its output holds want.
func vmTerm(t *testing.T, c *websocket.Conn, out *strings.Builder, want string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
	defer cancel()
	for !strings.Contains(out.String(), want) {
		typ, b, err := c.Read(ctx)
		if err != nil {
			t.Fatalf("terminal ended before %q: %v; output %q", want, err, out.String())
		}
		if typ == websocket.MessageBinary {
			out.Write(b)
		}
	}
}

// TestTerminalAndPreviewInVM: a terminal is a login shell in the VM's
// workspace on a pseudo-terminal of the asked size, that resizes, and whose
// shell is killed when it closes; a web server started in the VM is listed
// with a preview URL that reaches it through the guest's port forwarding.
func TestTerminalAndPreviewInVM(t *testing.T) {
	tb, pfx := newTestbed(t)
	e := newServerWith(t, tb, pfx, network.Config{NetNSPrefix: pfx + "s-", DNS: []netip.Addr{netip.MustParseAddr("192.0.2.53")}},
		testutil.VMImage(t), 2, nil, func(o *apitest.Options) { o.PreviewPorts = 1 })
	id := e.session(t, "none")

	began := time.Now()
	ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
	defer cancel()
	u := "ws" + strings.TrimPrefix(e.h.URL("/api/sessions/"+id+"/terminal?cols=90&rows=33"), "http")
	c, _, err := websocket.Dial(ctx, u, &websocket.DialOptions{HTTPHeader: e.h.AuthHeader()})
	if err != nil {
		t.Fatal(err)
	}
	defer c.CloseNow()
	var out strings.Builder
	send := func(s string) {
		if err := c.Write(ctx, websocket.MessageBinary, []byte(s)); err != nil {
			t.Fatal(err)
		}
	}
	send("stty size; echo in-$(pwd)-$((6*7)); echo $$ > /tmp/shell.pid\r")
	vmTerm(t, c, &out, "33 90")
	vmTerm(t, c, &out, "in-/workspace-42")
	t.Logf("terminal answered %s after it was asked for", time.Since(began).Round(time.Millisecond))
	if err := c.Write(ctx, websocket.MessageText, []byte(`{"type":"resize","cols":120,"rows":40}`)); err != nil {
		t.Fatal(err)
	}
	send("stty size\r")
	vmTerm(t, c, &out, "40 120")

	live, err := e.h.Mgr.Live(ctx, session.User{ID: "owner"}, id)
	if err != nil {
		t.Fatal(err)
	}
	run := func(cmd string) string {
		var b strings.Builder
		res, err := live.Guest.Exec(ctx, guest.ExecRequest{Argv: []string{"bash", "-c", cmd}}, func(_ string, d []byte) { b.Write(d) })
		if err != nil || res.ExitCode != 0 {
			t.Fatalf("%s: %v %+v %s", cmd, err, res, b.String())
		}
		return b.String()
	}
	pid := strings.TrimSpace(run("cat /tmp/shell.pid"))
	c.Close(websocket.StatusNormalClosure, "")
	deadline := time.Now().Add(30 * time.Second)
	for strings.TrimSpace(run("test -d /proc/"+pid+" && echo alive || echo gone")) != "gone" {
		if time.Now().After(deadline) {
			t.Fatalf("the shell %s still runs after its terminal closed", pid)
		}
		time.Sleep(100 * time.Millisecond)
	}

	// A tiny web server (the minimal image has no python): a static Go
	// program, written into the VM and run there.
	src := filepath.Join(t.TempDir(), "main.go")
	if err := os.WriteFile(src, []byte(`package main

import ("fmt"; "net/http")

func main() {
	http.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) { fmt.Fprintf(w, "hello from the VM: %s %s", r.Host, r.URL.Path) })
	panic(http.ListenAndServe("127.0.0.1:3000", nil))
}
`), 0o644); err != nil {
		t.Fatal(err)
	}
	bin := filepath.Join(t.TempDir(), "app")
	build := exec.Command("go", "build", "-trimpath", "-ldflags=-s -w", "-o", bin, src)
	build.Env = append(os.Environ(), "CGO_ENABLED=0", "GOOS=linux", "GOARCH=amd64", "GOFLAGS=")
	build.Dir = filepath.Dir(src)
	if b, err := build.CombinedOutput(); err != nil {
		t.Fatalf("build the app: %v\n%s", err, b)
	}
	data, err := os.ReadFile(bin)
	if err != nil {
		t.Fatal(err)
	}
	if err := live.Guest.Write(ctx, guest.WriteRequest{Path: "/tmp/app", Data: data, Mode: 0o755}); err != nil {
		t.Fatal(err)
	}
	app, err := live.Guest.Attach(ctx, guest.ExecRequest{Argv: []string{"/tmp/app"}})
	if err != nil {
		t.Fatal(err)
	}
	defer app.Close()

	var purl string
	for purl == "" {
		var a struct {
			Ports []struct {
				Port       int    `json:"port"`
				PreviewURL string `json:"previewUrl"`
			} `json:"ports"`
		}
		e.h.Must(http.StatusOK, "GET", "/api/sessions/"+id+"/ports", nil).JSON(t, &a)
		for _, p := range a.Ports {
			if p.Port == 3000 {
				purl = p.PreviewURL
			}
		}
		if time.Now().After(deadline.Add(30 * time.Second)) {
			t.Fatalf("port 3000 never listed: %+v", a)
		}
		time.Sleep(300 * time.Millisecond) // within the listings rate
	}
	jar, _ := cookiejar.New(nil)
	client := &http.Client{Jar: jar, Timeout: time.Minute}
	resp, err := client.Get(purl)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK || string(body) != "hello from the VM: localhost:3000 /" {
		t.Fatalf("preview: %d %q", resp.StatusCode, body)
	}
	resp, err = client.Get(strings.Split(purl, "/.execlaw")[0] + "/deeper/page")
	if err != nil {
		t.Fatal(err)
	}
	body, _ = io.ReadAll(resp.Body)
	resp.Body.Close()
	if string(body) != "hello from the VM: localhost:3000 /deeper/page" {
		t.Errorf("preview, second page: %d %q", resp.StatusCode, body)
	}
}

package api_test

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"net/http/cookiejar"
	"net/url"
	"os/exec"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/coder/websocket"

	"github.com/execlaw/execlaw/internal/api"
	"github.com/execlaw/execlaw/internal/apitest"
	"github.com/execlaw/execlaw/internal/guest"
	"github.com/execlaw/execlaw/internal/session"
)

// previewApp is a small web app for the sandbox: it tells what it was
// sent, sets cookies (one named like ExeClaw's, which must not get
// through), and echoes WebSocket text frames (as dev servers' hot reload
// channels use them).
const previewApp = `
import base64, hashlib, http.server, json, socketserver, struct, sys
class H(http.server.BaseHTTPRequestHandler):
    def log_message(self, *a): pass
    def do_GET(self):
        if self.path == "/ws":
            key = self.headers["Sec-WebSocket-Key"]
            acc = base64.b64encode(hashlib.sha1((key + "258EAFA5-E914-47DA-95CA-C5AB0DC85B11").encode()).digest()).decode()
            self.send_response(101); self.send_header("Upgrade", "websocket"); self.send_header("Connection", "Upgrade")
            self.send_header("Sec-WebSocket-Accept", acc); self.end_headers(); self.wfile.flush()
            s = self.connection
            def recv(n):
                b = b""
                while len(b) < n:
                    c = s.recv(n - len(b))
                    if not c: raise EOFError
                    b += c
                return b
            while True:
                h = recv(2); op = h[0] & 15; n = h[1] & 127
                if n == 126: n = struct.unpack(">H", recv(2))[0]
                elif n == 127: n = struct.unpack(">Q", recv(8))[0]
                mask = recv(4); data = bytes(b ^ mask[i % 4] for i, b in enumerate(recv(n)))
                if op == 8: return
                out = b"echo:" + data
                s.sendall(bytes([0x81, len(out)]) + out)
        body = json.dumps({"path": self.path, "host": self.headers.get("Host"), "cookie": self.headers.get("Cookie", ""),
            "xfh": self.headers.get("X-Forwarded-Host", ""), "exedev": self.headers.get("X-ExeDev-UserID", "")}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Set-Cookie", "app=1; Path=/")
        self.send_header("Set-Cookie", "execlaw_session=tossed; Path=/")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers(); self.wfile.write(body)
class S(socketserver.ThreadingMixIn, http.server.HTTPServer): daemon_threads = True
srv = S(("127.0.0.1", 0), H)
print("port", srv.server_address[1], flush=True)
srv.serve_forever()
`

// startApp runs previewApp in the session's sandbox and returns its port.
func startApp(t *testing.T, h *apitest.Harness, id string) int {
	t.Helper()
	if _, err := exec.LookPath("python3"); err != nil {
		t.Fatal("python3 is not installed (scripts/deps.sh --test installs it): the preview tests serve an app with it")
	}
	live, err := h.Mgr.Live(t.Context(), session.User{ID: userOf(h)}, id)
	if err != nil {
		t.Fatal(err)
	}
	att, err := live.Guest.Attach(t.Context(), guest.ExecRequest{Argv: []string{"python3", "-c", previewApp}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { att.Close() })
	var out string
	for {
		f, err := att.Next()
		if err != nil || (f.Type != guest.FrameStdout && f.Type != guest.FrameStderr) {
			t.Fatalf("the app did not start: %v %+v %q", err, f, out)
		}
		out += string(f.Data)
		if m := regexp.MustCompile(`port (\d+)\n`).FindStringSubmatch(out); m != nil {
			p, _ := strconv.Atoi(m[1])
			return p
		}
	}
}

func userOf(h *apitest.Harness) string {
	switch h.Opts.Auth.Mode {
	case api.AuthExeDev:
		return h.AuthHeader().Get("X-ExeDev-UserID")
	case api.AuthNone:
		return "local"
	}
	return "owner"
}

type portsAnswer struct {
	Ports []struct {
		Port        int    `json:"port"`
		Address     string `json:"address"`
		PreviewURL  string `json:"previewUrl"`
		PreviewNote string `json:"previewNote"`
	} `json:"ports"`
	Previews bool `json:"previews"`
}

// previewURLOf polls the ports route until port is listed, and returns its
// preview URL.
func previewURLOf(t *testing.T, h *apitest.Harness, id string, port int) string {
	t.Helper()
	deadline := time.Now().Add(apitest.Wait)
	for {
		var a portsAnswer
		h.Must(http.StatusOK, "GET", "/api/sessions/"+id+"/ports", nil).JSON(t, &a)
		for _, p := range a.Ports {
			if p.Port == port {
				if p.PreviewURL == "" {
					t.Fatalf("port %d has no preview URL: %+v", port, p)
				}
				return p.PreviewURL
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("port %d never listed: %+v", port, a)
		}
		time.Sleep(300 * time.Millisecond) // within the listings rate
	}
}

// browser is an HTTP client with a cookie jar, as a browser tab would be.
func browser(t *testing.T) *http.Client {
	jar, err := cookiejar.New(nil)
	if err != nil {
		t.Fatal(err)
	}
	return &http.Client{Jar: jar, Timeout: apitest.Wait}
}

type appSaw struct {
	Path, Host, Cookie, Xfh, Exedev string
}

func getJSON(t *testing.T, c *http.Client, u string, hdr http.Header) (int, appSaw, *http.Response) {
	t.Helper()
	req, _ := http.NewRequest("GET", u, nil)
	for k, v := range hdr {
		req.Header[k] = v
	}
	resp, err := c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	var saw appSaw
	if resp.StatusCode == http.StatusOK {
		if err := json.Unmarshal(b, &saw); err != nil {
			t.Fatalf("%s: %q", u, b)
		}
	}
	return resp.StatusCode, saw, resp
}

// TestPreview: a port a program in the sandbox listens on is listed with a
// preview URL on a preview port; its grant becomes the preview origin's
// cookie, and requests (and WebSockets) reach the app without ExeClaw's
// cookies or identity, whose own cookies cannot be set from there.
func TestPreview(t *testing.T) {
	h := apitest.New(t, apitest.Options{PreviewPorts: 2})
	s := newIdleSession(t, h)
	port := startApp(t, h, s.ID)
	purl := previewURLOf(t, h, s.ID, port)
	u, _ := url.Parse(purl)
	slot := h.PreviewTS[0].URL
	if !strings.HasPrefix(u.Path, "/.execlaw-preview") || u.Query().Get("grant") == "" || !strings.HasSuffix(slot, ":"+u.Port()) {
		t.Fatalf("preview URL %s (preview ports %s, %s)", purl, h.PreviewTS[0].URL, h.PreviewTS[1].URL)
	}
	// Previews are on another host name than the one the API was reached by.
	if mainHost, _ := url.Parse(h.TS.URL); mainHost.Hostname() == u.Hostname() {
		t.Errorf("preview host %s is the API's", u.Hostname())
	}

	b := browser(t)
	status, saw, resp := getJSON(t, b, purl, nil)
	if status != http.StatusOK || saw.Path != "/" || saw.Host != "localhost:"+strconv.Itoa(port) || saw.Xfh != u.Host {
		t.Fatalf("first visit: %d %+v", status, saw)
	}
	if resp.Request.URL.RawQuery != "" {
		t.Errorf("the grant stayed in the address: %s", resp.Request.URL)
	}
	for _, c := range resp.Cookies() {
		if strings.HasPrefix(c.Name, "execlaw_") {
			t.Errorf("the app set ExeClaw's cookie %s", c.Name)
		}
	}
	// The browser also sends this host's other cookies (cookies ignore
	// ports): the login cookie must never reach the app, the app's own do.
	origin := u.Scheme + "://" + u.Host
	status, saw, _ = getJSON(t, b, origin+"/page?x=1", http.Header{
		"Cookie":          {"execlaw_session=" + strings.Repeat("a", 64) + "; mine=2"},
		"X-Exedev-Userid": {"alice"},
	})
	if status != http.StatusOK || saw.Path != "/page?x=1" || strings.Contains(saw.Cookie, "execlaw") ||
		!strings.Contains(saw.Cookie, "app=1") || !strings.Contains(saw.Cookie, "mine=2") || saw.Exedev != "" {
		t.Errorf("second visit: %d %+v", status, saw)
	}
	// The API does not answer on a preview origin: that path is the app's.
	status, saw, _ = getJSON(t, b, origin+"/api/sessions", h.AuthHeader())
	if status != http.StatusOK || saw.Path != "/api/sessions" {
		t.Errorf("/api/sessions on the preview origin: %d %+v", status, saw)
	}
	// A WebSocket (hot reload) goes through too.
	ctx, cancel := context.WithTimeout(t.Context(), apitest.Wait)
	defer cancel()
	ws, _, err := websocket.Dial(ctx, "ws"+strings.TrimPrefix(origin, "http")+"/ws", &websocket.DialOptions{HTTPClient: b})
	if err != nil {
		t.Fatal(err)
	}
	defer ws.CloseNow()
	if err := ws.Write(ctx, websocket.MessageText, []byte("reload?")); err != nil {
		t.Fatal(err)
	}
	if _, msg, err := ws.Read(ctx); err != nil || string(msg) != "echo:reload?" {
		t.Errorf("WebSocket through the preview: %q %v", msg, err)
	}

	// Another browser without the grant gets nothing; nor with the cookie
	// on the other preview port; nor with the main origin's credentials.
	if status, _, _ := getJSON(t, browser(t), origin+"/", h.AuthHeader()); status != http.StatusUnauthorized {
		t.Errorf("no cookie: %d", status)
	}
	other, _ := url.Parse(h.PreviewTS[1].URL)
	var cookie string
	for _, c := range b.Jar.Cookies(&url.URL{Scheme: "http", Host: u.Host}) {
		if strings.HasPrefix(c.Name, "execlaw_preview") {
			cookie = c.Name + "=" + c.Value
		}
	}
	if status, _, _ := getJSON(t, http.DefaultClient, "http://"+u.Hostname()+":"+other.Port()+"/", http.Header{"Cookie": {cookie}}); status == http.StatusOK {
		t.Errorf("a preview cookie worked on another preview port")
	}
	// The preview path means nothing on the main origin.
	if r := h.Do("GET", "/.execlaw-preview?grant=x", nil, nil); r.Status != http.StatusNotFound {
		t.Errorf("the main origin answered the preview path: %d", r.Status)
	}
}

// TestPreviewGrants: grants that are forged, expired, for another session,
// another port or another origin are refused.
func TestPreviewGrants(t *testing.T) {
	h := apitest.New(t, apitest.Options{PreviewPorts: 2, Auth: api.Auth{Mode: api.AuthExeDev},
		Preview: api.PreviewOptions{GrantTTL: 2 * time.Second}})
	a := newIdleSession(t, h)
	b := newIdleSession(t, h)
	pa := startApp(t, h, a.ID)
	pb := startApp(t, h, b.ID)
	ua := previewURLOf(t, h, a.ID, pa)
	ub := previewURLOf(t, h, b.ID, pb)
	pua, _ := url.Parse(ua)
	pub, _ := url.Parse(ub)
	if pua.Port() == pub.Port() {
		t.Fatalf("two previews share a port: %s %s", ua, ub)
	}
	grantOf := func(u *url.URL) string { return u.Query().Get("grant") }
	at := func(u *url.URL, grant string) string {
		return u.Scheme + "://" + u.Host + "/.execlaw-preview?grant=" + url.QueryEscape(grant)
	}
	payload, sig, _ := strings.Cut(grantOf(pua), ".")
	raw, _ := base64.RawURLEncoding.DecodeString(payload)
	var tok map[string]any
	_ = json.Unmarshal(raw, &tok)
	tok["p"] = float64(pb)
	changed, _ := json.Marshal(tok)
	forgedPort := base64.RawURLEncoding.EncodeToString(changed) + "." + sig

	for name, u := range map[string]string{
		"b's grant on a's preview port":    at(pua, grantOf(pub)),
		"a's grant on b's preview port":    at(pub, grantOf(pua)),
		"a grant with another port signed": at(pua, forgedPort),
		"a bad signature":                  at(pua, payload+".AAAA"),
		"no grant":                         at(pua, ""),
		"garbage":                          at(pua, "x.y.z"),
	} {
		if status, _, _ := getJSON(t, browser(t), u, nil); status != http.StatusForbidden {
			t.Errorf("%s: %d, want 403", name, status)
		}
	}
	// Someone else does not see the ports, and gets no grant.
	if r := h.Do("GET", "/api/sessions/"+a.ID+"/ports", nil, http.Header{"X-Exedev-Userid": {"mallory"}}); r.Status != http.StatusNotFound {
		t.Errorf("someone else's ports: %d", r.Status)
	}
	// The right grant works, until it expires.
	if status, _, _ := getJSON(t, browser(t), ua, nil); status != http.StatusOK {
		t.Errorf("a's own grant: %d", status)
	}
	time.Sleep(2100 * time.Millisecond)
	if status, _, _ := getJSON(t, browser(t), ua, nil); status != http.StatusForbidden {
		t.Errorf("an expired grant: %d, want 403", status)
	}
	// The session's end ends its previews.
	c := browser(t)
	if status, _, _ := getJSON(t, c, previewURLOf(t, h, b.ID, pb), nil); status != http.StatusOK {
		t.Fatalf("b's preview: %d", status)
	}
	h.Must(http.StatusOK, "DELETE", "/api/sessions/"+b.ID, nil)
	if status, _, _ := getJSON(t, c, pub.Scheme+"://"+pub.Host+"/", nil); status == http.StatusOK {
		t.Errorf("a preview of an ended session answered")
	}
}

// TestPreviewDomain: with --preview-domain, PORT-SESSION.domain names are
// previews wherever they arrive, before the allowed-hosts check, and the
// API's own names are not.
func TestPreviewDomain(t *testing.T) {
	h := apitest.New(t, apitest.Options{Preview: api.PreviewOptions{Domain: "preview.test"}})
	s := newIdleSession(t, h)
	port := startApp(t, h, s.ID)
	purl := previewURLOf(t, h, s.ID, port)
	u, _ := url.Parse(purl)
	want := strconv.Itoa(port) + "-" + strings.TrimPrefix(s.ID, "s_") + ".preview.test"
	if u.Host != want {
		t.Fatalf("preview URL %s, want host %s", purl, want)
	}
	// Send it to the test server under that name.
	c := browser(t)
	main, _ := url.Parse(h.TS.URL)
	c.Transport = &http.Transport{DialContext: func(ctx context.Context, network, _ string) (net.Conn, error) {
		var d net.Dialer
		return d.DialContext(ctx, network, main.Host)
	}}
	status, saw, _ := getJSON(t, c, purl, nil)
	if status != http.StatusOK || saw.Path != "/" || saw.Xfh != want {
		t.Fatalf("domain preview: %d %+v", status, saw)
	}
	// Another session's name under the domain with this cookie: refused.
	other := strings.Replace(purl, want, strconv.Itoa(port)+"-000000000000000000000000.preview.test", 1)
	if status, _, _ := getJSON(t, c, other, nil); status != http.StatusForbidden {
		t.Errorf("another session's name: %d, want 403", status)
	}
	// A name that is not PORT-SESSION is not a preview, and not allowed.
	req, _ := http.NewRequest("GET", h.TS.URL+"/api/health", nil)
	req.Host = "www.preview.test"
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusMisdirectedRequest {
		t.Errorf("www.preview.test: %d, want 421", resp.StatusCode)
	}
}

// TestPreviewHost: --preview-host names preview ports' URLs, and the
// preview ports answer to it though it is not an allowed host of the UI.
func TestPreviewHost(t *testing.T) {
	h := apitest.New(t, apitest.Options{PreviewPorts: 1, Preview: api.PreviewOptions{Host: "Previews.Test"}})
	s := newIdleSession(t, h)
	port := startApp(t, h, s.ID)
	purl := previewURLOf(t, h, s.ID, port)
	u, _ := url.Parse(purl)
	slot, _ := url.Parse(h.PreviewTS[0].URL)
	if u.Hostname() != "previews.test" || u.Port() != slot.Port() {
		t.Fatalf("preview URL %s", purl)
	}
	c := browser(t)
	c.Transport = &http.Transport{DialContext: func(ctx context.Context, network, _ string) (net.Conn, error) {
		var d net.Dialer
		return d.DialContext(ctx, network, slot.Host)
	}}
	if status, saw, _ := getJSON(t, c, purl, nil); status != http.StatusOK || saw.Path != "/" {
		t.Fatalf("preview at its host: %d %+v", status, saw)
	}
	// Any other name is refused there, as on the UI.
	if status, _, _ := getJSON(t, c, "http://elsewhere.test:"+slot.Port()+"/", nil); status != http.StatusMisdirectedRequest {
		t.Errorf("another host name: %d, want 421", status)
	}
}

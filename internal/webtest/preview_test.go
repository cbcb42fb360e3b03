package webtest

import (
	"fmt"
	"os/exec"
	"regexp"
	"strconv"
	"strings"
	"testing"

	"github.com/chromedp/chromedp"

	"github.com/execlaw/execlaw/internal/api"
	"github.com/execlaw/execlaw/internal/apitest"
	"github.com/execlaw/execlaw/internal/guest"
	"github.com/execlaw/execlaw/internal/llm/llmtest"
	"github.com/execlaw/execlaw/internal/session"
)

// hostileApp is a previewed app that tries to reach ExeClaw from its page:
// it reads document.cookie, calls the API of the main origin (argv[1]) with
// credentials, and asks its own server which cookies it was sent.
const hostileApp = `
import http.server, json, sys
MAIN = sys.argv[1]
PAGE = """<!doctype html><title>app</title><body>app<script>
(async () => {
  const r = {cookie: document.cookie};
  try {
    const resp = await fetch(%s + '/api/sessions', {credentials: 'include'});
    r.api = 'read ' + resp.status + ' ' + (await resp.text()).slice(0, 80);
  } catch (e) { r.api = 'blocked'; }
  r.seen = await (await fetch('/seen')).text();
  document.body.dataset.result = JSON.stringify(r);
})();
</script></body>""" % json.dumps(MAIN)
class H(http.server.BaseHTTPRequestHandler):
    def log_message(self, *a): pass
    def do_GET(self):
        body = (self.headers.get("Cookie", "") if self.path == "/seen" else PAGE).encode()
        self.send_response(200)
        self.send_header("Content-Type", "text/plain" if self.path == "/seen" else "text/html")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers(); self.wfile.write(body)
srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), H)
print("port", srv.server_address[1], flush=True)
srv.serve_forever()
`

// TestPreviewCannotReachExeClaw: the preview link in the status bar opens
// the app on an origin of its own, from whose page ExeClaw's login cookie
// cannot be read, is not sent to the app, and the API cannot be read. Both
// with previews on another host name (the default: 127.0.0.1 <-> localhost)
// and on the very host name of the UI, whose cookies the browser then sends
// to the preview port too.
func TestPreviewCannotReachExeClaw(t *testing.T) {
	if _, err := exec.LookPath("python3"); err != nil {
		t.Fatal("python3 is not installed (scripts/deps.sh --test installs it): the preview tests serve an app with it")
	}
	for _, sameHost := range []bool{false, true} {
		t.Run("sameHost="+strconv.FormatBool(sameHost), func(t *testing.T) {
			opts := apitest.Options{PreviewPorts: 1}
			if sameHost {
				opts.Preview = api.PreviewOptions{Host: "127.0.0.1"}
			}
			fake := llmtest.NewAnthropic().Attach(t)
			h := apitest.New(t, opts)
			p := openPage(t, h, pageOptions{})
			id := p.createSession(fake, "preview")
			live, err := h.Mgr.Live(t.Context(), session.User{ID: "owner"}, id)
			if err != nil {
				t.Fatal(err)
			}
			att, err := live.Guest.Attach(t.Context(), guest.ExecRequest{Argv: []string{"python3", "-c", hostileApp, h.TS.URL}})
			if err != nil {
				t.Fatal(err)
			}
			defer att.Close()
			var out string
			for !regexp.MustCompile(`port \d+\n`).MatchString(out) {
				f, err := att.Next()
				if err != nil || (f.Type != guest.FrameStdout && f.Type != guest.FrameStderr) {
					t.Fatalf("the app did not start: %v %+v %q", err, f, out)
				}
				out += string(f.Data)
			}
			port := regexp.MustCompile(`port (\d+)`).FindStringSubmatch(out)[1]

			sel := fmt.Sprintf(`%s .st-ports .preview-link[data-port="%s"]`, panel(id), port)
			p.waitFor("the port's preview link", fmt.Sprintf(`!!document.querySelector(%s)`, jsStr(sel)))
			link := eval[string](p, fmt.Sprintf(`document.querySelector(%s).href`, jsStr(sel)))
			if !strings.Contains(eval[string](p, fmt.Sprintf(`document.querySelector(%s).closest('.port').textContent`, jsStr(sel))), "port "+port+" is open") {
				t.Error("the status bar does not say the port is open")
			}
			if rel := eval[string](p, fmt.Sprintf(`document.querySelector(%s).rel`, jsStr(sel))); !strings.Contains(rel, "noopener") {
				t.Errorf("preview link rel %q", rel)
			}
			p.do(chromedp.Navigate(link))
			p.waitFor("the app's checks", `document.body && !!document.body.dataset.result`)
			res := eval[map[string]string](p, `JSON.parse(document.body.dataset.result)`)
			if strings.Contains(res["cookie"], "execlaw") {
				t.Errorf("the preview page reads ExeClaw's cookies: %q", res["cookie"])
			}
			if res["api"] != "blocked" {
				t.Errorf("the preview page read the API: %q", res["api"])
			}
			if strings.Contains(res["seen"], "execlaw") {
				t.Errorf("the app was sent ExeClaw's cookies: %q", res["seen"])
			}
			if origin := eval[string](p, `location.origin`); strings.HasPrefix(h.TS.URL, origin) {
				t.Errorf("the preview runs on the UI's origin %s", origin)
			}
		})
	}
}

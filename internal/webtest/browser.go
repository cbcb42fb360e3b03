// Package webtest tests the web UI in a real browser: Debian's Chromium,
// headless, driven by chromedp against the real server (internal/apitest)
// with the fake LLM. This file starts the browser; the tests are beside it.
package webtest

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"

	"github.com/chromedp/chromedp"
)

// ChromiumPaths are where the browser is looked for, in order; the
// EXECLAW_CHROMIUM environment variable comes first when set.
var ChromiumPaths = []string{"/usr/bin/chromium", "/usr/bin/chromium-browser", "/usr/bin/google-chrome"}

// FindChromium returns the browser to run, or an error that says how to
// install it.
func FindChromium() (string, error) {
	cands := ChromiumPaths
	if p := os.Getenv("EXECLAW_CHROMIUM"); p != "" {
		cands = append([]string{p}, cands...)
	}
	for _, p := range cands {
		if _, err := os.Stat(p); err == nil {
			return p, nil
		}
	}
	if p, err := exec.LookPath("chromium"); err == nil {
		return p, nil
	}
	return "", errors.New("no Chromium found (looked in /usr/bin); install it with `scripts/deps.sh --test` or `apt-get install chromium`, or set EXECLAW_CHROMIUM")
}

// Start launches one headless Chromium with a fresh profile in userDataDir
// and returns a context whose tabs (chromedp.NewContext of it) share that
// browser. Cancel stops the browser.
//
// The flags work as root in a container, and keep Chromium from reaching
// out to the network on its own (which floods a closed network with refused
// connections).
func Start(userDataDir string) (context.Context, context.CancelFunc, error) {
	path, err := FindChromium()
	if err != nil {
		return nil, nil, err
	}
	opts := append(chromedp.DefaultExecAllocatorOptions[:],
		chromedp.ExecPath(path),
		chromedp.UserDataDir(userDataDir),
		chromedp.NoSandbox,
		chromedp.DisableGPU,
		chromedp.Flag("disable-quic", true),
		chromedp.Flag("no-first-run", true),
		chromedp.Flag("disable-background-networking", true),
		chromedp.Flag("disable-component-update", true),
		chromedp.Flag("disable-sync", true),
		chromedp.Flag("disable-domain-reliability", true),
		chromedp.Flag("no-pings", true),
		chromedp.Flag("hide-scrollbars", true),
		chromedp.Flag("lang", "en-US"),
		chromedp.WindowSize(1280, 900),
	)
	allocCtx, cancelAlloc := chromedp.NewExecAllocator(context.Background(), opts...)
	ctx, cancelBrowser := chromedp.NewContext(allocCtx)
	if err := chromedp.Do(ctx); err != nil { // starts the browser
		cancelBrowser()
		cancelAlloc()
		return nil, nil, fmt.Errorf("start %s: %w", path, err)
	}
	return ctx, func() { cancelBrowser(); cancelAlloc() }, nil
}

package guest

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"golang.org/x/sys/unix"
)

func errCode(err error) string {
	if ge, ok := errors.AsType[*Error](err); ok {
		return ge.Code
	}
	return fmt.Sprintf("not a *guest.Error: %v", err)
}

func TestWriteReadStat(t *testing.T) {
	g := startGuest(t, ServerConfig{})
	ctx := testCtx(t)

	if err := g.c.Write(ctx, WriteRequest{Path: "a/b/c.txt", Data: []byte("hello world")}); err != nil {
		t.Fatal(err)
	}
	host := filepath.Join(g.ws, "a/b/c.txt")
	if b, err := os.ReadFile(host); err != nil || string(b) != "hello world" {
		t.Fatalf("file on disk: %q %v", b, err)
	}
	if fi, _ := os.Stat(host); fi.Mode().Perm() != 0o644 {
		t.Errorf("default mode = %v", fi.Mode())
	}

	r, err := g.c.Read(ctx, ReadRequest{Path: "a/b/c.txt"})
	if err != nil || string(r.Data) != "hello world" || !r.EOF || r.Size != 11 {
		t.Fatalf("read = %+v, %v", r, err)
	}
	r, err = g.c.Read(ctx, ReadRequest{Path: host, Offset: 6, Limit: 3})
	if err != nil || string(r.Data) != "wor" || r.EOF || r.Size != 11 {
		t.Fatalf("read slice = %+v, %v", r, err)
	}
	r, err = g.c.Read(ctx, ReadRequest{Path: host, Offset: 6, Limit: 5})
	if err != nil || string(r.Data) != "world" || !r.EOF {
		t.Fatalf("read to end = %+v, %v", r, err)
	}
	r, err = g.c.Read(ctx, ReadRequest{Path: host, Offset: 100})
	if err != nil || len(r.Data) != 0 || !r.EOF {
		t.Fatalf("read past end = %+v, %v", r, err)
	}

	if err := g.c.Write(ctx, WriteRequest{Path: "a/b/c.txt", Data: []byte("!"), Append: true}); err != nil {
		t.Fatal(err)
	}
	if b, _ := os.ReadFile(host); string(b) != "hello world!" {
		t.Errorf("after append: %q", b)
	}

	if err := g.c.Write(ctx, WriteRequest{Path: "run.sh", Data: []byte("#!/bin/sh\necho hi\n"), Mode: 0o755}); err != nil {
		t.Fatal(err)
	}
	var out output
	if res, err := g.c.Exec(ctx, ExecRequest{Argv: []string{"./run.sh"}}, out.add); err != nil || res.ExitCode != 0 || out.stdout.String() != "hi\n" {
		t.Fatalf("running written script: %+v %v %q", res, err, out.stdout.String())
	}
	// Rewriting without a mode keeps the executable bit.
	if err := g.c.Write(ctx, WriteRequest{Path: "run.sh", Data: []byte("#!/bin/sh\necho again\n")}); err != nil {
		t.Fatal(err)
	}
	fi, err := g.c.Stat(ctx, "run.sh")
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode != "-rwxr-xr-x" || fi.Size != 21 || fi.IsDir || fi.Name != "run.sh" || fi.Path != filepath.Join(g.ws, "run.sh") {
		t.Errorf("stat = %+v", fi)
	}
	if fi, err := g.c.Stat(ctx, "a"); err != nil || !fi.IsDir {
		t.Errorf("stat dir = %+v %v", fi, err)
	}

	// Writing through a symlink replaces the target, not the link.
	if err := os.Symlink("a/b/c.txt", filepath.Join(g.ws, "link")); err != nil {
		t.Fatal(err)
	}
	if err := g.c.Write(ctx, WriteRequest{Path: "link", Data: []byte("via link")}); err != nil {
		t.Fatal(err)
	}
	if b, _ := os.ReadFile(host); string(b) != "via link" {
		t.Errorf("target after write via link: %q", b)
	}
	if fi, _ := os.Lstat(filepath.Join(g.ws, "link")); fi.Mode()&os.ModeSymlink == 0 {
		t.Error("link was replaced by a regular file")
	}
	// No temp files left behind.
	ents, _ := os.ReadDir(filepath.Join(g.ws, "a/b"))
	if len(ents) != 1 {
		t.Errorf("a/b holds %d entries, want only c.txt", len(ents))
	}
}

func TestFileErrors(t *testing.T) {
	g := startGuest(t, ServerConfig{})
	ctx := testCtx(t)
	if err := os.Mkdir(filepath.Join(g.ws, "dir"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(g.ws, "file"), []byte("x"), 0o644); err != nil {
		t.Fatal(err)
	}

	_, err := g.c.Read(ctx, ReadRequest{Path: "missing"})
	if !IsNotFound(err) {
		t.Errorf("read missing: %v", err)
	}
	if _, err := g.c.Stat(ctx, "missing/deeper"); !IsNotFound(err) {
		t.Errorf("stat missing: %v", err)
	}
	if _, err := g.c.List(ctx, ListRequest{Path: "missing"}); !IsNotFound(err) {
		t.Errorf("list missing: %v", err)
	}
	checks := []struct {
		name string
		err  error
		code string
	}{
		{"read dir", second(g.c.Read(ctx, ReadRequest{Path: "dir"})), CodeIsDir},
		{"write dir", g.c.Write(ctx, WriteRequest{Path: "dir", Data: []byte("x")}), CodeIsDir},
		{"list file", second(g.c.List(ctx, ListRequest{Path: "file"})), CodeInvalid},
		{"negative offset", second(g.c.Read(ctx, ReadRequest{Path: "file", Offset: -1})), CodeInvalid},
		{"bad mode", g.c.Write(ctx, WriteRequest{Path: "m", Mode: 0o170000}), CodeInvalid},
		{"empty path", second(g.c.Stat(ctx, "")), CodeInvalid},
		{"write under a file", g.c.Write(ctx, WriteRequest{Path: "file/x", Data: []byte("x")}), CodeInvalid},
		{"read fifo", fifoRead(t, g), CodeInvalid},
	}
	for _, c := range checks {
		if got := errCode(c.err); got != c.code {
			t.Errorf("%s: code %s, want %s (%v)", c.name, got, c.code, c.err)
		}
	}
}

func fifoRead(t *testing.T, g *testGuest) error {
	p := filepath.Join(g.ws, "fifo")
	if err := unix.Mkfifo(p, 0o644); err != nil {
		t.Skipf("mkfifo: %v", err)
	}
	_, err := g.c.Read(testCtx(t), ReadRequest{Path: p})
	return err
}

func second[T any](_ T, err error) error { return err }

func TestList(t *testing.T) {
	g := startGuest(t, ServerConfig{})
	ctx := testCtx(t)
	for _, p := range []string{"b.txt", "a/x", "a/y/z", "a.txt"} {
		if err := g.c.Write(ctx, WriteRequest{Path: p, Data: []byte(p)}); err != nil {
			t.Fatal(err)
		}
	}
	rel := func(es []FileInfo) string {
		var names []string
		for _, e := range es {
			r, _ := filepath.Rel(g.ws, e.Path)
			if e.IsDir {
				r += "/"
			}
			names = append(names, r)
		}
		return strings.Join(names, " ")
	}

	l, err := g.c.List(ctx, ListRequest{})
	if err != nil || rel(l.Entries) != "a/ a.txt b.txt" || l.Truncated {
		t.Errorf("list = %q %v %v", rel(l.Entries), l.Truncated, err)
	}
	l, err = g.c.List(ctx, ListRequest{Path: ".", Recursive: true})
	if err != nil || rel(l.Entries) != "a/ a.txt a/x a/y/ a/y/z b.txt" || l.Truncated {
		t.Errorf("recursive = %q %v %v", rel(l.Entries), l.Truncated, err)
	}
	l, err = g.c.List(ctx, ListRequest{Path: g.ws, Recursive: true, Limit: 3})
	if err != nil || len(l.Entries) != 3 || !l.Truncated {
		t.Errorf("limited = %q %v %v", rel(l.Entries), l.Truncated, err)
	}
	l, err = g.c.List(ctx, ListRequest{Path: "a", Limit: 2})
	if err != nil || len(l.Entries) != 2 || l.Truncated {
		t.Errorf("exact limit = %q %v %v", rel(l.Entries), l.Truncated, err)
	}
	for _, e := range l.Entries {
		if e.Name != filepath.Base(e.Path) || e.ModTime.IsZero() || e.Mode == "" {
			t.Errorf("entry %+v", e)
		}
	}
}

func TestTooLarge(t *testing.T) {
	g := startGuest(t, ServerConfig{})
	ctx := testCtx(t)

	// The client refuses before sending...
	err := g.c.Write(ctx, WriteRequest{Path: "big", Data: bytes.Repeat([]byte("x"), MaxRequestBytes)})
	if errCode(err) != CodeTooLarge {
		t.Errorf("client-side: %v", err)
	}
	// ...and the server refuses on its own when a client does not.
	hc := &http.Client{Transport: &http.Transport{DialContext: func(ctx2 context.Context, _, _ string) (net.Conn, error) { return UnixDialer(g.sock)(ctx2) }}}
	body := `{"path":"big","data":"` + strings.Repeat("A", MaxRequestBytes+1024) + `"}`
	req, _ := http.NewRequestWithContext(ctx, "POST", "http://guest"+PathWrite, strings.NewReader(body))
	resp, err := hc.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	gerr := readError(resp)
	resp.Body.Close()
	if ge, ok := errors.AsType[*Error](gerr); !ok || ge.Status != http.StatusRequestEntityTooLarge || ge.Code != CodeTooLarge {
		t.Errorf("server-side: %v", gerr)
	}
	if _, err := os.Stat(filepath.Join(g.ws, "big")); !os.IsNotExist(err) {
		t.Errorf("oversized write left a file: %v", err)
	}

	// Stdin over its own limit.
	if _, err := g.c.Exec(ctx, ExecRequest{Argv: []string{"cat"}, Stdin: make([]byte, MaxStdinBytes+1)}, nil); errCode(err) != CodeTooLarge {
		t.Errorf("stdin: %v", err)
	}
}

func TestHealthStatsShutdown(t *testing.T) {
	g := startGuest(t, ServerConfig{})
	ctx := testCtx(t)
	h, err := g.c.Health(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if h.Version != Version || h.Workspace != g.ws || h.Kernel == "" || h.Hostname == "" || h.PID1 {
		t.Errorf("health = %+v", h)
	}
	st, err := g.c.Stats(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if st.MemTotalMiB <= 0 || st.MemAvailableMiB <= 0 || st.DiskTotalMiB <= 0 || st.Processes <= 0 || st.UptimeSec <= 0 {
		t.Errorf("stats = %+v", st)
	}
	if err := g.c.Shutdown(ctx); err != nil {
		t.Fatal(err)
	}
	select {
	case <-g.shutdown:
	case <-ctx.Done():
		t.Fatal("OnShutdown not called")
	}
	// Unknown endpoints answer with a protocol error, not a hang or HTML.
	err = g.c.call(ctx, "GET", "/v1/nope", nil, nil)
	if ge, ok := errors.AsType[*Error](err); !ok || ge.Status != http.StatusNotFound {
		t.Errorf("unknown endpoint: %v", err)
	}
}

package main

import (
	"bytes"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"testing"
)

func TestServeFlagsPreview(t *testing.T) {
	none := func(string) string { return "" }
	c, err := parseServeFlags(nil, none, io.Discard)
	if err != nil || c.Preview.Listen != "auto" || c.Preview.Domain != "" {
		t.Fatalf("defaults: %+v %v", c.Preview, err)
	}
	c, err = parseServeFlags(nil, func(k string) string {
		return map[string]string{"EXECLAW_PREVIEW_LISTEN": "127.0.0.1:9101-9103", "EXECLAW_PREVIEW_DOMAIN": "preview.example.com",
			"EXECLAW_PREVIEW_HOST": "box.example.com"}[k]
	}, io.Discard)
	if err != nil || c.Preview.Listen != "127.0.0.1:9101-9103" || c.Preview.Domain != "preview.example.com" || c.Preview.Host != "box.example.com" {
		t.Fatalf("from env: %+v %v", c.Preview, err)
	}
	host, ports, optional, err := c.Preview.previewListen(c.Listen, false)
	if err != nil || host != "127.0.0.1" || !slices.Equal(ports, []int{9101, 9102, 9103}) || optional {
		t.Errorf("range: %q %v %v %v", host, ports, optional, err)
	}
	for _, args := range [][]string{
		{"--preview-listen", "9000"},
		{"--preview-listen", "127.0.0.1:9003-9001"},
		{"--preview-listen", "127.0.0.1:1-100"},
		{"--preview-listen", "127.0.0.1:0-3"},
		{"--preview-listen", "127.0.0.1:x"},
		{"--preview-domain", "localhost"},
		{"--preview-domain", "*.example.com"},
		{"--preview-domain", "10.0.0.1"},
		{"--preview-domain", "preview.example.com:99999"},
		{"--preview-host", "a.example.com,b.example.com"},
		{"--auth", "none", "--preview-listen", "0.0.0.0:9001"},
		{"--auth", "none", "--preview-domain", "preview.example.com"},
	} {
		if _, err := parseServeFlags(args, none, io.Discard); err == nil {
			t.Errorf("%v accepted", args)
		}
	}
	// auto: the --listen host on loopback or exe.dev, skipping its own
	// port; off on an address others reach.
	auto := previewConfig{Listen: "auto"}
	if h, p, opt, _ := auto.previewListen("127.0.0.1:8003", false); h != "127.0.0.1" || len(p) != 7 || slices.Contains(p, 8003) || !opt {
		t.Errorf("auto on loopback: %q %v %v", h, p, opt)
	}
	if _, p, _, _ := auto.previewListen("0.0.0.0:8000", false); len(p) != 0 {
		t.Errorf("auto beyond loopback: %v", p)
	}
	if h, p, _, _ := auto.previewListen("0.0.0.0:8000", true); h != "0.0.0.0" || len(p) != 8 {
		t.Errorf("auto on exe.dev: %q %v", h, p)
	}
	if _, p, _, _ := (previewConfig{Listen: "off"}).previewListen("127.0.0.1:8000", true); len(p) != 0 {
		t.Errorf("off: %v", p)
	}
}

func TestPreviewKey(t *testing.T) {
	dir := t.TempDir()
	k1, err := loadPreviewKey(dir)
	if err != nil || len(k1) != 32 {
		t.Fatalf("%x %v", k1, err)
	}
	fi, err := os.Stat(filepath.Join(dir, "preview.key"))
	if err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("key file: %v %v", fi.Mode(), err)
	}
	if k2, err := loadPreviewKey(dir); err != nil || !bytes.Equal(k1, k2) {
		t.Errorf("reloaded another key: %v", err)
	}
	os.WriteFile(filepath.Join(dir, "preview.key"), []byte("short\n"), 0o600)
	if _, err := loadPreviewKey(dir); err == nil {
		t.Error("a bad key file was accepted")
	}
}

// TestListenPreviewsAuto: with auto, a port already taken is skipped, not
// fatal; an explicit one is fatal.
func TestListenPreviewsAuto(t *testing.T) {
	log := slog.New(slog.DiscardHandler)
	pl, err := listenPreviews(previewConfig{Listen: "127.0.0.1:0"}, "127.0.0.1:8000", false, log)
	if err != nil || len(pl.ports) != 1 || pl.ports[0] == 0 {
		t.Fatalf("%v %v", pl, err)
	}
	defer pl.close()
	taken := pl.lns[0].Addr().String()
	if _, err := listenPreviews(previewConfig{Listen: taken}, "127.0.0.1:8000", false, log); err == nil {
		t.Error("an explicit port that is taken was not an error")
	}
}

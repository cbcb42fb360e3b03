package main

import (
	"io"
	"net/netip"
	"strings"
	"testing"

	"github.com/execlaw/execlaw/internal/api"
)

func TestModelHostsFlag(t *testing.T) {
	noEnv := func(string) string { return "" }

	// Defaults: a single user's server reaches this host's model servers; a
	// server for exe.dev's many users reaches public addresses only.
	for _, tc := range []struct{ auth, want string }{
		{api.AuthToken, "loopback"},
		{api.AuthNone, "loopback"},
		{api.AuthExeDev, "public"},
	} {
		p, err := modelPolicy(serveConfig{Auth: tc.auth})
		if err != nil || p.String() != tc.want {
			t.Errorf("--auth %s: default policy %v (%v), want %s", tc.auth, p, err, tc.want)
		}
	}
	c, err := parseServeFlags(nil, noEnv, io.Discard)
	if err != nil || c.ModelHosts != "" {
		t.Fatalf("no flag: %q %v", c.ModelHosts, err)
	}

	// The flag, and the variable, which the flag overrides.
	env := func(k string) string {
		if k == "EXECLAW_MODEL_HOSTS" {
			return "private"
		}
		return ""
	}
	if c, err := parseServeFlags(nil, env, io.Discard); err != nil || c.ModelHosts != "private" {
		t.Errorf("from the environment: %q %v", c.ModelHosts, err)
	}
	c, err = parseServeFlags([]string{"--model-hosts", "public,10.0.0.5:11434,gpu.lan"}, env, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	p, err := modelPolicy(c)
	if err != nil {
		t.Fatal(err)
	}
	if p.String() != "public,10.0.0.5:11434,gpu.lan" {
		t.Errorf("policy %s", p)
	}
	if p.Check("", netip.MustParseAddrPort("10.0.0.5:11434")) != nil || p.Check("", netip.MustParseAddrPort("127.0.0.1:11434")) == nil ||
		p.Check("gpu.lan", netip.MustParseAddrPort("192.168.1.7:8000")) != nil {
		t.Errorf("policy %s decides wrongly", p)
	}
	// An explicit policy holds with --auth exedev too.
	if p, err := modelPolicy(serveConfig{Auth: api.AuthExeDev, ModelHosts: "loopback"}); err != nil || p.String() != "loopback" {
		t.Errorf("exedev with --model-hosts loopback: %v %v", p, err)
	}

	for _, bad := range []string{"everything", "public,loopback", "10.0.0.0/99", "host:0"} {
		_, err := parseServeFlags([]string{"--model-hosts", bad}, noEnv, io.Discard)
		if err == nil || !strings.Contains(err.Error(), "--model-hosts") {
			t.Errorf("--model-hosts %q: %v", bad, err)
		}
	}
}

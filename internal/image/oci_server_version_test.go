package image

import (
	"debug/buildinfo"
	"runtime/debug"
	"testing"
)

// TestBinaryVersion: the version put in the server image's label is what
// the binary itself would print, from the -X its build passed the linker.
func TestBinaryVersion(t *testing.T) {
	const x = "-X " + serverVersionVar + "="
	rev := debug.BuildSetting{Key: "vcs.revision", Value: "0123456789abcdef0123"}
	for _, c := range []struct {
		settings []debug.BuildSetting
		want     string
	}{
		{nil, "dev"},
		{[]debug.BuildSetting{{Key: "-ldflags", Value: "-s -w " + x + "v1.2.3"}}, "v1.2.3"},
		{[]debug.BuildSetting{{Key: "-ldflags", Value: "-X=" + serverVersionVar + "=v2"}}, "v2"},
		{[]debug.BuildSetting{{Key: "-ldflags", Value: x + "v1 -X '" + serverVersionVar + "=v3'"}}, "v3"},
		{[]debug.BuildSetting{{Key: "-ldflags", Value: "-X other.Version=v4 -s"}}, "dev"},
		{[]debug.BuildSetting{{Key: "-ldflags", Value: x + "v5"}, rev}, "v5 (0123456789ab)"},
		{[]debug.BuildSetting{{Key: "-trimpath", Value: "true"}, rev}, "unknown (0123456789ab)"},
		{[]debug.BuildSetting{{Key: "vcs.revision", Value: "short"}}, "dev"},
	} {
		if got := binaryVersion(&buildinfo.BuildInfo{Settings: c.settings}); got != c.want {
			t.Errorf("%+v: %q, want %q", c.settings, got, c.want)
		}
	}
}

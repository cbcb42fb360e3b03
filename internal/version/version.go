// Package version is the build's version, set with
// -ldflags "-X github.com/execlaw/execlaw/internal/version.Version=...".
package version

import "runtime/debug"

// Version is the release name, or "dev".
var Version = "dev"

// String is Version plus the VCS revision when the build recorded one.
func String() string {
	v := Version
	if info, ok := debug.ReadBuildInfo(); ok {
		for _, s := range info.Settings {
			if s.Key == "vcs.revision" && len(s.Value) >= 12 {
				v += " (" + s.Value[:12] + ")"
			}
		}
	}
	return v
}

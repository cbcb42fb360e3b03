package process

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
)

// FindGuestBinary locates execlaw-guest: $EXECLAW_GUEST_BIN, then next to the
// running executable, then $PATH.
func FindGuestBinary(getenv func(string) string) (string, error) {
	if p := getenv(GuestBinaryEnv); p != "" {
		abs, err := filepath.Abs(p)
		if err == nil {
			err = checkExecutable(abs)
		}
		if err != nil {
			return "", fmt.Errorf("%s=%s: %w", GuestBinaryEnv, p, err)
		}
		return abs, nil
	}
	var looked []string
	if exe, err := os.Executable(); err == nil {
		p := filepath.Join(filepath.Dir(exe), GuestBinaryName)
		if checkExecutable(p) == nil {
			return p, nil
		}
		looked = append(looked, p)
	}
	for _, dir := range filepath.SplitList(getenv("PATH")) {
		if !filepath.IsAbs(dir) {
			continue
		}
		p := filepath.Join(dir, GuestBinaryName)
		if checkExecutable(p) == nil {
			return p, nil
		}
		looked = append(looked, p)
	}
	return "", fmt.Errorf("%s not found: set %s, or install it next to the execlaw binary or on $PATH (looked at: %s)",
		GuestBinaryName, GuestBinaryEnv, strings.Join(looked, ", "))
}

func checkExecutable(p string) error {
	fi, err := os.Stat(p)
	if err != nil {
		return err
	}
	if !fi.Mode().IsRegular() {
		return fmt.Errorf("%s is not a regular file", p)
	}
	if fi.Mode().Perm()&0o111 == 0 {
		return errors.New(p + " is not executable")
	}
	return nil
}

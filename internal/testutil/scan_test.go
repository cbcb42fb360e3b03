package testutil

import (
	"os"
	"path/filepath"
	"testing"
)

func TestFileContainsSparse(t *testing.T) {
	p := filepath.Join(t.TempDir(), "disk")
	f, err := os.Create(p)
	if err != nil {
		t.Fatal(err)
	}
	f.Truncate(1 << 30) // 1 GiB, all hole
	f.WriteAt([]byte("needle-in-the-middle"), 600<<20)
	f.WriteAt([]byte("ACROSS-"), 4<<20-3) // spans a chunk boundary
	f.Close()
	for needle, want := range map[string]bool{"needle-in-the-middle": true, "ACROSS-": true, "absent": false} {
		got, err := FileContains(p, []byte(needle))
		if err != nil || got != want {
			t.Errorf("FileContains(%q) = %v, %v; want %v", needle, got, err, want)
		}
	}
}

package sandbox

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"time"
)

// Snapshot is a sandbox saved whole (memory, devices, processes) by Pause,
// in files of its directory. Compat holds what the driver that made it must
// find unchanged to restore it (its VMM's version, the machine, the guest
// image, the VM's size); a driver that finds anything else refuses with
// ErrIncompatible, and the session boots afresh on the same disk instead.
type Snapshot struct {
	Driver    string            `json:"driver"`
	Files     []string          `json:"files"` // relative to the sandbox directory
	Compat    map[string]string `json:"compat"`
	Bytes     int64             `json:"bytes"` // on disk
	CreatedAt time.Time         `json:"createdAt"`
	// Private is the driver's own: what it needs to restore besides the
	// files (the guest's boot settings, say).
	Private json.RawMessage `json:"private,omitempty"`
}

// SnapshotFile is the name of the description of a snapshot in a sandbox
// directory: it is written last, so a snapshot whose description exists was
// saved whole.
const SnapshotFile = "snapshot.json"

// Pauser is a Sandbox that can be saved and stopped. Pause saves the whole
// VM into the sandbox's directory, then ends its VMM and frees what it held
// but the directory (its writable disk stays, and the snapshot): Done
// closes, and ExitError stays nil. If saving fails the sandbox runs on, as
// if Pause had not been called, and the error says why.
type Pauser interface {
	Pause(ctx context.Context) (Snapshot, error)
}

// Restorer is a Driver that can start a sandbox from a snapshot of its own
// making, in the same directory: it runs on from where it was saved. Before
// Restore returns, the guest has been told the time, fresh entropy and its
// network now (guest Init: only the driver knows its new attachment). The
// snapshot's files are removed once it runs: the disk moves on, and an old
// snapshot of it must never be restored.
type Restorer interface {
	Restore(ctx context.Context, spec Spec, snap Snapshot) (Sandbox, error)
}

// ErrIncompatible is what Restore gives for a snapshot it cannot restore:
// another driver's, another VMM version's or machine's, a damaged one.
var ErrIncompatible = errors.New("the snapshot cannot be restored here")

// WriteSnapshot records snap in dir, last of all its files.
func WriteSnapshot(dir string, snap Snapshot) error {
	b, err := json.Marshal(snap)
	if err != nil {
		return err
	}
	tmp := filepath.Join(dir, SnapshotFile+".tmp")
	if err := os.WriteFile(tmp, b, 0o600); err != nil {
		return err
	}
	return os.Rename(tmp, filepath.Join(dir, SnapshotFile))
}

// ReadSnapshot reads the snapshot recorded in dir; ok is false when there is
// none.
func ReadSnapshot(dir string) (snap Snapshot, ok bool, err error) {
	b, err := os.ReadFile(filepath.Join(dir, SnapshotFile))
	if errors.Is(err, os.ErrNotExist) {
		return snap, false, nil
	}
	if err != nil {
		return snap, false, err
	}
	if err := json.Unmarshal(b, &snap); err != nil {
		return snap, false, fmt.Errorf("%w: its description is damaged: %v", ErrIncompatible, err)
	}
	return snap, true, nil
}

// RemoveSnapshot deletes a snapshot's files and description from dir.
func RemoveSnapshot(dir string, snap Snapshot) error {
	var errs []error
	for _, f := range append([]string{SnapshotFile}, snap.Files...) {
		if err := os.Remove(filepath.Join(dir, filepath.Base(f))); err != nil && !errors.Is(err, os.ErrNotExist) {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// CheckCompat compares what a snapshot needs with what a driver offers now;
// the error names the first difference.
func CheckCompat(snap Snapshot, driver string, now map[string]string) error {
	if snap.Driver != driver {
		return fmt.Errorf("%w: it was made by %s, this is %s", ErrIncompatible, snap.Driver, driver)
	}
	for k, want := range snap.Compat {
		if got := now[k]; got != want {
			return fmt.Errorf("%w: %s was %q and is %q now", ErrIncompatible, k, want, got)
		}
	}
	for k := range now {
		if _, ok := snap.Compat[k]; !ok {
			return fmt.Errorf("%w: it does not record %s", ErrIncompatible, k)
		}
	}
	return nil
}

package qemu

import (
	"context"
	"crypto/rand"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/execlaw/execlaw/internal/guest"
	"github.com/execlaw/execlaw/internal/sandbox"
)

// Pausing saves the VM with a QEMU migration into a file of the sandbox
// directory (QEMU 7.2, Debian 12's, has no file: URI yet, so the host opens
// the file and hands QEMU the descriptor: fd:, which also keeps QEMU's
// seccomp sandbox, which forbids spawning, intact). Zero pages travel as a
// flag, so an idle guest's file is far smaller than its memory. Restoring
// starts QEMU with the same command line, waiting (-incoming defer), and
// feeds it the file the same way.
const (
	snapName     = "vm.state"
	migrateFD    = "snapshot"
	pauseTimeout = 5 * time.Minute // saving a large, busy guest under TCG
)

var (
	_ sandbox.Pauser   = (*Sandbox)(nil)
	_ sandbox.Restorer = (*Driver)(nil)
)

// savedBoot is the driver's own part of a snapshot: what the guest booted
// with, which its command line must say again.
type savedBoot struct {
	Boot guest.BootConfig `json:"boot"`
}

// Pause saves the whole VM into its directory and ends QEMU; see
// sandbox.Pauser. The disk is flushed as part of the migration.
func (s *Sandbox) Pause(ctx context.Context) (sandbox.Snapshot, error) {
	ctx, cancel := context.WithTimeout(ctx, pauseTimeout)
	defer cancel()
	started := time.Now()
	q, err := dialQMP(ctx, s.socks)
	if err != nil {
		return sandbox.Snapshot{}, err
	}
	defer q.close()
	// Saved with no host on its channel: the restored guest then starts a
	// session with whoever connects, rather than resume one with a host
	// that is gone. The guest closes its end of the port when it sees the
	// host leave (QEMU says so; under TCG it takes about a second): waiting
	// for that spares the first call after a restore a stale session's
	// timeout, and a resume is what a user waits for.
	if s.channel != nil {
		s.channel.Close()
		wctx, cancel := context.WithTimeout(ctx, 3*time.Second)
		err := q.waitEvent(wctx, "VSERPORT_CHANGE", func(data json.RawMessage) bool {
			var d struct {
				ID   string `json:"id"`
				Open bool   `json:"open"`
			}
			return json.Unmarshal(data, &d) == nil && d.ID == ctlPortID && !d.Open
		})
		cancel()
		if err != nil {
			s.d.log.Debug("the guest did not close its channel before the pause", "session", s.id, "err", err)
		}
	}
	if _, err := q.execute("stop", nil, nil); err != nil {
		return sandbox.Snapshot{}, fmt.Errorf("pause the VM: %w", err)
	}
	path := filepath.Join(s.dir, snapName)
	size, err := s.migrateTo(ctx, q, path+".tmp")
	if err != nil {
		os.Remove(path + ".tmp")
		// It goes on as if nothing had happened.
		if _, cerr := q.execute("cont", nil, nil); cerr != nil {
			err = errors.Join(err, fmt.Errorf("and it could not be resumed: %w", cerr))
		}
		return sandbox.Snapshot{}, fmt.Errorf("save the VM: %w", err)
	}
	// From here the VM must never run again: its disk is part of the
	// snapshot.
	s.exit.Expect(sandbox.ExitPause)
	if err := os.Rename(path+".tmp", path); err != nil {
		s.Stop(context.Background())
		return sandbox.Snapshot{}, err
	}
	_, _ = q.execute("quit", nil, nil) // QEMU may hang up before it answers
	select {
	case <-s.exit.Done():
	case <-time.After(5 * time.Second): // Stop kills it
	}
	if err := s.Stop(ctx); err != nil {
		return sandbox.Snapshot{}, err
	}
	state, err := json.Marshal(savedBoot{Boot: s.boot})
	if err != nil {
		return sandbox.Snapshot{}, err
	}
	compat, err := s.d.compat(s.spec)
	if err != nil {
		return sandbox.Snapshot{}, err
	}
	snap := sandbox.Snapshot{Driver: s.d.Name(), Files: []string{snapName}, Compat: compat, Bytes: size,
		CreatedAt: time.Now().UTC(), Private: state}
	if err := sandbox.WriteSnapshot(s.dir, snap); err != nil {
		return sandbox.Snapshot{}, err
	}
	s.d.log.Info("VM saved", "session", s.id, "bytes", size, "took", time.Since(started).Round(time.Millisecond))
	return snap, nil
}

// migrateTo migrates the stopped VM into the file at path, synced, and
// returns its size.
func (s *Sandbox) migrateTo(ctx context.Context, q *qmp, path string) (int64, error) {
	f, err := os.OpenFile(path, os.O_CREATE|os.O_TRUNC|os.O_WRONLY, 0o600)
	if err != nil {
		return 0, err
	}
	defer f.Close()
	if _, err := q.execute("getfd", map[string]string{"fdname": migrateFD}, f); err != nil {
		return 0, err
	}
	// The default bandwidth cap is for live migration over a network; a
	// stopped VM into a local file wants it gone.
	if _, err := q.execute("migrate-set-parameters", map[string]any{"max-bandwidth": int64(1) << 40}, nil); err != nil {
		return 0, err
	}
	if _, err := q.execute("migrate", map[string]string{"uri": "fd:" + migrateFD}, nil); err != nil {
		return 0, err
	}
	if _, err := q.waitMigration(ctx); err != nil {
		return 0, err
	}
	if err := f.Sync(); err != nil {
		return 0, err
	}
	st, err := f.Stat()
	if err != nil {
		return 0, err
	}
	return st.Size(), nil
}

// restoring is a snapshot being restored by launch.
type restoring struct {
	snap sandbox.Snapshot
	boot guest.BootConfig
}

// Restore starts the VM saved in snap; see sandbox.Restorer. The guest's
// clock, entropy and network (a new attachment) are set before it returns.
func (d *Driver) Restore(ctx context.Context, spec sandbox.Spec, snap sandbox.Snapshot) (sandbox.Sandbox, error) {
	compat, err := d.compat(spec)
	if err != nil {
		return nil, err
	}
	if err := sandbox.CheckCompat(snap, d.Name(), compat); err != nil {
		return nil, err
	}
	var saved savedBoot
	if err := json.Unmarshal(snap.Private, &saved); err != nil {
		return nil, fmt.Errorf("%w: %v", sandbox.ErrIncompatible, err)
	}
	if _, err := os.Stat(filepath.Join(spec.Dir, snapName)); err != nil {
		return nil, fmt.Errorf("%w: %v", sandbox.ErrIncompatible, err)
	}
	s, err := d.launch(ctx, spec, &restoring{snap: snap, boot: saved.Boot})
	if err != nil {
		return nil, err
	}
	if err := sandbox.RemoveSnapshot(spec.Dir, snap); err != nil {
		d.log.Warn("remove the restored snapshot", "session", spec.SessionID, "err", err)
	}
	return s, nil
}

// restoreState feeds the waiting QEMU the saved state and lets it run.
func (s *Sandbox) restoreState(ctx context.Context, from *restoring) error {
	if err := s.waitSocket(ctx, qmpSockName); err != nil {
		return err
	}
	q, err := dialQMP(ctx, s.socks)
	if err != nil {
		return err
	}
	defer q.close()
	f, err := os.Open(filepath.Join(s.dir, snapName))
	if err != nil {
		return err
	}
	defer f.Close()
	if _, err := q.execute("getfd", map[string]string{"fdname": migrateFD}, f); err != nil {
		return err
	}
	if _, err := q.execute("migrate-incoming", map[string]string{"uri": "fd:" + migrateFD}, nil); err != nil {
		return fmt.Errorf("restore the VM: %w", err)
	}
	if _, err := q.waitMigration(ctx); err != nil {
		return fmt.Errorf("restore the VM: %w (%s)", err, s.logTail())
	}
	if _, err := q.execute("cont", nil, nil); err != nil {
		return fmt.Errorf("resume the restored VM: %w", err)
	}
	return nil
}

// reinit tells a restored guest the time, fresh entropy and its network
// now: its clock stood still while it was saved, it would repeat the random
// numbers it drew before, and its network attachment is a new one.
func (s *Sandbox) reinit(ctx context.Context) error {
	req := guest.InitRequest{Entropy: make([]byte, 64)}
	rand.Read(req.Entropy)
	if s.net != nil {
		req.Network = &guest.NetworkSetup{IP: s.boot.IP, Gateway: s.boot.Gateway, DNS: s.boot.DNS, MTU: s.boot.MTU}
	}
	req.Time = time.Now()
	res, err := s.client.Init(ctx, req)
	if err != nil {
		return fmt.Errorf("initialise the restored guest: %w", err)
	}
	s.d.log.Info("restored guest initialised", "session", s.id, "clockOffsetMs", res.ClockOffsetMs, "clockSet", res.ClockSet)
	return nil
}

// compat is what a snapshot of a VM of spec needs unchanged to be restored:
// QEMU's version and accelerator, the image the guest booted (content
// addressed: its paths name their contents), the VM's size and devices.
func (d *Driver) compat(spec sandbox.Spec) (map[string]string, error) {
	v, err := d.version()
	if err != nil {
		return nil, err
	}
	channel := "virtio-serial"
	if d.cfg.VhostVsock {
		channel = "vhost-vsock"
	}
	return map[string]string{
		"qemu": v, "accel": d.cfg.Accel, "machine": "microvm,rtc=on", "channel": channel,
		"kernel": d.cfg.Image.KernelELF, "initramfs": d.cfg.Image.Initramfs, "rootfs": d.cfg.Image.Rootfs,
		"memoryMiB": strconv.Itoa(guestMiB(spec)), "vcpus": strconv.Itoa(max(spec.VCPUs, 1)), "network": spec.Network,
	}, nil
}

// version is what `qemu-system-x86_64 --version` says, asked once.
func (d *Driver) version() (string, error) {
	d.versionOnce.Do(func() {
		out, err := exec.Command(d.cfg.Binary, "--version").Output()
		if err != nil {
			d.versionErr = fmt.Errorf("qemu --version: %w", err)
			return
		}
		line, _, _ := strings.Cut(string(out), "\n")
		d.versionStr = strings.TrimSpace(line)
	})
	return d.versionStr, d.versionErr
}

// versionState is Driver's memo of version.
type versionState struct {
	versionOnce sync.Once
	versionStr  string
	versionErr  error
}

var _ sandbox.Claimable = (*Sandbox)(nil)

// Claim makes a pooled VM the session's: see sandbox.Claimable. The VM has
// been moved to spec.Dir; its network (made when it was pooled) is kept.
func (s *Sandbox) Claim(ctx context.Context, spec sandbox.Spec) error {
	s.mu.Lock()
	s.id, s.dir = spec.SessionID, spec.Dir
	s.spec.SessionID, s.spec.Dir, s.spec.Progress = spec.SessionID, spec.Dir, spec.Progress
	s.boot.Hostname = "execlaw-" + shortID(spec.SessionID)
	s.mu.Unlock()
	req := guest.InitRequest{Hostname: s.boot.Hostname, Entropy: make([]byte, 64)}
	rand.Read(req.Entropy)
	req.Time = time.Now()
	if _, err := s.client.Init(ctx, req); err != nil {
		return fmt.Errorf("claim the pooled VM: %w", err)
	}
	return nil
}

// Package detect chooses the sandbox driver for this host, and says why.
// The order is firecracker > qemu-kvm > qemu-tcg > process, and every step is
// tried, not assumed: a host whose /dev/kvm opens but cannot run a stock
// guest exists (nested hosts that only run paravirtualised guests), so KVM
// counts only once a probe VM has booted under it.
package detect

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"

	"golang.org/x/sys/unix"

	"github.com/execlaw/execlaw/internal/image"
	"github.com/execlaw/execlaw/internal/sandbox"
	"github.com/execlaw/execlaw/internal/sandbox/process"
	"github.com/execlaw/execlaw/internal/sandbox/qemu"
	"github.com/execlaw/execlaw/internal/sandbox/vm"
)

// Options say what to look for.
type Options struct {
	// Requested is auto, process, qemu or firecracker.
	Requested string
	DataDir   string
	// ImageName is the guest image VMs boot.
	ImageName string
	GuestBin  string
	Getenv    func(string) string
	// Network gives VMs their network; nil means VM sessions must use network none.
	Network vm.NetworkProvider
	Logger  *slog.Logger
	// SkipProbe reports KVM without booting a probe VM (for doctor --quick).
	SkipProbe bool
	// Firecracker builds the firecracker driver when its binary and KVM are
	// there; nil means this build has none.
	Firecracker func(binary string, img image.Boot) (sandbox.Driver, error)
	// Resources confines the VMMs of the QEMU driver (cgroups, OOM scores).
	Resources vm.Resources
}

// Finding is one thing looked at.
type Finding struct {
	Check  string `json:"check"`
	OK     bool   `json:"ok"`
	Detail string `json:"detail"`
}

// Report is what was found and chosen.
type Report struct {
	Driver   string    `json:"driver"`
	Reason   string    `json:"reason"`
	Findings []Finding `json:"findings"`
	// ImageAgents are the agent CLIs the guest image carries, when the
	// driver chosen is a VM driver (they run inside the VM).
	ImageAgents []string `json:"imageAgents,omitempty"`
}

func (r *Report) add(check string, ok bool, format string, args ...any) {
	r.Findings = append(r.Findings, Finding{Check: check, OK: ok, Detail: fmt.Sprintf(format, args...)})
}

// Choose looks at the host and returns the driver to use.
func Choose(ctx context.Context, o Options) (sandbox.Driver, Report, error) {
	var r Report
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	if o.ImageName == "" {
		o.ImageName = "dev"
	}
	switch o.Requested {
	case "", "auto", "process", "qemu", "firecracker":
	default:
		return nil, r, fmt.Errorf("--sandbox must be auto, process, qemu or firecracker, not %q", o.Requested)
	}

	img, manifest, imgErr := findImage(o.DataDir, o.ImageName)
	var vmAgents []string
	if imgErr != nil {
		r.add("guest image", false, "%v", imgErr)
	} else {
		vmAgents = manifest.AgentNames()
		detail := fmt.Sprintf("%q: kernel %s", o.ImageName, img.KernelVersion)
		if len(vmAgents) > 0 {
			detail += ", agents " + strings.Join(vmAgents, ", ")
		}
		r.add("guest image", true, "%s", detail)
	}
	qemuBin, qemuErr := exec.LookPath("qemu-system-x86_64")
	if qemuErr != nil {
		r.add("qemu", false, "qemu-system-x86_64 not found (apt-get install qemu-system-x86)")
	} else {
		r.add("qemu", true, "%s (%s)", qemuBin, qemuVersion(ctx, qemuBin))
	}
	fcBin, fcErr := exec.LookPath("firecracker")
	if fcErr != nil {
		r.add("firecracker", false, "firecracker not found in $PATH")
	} else {
		r.add("firecracker", true, "%s", fcBin)
	}
	kvmOK, kvmWhy := kvmDevice()
	r.add("/dev/kvm", kvmOK, "%s", kvmWhy)
	_, vsockErr := os.Stat("/dev/vhost-vsock")
	if vsockErr == nil {
		r.add("/dev/vhost-vsock", true, "present: QEMU's control channel uses vhost-vsock")
	} else {
		r.add("/dev/vhost-vsock", false, "absent: QEMU's control channel uses virtio-serial with yamux")
	}
	switch c, _ := o.Network.(interface{ Check() error }); {
	case o.Network == nil:
		r.add("VM networking", false, "unavailable: VM sessions can only use network none")
	case c != nil && c.Check() != nil:
		r.add("VM networking", false, "%v", c.Check())
	default:
		r.add("VM networking", true, "network namespace, TAP device and nftables NAT per session")
	}

	// A probe boot under KVM, with QEMU: the one check that proves KVM runs
	// a stock guest here.
	kvmRuns := false
	switch {
	case !kvmOK:
	case imgErr != nil || qemuErr != nil:
		r.add("KVM probe boot", false, "not tried: it needs QEMU and a guest image")
	case o.SkipProbe:
		r.add("KVM probe boot", false, "skipped")
	default:
		start := time.Now()
		if err := probeKVM(ctx, o, img); err != nil {
			r.add("KVM probe boot", false, "a stock kernel did not boot under this host's KVM (%v): KVM cannot run a normal guest here (for example a nested host that only runs paravirtualised guests)", err)
		} else {
			kvmRuns = true
			r.add("KVM probe boot", true, "a guest booted under KVM in %s", time.Since(start).Round(time.Millisecond))
		}
	}

	want := o.Requested
	if want == "" {
		want = "auto"
	}
	if want == "firecracker" || want == "auto" {
		switch {
		case o.Firecracker == nil:
			if want == "firecracker" {
				return nil, r, errors.New("--sandbox firecracker: this build has no firecracker driver")
			}
		case fcErr != nil || !kvmRuns || imgErr != nil:
			if want == "firecracker" {
				return nil, r, fmt.Errorf("--sandbox firecracker needs the firecracker binary, a working KVM and a guest image: %s", firstProblem(r))
			}
		default:
			d, err := o.Firecracker(fcBin, img)
			if err == nil {
				r.Driver, r.Reason = d.Name(), "firecracker is installed and KVM runs guests here"
				r.ImageAgents = vmAgents
				return d, r, nil
			}
			r.add("firecracker driver", false, "%v", err)
			if want == "firecracker" {
				return nil, r, err
			}
		}
	}
	if want == "qemu" || want == "auto" {
		if qemuErr == nil && imgErr == nil {
			accel, why := qemu.AccelTCG, "QEMU with TCG software emulation: no usable KVM here, so VMs are slow to boot but fully isolated"
			if kvmRuns {
				accel, why = qemu.AccelKVM, "QEMU with KVM: a probe guest booted under KVM"
			} else if kvmOK {
				why = "QEMU with TCG software emulation: /dev/kvm opens but KVM could not boot a stock guest, so VMs are emulated (slow to boot, fully isolated)"
			}
			if want == "auto" && o.Firecracker != nil && fcErr != nil {
				why += "; firecracker is not installed"
			}
			d, err := qemu.New(qemu.Config{Image: img, Accel: accel, Network: o.Network, Logger: o.Logger, Binary: qemuBin,
				VhostVsock: vsockErr == nil, Resources: o.Resources})
			if err == nil {
				r.Driver, r.Reason = d.Name(), why
				r.ImageAgents = vmAgents
				return d, r, nil
			}
			r.add("qemu driver", false, "%v", err)
		}
		if want == "qemu" {
			return nil, r, fmt.Errorf("--sandbox qemu: %s", firstProblem(r))
		}
	}
	bin := o.GuestBin
	if bin == "" {
		var err error
		if bin, err = process.FindGuestBinary(o.Getenv); err != nil {
			return nil, r, err
		}
	}
	d, err := process.New(process.Config{GuestBinary: bin, Logger: o.Logger})
	if err != nil {
		return nil, r, err
	}
	r.Driver = d.Name()
	if want == "process" {
		r.Reason = "requested with --sandbox process; it does NOT isolate agents from the host"
	} else {
		r.Reason = "no microVM can run here (" + firstProblem(r) + "), so the process driver is used; it does NOT isolate agents from the host"
	}
	return d, r, nil
}

func firstProblem(r Report) string {
	var probs []string
	for _, f := range r.Findings {
		if !f.OK && (f.Check == "guest image" || f.Check == "qemu" || f.Check == "qemu driver") {
			probs = append(probs, f.Check+": "+f.Detail)
		}
	}
	if len(probs) == 0 {
		return "see execlaw doctor"
	}
	return strings.Join(probs, "; ")
}

func findImage(dataDir, name string) (image.Boot, image.Manifest, error) {
	st, err := image.NewStore(dataDir)
	if err != nil {
		return image.Boot{}, image.Manifest{}, err
	}
	return st.VMImage(name)
}

func qemuVersion(ctx context.Context, bin string) string {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, bin, "--version").Output()
	if err != nil {
		return "version unknown"
	}
	line, _, _ := strings.Cut(string(out), "\n")
	return strings.TrimSpace(line)
}

// kvmDevice reports whether /dev/kvm opens and speaks the stable KVM API.
func kvmDevice() (bool, string) {
	f, err := os.OpenFile("/dev/kvm", os.O_RDWR|unix.O_CLOEXEC, 0)
	if err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return false, "absent: no hardware virtualisation here"
		}
		return false, fmt.Sprintf("cannot be opened: %v", err)
	}
	defer f.Close()
	const kvmGetAPIVersion = 0xAE00
	v, err := unix.IoctlRetInt(int(f.Fd()), kvmGetAPIVersion)
	if err != nil || v != 12 {
		return false, fmt.Sprintf("opens, but KVM_GET_API_VERSION gave %d (%v)", v, err)
	}
	return true, "opens, KVM API version 12"
}

// probeKVM boots one small VM under KVM and stops it.
func probeKVM(ctx context.Context, o Options, img image.Boot) error {
	d, err := qemu.New(qemu.Config{Image: img, Accel: qemu.AccelKVM, BootTimeout: 20 * time.Second, Logger: o.Logger})
	if err != nil {
		return err
	}
	dir, err := os.MkdirTemp(filepath.Join(o.DataDir), "kvm-probe-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	sb, err := d.Start(ctx, sandbox.Spec{SessionID: "s_kvmprobe", Dir: dir, VCPUs: 1, MemoryMiB: 256, Network: "none"})
	if err != nil {
		return err
	}
	return sb.Stop(ctx)
}

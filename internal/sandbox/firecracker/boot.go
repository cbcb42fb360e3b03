package firecracker

import (
	"context"
	"fmt"
	"strconv"

	"github.com/execlaw/execlaw/internal/guest"
	"github.com/execlaw/execlaw/internal/sandbox"
	"github.com/execlaw/execlaw/internal/sandbox/vm"
)

// What the VM is told before it boots: its size, its command line and its
// devices.

func machineConfig(spec sandbox.Spec) (MachineConfig, error) {
	mc := MachineConfig{VCPUCount: spec.VCPUs, MemSizeMiB: spec.MemoryMiB, SMT: false}
	if mc.VCPUCount == 0 {
		mc.VCPUCount = defaultVCPUs
	}
	if mc.MemSizeMiB == 0 {
		mc.MemSizeMiB = defaultMemoryMiB
	}
	if mc.VCPUCount < 1 || mc.VCPUCount > maxVCPUs {
		return mc, fmt.Errorf("%d vCPUs: want 1 to %d", spec.VCPUs, maxVCPUs)
	}
	if mc.MemSizeMiB < 0 {
		return mc, fmt.Errorf("%d MiB of memory is not a size", spec.MemoryMiB)
	}
	return mc, nil
}

// kernelArgs is the guest's command line: fixed arguments plus what the
// guest init reads (guest.BootConfig), with the attachment's addresses.
func kernelArgs(att NetAttachment) (string, error) {
	bc := guest.BootConfig{Channel: "vsock:" + strconv.Itoa(guest.DefaultVsockPort)}
	if att != nil {
		bc.IP, bc.Gateway, bc.DNS = att.GuestIP(), att.Gateway(), att.DNS()
	}
	args, err := bc.KernelArgs()
	if err != nil {
		return "", fmt.Errorf("boot config: %w", err)
	}
	return baseBootArgs + " " + args, nil
}

// configure sends the pre-boot configuration.
func (d *Driver) configure(ctx context.Context, sb *Sandbox, mc MachineConfig, bootArgs, sessionID string) error {
	l, api := sb.l, sb.api
	if err := api.PutMachineConfig(ctx, mc); err != nil {
		return err
	}
	if err := api.PutBootSource(ctx, BootSource{KernelImagePath: l.kernel, InitrdPath: l.initrd, BootArgs: bootArgs}); err != nil {
		return err
	}
	// Neither drive is the root device: the initramfs mounts the base and
	// the overlay itself, so the kernel must not get a root= for vda.
	if err := api.PutDrive(ctx, Drive{DriveID: driveRootfs, PathOnHost: l.rootfs, IsRootDevice: false, IsReadOnly: true}); err != nil {
		return err
	}
	if err := api.PutDrive(ctx, Drive{DriveID: driveRW, PathOnHost: l.rw, IsRootDevice: false, IsReadOnly: false}); err != nil {
		return err
	}
	if sb.att != nil {
		mac := sb.att.MAC()
		if mac == "" {
			mac = vm.MAC(sessionID)
		}
		if err := api.PutNetworkInterface(ctx, NetworkInterface{IfaceID: ifaceID, HostDevName: sb.att.TapName(), GuestMAC: mac}); err != nil {
			return err
		}
	}
	if err := api.PutVsock(ctx, Vsock{GuestCID: guestCID, UDSPath: l.vsockUDS}); err != nil {
		return err
	}
	// virtio-rng spares the guest a slow entropy start; the guest works
	// without it, so a VMM that lacks it is not a reason to fail.
	if err := api.PutEntropy(ctx); err != nil {
		if ctx.Err() != nil {
			return err
		}
		sb.log.Warn("no entropy device", "err", err)
	}
	return nil
}

package vminit

import (
	"context"
	"encoding/binary"
	"fmt"
	"log/slog"
	"os"
	"time"
	"unsafe"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/execlaw/execlaw/internal/guest"
)

// Clock corrections: a guest behind the host by more than clockBehind, or
// ahead by more than clockAhead, is set to the host's time. Small leads are
// the request's own transit time, not worth a step back.
const (
	clockBehind = 50 * time.Millisecond
	clockAhead  = 5 * time.Second
)

// Initializer applies what the host sends after a restore or a claim: the
// host's clock (a restored VM's stood still while it was saved), fresh
// entropy (a restored VM would repeat the random numbers it drew before),
// and the host name and network of the session it now serves.
func Initializer(log *slog.Logger) guest.Initializer {
	return func(ctx context.Context, req guest.InitRequest) (guest.InitResult, error) {
		var res guest.InitResult
		offset := time.Until(req.Time) * -1 // guest minus host
		res.ClockOffsetMs = offset.Milliseconds()
		if offset < -clockBehind || offset > clockAhead {
			ts := unix.NsecToTimespec(req.Time.UnixNano())
			if err := unix.ClockSettime(unix.CLOCK_REALTIME, &ts); err != nil {
				return res, fmt.Errorf("set the clock: %w", err)
			}
			res.ClockSet = true
		}
		if err := addEntropy(req.Entropy); err != nil {
			return res, err
		}
		if req.Hostname != "" {
			if err := setHostname(req.Hostname); err != nil {
				return res, fmt.Errorf("host name: %w", err)
			}
		}
		if n := req.Network; n != nil {
			if err := reconfigureNetwork(log, guest.BootConfig{IP: n.IP, Gateway: n.Gateway, DNS: n.DNS, MTU: n.MTU}); err != nil {
				return res, fmt.Errorf("network: %w", err)
			}
		}
		log.Info("initialised by the host", "clockOffsetMs", res.ClockOffsetMs, "clockSet", res.ClockSet,
			"hostname", req.Hostname, "network", req.Network != nil)
		return res, nil
	}
}

// addEntropy credits b to the kernel's pool and reseeds the generator from
// it at once, so what /dev/urandom gives from now on differs from what a
// copy of this VM gives.
func addEntropy(b []byte) error {
	f, err := os.OpenFile("/dev/random", os.O_WRONLY, 0)
	if err != nil {
		return fmt.Errorf("entropy: %w", err)
	}
	defer f.Close()
	// struct rand_pool_info { int entropy_count; int buf_size; __u32 buf[]; }
	info := make([]byte, 8+len(b))
	binary.NativeEndian.PutUint32(info[0:], uint32(len(b)*8))
	binary.NativeEndian.PutUint32(info[4:], uint32(len(b)))
	copy(info[8:], b)
	if _, _, errno := unix.Syscall(unix.SYS_IOCTL, f.Fd(), unix.RNDADDENTROPY, uintptr(unsafe.Pointer(&info[0]))); errno != 0 {
		return fmt.Errorf("entropy: RNDADDENTROPY: %w", errno)
	}
	if _, _, errno := unix.Syscall(unix.SYS_IOCTL, f.Fd(), unix.RNDRESEEDCRNG, 0); errno != 0 {
		return fmt.Errorf("entropy: RNDRESEEDCRNG: %w", errno)
	}
	return nil
}

// reconfigureNetwork replaces the NIC's addresses and default route with c.
func reconfigureNetwork(log *slog.Logger, c guest.BootConfig) error {
	nic, err := firstNIC()
	if err != nil {
		return err
	}
	addrs, err := netlink.AddrList(nic, netlink.FAMILY_V4)
	if err != nil {
		return err
	}
	for _, a := range addrs {
		if err := netlink.AddrDel(nic, &a); err != nil {
			return fmt.Errorf("remove address %s: %w", a.IPNet, err)
		}
	}
	// Removing the addresses removed the routes through them.
	return configureNetwork(log, c)
}

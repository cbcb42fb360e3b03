package vminit

import (
	"fmt"
	"log/slog"
	"net"
	"os"
	"strings"

	"github.com/vishvananda/netlink"

	"github.com/execlaw/execlaw/internal/guest"
)

// configureNetwork brings up loopback and, when the host gave an address, the
// VM's one NIC with its address, default route and resolvers.
func configureNetwork(log *slog.Logger, c guest.BootConfig) error {
	lo, err := netlink.LinkByName("lo")
	if err != nil {
		return err
	}
	if err := netlink.LinkSetUp(lo); err != nil {
		return err
	}
	if !c.IP.IsValid() {
		return writeResolvConf(nil)
	}
	nic, err := firstNIC()
	if err != nil {
		return err
	}
	if c.MTU > 0 {
		if err := netlink.LinkSetMTU(nic, c.MTU); err != nil {
			return err
		}
	}
	addr, err := netlink.ParseAddr(c.IP.String())
	if err != nil {
		return err
	}
	if err := netlink.AddrAdd(nic, addr); err != nil {
		return fmt.Errorf("address %s: %w", c.IP, err)
	}
	if err := netlink.LinkSetUp(nic); err != nil {
		return err
	}
	route := &netlink.Route{LinkIndex: nic.Attrs().Index, Gw: net.IP(c.Gateway.AsSlice())}
	if err := netlink.RouteAdd(route); err != nil {
		return fmt.Errorf("default route via %s: %w", c.Gateway, err)
	}
	log.Info("network up", "nic", nic.Attrs().Name, "ip", c.IP, "gw", c.Gateway)
	var dns []string
	for _, d := range c.DNS {
		dns = append(dns, d.String())
	}
	return writeResolvConf(dns)
}

// firstNIC is the VM's network card: the one link that is not loopback.
func firstNIC() (netlink.Link, error) {
	links, err := netlink.LinkList()
	if err != nil {
		return nil, err
	}
	for _, l := range links {
		if l.Attrs().Flags&net.FlagLoopback == 0 && l.Type() == "device" {
			return l, nil
		}
	}
	return nil, fmt.Errorf("the host configured a network but the VM has no network card")
}

func writeResolvConf(servers []string) error {
	var b strings.Builder
	b.WriteString("# written by execlaw-guest at boot\n")
	for _, s := range servers {
		fmt.Fprintf(&b, "nameserver %s\n", s)
	}
	return os.WriteFile("/etc/resolv.conf", []byte(b.String()), 0o644)
}

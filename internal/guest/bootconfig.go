package guest

import (
	"fmt"
	"net/netip"
	"regexp"
	"strconv"
	"strings"
)

// BootConfig is what the host tells a VM's init through the kernel command
// line: how to reach the host, and how to set up the guest. Every value is
// checked on both sides, so nothing on the command line can inject another
// argument.
type BootConfig struct {
	// Channel is how the control API is served: "serial" (a virtio-serial
	// port named SerialPortName, multiplexed with yamux) or "vsock:PORT".
	Channel  string
	Hostname string
	// IP is the guest's address and prefix; invalid (zero) means no network.
	IP      netip.Prefix
	Gateway netip.Addr
	DNS     []netip.Addr
	MTU     int
}

// SerialPortName is the name of the virtio-serial port of the control channel.
const SerialPortName = "execlaw.0"

// DefaultVsockPort is the vsock port the guest listens on.
const DefaultVsockPort = 1024

const argPrefix = "execlaw."

var hostnameRE = regexp.MustCompile(`^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$`)

// Validate checks the config.
func (c BootConfig) Validate() error {
	switch {
	case c.Channel == "serial":
	case strings.HasPrefix(c.Channel, "vsock:"):
		p, err := strconv.Atoi(strings.TrimPrefix(c.Channel, "vsock:"))
		if err != nil || p <= 0 || p > 0xFFFFFFFE {
			return fmt.Errorf("channel %q: bad vsock port", c.Channel)
		}
	default:
		return fmt.Errorf("channel %q: want serial or vsock:PORT", c.Channel)
	}
	if c.Hostname != "" && !hostnameRE.MatchString(c.Hostname) {
		return fmt.Errorf("hostname %q is not a valid host name", c.Hostname)
	}
	if c.IP.IsValid() {
		if !c.IP.Addr().Is4() || !c.Gateway.Is4() || !c.IP.Contains(c.Gateway) {
			return fmt.Errorf("network: %s via %s is not a usable IPv4 setup", c.IP, c.Gateway)
		}
	}
	for _, d := range c.DNS {
		if !d.IsValid() {
			return fmt.Errorf("invalid DNS server")
		}
	}
	if c.MTU != 0 && (c.MTU < 576 || c.MTU > 65535) {
		return fmt.Errorf("mtu %d out of range", c.MTU)
	}
	return nil
}

// KernelArgs renders the config as kernel command-line arguments.
func (c BootConfig) KernelArgs() (string, error) {
	if err := c.Validate(); err != nil {
		return "", err
	}
	args := []string{argPrefix + "channel=" + c.Channel}
	if c.Hostname != "" {
		args = append(args, argPrefix+"hostname="+c.Hostname)
	}
	if c.IP.IsValid() {
		args = append(args, argPrefix+"ip="+c.IP.String(), argPrefix+"gw="+c.Gateway.String())
	}
	if len(c.DNS) > 0 {
		ds := make([]string, len(c.DNS))
		for i, d := range c.DNS {
			ds[i] = d.String()
		}
		args = append(args, argPrefix+"dns="+strings.Join(ds, ","))
	}
	if c.MTU != 0 {
		args = append(args, argPrefix+"mtu="+strconv.Itoa(c.MTU))
	}
	return strings.Join(args, " "), nil
}

// ParseBootConfig reads the execlaw.* arguments of a kernel command line.
func ParseBootConfig(cmdline string) (BootConfig, error) {
	var c BootConfig
	for _, f := range strings.Fields(cmdline) {
		kv, ok := strings.CutPrefix(f, argPrefix)
		if !ok {
			continue
		}
		k, v, _ := strings.Cut(kv, "=")
		var err error
		switch k {
		case "channel":
			c.Channel = v
		case "hostname":
			c.Hostname = v
		case "ip":
			c.IP, err = netip.ParsePrefix(v)
		case "gw":
			c.Gateway, err = netip.ParseAddr(v)
		case "dns":
			for _, s := range strings.Split(v, ",") {
				a, perr := netip.ParseAddr(s)
				if perr != nil {
					err = perr
					break
				}
				c.DNS = append(c.DNS, a)
			}
		case "mtu":
			c.MTU, err = strconv.Atoi(v)
		}
		if err != nil {
			return BootConfig{}, fmt.Errorf("kernel argument %s: %w", f, err)
		}
	}
	if c.Channel == "" {
		c.Channel = "serial"
	}
	return c, c.Validate()
}

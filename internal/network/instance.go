package network

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"path/filepath"
	"strconv"
)

// instanceLen is the length of an instance id: six lowercase hex digits. The
// length is fixed so that no instance's names are a prefix of another's
// (nftables matches "xl<id>-*" as a byte prefix).
const instanceLen = 6

// InstanceID names one server instance's host resources. It is derived from
// the server's data directory (a hash of its absolute, symlink-resolved
// path), so it is stable across restarts: a restarted server finds and
// sweeps what it left, and only that.
func InstanceID(dataDir string) string {
	p, err := filepath.Abs(dataDir)
	if err != nil {
		p = dataDir
	}
	if r, err := filepath.EvalSymlinks(p); err == nil {
		p = r
	}
	sum := sha256.Sum256([]byte("execlaw-instance\x00" + p))
	return hex.EncodeToString(sum[:])[:instanceLen]
}

func validInstance(id string) error {
	if len(id) != instanceLen {
		return fmt.Errorf("network: instance id %q: want %d hex digits", id, instanceLen)
	}
	for _, r := range id {
		if !(r >= '0' && r <= '9' || r >= 'a' && r <= 'f') {
			return fmt.Errorf("network: instance id %q: want %d lowercase hex digits", id, instanceLen)
		}
	}
	return nil
}

// Host link names. Every session's host-side veth is called
// xl<instance>-<slot>, e.g. "xl3fa2c1-0": at most 2+6+1+3 = 12 characters
// (a claimed block has at most 512 slots), inside IFNAMSIZ's 15.
const (
	linkFamily = "xl"
	// linkSep sits at a fixed offset (after the instance id), which is
	// what lets nftables match "a session link of any instance".
	linkSep = '-'
)

// hostLinkPrefix is the name prefix of one instance's host links.
func hostLinkPrefix(instance string) string { return linkFamily + instance + string(linkSep) }

func hostLinkName(instance string, slot int) string {
	return hostLinkPrefix(instance) + strconv.Itoa(slot)
}

// isSessionLink reports whether name is a host link of any instance:
// "xl", six hex digits, "-", digits.
func isSessionLink(name string) bool {
	n := len(linkFamily) + instanceLen
	if len(name) < n+2 || name[:len(linkFamily)] != linkFamily || name[n] != linkSep {
		return false
	}
	if validInstance(name[len(linkFamily):n]) != nil {
		return false
	}
	for _, r := range name[n+1:] {
		if r < '0' || r > '9' {
			return false
		}
	}
	return true
}

// hostTableName is the nftables table (family inet) an instance owns in the
// host namespace: "execlaw-<instance>".
func hostTableName(instance string) string { return TableName + "-" + instance }

// nsPrefix is the name prefix of one instance's session namespaces:
// <NetNSPrefix><instance>-, e.g. "execlaw-3fa2c1-".
func nsPrefix(netnsPrefix, instance string) string { return netnsPrefix + instance + "-" }

package network

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net/netip"

	"github.com/google/nftables"
	"github.com/google/nftables/expr"
	"golang.org/x/sys/unix"
)

// TableName is the nftables table (family inet) the manager owns, both in
// the host namespace and in each session namespace.
const TableName = "execlaw"

// metadataNet is link-local IPv4: cloud metadata services (169.254.169.254,
// AWS's 169.254.169.253 resolver, ...) live here and hand out credentials.
var metadataNet = netip.MustParsePrefix("169.254.0.0/16")

// hostRules describes the host-namespace table. In nft syntax:
//
//	table inet execlaw {
//	  chain input {      # sessions may not talk to the host itself
//	    type filter hook input priority 0; policy accept;
//	    iifname "xlh*" ct state established,related accept
//	    iifname "xlh*" counter drop
//	  }
//	  chain forward {
//	    type filter hook forward priority 0; policy accept;
//	    iifname "xlh*" oifname "xlh*" counter drop        # session -> session
//	    iifname "xlh*" meta nfproto != ipv4 counter drop  # pool is IPv4 only
//	    iifname "xlh*" ip daddr 169.254.0.0/16 counter drop
//	    iifname "xlh*" ip daddr <pool> counter drop
//	    iifname "xlh*" ip daddr <each Config.DenyForward> counter drop
//	    oifname "xlh*" ct state established,related accept
//	    oifname "xlh*" counter drop   # nobody outside may open connections to guests
//	  }
//	  chain postrouting {
//	    type nat hook postrouting priority srcnat; policy accept;
//	    ip saddr <pool> oifname != "xlh*" masquerade
//	  }
//	}
//
// Policies stay accept: this table only adds restrictions for session
// traffic and must not change anything else the host forwards.
func installHostTable(nsFd int, pool netip.Prefix, deny []netip.Prefix) error {
	c, err := nftables.New(nftables.WithNetNSFd(nsFd))
	if err != nil {
		return fmt.Errorf("network: nftables: %w", err)
	}
	t := &nftables.Table{Name: TableName, Family: nftables.TableFamilyINet}
	// add+delete+add in one transaction: replaces a table left by a crashed
	// run atomically (no window without isolation rules), and works when
	// there is none.
	c.AddTable(t)
	c.DelTable(t)
	c.AddTable(t)

	accept := nftables.ChainPolicyAccept
	input := c.AddChain(&nftables.Chain{Name: "input", Table: t, Type: nftables.ChainTypeFilter,
		Hooknum: nftables.ChainHookInput, Priority: nftables.ChainPriorityFilter, Policy: &accept})
	forward := c.AddChain(&nftables.Chain{Name: "forward", Table: t, Type: nftables.ChainTypeFilter,
		Hooknum: nftables.ChainHookForward, Priority: nftables.ChainPriorityFilter, Policy: &accept})
	post := c.AddChain(&nftables.Chain{Name: "postrouting", Table: t, Type: nftables.ChainTypeNAT,
		Hooknum: nftables.ChainHookPostrouting, Priority: nftables.ChainPriorityNATSource, Policy: &accept})

	rule := func(ch *nftables.Chain, exprs ...[]expr.Any) {
		var all []expr.Any
		for _, e := range exprs {
			all = append(all, e...)
		}
		c.AddRule(&nftables.Rule{Table: t, Chain: ch, Exprs: all})
	}
	fromSession := ifnamePrefix(expr.MetaKeyIIFNAME, hostLinkPrefix, expr.CmpOpEq)
	toSession := ifnamePrefix(expr.MetaKeyOIFNAME, hostLinkPrefix, expr.CmpOpEq)

	rule(input, fromSession, ctEstablished(), verdict(expr.VerdictAccept))
	rule(input, fromSession, drop())

	rule(forward, fromSession, toSession, drop())
	rule(forward, fromSession, notIPv4(), drop())
	for _, d := range append([]netip.Prefix{metadataNet, pool}, deny...) {
		rule(forward, fromSession, ip4In(16, d), drop())
	}
	rule(forward, toSession, ctEstablished(), verdict(expr.VerdictAccept))
	rule(forward, toSession, drop())

	rule(post, ip4In(12, pool), ifnamePrefix(expr.MetaKeyOIFNAME, hostLinkPrefix, expr.CmpOpNeq), []expr.Any{&expr.Masq{}})

	if err := c.Flush(); err != nil {
		return fmt.Errorf("network: installing nftables table inet %s: %w", TableName, err)
	}
	return nil
}

// deleteTable removes the manager's table from the namespace; a missing table
// is not an error.
func deleteTable(nsFd int) error {
	c, err := nftables.New(nftables.WithNetNSFd(nsFd))
	if err != nil {
		return fmt.Errorf("network: nftables: %w", err)
	}
	c.DelTable(&nftables.Table{Name: TableName, Family: nftables.TableFamilyINet})
	if err := c.Flush(); err != nil && !errors.Is(err, unix.ENOENT) {
		return fmt.Errorf("network: deleting nftables table inet %s: %w", TableName, err)
	}
	return nil
}

// installSessionTable guards the session namespace against its own guest:
//
//	table inet execlaw {
//	  chain prerouting {   # raw priority: before conntrack sees spoofed packets
//	    type filter hook prerouting priority raw; policy accept;
//	    iifname "tap0" meta nfproto != ipv4 counter drop
//	    iifname "tap0" ip saddr != <guest> counter drop
//	  }
//	  chain input {        # the guest may not talk to the namespace itself
//	    type filter hook input priority 0; policy accept;
//	    iifname "tap0" ct state established,related accept
//	    iifname "tap0" counter drop
//	  }
//	}
//
// ARP is not an inet-family protocol, so the guest can still resolve its
// gateway; forwarding is left to the host table.
func installSessionTable(nsFd int, guest netip.Addr) error {
	c, err := nftables.New(nftables.WithNetNSFd(nsFd))
	if err != nil {
		return fmt.Errorf("network: nftables: %w", err)
	}
	t := c.AddTable(&nftables.Table{Name: TableName, Family: nftables.TableFamilyINet})
	accept := nftables.ChainPolicyAccept
	pre := c.AddChain(&nftables.Chain{Name: "prerouting", Table: t, Type: nftables.ChainTypeFilter,
		Hooknum: nftables.ChainHookPrerouting, Priority: nftables.ChainPriorityRaw, Policy: &accept})
	input := c.AddChain(&nftables.Chain{Name: "input", Table: t, Type: nftables.ChainTypeFilter,
		Hooknum: nftables.ChainHookInput, Priority: nftables.ChainPriorityFilter, Policy: &accept})
	rule := func(ch *nftables.Chain, exprs ...[]expr.Any) {
		var all []expr.Any
		for _, e := range exprs {
			all = append(all, e...)
		}
		c.AddRule(&nftables.Rule{Table: t, Chain: ch, Exprs: all})
	}
	fromTap := ifnameExact(expr.MetaKeyIIFNAME, TapName)
	rule(pre, fromTap, notIPv4(), drop())
	rule(pre, fromTap, ip4Not(12, guest), drop())
	rule(input, fromTap, ctEstablished(), verdict(expr.VerdictAccept))
	rule(input, fromTap, drop())
	if err := c.Flush(); err != nil {
		return fmt.Errorf("network: installing session nftables table: %w", err)
	}
	return nil
}

// --- expression builders (register 1 throughout) ---

// ifnamePrefix matches an interface name starting with prefix, exactly what
// nft compiles `iifname "xlh*"` to: a compare over the first len(prefix)
// bytes only.
func ifnamePrefix(key expr.MetaKey, prefix string, op expr.CmpOp) []expr.Any {
	return []expr.Any{
		&expr.Meta{Key: key, Register: 1},
		&expr.Cmp{Op: op, Register: 1, Data: []byte(prefix)},
	}
}

// ifnameExact matches an interface name exactly (NUL-padded to IFNAMSIZ).
func ifnameExact(key expr.MetaKey, name string) []expr.Any {
	b := make([]byte, unix.IFNAMSIZ)
	copy(b, name)
	return []expr.Any{
		&expr.Meta{Key: key, Register: 1},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: b},
	}
}

func notIPv4() []expr.Any {
	return []expr.Any{
		&expr.Meta{Key: expr.MetaKeyNFPROTO, Register: 1},
		&expr.Cmp{Op: expr.CmpOpNeq, Register: 1, Data: []byte{unix.NFPROTO_IPV4}},
	}
}

func isIPv4() []expr.Any {
	return []expr.Any{
		&expr.Meta{Key: expr.MetaKeyNFPROTO, Register: 1},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte{unix.NFPROTO_IPV4}},
	}
}

// ip4In matches an IPv4 header address field (offset 12 = saddr, 16 = daddr)
// inside prefix p. In an inet table the nfproto check must come first, or
// the payload load would read an IPv6 header at the same offsets.
func ip4In(offset uint32, p netip.Prefix) []expr.Any {
	mask := binary.BigEndian.AppendUint32(nil, ^uint32(0)<<(32-p.Bits()))
	if p.Bits() == 0 {
		mask = []byte{0, 0, 0, 0}
	}
	net := p.Masked().Addr().As4()
	return append(isIPv4(),
		&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseNetworkHeader, Offset: offset, Len: 4},
		&expr.Bitwise{SourceRegister: 1, DestRegister: 1, Len: 4, Mask: mask, Xor: []byte{0, 0, 0, 0}},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: net[:]},
	)
}

// ip4Not matches an IPv4 packet whose address field at offset is not a.
func ip4Not(offset uint32, a netip.Addr) []expr.Any {
	b := a.As4()
	return append(isIPv4(),
		&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseNetworkHeader, Offset: offset, Len: 4},
		&expr.Cmp{Op: expr.CmpOpNeq, Register: 1, Data: b[:]},
	)
}

// ctEstablished matches `ct state established,related`.
func ctEstablished() []expr.Any {
	return []expr.Any{
		&expr.Ct{Register: 1, Key: expr.CtKeySTATE},
		&expr.Bitwise{SourceRegister: 1, DestRegister: 1, Len: 4,
			Mask: binary.NativeEndian.AppendUint32(nil, expr.CtStateBitESTABLISHED|expr.CtStateBitRELATED),
			Xor:  []byte{0, 0, 0, 0}},
		&expr.Cmp{Op: expr.CmpOpNeq, Register: 1, Data: []byte{0, 0, 0, 0}},
	}
}

func verdict(k expr.VerdictKind) []expr.Any { return []expr.Any{&expr.Verdict{Kind: k}} }

// drop counts, then drops: `nft list table inet execlaw` then shows which
// isolation rule fired, which is the first thing to look at when a guest
// says "network unreachable".
func drop() []expr.Any {
	return []expr.Any{&expr.Counter{}, &expr.Verdict{Kind: expr.VerdictDrop}}
}

// tableExists reports whether the manager's table is present in the namespace.
func tableExists(nsFd int) (bool, error) {
	c, err := nftables.New(nftables.WithNetNSFd(nsFd))
	if err != nil {
		return false, err
	}
	tables, err := c.ListTablesOfFamily(nftables.TableFamilyINet)
	if err != nil {
		return false, err
	}
	for _, t := range tables {
		if t.Name == TableName {
			return true, nil
		}
	}
	return false, nil
}

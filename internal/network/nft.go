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

// TableName is the nftables table (family inet) in each session namespace,
// and the stem of each instance's host table (execlaw-<instance>).
const TableName = "execlaw"

// metadataNet is link-local IPv4: cloud metadata services (169.254.169.254,
// AWS's 169.254.169.253 resolver, ...) live here and hand out credentials.
var metadataNet = netip.MustParsePrefix("169.254.0.0/16")

// installHostTable installs one instance's table in the host namespace. For
// instance 3fa2c1 (links "xl3fa2c1-*", any instance's links "xl??????-*"),
// in nft syntax:
//
//	table inet execlaw-3fa2c1 {
//	  chain input {      # sessions may not talk to the host itself
//	    type filter hook input priority 0; policy accept;
//	    iifname "xl3fa2c1-*" ct state established,related accept
//	    iifname "xl3fa2c1-*" counter drop
//	  }
//	  chain forward {
//	    type filter hook forward priority 0; policy accept;
//	    iifname "xl3fa2c1-*" meta nfproto != ipv4 counter drop      # guests are IPv4 only
//	    iifname "xl3fa2c1-*" oifname "xl??????-*" counter drop      # to any session, any instance
//	    iifname "xl3fa2c1-*" ip daddr <each always-denied range, and the whole pool> counter drop
//	    iifname "xl3fa2c1-*" ip daddr <each DNS server> udp dport 53 accept
//	    iifname "xl3fa2c1-*" ip daddr <each DNS server> tcp dport 53 accept
//	    iifname "xl3fa2c1-*" ip daddr <each AllowForward range> accept
//	    iifname "xl3fa2c1-*" ip daddr <each default/DenyForward range> counter drop
//	    oifname "xl3fa2c1-*" ct state established,related accept
//	    oifname "xl3fa2c1-*" counter drop   # nobody outside may open connections to guests
//	  }
//	  chain postrouting {
//	    type nat hook postrouting priority srcnat; policy accept;
//	    ip saddr <the instance's block> oifname != "xl??????-*" masquerade
//	  }
//	}
//
// Policies stay accept: this table only adds restrictions for this
// instance's session traffic and must not change anything else the host
// forwards, other instances' traffic included (their own tables handle it).
func installHostTable(nsFd int, table, linkPfx string, block netip.Prefix, pol guestPolicy) error {
	c, err := nftables.New(nftables.WithNetNSFd(nsFd))
	if err != nil {
		return fmt.Errorf("network: nftables: %w", err)
	}
	t := &nftables.Table{Name: table, Family: nftables.TableFamilyINet}
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
	fromSession := ifnamePrefix(expr.MetaKeyIIFNAME, linkPfx, expr.CmpOpEq)
	toSession := ifnamePrefix(expr.MetaKeyOIFNAME, linkPfx, expr.CmpOpEq)
	accepted := verdict(expr.VerdictAccept)

	rule(input, fromSession, ctEstablished(), accepted)
	rule(input, fromSession, drop())

	rule(forward, fromSession, notIPv4(), drop())
	rule(forward, fromSession, anySessionLink(expr.MetaKeyOIFNAME, expr.CmpOpEq), drop())
	for _, d := range pol.always {
		rule(forward, fromSession, ip4In(16, d), drop())
	}
	for _, d := range pol.dns {
		for _, proto := range []byte{unix.IPPROTO_UDP, unix.IPPROTO_TCP} {
			rule(forward, fromSession, ip4In(16, netip.PrefixFrom(d, 32)), dport(proto, 53), accepted)
		}
	}
	for _, a := range pol.allow {
		rule(forward, fromSession, ip4In(16, a), accepted)
	}
	for _, d := range pol.deny {
		rule(forward, fromSession, ip4In(16, d), drop())
	}
	rule(forward, toSession, ctEstablished(), accepted)
	rule(forward, toSession, drop())

	rule(post, ip4In(12, block), anySessionLink(expr.MetaKeyOIFNAME, expr.CmpOpNeq), []expr.Any{&expr.Masq{}})

	if err := c.Flush(); err != nil {
		return fmt.Errorf("network: installing nftables table inet %s: %w", table, err)
	}
	return nil
}

// deleteTable removes a table from the namespace; a missing table is not an
// error.
func deleteTable(nsFd int, table string) error {
	c, err := nftables.New(nftables.WithNetNSFd(nsFd))
	if err != nil {
		return fmt.Errorf("network: nftables: %w", err)
	}
	c.DelTable(&nftables.Table{Name: table, Family: nftables.TableFamilyINet})
	if err := c.Flush(); err != nil && !errors.Is(err, unix.ENOENT) {
		return fmt.Errorf("network: deleting nftables table inet %s: %w", table, err)
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
// nft compiles `iifname "xl3fa2c1-*"` to: a compare over the first len(prefix)
// bytes only.
func ifnamePrefix(key expr.MetaKey, prefix string, op expr.CmpOp) []expr.Any {
	return []expr.Any{
		&expr.Meta{Key: key, Register: 1},
		&expr.Cmp{Op: op, Register: 1, Data: []byte(prefix)},
	}
}

// anySessionLink matches (op Eq) or excludes (op Neq) a host link of any
// instance: "xl", six bytes of instance id, "-". Only the bytes at those
// fixed offsets are compared (a mask zeroes the instance id), so the
// rule needs no list of the other instances.
func anySessionLink(key expr.MetaKey, op expr.CmpOp) []expr.Any {
	n := len(linkFamily) + instanceLen + 1
	mask := make([]byte, n)
	want := make([]byte, n)
	for i := range len(linkFamily) {
		mask[i], want[i] = 0xff, linkFamily[i]
	}
	mask[n-1], want[n-1] = 0xff, linkSep
	return []expr.Any{
		&expr.Meta{Key: key, Register: 1},
		&expr.Bitwise{SourceRegister: 1, DestRegister: 1, Len: uint32(n), Mask: mask, Xor: make([]byte, n)},
		&expr.Cmp{Op: op, Register: 1, Data: want},
	}
}

// dport matches `meta l4proto <proto> th dport <port>` (TCP and UDP keep
// the destination port at the same offset).
func dport(proto byte, port uint16) []expr.Any {
	return []expr.Any{
		&expr.Meta{Key: expr.MetaKeyL4PROTO, Register: 1},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte{proto}},
		&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseTransportHeader, Offset: 2, Len: 2},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: binary.BigEndian.AppendUint16(nil, port)},
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

// drop counts, then drops: `nft list table inet execlaw-<instance>` shows which
// isolation rule fired, which is the first thing to look at when a guest
// says "network unreachable".
func drop() []expr.Any {
	return []expr.Any{&expr.Counter{}, &expr.Verdict{Kind: expr.VerdictDrop}}
}

// tableExists reports whether the named table is present in the namespace.
func tableExists(nsFd int, name string) (bool, error) {
	c, err := nftables.New(nftables.WithNetNSFd(nsFd))
	if err != nil {
		return false, err
	}
	tables, err := c.ListTablesOfFamily(nftables.TableFamilyINet)
	if err != nil {
		return false, err
	}
	for _, t := range tables {
		if t.Name == name {
			return true, nil
		}
	}
	return false, nil
}

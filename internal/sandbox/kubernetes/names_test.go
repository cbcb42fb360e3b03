package kubernetes

import (
	"strings"
	"testing"

	"k8s.io/apimachinery/pkg/util/validation"
)

func TestOwnerLabelFromHostileIDs(t *testing.T) {
	ids := []string{
		"", "alice", "Alice@Example.COM", "../../etc/passwd", "a=b,c!=d", "-leading-dash-", "___",
		"日本語のユーザー", "\x00\xff\xfe", strings.Repeat("x", 500), "a b\tc\nd", "x-1234567890ab",
		"role=admin", "execlaw.dev/instance=abc",
	}
	seen := map[string]string{}
	for _, id := range ids {
		v := ownerLabel(id)
		if errs := validation.IsValidLabelValue(v); len(errs) > 0 || v == "" {
			t.Errorf("ownerLabel(%q) = %q: not a label value: %v", id, v, errs)
		}
		if other, dup := seen[v]; dup {
			t.Errorf("ownerLabel(%q) = ownerLabel(%q) = %q", id, other, v)
		}
		seen[v] = id
		if ownerLabel(id) != v {
			t.Errorf("ownerLabel(%q) is not stable", id)
		}
	}
	if got := ownerLabel("Alice@Example.COM"); !strings.HasPrefix(got, "alice-example.com-") {
		t.Errorf("ownerLabel keeps no readable part: %q", got)
	}
	// A user whose id spells another's rewritten label still gets a label
	// of their own: the hash is over the whole id, always.
	if a, b := ownerLabel("a/b"), ownerLabel(ownerLabel("a/b")); a == b {
		t.Errorf("two ids share the label %q", a)
	}
}

func TestOwnerAnnotation(t *testing.T) {
	long := strings.Repeat("é", 200) // 400 bytes
	got := ownerAnnotation(long)
	if len(got) > maxOwnerIDAnnotation || !strings.HasPrefix(long, got) || !validUTF8(got) {
		t.Errorf("ownerAnnotation cut %d bytes badly: %d bytes, valid %v", len(long), len(got), validUTF8(got))
	}
	if got := ownerAnnotation("a\xffb"); got != "a\uFFFDb" {
		t.Errorf("invalid UTF-8 kept: %q", got)
	}
}

func validUTF8(s string) bool { return strings.ToValidUTF8(s, "?") == s }

func TestSessionLabel(t *testing.T) {
	if v, err := sessionLabel("s_0123456789abcdef01234567"); err != nil || v != "s_0123456789abcdef01234567" {
		t.Errorf("a server session id: %q, %v", v, err)
	}
	for _, bad := range []string{"", "s/1", strings.Repeat("a", 64), "-s", "s 1"} {
		if _, err := sessionLabel(bad); err == nil {
			t.Errorf("sessionLabel(%q) took it", bad)
		}
	}
}

func TestObjectNames(t *testing.T) {
	for _, id := range []string{"s_0123456789abcdef01234567", "p_ABCDEF_123", "s_", "weird id!"} {
		n := objectNames("abc123", id)
		for _, name := range []string{n.Pod, n.Secret, n.Policy, n.Claim} {
			if errs := validation.IsDNS1123Subdomain(name); len(errs) > 0 {
				t.Errorf("%q: name %q: %v", id, name, errs)
			}
		}
		if errs := validation.IsDNS1123Label(n.Pod); len(errs) > 0 {
			t.Errorf("%q: pod name %q is no DNS label (its host name): %v", id, n.Pod, errs)
		}
		if errs := validation.IsDNS1123Label("execlaw-" + shortID(id)); len(errs) > 0 {
			t.Errorf("%q: host name: %v", id, errs)
		}
	}
	if n := objectNames("abc123", "s_0123456789abcdef01234567"); n.Pod != "execlaw-abc123-0123456789ab" {
		t.Errorf("pod name %q", n.Pod)
	}
}

func TestCheckInstance(t *testing.T) {
	for _, ok := range []string{"abc123", "a", "0123456789abcdef"} {
		if err := CheckInstance(ok); err != nil {
			t.Errorf("%q: %v", ok, err)
		}
	}
	for _, bad := range []string{"", "ABC", "a-b", "0123456789abcdef0", "a b"} {
		if CheckInstance(bad) == nil {
			t.Errorf("%q taken", bad)
		}
	}
}

package kubernetes

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"regexp"
	"strings"
	"unicode/utf8"

	"k8s.io/apimachinery/pkg/util/validation"
)

// Labels every object the driver makes carries. The instance label is what
// a sweep selects on: a server deletes only what its own instance made,
// however many servers share the namespace.
const (
	LabelInstance = "execlaw.dev/instance"
	LabelSession  = "execlaw.dev/session"
	LabelOwner    = "execlaw.dev/owner"
	// LabelPart says which of a session's objects this is (guest, secret,
	// policy, workspace), for an operator reading kubectl output.
	LabelPart = "execlaw.dev/part"
	// AnnotationOwnerID keeps the owner's id as the server knows it: label
	// values cannot hold an arbitrary id, annotations can.
	AnnotationOwnerID = "execlaw.dev/owner-id"
)

// maxOwnerIDAnnotation bounds the owner id kept in an annotation: ids come
// from a login header, and the annotation must not grow without end.
const maxOwnerIDAnnotation = 256

var instanceRE = regexp.MustCompile(`^[a-z0-9]{1,16}$`)

// CheckInstance says whether id can be an instance id: it goes into object
// names and a label value, so lowercase letters and digits only, short.
func CheckInstance(id string) error {
	if !instanceRE.MatchString(id) {
		return fmt.Errorf("instance id %q: want 1 to 16 lowercase letters and digits", id)
	}
	return nil
}

// names are the objects of one session's sandbox.
type names struct {
	Pod, Secret, Policy, Claim string
}

// objectNames names a session's objects execlaw-<instance>-<short session
// id>[-suffix]. The short id is enough to tell sessions apart in a listing;
// identity is the session label, which every lookup of the driver's uses.
func objectNames(instance, sessionID string) names {
	base := "execlaw-" + instance + "-" + shortID(sessionID)
	return names{Pod: base, Secret: base + "-guest", Policy: base, Claim: base + "-workspace"}
}

// shortID is the part of a session id (s_<hex>) that names its objects and
// the guest's host name: lowercase letters, digits and dashes, 12 at most.
func shortID(id string) string {
	id = strings.ToLower(strings.TrimPrefix(id, "s_"))
	var b strings.Builder
	for _, r := range id {
		if b.Len() == 12 {
			break
		}
		if (r >= 'a' && r <= 'z') || (r >= '0' && r <= '9') {
			b.WriteRune(r)
		} else {
			b.WriteByte('-')
		}
	}
	s := strings.Trim(b.String(), "-")
	if s == "" {
		return "x" + hashHex(id, 11)
	}
	return s
}

// sessionLabel is a session id as a label value. Session ids are the
// server's own (s_ and hex) and always fit; anything else is refused rather
// than rewritten, since the label is how every object of the session is
// found again.
func sessionLabel(id string) (string, error) {
	if errs := validation.IsValidLabelValue(id); len(errs) > 0 || id == "" {
		return "", fmt.Errorf("session id %q cannot be a label value: %s", id, strings.Join(errs, "; "))
	}
	return id, nil
}

// ownerLabel turns a user id, which the server takes from a login header
// and so may hold anything, into a label value: a readable part made of the
// characters labels allow, then a hash of the whole id. The hash is always
// there, so two ids can never share a label by one of them spelling out the
// other's rewritten form.
func ownerLabel(userID string) string {
	if userID == "" {
		return "none"
	}
	var b strings.Builder
	for _, r := range strings.ToLower(userID) {
		if b.Len() == 40 {
			break
		}
		switch {
		case (r >= 'a' && r <= 'z') || (r >= '0' && r <= '9') || r == '.' || r == '_' || r == '-':
			b.WriteRune(r)
		default:
			b.WriteByte('-')
		}
	}
	// A label value starts and ends with a letter or digit.
	readable := strings.Trim(b.String(), "-_.")
	h := hashHex(userID, 12)
	if readable == "" {
		return "u-" + h
	}
	return readable + "-" + h
}

// ownerAnnotation is the owner id as an annotation keeps it: whole when
// short, cut at a rune boundary otherwise, invalid UTF-8 replaced.
func ownerAnnotation(userID string) string {
	s := strings.ToValidUTF8(userID, "\uFFFD")
	if len(s) <= maxOwnerIDAnnotation {
		return s
	}
	cut := maxOwnerIDAnnotation
	for cut > 0 && !utf8.RuneStart(s[cut]) {
		cut--
	}
	return s[:cut]
}

func hashHex(s string, n int) string {
	sum := sha256.Sum256([]byte("execlaw-label\x00" + s))
	return hex.EncodeToString(sum[:])[:n]
}

// instanceSelector selects every object of this instance.
func instanceSelector(instance string) string { return LabelInstance + "=" + instance }

// sessionLabels are the labels of a session's objects.
func sessionLabels(instance, session, owner, part string) map[string]string {
	return map[string]string{LabelInstance: instance, LabelSession: session, LabelOwner: owner, LabelPart: part}
}

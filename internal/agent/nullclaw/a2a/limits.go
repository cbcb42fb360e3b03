package a2a

import (
	"strings"
	"unicode/utf8"
)

// Limits bound what the client accepts from the gateway. Zero fields take the
// defaults of DefaultLimits.
type Limits struct {
	MaxRequestBytes  int   // one JSON-RPC request body (nullclaw's MAX_BODY_SIZE is 64 KiB)
	MaxLineBytes     int   // one SSE line
	MaxEventBytes    int   // the data of one SSE event
	MaxStreamBytes   int64 // everything read from one stream
	MaxEvents        int   // events in one stream
	MaxResponseBytes int   // a plain JSON answer (tasks/cancel, tasks/get, HTTP errors)
	MaxIDBytes       int   // task, context, artifact and message ids
	MaxParts         int   // parts of one message or artifact
	MaxArtifacts     int   // artifacts of one task
	MaxHistory       int   // history messages of one task
	MaxErrorBytes    int   // error messages are cut to this length
}

// DefaultLimits are the limits a zero Limits stands for.
var DefaultLimits = Limits{
	MaxRequestBytes:  64 << 10,
	MaxLineBytes:     1 << 20,
	MaxEventBytes:    4 << 20,
	MaxStreamBytes:   256 << 20,
	MaxEvents:        1 << 20,
	MaxResponseBytes: 4 << 20,
	MaxIDBytes:       256,
	MaxParts:         64,
	MaxArtifacts:     64,
	MaxHistory:       256,
	MaxErrorBytes:    2048,
}

func (l Limits) withDefaults() Limits {
	d := DefaultLimits
	pick := func(v, def int) int {
		if v > 0 {
			return v
		}
		return def
	}
	l.MaxRequestBytes = pick(l.MaxRequestBytes, d.MaxRequestBytes)
	l.MaxLineBytes = pick(l.MaxLineBytes, d.MaxLineBytes)
	l.MaxEventBytes = pick(l.MaxEventBytes, d.MaxEventBytes)
	if l.MaxStreamBytes <= 0 {
		l.MaxStreamBytes = d.MaxStreamBytes
	}
	l.MaxEvents = pick(l.MaxEvents, d.MaxEvents)
	l.MaxResponseBytes = pick(l.MaxResponseBytes, d.MaxResponseBytes)
	l.MaxIDBytes = pick(l.MaxIDBytes, d.MaxIDBytes)
	l.MaxParts = pick(l.MaxParts, d.MaxParts)
	l.MaxArtifacts = pick(l.MaxArtifacts, d.MaxArtifacts)
	l.MaxHistory = pick(l.MaxHistory, d.MaxHistory)
	l.MaxErrorBytes = pick(l.MaxErrorBytes, d.MaxErrorBytes)
	return l
}

// CleanText makes an untrusted string safe to show: valid UTF-8, no control
// characters but newline and tab, at most max bytes (and an ellipsis). It is
// exported for the texts a caller takes from events, such as tool names and
// status messages, which the client passes on as they came.
func CleanText(s string, max int) string {
	s = strings.ToValidUTF8(s, "\uFFFD")
	s = strings.Map(func(r rune) rune {
		if r == '\n' || r == '\t' {
			return r
		}
		if r < 0x20 || r == 0x7f {
			return -1
		}
		return r
	}, s)
	if len(s) > max {
		cut := max
		for cut > 0 && !utf8.RuneStart(s[cut]) {
			cut--
		}
		s = s[:cut] + "…"
	}
	return s
}

// clip shortens a string quoted in a protocol error.
func clip(s string, n int) string {
	if len(s) > n {
		return s[:n] + "…"
	}
	return s
}

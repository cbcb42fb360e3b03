package api

import (
	"net/http"
	"testing"
)

func TestStripOwnCookies(t *testing.T) {
	h := http.Header{"Cookie": {"a=1; execlaw_session=x; EXECLAW_preview_8001=y", "b=2;;execlaw_preview=z; c"}}
	stripOwnCookies(h)
	if got := h.Values("Cookie"); len(got) != 1 || got[0] != "a=1; b=2; c" {
		t.Errorf("kept %q", got)
	}
	h = http.Header{"Cookie": {"execlaw_session=x"}}
	stripOwnCookies(h)
	if _, ok := h["Cookie"]; ok {
		t.Errorf("an empty Cookie header was kept: %q", h)
	}
}

package session

import (
	"strings"
	"testing"
)

// Names must not hide or reorder what is shown: control and format
// characters are refused wherever they are; ordinary text in any script,
// emoji (with their variation selectors) included, is kept.
func TestValidateName(t *testing.T) {
	for name, ok := range map[string]bool{
		"Refactor the parser":             true,
		"Ünïcödé ✨ 日本語":                   true,
		"❤️ café":                         true, // U+FE0F is a variation selector (Mn), not a format character
		"שלום עולם":                       true,
		"مرحبا":                           true,
		strings.Repeat("é", MaxNameLen):   true,
		strings.Repeat("é", MaxNameLen+1): false,
		"invoice\u202Efdp.exe":            false, // right-to-left override
		"a\u202Ab":                        false, // left-to-right embedding
		"\u2066isolate\u2069":             false, // isolates
		"zero\u200Bwidth":                 false,
		"a\u200Cb":                        false, // zero-width non-joiner
		"a\u200Db":                        false, // zero-width joiner
		"a\u2060b":                        false, // word joiner
		"\uFEFFbom":                       false,
		"soft\u00ADhyphen":                false,
		"mark\u200E":                      false, // left-to-right mark
		"tag\U000E0041":                   false,
		"bell\u0007":                      false,
		"nul\u0000":                       false,
		"tab\there":                       false,
		"del\u007F":                       false,
		"c1\u0085x":                       false,
		"line\u2028sep":                   false,
		"para\u2029sep":                   false,
		"bad\xffutf8":                     false,
	} {
		if err := validateName(name); (err == nil) != ok {
			t.Errorf("validateName(%q) = %v, want ok=%v", name, err, ok)
		} else if err != nil && !strings.Contains(err.Error(), "name") {
			t.Errorf("validateName(%q): %v", name, err)
		}
	}
}

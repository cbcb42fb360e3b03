package api

import (
	"strings"
	"testing"
	"unicode/utf8"

	shlex "github.com/anmitsu/go-shlex"
)

// The command never passes exe.dev's limit, whatever the prompt, and what
// exe.dev's lexer reads back is the prompt or a prefix of it plus the note.
func TestExeDevNewCommandLimits(t *testing.T) {
	base := len("new --json --name=vm --prompt=")
	fits := MaxExeDevCommand - base - 2 // room inside the quotes
	cases := map[string]string{
		"exactly fits":         strings.Repeat("a", fits),
		"one over":             strings.Repeat("a", fits+1),
		"quotes exactly fit":   strings.Repeat("'", fits/4),
		"quotes one over":      strings.Repeat("'", fits/4+1),
		"multibyte at cut":     strings.Repeat("é", fits/2+3),
		"emoji at cut":         strings.Repeat("🙂", fits/4+5),
		"mixed":                strings.Repeat("a'b\n$(x)`y`\\ ", 10000),
		"huge":                 strings.Repeat("x", 5<<20),
		"quote then multibyte": strings.Repeat("'é", 20000),
	}
	for name, prompt := range cases {
		t.Run(name, func(t *testing.T) {
			t.Parallel() // go-shlex is slow on 64 KiB (it builds tokens by concatenation)
			cmd, cut := exeDevNewCommand("vm", prompt)
			if len(cmd) > MaxExeDevCommand {
				t.Fatalf("command is %d bytes", len(cmd))
			}
			words, err := shlex.Split(cmd, true)
			if err != nil || len(words) != 4 {
				t.Fatalf("split: %d words, %v", len(words), err)
			}
			got := strings.TrimPrefix(words[3], "--prompt=")
			if cut == 0 {
				if got != prompt {
					t.Fatal("prompt changed although nothing was cut")
				}
				return
			}
			i := strings.Index(got, "\n\n[… truncated by ExeClaw")
			if i < 0 {
				t.Fatal("no truncation note")
			}
			kept := got[:i]
			if !utf8.ValidString(kept) || !strings.HasPrefix(prompt, kept) || len(prompt)-len(kept) != cut {
				t.Fatalf("kept %d of %d bytes, cut %d", len(kept), len(prompt), cut)
			}
			// Nearly all the room is used.
			if MaxExeDevCommand-len(cmd) > 16 {
				t.Errorf("command is %d bytes; room wasted", len(cmd))
			}
		})
	}
}

func TestShellQuote(t *testing.T) {
	if cmd, _ := exeDevNewCommand("vm", "it's"); cmd != `new --json --name=vm --prompt='it'\''s'` {
		t.Errorf("quoting: %s", cmd)
	}
}

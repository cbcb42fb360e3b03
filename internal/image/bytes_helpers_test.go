package image

import (
	"bytes"
	"debug/elf"
	"encoding/binary"
	"fmt"
	"math/rand"
	"os"
	"os/exec"
	"strings"
	"testing"
)

// Helpers shared by the byte-level tests (xz, vmlinux, cpio): the real tools
// they compare against, and realistic inputs.

// needTool finds a command the tests compare against. It fails rather than
// skips: CI installs these with scripts/deps.sh --test.
func needTool(t testing.TB, name, pkg string) string {
	t.Helper()
	p, err := exec.LookPath(name)
	if err != nil {
		t.Fatalf("%s not found (%v): install the Debian package %s (scripts/deps.sh --test does)", name, err, pkg)
	}
	return p
}

// runTool runs a command with stdin and returns its stdout, failing the test
// on any error.
func runTool(t testing.TB, stdin []byte, dir, name string, args ...string) []byte {
	t.Helper()
	out, err := tryTool(stdin, dir, name, args...)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

func tryTool(stdin []byte, dir, name string, args ...string) ([]byte, error) {
	cmd := exec.Command(name, args...)
	cmd.Stdin = bytes.NewReader(stdin)
	cmd.Dir = dir
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		return nil, fmt.Errorf("%s %s: %v: %s", name, strings.Join(args, " "), err, stderr.Bytes())
	}
	return stdout.Bytes(), nil
}

// xzCompress compresses data with the real xz, e.g. xzCompress(t, data,
// "--x86", "--lzma2=preset=6").
func xzCompress(t testing.TB, data []byte, args ...string) []byte {
	t.Helper()
	needTool(t, "xz", "xz-utils")
	return runTool(t, data, "", "xz", append([]string{"--compress", "--stdout", "--quiet", "--threads=1"}, args...)...)
}

// x86Text returns up to n bytes of real x86-64 machine code: the .text of
// this test binary, which the BCJ filter is made for.
func x86Text(t testing.TB, n int) []byte {
	t.Helper()
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	f, err := elf.Open(exe)
	if err != nil {
		t.Fatalf("test binary: %v", err)
	}
	defer f.Close()
	if f.Machine != elf.EM_X86_64 {
		t.Fatalf("test binary is %v; these tests want x86-64 code", f.Machine)
	}
	sec := f.Section(".text")
	if sec == nil {
		t.Fatal("test binary has no .text")
	}
	text, err := sec.Data()
	if err != nil {
		t.Fatal(err)
	}
	if len(text) < n/2 {
		t.Fatalf("test binary .text is only %d bytes", len(text))
	}
	return text[:min(n, len(text))]
}

// minimalELF wraps code in an ELF64 header with one PT_LOAD segment, like a
// vmlinux: an x86-64 executable (ET_EXEC) unless the caller says otherwise.
func minimalELF(code []byte, machine elf.Machine, typ elf.Type) []byte {
	const ehsize, phsize = 64, 56
	b := make([]byte, ehsize+phsize, ehsize+phsize+len(code))
	copy(b, []byte{0x7f, 'E', 'L', 'F', byte(elf.ELFCLASS64), byte(elf.ELFDATA2LSB), byte(elf.EV_CURRENT)})
	le := binary.LittleEndian
	le.PutUint16(b[16:], uint16(typ))
	le.PutUint16(b[18:], uint16(machine))
	le.PutUint32(b[20:], uint32(elf.EV_CURRENT))
	le.PutUint64(b[24:], 0xffffffff81000000) // entry
	le.PutUint64(b[32:], ehsize)             // phoff
	le.PutUint16(b[52:], ehsize)
	le.PutUint16(b[54:], phsize)
	le.PutUint16(b[56:], 1) // phnum
	ph := b[ehsize:]
	le.PutUint32(ph[0:], uint32(elf.PT_LOAD))
	le.PutUint32(ph[4:], uint32(elf.PF_R|elf.PF_X))
	le.PutUint64(ph[8:], ehsize+phsize)       // offset
	le.PutUint64(ph[16:], 0xffffffff81000000) // vaddr
	le.PutUint64(ph[24:], 0x1000000)          // paddr
	le.PutUint64(ph[32:], uint64(len(code)))  // filesz
	le.PutUint64(ph[40:], uint64(len(code)))  // memsz
	le.PutUint64(ph[48:], 0x200000)           // align
	return append(b, code...)
}

// e8Storm makes n bytes dense in what the x86 BCJ filter converts: E8/E9
// opcodes (CALL/JMP rel32), often followed by a 00 or FF most significant
// byte, in runs that exercise its prev_mask logic, plus E8 … 00/FF patterns
// placed across the 4 KiB, 64 KiB and 2 MiB boundaries of the encoder's
// buffers and LZMA2's chunks.
func e8Storm(seed int64, n int) []byte {
	r := rand.New(rand.NewSource(seed))
	alphabet := []byte{0xE8, 0xE9, 0xE8, 0x00, 0xFF, 0x00, 0xFF, 0x0F, 0x48, 0x89}
	b := make([]byte, n)
	for i := range b {
		if r.Intn(4) == 0 {
			b[i] = byte(r.Intn(256))
		} else {
			b[i] = alphabet[r.Intn(len(alphabet))]
		}
	}
	for _, boundary := range []int{4 << 10, 8 << 10, 64 << 10, 1 << 20, 2 << 20} {
		for k := boundary; k < n; k += boundary {
			for d := -6; d <= 2; d += 2 {
				i := k + d
				if i >= 0 && i+5 <= n {
					copy(b[i:], []byte{0xE8, byte(r.Intn(256)), byte(r.Intn(256)), 0x00, 0x00})
				}
			}
		}
	}
	return b
}

func randomBytes(seed int64, n int) []byte {
	b := make([]byte, n)
	rand.New(rand.NewSource(seed)).Read(b)
	return b
}

// firstDiff reports where two byte slices first differ, for failure messages.
func firstDiff(a, b []byte) string {
	for i := 0; i < len(a) && i < len(b); i++ {
		if a[i] != b[i] {
			return fmt.Sprintf("first difference at byte %d of %d/%d: %#02x, want %#02x", i, len(a), len(b), a[i], b[i])
		}
	}
	return fmt.Sprintf("lengths %d and %d, equal up to the shorter", len(a), len(b))
}

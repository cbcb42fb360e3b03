package image

import (
	"bytes"
	"compress/gzip"
	"debug/elf"
	"encoding/binary"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

// bzImage lays out a kernel image the way arch/x86/boot/tools/build.c does:
// the boot sector and setup (setup_sects+1 sectors, with the setup header at
// 0x1f1), then the protected-mode code holding the compressed payload at
// payload_offset. Only the fields ExtractVmlinux and kernelRelease read are
// real.
type bzImage struct {
	setupSects byte   // 0 means 4
	version    uint16 // boot protocol
	payload    []byte
	before     int    // protected-mode bytes before the payload (its offset)
	after      int    // bytes after it (the rest of the decompressor)
	release    string // the kernel_version string, if any
}

func (b bzImage) bytes() []byte {
	sects := int(b.setupSects)
	if sects == 0 {
		sects = 4
	}
	setup := (sects + 1) * 512
	img := make([]byte, setup+b.before+len(b.payload)+b.after)
	le := binary.LittleEndian
	img[0x1f1] = b.setupSects
	le.PutUint16(img[0x1fe:], 0xAA55)
	copy(img[0x202:], "HdrS")
	le.PutUint16(img[0x206:], b.version)
	if b.release != "" {
		const at = 0x300 // in the setup code, as the kernel has it
		copy(img[at:], b.release+" (builder@example) #1 SMP\x00")
		le.PutUint16(img[0x20e:], at-0x200)
	}
	le.PutUint32(img[0x248:], uint32(b.before))
	le.PutUint32(img[0x24c:], uint32(len(b.payload)))
	for i := setup; i < setup+b.before; i++ {
		img[i] = 0xCC // decompressor code, not zeros
	}
	copy(img[setup+b.before:], b.payload)
	return img
}

// sizeAppended adds the 4-byte uncompressed size the kernel build puts after
// a compressed payload (scripts/Makefile.lib, size_append).
func sizeAppended(payload []byte, size int) []byte {
	return binary.LittleEndian.AppendUint32(append([]byte(nil), payload...), uint32(size))
}

func gzipped(t *testing.T, data []byte) []byte {
	var buf bytes.Buffer
	gz, _ := gzip.NewWriterLevel(&buf, gzip.BestCompression)
	if _, err := gz.Write(data); err != nil {
		t.Fatal(err)
	}
	if err := gz.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

func TestExtractVmlinux(t *testing.T) {
	vmlinux := minimalELF(x86Text(t, 1<<20), elf.EM_X86_64, elf.ET_EXEC)
	// As the kernel build compresses it (scripts/xz_wrap.sh for x86).
	kernelXz := sizeAppended(xzCompress(t, vmlinux, "--check=crc32", "--x86", "--lzma2=dict=32MiB"), len(vmlinux))
	kernelGz := sizeAppended(gzipped(t, vmlinux), len(vmlinux))
	cases := []struct {
		name string
		bz   bzImage
	}{
		{"xz", bzImage{setupSects: 0x1b, version: 0x020f, payload: kernelXz, before: 0x3a4, after: 0x1000}},
		{"xz, nothing around the payload", bzImage{setupSects: 0x1b, version: 0x020f, payload: kernelXz}},
		{"xz, setup_sects 0 means 4", bzImage{setupSects: 0, version: 0x020f, payload: kernelXz, before: 100, after: 3}},
		{"xz, one setup sector, protocol 2.08", bzImage{setupSects: 1, version: 0x0208, payload: kernelXz, before: 512}},
		{"xz without BCJ", bzImage{setupSects: 0x1b, version: 0x020f, payload: sizeAppended(xzCompress(t, vmlinux, "--check=crc32", "--lzma2=preset=1"), len(vmlinux))}},
		{"gzip", bzImage{setupSects: 0x1b, version: 0x020f, payload: kernelGz, before: 0x3a4, after: 0x1000}},
		{"uncompressed", bzImage{setupSects: 0x1b, version: 0x020c, payload: vmlinux, before: 0x3a4, after: 0x10}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			got, err := ExtractVmlinux(tc.bz.bytes())
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(got, vmlinux) {
				t.Fatalf("extracted vmlinux differs: %s", firstDiff(got, vmlinux))
			}
		})
	}
}

func TestExtractVmlinuxErrors(t *testing.T) {
	vmlinux := minimalELF(x86Text(t, 64<<10), elf.EM_X86_64, elf.ET_EXEC)
	kernelXz := sizeAppended(xzCompress(t, vmlinux, "--check=crc32", "--x86", "--lzma2=preset=0"), len(vmlinux))
	kernelGz := sizeAppended(gzipped(t, vmlinux), len(vmlinux))
	good := bzImage{setupSects: 0x1b, version: 0x020f, payload: kernelXz, before: 0x3a4, after: 0x100}
	edit := func(f func(img []byte) []byte) []byte { return f(good.bytes()) }
	le := binary.LittleEndian
	xzOf := func(data []byte) []byte {
		return xzCompress(t, data, "--check=crc32", "--x86", "--lzma2=preset=0")
	}
	corrupt := append([]byte(nil), kernelXz...)
	corrupt[len(corrupt)/2] ^= 0x20
	cases := []struct {
		name string
		in   []byte
		err  string
	}{
		{"empty", nil, "not a bzImage"},
		{"short", good.bytes()[:0x24f], "not a bzImage"},
		{"no HdrS", edit(func(b []byte) []byte { copy(b[0x202:], "HdrX"); return b }), "not a bzImage"},
		{"an ELF, not a bzImage", vmlinux, "not a bzImage"},
		{"boot protocol 2.07", bzImage{setupSects: 0x1b, version: 0x0207, payload: kernelXz}.bytes(), "need 2.08+"},
		{"payload length 0", edit(func(b []byte) []byte { le.PutUint32(b[0x24c:], 0); return b }), "outside the file"},
		{"payload one byte past the end", edit(func(b []byte) []byte { le.PutUint32(b[0x24c:], uint32(len(kernelXz)+0x100+1)); return b }), "outside the file"},
		{"payload offset past the end", edit(func(b []byte) []byte { le.PutUint32(b[0x248:], uint32(len(b))); return b }), "outside the file"},
		{"offset and length 4 GiB", edit(func(b []byte) []byte { le.PutUint64(b[0x248:], 1<<64-1); return b }), "outside the file"},
		{"setup_sects past the end", edit(func(b []byte) []byte { b[0x1f1] = 0xff; return b[:0x3000] }), "outside the file"},
		{"file cut inside the payload", good.bytes()[:(0x1b+1)*512+0x3a4+len(kernelXz)/2], "outside the file"},
		{"xz payload cut short", bzImage{setupSects: 0x1b, version: 0x020f, payload: kernelXz[:len(kernelXz)/2]}.bytes(), "decompress kernel"},
		{"xz payload corrupt", bzImage{setupSects: 0x1b, version: 0x020f, payload: corrupt}.bytes(), "decompress kernel"},
		{"gzip payload cut short", bzImage{setupSects: 0x1b, version: 0x020f, payload: kernelGz[:len(kernelGz)/2]}.bytes(), "decompress kernel"},
		{"gzip header only", bzImage{setupSects: 0x1b, version: 0x020f, payload: []byte{0x1f, 0x8b}}.bytes(), "decompress kernel"},
		{"bzip2", bzImage{setupSects: 0x1b, version: 0x020f, payload: []byte("BZh91AY&SY")}.bytes(), "unsupported kernel compression"},
		{"zstd", bzImage{setupSects: 0x1b, version: 0x020f, payload: []byte{0x28, 0xb5, 0x2f, 0xfd, 0, 0}}.bytes(), "unsupported kernel compression"},
		{"lz4", bzImage{setupSects: 0x1b, version: 0x020f, payload: []byte{0x02, 0x21, 0x4c, 0x18}}.bytes(), "unsupported kernel compression"},
		{"one byte payload", bzImage{setupSects: 0x1b, version: 0x020f, payload: []byte{0x5d}}.bytes(), "unsupported kernel compression"},
		{"decompresses to text", bzImage{setupSects: 0x1b, version: 0x020f, payload: xzOf([]byte("not a kernel"))}.bytes(), "not ELF"},
		{"decompresses to an arm64 kernel", bzImage{setupSects: 0x1b, version: 0x020f, payload: xzOf(minimalELF([]byte{1, 2, 3}, elf.EM_AARCH64, elf.ET_EXEC))}.bytes(), "want an x86-64 executable"},
		{"decompresses to a PIE", bzImage{setupSects: 0x1b, version: 0x020f, payload: xzOf(minimalELF([]byte{1, 2, 3}, elf.EM_X86_64, elf.ET_DYN))}.bytes(), "want an x86-64 executable"},
		{"uncompressed ELF cut short", bzImage{setupSects: 0x1b, version: 0x020f, payload: vmlinux[:40]}.bytes(), "not ELF"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			out, err := ExtractVmlinux(tc.in)
			if err == nil {
				t.Fatalf("no error; %d bytes out", len(out))
			}
			if !strings.Contains(err.Error(), tc.err) {
				t.Fatalf("error %q, want one about %q", err, tc.err)
			}
		})
	}
}

// Real kernels, when the machine has some: the host's, and those of the
// guest images the VM tests build (testutil.VMImage). The suite does not need
// one. An xz payload is also decoded by the real xz, for comparison.
func TestExtractVmlinuxRealKernel(t *testing.T) {
	if testing.Short() {
		t.Skip("a real kernel takes seconds to decompress (-short)")
	}
	paths, _ := filepath.Glob("/boot/vmlinuz-*")
	dir := os.Getenv("EXECLAW_TEST_IMAGES") // as testutil.VMImage
	if dir == "" {
		dir = "/var/tmp/execlaw-test-images"
	}
	if _, err := os.Stat(dir); err == nil {
		if st, err := NewStore(dir); err == nil {
			for _, name := range []string{"minimal", "agents"} {
				if img, _, err := st.VMImage(name); err == nil && img.Kernel != "" && !slices.Contains(paths, img.Kernel) {
					paths = append(paths, img.Kernel) // the images share their kernel
				}
			}
		}
	}
	if len(paths) == 0 {
		t.Skip("no bzImage on this machine (/boot/vmlinuz-*, or a test image); the synthetic ones are tested above")
	}
	for _, p := range paths {
		t.Run(filepath.Base(p), func(t *testing.T) { checkRealKernel(t, p) })
	}
}

func checkRealKernel(t *testing.T, path string) {
	bz, err := os.ReadFile(path)
	if err != nil {
		t.Skipf("%v", err) // /boot/vmlinuz-* is often readable by root only
	}
	vmlinux, err := ExtractVmlinux(bz)
	if err != nil {
		t.Fatal(err)
	}
	f, err := elf.NewFile(bytes.NewReader(vmlinux))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if f.Section(".text") == nil || len(f.Progs) == 0 {
		t.Fatal("the vmlinux has no .text or no program headers")
	}
	if kernelRelease(bz) == "" {
		t.Error("no release in the setup header")
	}
	start := (int(bz[0x1f1]) + 1) * 512
	off := start + int(binary.LittleEndian.Uint32(bz[0x248:]))
	payload := bz[off : off+int(binary.LittleEndian.Uint32(bz[0x24c:]))]
	if bytes.HasPrefix(payload, []byte("\xfd7zXZ\x00")) {
		needTool(t, "xz", "xz-utils")
		want := runTool(t, payload, "", "xz", "--decompress", "--stdout", "--single-stream")
		if !bytes.Equal(vmlinux, want) {
			t.Fatalf("differs from xz's: %s", firstDiff(vmlinux, want))
		}
	}
	t.Logf("%s: %d bytes, payload %x…, vmlinux %d bytes", kernelRelease(bz), len(bz), payload[:6], len(vmlinux))
}

func TestKernelRelease(t *testing.T) {
	le := binary.LittleEndian
	good := bzImage{setupSects: 0x1b, version: 0x020f, payload: []byte{1}, release: "6.1.0-56-amd64"}
	edit := func(f func(img []byte) []byte) []byte { return f(good.bytes()) }
	cases := []struct {
		name string
		in   []byte
		want string
	}{
		{"Debian's", good.bytes(), "6.1.0-56-amd64"},
		{"no version field", bzImage{setupSects: 0x1b, version: 0x020f, payload: []byte{1}}.bytes(), ""},
		{"no HdrS", edit(func(b []byte) []byte { b[0x202] = 0; return b }), ""},
		{"short", good.bytes()[:0x20f], ""},
		{"offset past the end", edit(func(b []byte) []byte { le.PutUint16(b[0x20e:], 0xffff); return b }), ""},
		{"no NUL after it", edit(func(b []byte) []byte { return b[:0x300+5] }), ""},
		{"blank", edit(func(b []byte) []byte { copy(b[0x300:], "   \x00"); return b }), ""},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			if got := kernelRelease(tc.in); got != tc.want {
				t.Fatalf("kernelRelease = %q, want %q", got, tc.want)
			}
		})
	}
}

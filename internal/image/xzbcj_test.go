package image

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"hash/crc32"
	"runtime"
	"strings"
	"testing"
)

// The decoder must give back, byte for byte, what the real xz compressed:
// with and without the x86 BCJ filter, with the options the kernel build uses
// (scripts/xz_wrap.sh: --check=crc32 --x86 --lzma2=dict=32MiB) and others.
func TestXzDecodeMatchesXz(t *testing.T) {
	needTool(t, "xz", "xz-utils")
	big := x86Text(t, 3<<20) // past LZMA2's 2 MiB chunk size
	text := big[:1<<20]
	small := big[:64<<10]
	storm := e8Storm(1, 2<<20+100)
	zeros := make([]byte, 5<<20)
	cases := []struct {
		name string
		data []byte
		args []string
	}{
		{"kernel options", big, []string{"--check=crc32", "--x86", "--lzma2=dict=32MiB"}},
		{"x86 preset 6", text, []string{"--x86", "--lzma2"}},
		{"x86 preset 0", small, []string{"--x86", "--lzma2=preset=0"}},
		{"x86 preset 6e", small, []string{"--x86", "--lzma2=preset=6e"}},
		{"x86 dict 4KiB", small, []string{"--x86", "--lzma2=dict=4KiB"}},
		{"x86 dict 3MiB", small, []string{"--x86", "--lzma2=dict=3MiB"}},
		{"x86 lc0 lp2 pb0", small, []string{"--x86", "--lzma2=preset=1,lc=0,lp=2,pb=0"}},
		{"x86 lc4 pb4 fast hc4", small, []string{"--x86", "--lzma2=lc=4,lp=0,pb=4,mode=fast,mf=hc4"}},
		{"lzma2 alone", small, []string{"--lzma2"}},
		{"lzma2 alone on code", small, []string{"--lzma2=preset=1"}},
		{"check none", small, []string{"--check=none", "--x86", "--lzma2"}},
		{"check crc64", small, []string{"--check=crc64", "--x86", "--lzma2"}},
		{"check sha256", small, []string{"--check=sha256", "--x86", "--lzma2"}},
		{"two x86 filters", small, []string{"--x86", "--x86", "--lzma2"}},
		{"three x86 filters", small, []string{"--x86", "--x86", "--x86", "--lzma2"}},
		{"blocks of 64KiB", text, []string{"--x86", "--lzma2=preset=1", "--block-size=65536"}},
		{"blocks of odd sizes", small, []string{"--x86", "--lzma2", "--block-list=3,4,5,1000,4097,0"}},
		{"multithreaded blocks with sizes in headers", text, []string{"--threads=2", "--block-size=300KiB", "--x86", "--lzma2=preset=1"}},
		{"E8 storm", storm, []string{"--x86", "--lzma2=preset=1"}},
		{"E8 storm in blocks", storm[:300<<10], []string{"--x86", "--lzma2=preset=0", "--block-size=65536"}},
		{"incompressible: uncompressed LZMA2 chunks", randomBytes(2, 300<<10), []string{"--x86", "--lzma2"}},
		{"zeros: several chunks", zeros, []string{"--x86", "--lzma2=preset=0"}},
		{"empty", nil, []string{"--x86", "--lzma2"}},
		{"one byte E8", []byte{0xE8}, []string{"--x86", "--lzma2"}},
		{"four bytes E8", bytes.Repeat([]byte{0xE8}, 4), []string{"--x86", "--lzma2"}},
		{"CALL 0 at the very end", []byte{0xE8, 0, 0, 0, 0}, []string{"--x86", "--lzma2"}},
		{"CALL -1 after a byte", []byte{0x90, 0xE8, 0xff, 0xff, 0xff, 0xff}, []string{"--x86", "--lzma2"}},
		{"only E8 bytes", bytes.Repeat([]byte{0xE8}, 1000), []string{"--x86", "--lzma2"}},
		{"only E9 FF", bytes.Repeat([]byte{0xE9, 0xFF}, 1000), []string{"--x86", "--lzma2"}},
		{"CALL rel32 0 repeated", bytes.Repeat([]byte{0xE8, 0, 0, 0, 0}, 2000), []string{"--x86", "--lzma2"}},
		{"E8 E8 then FF runs", bytes.Repeat([]byte{0xE8, 0xE8, 0x12, 0xFF, 0xFF, 0xFF, 0x00, 0xE9}, 999), []string{"--x86", "--lzma2"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel() // xz compressing one case while another decodes
			xz := xzCompress(t, tc.data, tc.args...)
			got, err := decodeKernelXZ(xz, len(tc.data))
			if err != nil {
				t.Fatalf("decode %d bytes of xz %v: %v", len(xz), tc.args, err)
			}
			if !bytes.Equal(got, tc.data) {
				t.Fatalf("decoded data differs from the input: %s", firstDiff(got, tc.data))
			}
		})
	}
}

// A bzImage's xz payload is followed by the uncompressed size (the kernel's
// size_append); xz allows null padding and more streams after a stream.
func TestXzDecodeAfterTheStream(t *testing.T) {
	a := e8Storm(3, 10000)
	b := x86Text(t, 5000)
	xa := xzCompress(t, a, "--x86", "--lzma2=preset=0")
	xb := xzCompress(t, b, "--check=sha256", "--lzma2=preset=0")
	var size [4]byte
	binary.LittleEndian.PutUint32(size[:], uint32(len(a)))
	cat := func(parts ...[]byte) []byte { return bytes.Join(parts, nil) }
	cases := []struct {
		name string
		in   []byte
		want []byte
	}{
		{"kernel size appended", cat(xa, size[:]), a},
		{"stream padding", cat(xa, make([]byte, 8)), a},
		{"two streams", cat(xa, xb), cat(a, b)},
		{"two streams with padding and the size", cat(xa, make([]byte, 4), xb, size[:]), cat(a, b)},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			got, err := decodeKernelXZ(tc.in, len(tc.want))
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(got, tc.want) {
				t.Fatalf("got %s", firstDiff(got, tc.want))
			}
		})
	}
}

// unBCJx86 alone, against xz's own x86 filter: xz encodes raw x86+LZMA2, xz
// decodes only the LZMA2 layer, which leaves the BCJ-converted bytes.
func TestUnBCJx86MatchesXz(t *testing.T) {
	needTool(t, "xz", "xz-utils")
	var patterns [][]byte
	for n := 0; n <= 12; n++ {
		patterns = append(patterns, bytes.Repeat([]byte{0xE8}, n))
	}
	cases := []struct {
		name    string
		data    []byte
		changed bool // the filter must convert something, or the case tests nothing
	}{
		{"x86 code", x86Text(t, 1<<20), true},
		{"E8 storm", e8Storm(4, 300<<10), true},
		{"CALL 0 at offsets 0..7", bytes.Join([][]byte{{0xE8, 0, 0, 0, 0}, {1, 0xE8, 0, 0, 0, 0}, {1, 2, 0xE8, 0, 0, 0, 0}, {1, 2, 3, 0xE9, 0, 0, 0, 0xFF}}, nil), true},
		{"E8 runs of 0..12", bytes.Join(patterns, []byte{0, 0, 0, 0, 0}), true},
		{"prev_mask: E8 00 E8 ...", bytes.Repeat([]byte{0xE8, 0x00, 0xE8, 0x00, 0x00, 0xFF, 0xE9, 0xFF}, 512), true},
		{"random", randomBytes(5, 100<<10), true},
		{"no opcodes", bytes.Repeat([]byte("0123456789"), 100), false},
		{"too short to convert", []byte{0xE8, 0, 0, 0}, false},
		{"empty", nil, false},
	}
	for seed := int64(10); seed < 20; seed++ {
		n := int(seed-10)*7 + 5
		cases = append(cases, struct {
			name    string
			data    []byte
			changed bool
		}{fmt.Sprintf("storm of %d bytes", n), e8Storm(seed, n), false})
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			raw := []string{"--format=raw", "--lzma2=preset=0"}
			enc := runTool(t, tc.data, "", "xz", "-c", "--format=raw", "--x86", "--lzma2=preset=0")
			filtered := runTool(t, enc, "", "xz", append([]string{"-d", "-c"}, raw...)...)
			if len(filtered) != len(tc.data) {
				t.Fatalf("xz gave %d filtered bytes for %d", len(filtered), len(tc.data))
			}
			if tc.changed && bytes.Equal(filtered, tc.data) {
				t.Fatal("the x86 filter changed nothing: the case tests nothing")
			}
			got := append([]byte(nil), filtered...)
			unBCJx86(got)
			if !bytes.Equal(got, tc.data) {
				t.Fatalf("unBCJx86: %s", firstDiff(got, tc.data))
			}
		})
	}
}

// Every truncation and every flipped bit of a stream is an error, not a panic
// and never silently different data: the xz format has CRCs on its headers
// and its index, and a check (CRC32 in a kernel) on the data.
func TestXzDecodeCorrupt(t *testing.T) {
	data := x86Text(t, 1000)
	for _, check := range []string{"crc32", "crc64", "sha256"} {
		t.Run(check, func(t *testing.T) {
			xz := xzCompress(t, data, "--check="+check, "--x86", "--lzma2=preset=0")
			if _, err := decodeKernelXZ(xz, len(data)); err != nil {
				t.Fatalf("the intact stream: %v", err)
			}
			// Every byte of the kernel's kind of stream; the headers and the
			// end (check, index, footer) of the others.
			all := check == "crc32"
			sweep := func(i int) bool { return all || i < 40 || i >= len(xz)-120 }
			for n := 0; n < len(xz); n++ {
				if !sweep(n) {
					continue
				}
				if out, err := decodeKernelXZ(xz[:n], len(data)); err == nil {
					t.Fatalf("truncated to %d of %d bytes: no error, %d bytes out", n, len(xz), len(out))
				}
			}
			bad := append([]byte(nil), xz...)
			var unnoticed []string
			for i := range bad {
				if !sweep(i) {
					continue
				}
				for _, bit := range []byte{1 << (i % 8), 0x80 >> (i % 8)} {
					bad[i] ^= bit
					out, err := decodeKernelXZ(bad, len(data))
					bad[i] ^= bit
					if err == nil {
						if !bytes.Equal(out, data) {
							t.Fatalf("bit %#02x of byte %d of %d flipped: different data, and no error", bit, i, len(xz))
						}
						unnoticed = append(unnoticed, fmt.Sprintf("%d^%#02x", i, bit))
					}
				}
			}
			// The lzma package does not compare an LZMA2 chunk's compressed
			// size with what it read, so making it larger goes unnoticed
			// (bytes 27 and 28 here); the data is still right.
			if len(unnoticed) > 4 {
				t.Fatalf("%d flips went unnoticed: %v", len(unnoticed), unnoticed)
			}
			t.Logf("flips that leave the data as it was, unnoticed: %v", unnoticed)
		})
	}
}

// xzStream is a stream made by xz, split around its first block header,
// which the hostile cases rewrite.
type xzStream struct {
	streamHdr []byte // 12 bytes
	blockHdr  []byte // size byte, flags, filters, padding, CRC32
	rest      []byte
}

func splitXz(t *testing.T, xz []byte) xzStream {
	t.Helper()
	n := (int(xz[12]) + 1) * 4
	return xzStream{xz[:12], xz[12 : 12+n], xz[12+n:]}
}

// blockHeader encodes a block header around body (flags, sizes, filters),
// padded to at least size bytes so that the index still matches.
func blockHeader(body []byte, size int) []byte {
	n := (1 + len(body) + 4 + 3) &^ 3
	n = max(n, size)
	h := make([]byte, n)
	h[0] = byte(n/4 - 1)
	copy(h[1:], body)
	binary.LittleEndian.PutUint32(h[n-4:], crc32.ChecksumIEEE(h[:n-4]))
	return h
}

func streamHeader(flags1 byte) []byte {
	h := []byte{0xfd, '7', 'z', 'X', 'Z', 0, 0, flags1, 0, 0, 0, 0}
	binary.LittleEndian.PutUint32(h[8:], crc32.ChecksumIEEE(h[6:8]))
	return h
}

func uvarint(v uint64) []byte { return binary.AppendUvarint(nil, v) }

// Hand-made headers that xz would never write: each is a clean error, or for
// the huge dictionary a correct decode that does not allocate it.
func TestXzDecodeHostileHeaders(t *testing.T) {
	data := x86Text(t, 4000)
	// The x86 filter alone: flags 1 (two filters), x86 without properties,
	// LZMA2 with dict 4 KiB (properties byte 0).
	s := splitXz(t, xzCompress(t, data, "--check=crc32", "--x86", "--lzma2=preset=0,dict=4KiB"))
	if want := blockHeader([]byte{0x01, 0x04, 0x00, 0x21, 0x01, 0x00}, 0); !bytes.Equal(s.blockHdr, want) {
		t.Fatalf("xz wrote block header %x, the cases expect %x", s.blockHdr, want)
	}
	hsize := len(s.blockHdr)
	cat := func(parts ...[]byte) []byte { return bytes.Join(parts, nil) }
	withBlock := func(body ...[]byte) []byte {
		return cat(s.streamHdr, blockHeader(cat(body...), hsize), s.rest)
	}
	x86 := []byte{0x04, 0x00}
	lzma2 := []byte{0x21, 0x01, 0x00}
	cases := []struct {
		name string
		in   []byte
		err  string
	}{
		{"no magic", cat([]byte("\xfd7zXY\x00"), s.streamHdr[6:], s.blockHdr, s.rest), "not an xz stream"},
		{"legacy .lzma", xzCompress(t, data, "--format=lzma"), "not an xz stream"},
		{"only the stream header", s.streamHdr, ""},
		{"stream header CRC", cat(s.streamHdr[:11], []byte{s.streamHdr[11] ^ 1}, s.blockHdr, s.rest), "stream header"},
		{"check type 2 (reserved)", cat(streamHeader(0x02), s.blockHdr, s.rest), "check"},
		{"stream flags reserved bits", cat(streamHeader(0x11), s.blockHdr, s.rest), ""},
		{"block header size past the end", cat(s.streamHdr, []byte{0xff, 0x01, 0x04}), ""},
		{"block header CRC", cat(s.streamHdr, s.blockHdr[:hsize-1], []byte{s.blockHdr[hsize-1] ^ 0x40}, s.rest), "CRC"},
		{"reserved block flags", withBlock([]byte{0x01 | 0x08}, x86, lzma2), ""},
		{"padding not zero", cat(s.streamHdr, blockHeader(cat([]byte{0x01}, x86, lzma2, []byte{0, 7}), hsize+4), s.rest), ""},
		{"x86 properties size 2^63", withBlock([]byte{0x01, 0x04}, uvarint(1<<63), lzma2), "propert"},
		{"x86 properties size 2^64-1", withBlock([]byte{0x01, 0x04}, uvarint(1<<64-1), lzma2), "propert"},
		{"x86 properties size 2^62", withBlock([]byte{0x01, 0x04}, uvarint(1<<62), lzma2), "propert"},
		{"x86 properties past the header", withBlock([]byte{0x01, 0x04, 0x20}, lzma2), "propert"},
		{"x86 start offset", withBlock([]byte{0x01, 0x04, 0x04, 0x10, 0, 0, 0}, lzma2), "start offset"},
		{"filter id 2^62", withBlock([]byte{0x01}, uvarint(1<<62), []byte{0x00}, lzma2), "unsupported filter"},
		{"filter id 2^63: 10-byte varint", withBlock([]byte{0x01}, uvarint(1<<63), []byte{0x00}, lzma2), "bad block header"},
		{"varint with a needless zero byte", withBlock([]byte{0x01, 0x84, 0x00, 0x00}, lzma2), "bad block header"},
		{"unterminated varint", withBlock([]byte{0x01, 0x04, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80}), ""},
		{"delta filter", withBlock([]byte{0x01, 0x03, 0x01, 0x00}, lzma2), "unsupported filter"},
		{"ARM filter", withBlock([]byte{0x01, 0x07, 0x00}, lzma2), "unsupported filter"},
		{"LZMA2 first", withBlock([]byte{0x01}, lzma2, x86), ""},
		{"x86 alone", withBlock([]byte{0x00}, x86), ""},
		{"two LZMA2", withBlock([]byte{0x01}, lzma2, lzma2), ""},
		{"LZMA2 properties size 2", withBlock([]byte{0x01}, x86, []byte{0x21, 0x02, 0x00, 0x00}), "LZMA2 properties"},
		{"LZMA2 dictionary 41", withBlock([]byte{0x01}, x86, []byte{0x21, 0x01, 41}), "LZMA2 properties"},
		{"wrong compressed size", withBlock([]byte{0x41}, uvarint(10), x86, lzma2), "size"},
		{"wrong uncompressed size", withBlock([]byte{0x81}, uvarint(uint64(len(data)-1)), x86, lzma2), "size"},
		{"LZMA2 data cut", cat(s.streamHdr, s.blockHdr, s.rest[:100]), ""},
		{"index missing", cat(s.streamHdr, s.blockHdr, s.rest[:len(s.rest)-24]), ""},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			out, err := decodeKernelXZ(tc.in, 1<<20)
			if err == nil {
				t.Fatalf("no error; %d bytes out", len(out))
			}
			if !strings.Contains(err.Error(), tc.err) {
				t.Fatalf("error %q, want one about %q", err, tc.err)
			}
		})
	}

	// Sizes in the header that are right are accepted, and so is the
	// largest dictionary (4 GiB - 1): it is never larger than the output
	// limit needs, so decoding 4000 bytes does not allocate 4 GiB.
	good := []struct {
		name string
		in   []byte
	}{
		{"dictionary 4 GiB", withBlock([]byte{0x01}, x86, []byte{0x21, 0x01, 40})},
		{"dictionary 3 GiB", withBlock([]byte{0x01}, x86, []byte{0x21, 0x01, 39})},
	}
	for _, tc := range good {
		t.Run(tc.name, func(t *testing.T) {
			var before, after runtime.MemStats
			runtime.ReadMemStats(&before)
			out, err := decodeKernelXZ(tc.in, 64<<10)
			runtime.ReadMemStats(&after)
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(out, data) {
				t.Fatal(firstDiff(out, data))
			}
			if a := after.TotalAlloc - before.TotalAlloc; a > 16<<20 {
				t.Fatalf("decoding %d bytes allocated %d MiB", len(data), a>>20)
			}
		})
	}
}

// The limit is on the decompressed size: equal passes, one byte less fails,
// over all blocks and streams together.
func TestXzDecodeLimit(t *testing.T) {
	data := e8Storm(6, 50000)
	one := xzCompress(t, data, "--x86", "--lzma2=preset=0")
	blocks := xzCompress(t, data, "--x86", "--lzma2=preset=0", "--block-size=8000")
	two := append(append([]byte(nil), one...), one...)
	for _, tc := range []struct {
		name string
		in   []byte
		n    int
	}{{"one block", one, len(data)}, {"blocks", blocks, len(data)}, {"streams", two, 2 * len(data)}} {
		t.Run(tc.name, func(t *testing.T) {
			if _, err := decodeKernelXZ(tc.in, tc.n); err != nil {
				t.Fatalf("limit %d: %v", tc.n, err)
			}
			if _, err := decodeKernelXZ(tc.in, tc.n-1); err == nil || !strings.Contains(err.Error(), "too large") {
				t.Fatalf("limit %d: %v, want too large", tc.n-1, err)
			}
		})
	}
}

// Whatever the bytes, the decoder returns (no panic) and keeps to its limit.
func FuzzXzDecode(f *testing.F) {
	for _, args := range [][]string{{"--x86", "--lzma2=preset=0"}, {"--check=sha256", "--lzma2=preset=0", "--block-size=100"}} {
		f.Add(xzCompress(f, e8Storm(7, 300), args...))
	}
	f.Add([]byte("\xfd7zXZ\x00"))
	f.Fuzz(func(t *testing.T, in []byte) {
		out, err := decodeKernelXZ(in, 4096)
		if err == nil && len(out) > 4096 {
			t.Fatalf("%d bytes out, over the limit", len(out))
		}
	})
}

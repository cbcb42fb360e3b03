package image

import (
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"hash"
	"hash/crc32"
	"hash/crc64"
	"io"

	"github.com/ulikunitz/xz/lzma"
)

// Linux kernels compressed with xz use two filters, x86 BCJ then LZMA2, and
// the xz package only decodes LZMA2 alone. So the stream is read here: each
// block's header is parsed, LZMA2 is decoded with the lzma package, and the
// BCJ filter is undone afterwards. A kernel payload is one stream of one
// block, followed by the 4-byte uncompressed size the kernel build appends;
// more blocks and streams (xz --block-size, cat a.xz b.xz) are decoded too.
// Every CRC, the block checks, the index and the stream footer are verified,
// as xz does, so a truncated or damaged payload is an error, never silently
// different data.

const (
	xzFilterX86   = 0x04
	xzFilterLZMA2 = 0x21
)

var (
	xzMagic       = []byte{0xfd, '7', 'z', 'X', 'Z', 0}
	xzFooterMagic = []byte{'Y', 'Z'}
	crc64Table    = crc64.MakeTable(crc64.ECMA)
	errXzTrunc    = errors.New("xz: truncated stream")
)

// decodeKernelXZ decodes an xz stream, and any streams that follow it, into
// at most limit bytes.
func decodeKernelXZ(data []byte, limit int) ([]byte, error) {
	if !bytes.HasPrefix(data, xzMagic) {
		return nil, errors.New("not an xz stream")
	}
	var out []byte
	for {
		n, err := decodeXzStream(data, &out, limit)
		if err != nil {
			return nil, err
		}
		data = data[n:]
		// Stream padding (null bytes, a multiple of 4) may come before the
		// next stream. Anything else after a stream, such as the size the
		// kernel appends, is not xz's and is left alone.
		pad := 0
		for pad < len(data) && data[pad] == 0 {
			pad++
		}
		if pad%4 != 0 || !bytes.HasPrefix(data[pad:], xzMagic) {
			return out, nil
		}
		data = data[pad:]
	}
}

// decodeXzStream appends the data of the stream at the start of data to
// *out and returns the stream's length.
func decodeXzStream(data []byte, out *[]byte, limit int) (int, error) {
	if len(data) < 12 {
		return 0, errXzTrunc
	}
	flags := data[6:8]
	if binary.LittleEndian.Uint32(data[8:]) != crc32.ChecksumIEEE(flags) {
		return 0, errors.New("xz: stream header CRC mismatch")
	}
	if flags[0] != 0 || flags[1]&0xF0 != 0 {
		return 0, errors.New("xz: unsupported stream flags")
	}
	check := flags[1]
	var newHash func() hash.Hash
	switch check {
	case 0x00: // none
	case 0x01:
		newHash = func() hash.Hash { return crc32.NewIEEE() }
	case 0x04:
		newHash = func() hash.Hash { return crc64.New(crc64Table) }
	case 0x0A:
		newHash = sha256.New
	default:
		return 0, fmt.Errorf("xz: unsupported check type %#x", check)
	}

	type record struct{ unpadded, uncompressed uint64 }
	var records []record
	pos := 12
	for {
		if pos >= len(data) {
			return 0, errXzTrunc
		}
		if data[pos] == 0 { // index indicator: no more blocks
			break
		}
		start := len(*out)
		n, unpadded, err := decodeXzBlock(data[pos:], out, limit, newHash)
		if err != nil {
			return 0, err
		}
		records = append(records, record{uint64(unpadded), uint64(len(*out) - start)})
		pos += n
	}

	// The index lists every block's sizes; it must match what was decoded.
	index := data[pos:]
	p := index[1:]
	varint := func() (uint64, error) {
		v, n := xzUvarint(p)
		if n <= 0 {
			return 0, errors.New("xz: bad index")
		}
		p = p[n:]
		return v, nil
	}
	count, err := varint()
	if err != nil {
		return 0, err
	}
	if count != uint64(len(records)) {
		return 0, fmt.Errorf("xz: index lists %d blocks, the stream has %d", count, len(records))
	}
	for _, r := range records {
		u, err := varint()
		if err != nil {
			return 0, err
		}
		v, err := varint()
		if err != nil {
			return 0, err
		}
		if u != r.unpadded || v != r.uncompressed {
			return 0, errors.New("xz: index does not match the blocks")
		}
	}
	isize := len(index) - len(p)
	for ; isize%4 != 0; isize++ {
		if isize >= len(index) {
			return 0, errXzTrunc
		}
		if index[isize] != 0 {
			return 0, errors.New("xz: bad index padding")
		}
	}
	if isize+4 > len(index) {
		return 0, errXzTrunc
	}
	if binary.LittleEndian.Uint32(index[isize:]) != crc32.ChecksumIEEE(index[:isize]) {
		return 0, errors.New("xz: index CRC mismatch")
	}
	isize += 4

	// The stream footer repeats the flags and gives the index size.
	footer := index[isize:]
	if len(footer) < 12 {
		return 0, errXzTrunc
	}
	if binary.LittleEndian.Uint32(footer) != crc32.ChecksumIEEE(footer[4:10]) {
		return 0, errors.New("xz: stream footer CRC mismatch")
	}
	if !bytes.Equal(footer[8:10], flags) || !bytes.Equal(footer[10:12], xzFooterMagic) ||
		(uint64(binary.LittleEndian.Uint32(footer[4:]))+1)*4 != uint64(isize) {
		return 0, errors.New("xz: bad stream footer")
	}
	return pos + isize + 12, nil
}

// decodeXzBlock appends the data of the block at the start of p to *out. It
// returns the block's length with its padding and check, and its unpadded
// size (without the padding) as the index records it.
func decodeXzBlock(p []byte, out *[]byte, limit int, newHash func() hash.Hash) (n, unpadded int, err error) {
	hsize := (int(p[0]) + 1) * 4
	if hsize > len(p) {
		return 0, 0, errXzTrunc
	}
	if binary.LittleEndian.Uint32(p[hsize-4:]) != crc32.ChecksumIEEE(p[:hsize-4]) {
		return 0, 0, errors.New("xz: block header CRC mismatch")
	}
	flags := p[1]
	if flags&0x3C != 0 {
		return 0, 0, errors.New("xz: unsupported block flags")
	}
	h := p[2 : hsize-4]
	varint := func() (uint64, error) {
		v, n := xzUvarint(h)
		if n <= 0 {
			return 0, errors.New("xz: bad block header")
		}
		h = h[n:]
		return v, nil
	}
	compSize, uncompSize := int64(-1), int64(-1)
	if flags&0x40 != 0 {
		v, err := varint()
		if err != nil {
			return 0, 0, err
		}
		compSize = int64(v)
	}
	if flags&0x80 != 0 {
		v, err := varint()
		if err != nil {
			return 0, 0, err
		}
		uncompSize = int64(v)
	}
	nfilters := int(flags&3) + 1
	bcj := 0 // x86 filters in the chain; each is undone
	dictCap := -1
	for i := 0; i < nfilters; i++ {
		id, err := varint()
		if err != nil {
			return 0, 0, err
		}
		psize, err := varint()
		if err != nil || psize > uint64(len(h)) {
			return 0, 0, errors.New("xz: bad filter properties")
		}
		props := h[:psize]
		h = h[psize:]
		switch {
		case id == xzFilterX86 && i < nfilters-1:
			if psize != 0 {
				return 0, 0, errors.New("xz: BCJ with a start offset is not supported")
			}
			bcj++
		case id == xzFilterLZMA2 && i == nfilters-1:
			if psize != 1 || props[0] > 40 {
				return 0, 0, errors.New("xz: bad LZMA2 properties")
			}
			bits := uint(props[0])
			if bits == 40 {
				dictCap = 0xFFFFFFFF
			} else {
				dictCap = int((2 | (bits & 1)) << (bits/2 + 11))
			}
		default:
			return 0, 0, fmt.Errorf("xz: unsupported filter %#x at position %d of %d", id, i+1, nfilters)
		}
	}
	if dictCap < 0 {
		return 0, 0, errors.New("xz: no LZMA2 filter")
	}
	if len(bytes.TrimLeft(h, "\x00")) != 0 {
		return 0, 0, errors.New("xz: bad block header padding")
	}

	// No match reaches further back than the block's output, which is at
	// most what is left of limit, and its size when the header gives it: a
	// larger dictionary, which a hostile header may ask for (up to 4 GiB),
	// would only waste memory.
	room := limit - len(*out)
	dictCap = min(dictCap, room)
	if uncompSize >= 0 {
		dictCap = int(min(int64(dictCap), uncompSize))
	}
	dictCap = max(dictCap, lzma.MinDictCap)
	body := bytes.NewReader(p[hsize:]) // read byte by byte, so its position is exact
	r, err := lzma.Reader2Config{DictCap: dictCap}.NewReader2(body)
	if err != nil {
		return 0, 0, fmt.Errorf("xz: %w", err)
	}
	start := len(*out)
	buf := bytes.NewBuffer(*out)
	if _, err := buf.ReadFrom(io.LimitReader(r, int64(room)+1)); err != nil {
		return 0, 0, fmt.Errorf("xz: %w", err)
	}
	*out = buf.Bytes()
	if len(*out) > limit {
		return 0, 0, errors.New("xz: decompressed data too large")
	}
	if !r.EOS() {
		return 0, 0, errXzTrunc
	}
	data := (*out)[start:]
	comp := len(p) - hsize - body.Len()
	if compSize >= 0 && compSize != int64(comp) || uncompSize >= 0 && uncompSize != int64(len(data)) {
		return 0, 0, errors.New("xz: block sizes differ from its header's")
	}
	for range bcj {
		unBCJx86(data)
	}

	// Then padding to a multiple of 4, and the check of the data.
	n = hsize + comp
	for ; n%4 != 0; n++ {
		if n >= len(p) {
			return 0, 0, errXzTrunc
		}
		if p[n] != 0 {
			return 0, 0, errors.New("xz: bad block padding")
		}
	}
	unpadded = hsize + comp
	if newHash != nil {
		h := newHash()
		h.Write(data)
		sum := h.Sum(nil)
		if n+len(sum) > len(p) {
			return 0, 0, errXzTrunc
		}
		if !bytes.Equal(p[n:n+len(sum)], xzCheckBytes(sum)) {
			return 0, 0, errors.New("xz: data check mismatch (corrupt data)")
		}
		n += len(sum)
		unpadded += len(sum)
	}
	return n, unpadded, nil
}

// xzCheckBytes orders a check as xz stores it: CRC32 and CRC64 little
// endian (hash.Hash gives them big endian), SHA-256 as it is.
func xzCheckBytes(sum []byte) []byte {
	if len(sum) <= 8 {
		for i, j := 0, len(sum)-1; i < j; i, j = i+1, j-1 {
			sum[i], sum[j] = sum[j], sum[i]
		}
	}
	return sum
}

// xzUvarint reads xz's variable-length integer: at most 9 bytes, 63 bits.
func xzUvarint(b []byte) (uint64, int) {
	v, n := binary.Uvarint(b[:min(len(b), 9)])
	if n > 1 && b[n-1] == 0 {
		return 0, -1 // a needlessly long encoding
	}
	return v, n
}

// unBCJx86 undoes the x86 branch converter in place: E8/E9 (CALL/JMP rel32)
// targets were made absolute to compress better, and are made relative again.
// This is xz-embedded's bcj_x86 for a whole buffer starting at offset 0.
func unBCJx86(buf []byte) {
	allowed := [8]bool{true, true, true, false, true, false, false, false}
	bitNum := [8]uint32{0, 1, 2, 2, 3, 3, 3, 3}
	msb := func(b byte) bool { return b == 0x00 || b == 0xFF }
	if len(buf) <= 4 {
		return
	}
	size := len(buf) - 4
	prevPos := -1
	var prevMask uint32
	for i := 0; i < size; i++ {
		if buf[i]&0xFE != 0xE8 {
			continue
		}
		d := i - prevPos
		if d > 3 {
			prevMask = 0
		} else {
			prevMask = (prevMask << (d - 1)) & 7
			if prevMask != 0 {
				b := buf[i+4-int(bitNum[prevMask])]
				if !allowed[prevMask] || msb(b) {
					prevPos = i
					prevMask = prevMask<<1 | 1
					continue
				}
			}
		}
		prevPos = i
		if !msb(buf[i+4]) {
			prevMask = prevMask<<1 | 1
			continue
		}
		src := binary.LittleEndian.Uint32(buf[i+1:])
		var dest uint32
		for {
			dest = src - uint32(i+5)
			if prevMask == 0 {
				break
			}
			j := bitNum[prevMask] * 8
			if !msb(byte(dest >> (24 - j))) {
				break
			}
			src = dest ^ (1<<(32-j) - 1)
		}
		dest &= 0x01FFFFFF
		dest |= 0 - (dest & 0x01000000)
		binary.LittleEndian.PutUint32(buf[i+1:], dest)
		i += 4
	}
}

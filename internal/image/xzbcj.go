package image

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"

	"github.com/ulikunitz/xz/lzma"
)

// Linux kernels compressed with xz use two filters, x86 BCJ then LZMA2, and
// the xz package only decodes LZMA2 alone. So the first block of the stream is
// read here: its header is parsed, LZMA2 is decoded with the lzma package,
// and the BCJ filter is undone afterwards. A kernel payload is one block.

const (
	xzFilterX86   = 0x04
	xzFilterLZMA2 = 0x21
)

func decodeKernelXZ(data []byte, limit int) ([]byte, error) {
	if len(data) < 12+8 || !bytes.HasPrefix(data, []byte{0xfd, '7', 'z', 'X', 'Z', 0}) {
		return nil, errors.New("not an xz stream")
	}
	p := data[12:] // stream header: magic, flags, CRC32
	hsize := (int(p[0]) + 1) * 4
	if p[0] == 0 || hsize > len(p) {
		return nil, errors.New("xz: bad block header size")
	}
	hdr := p[1:hsize]
	body := p[hsize:]
	flags := hdr[0]
	nfilters := int(flags&3) + 1
	h := hdr[1:]
	varint := func() (uint64, error) {
		v, n := binary.Uvarint(h)
		if n <= 0 {
			return 0, errors.New("xz: bad block header")
		}
		h = h[n:]
		return v, nil
	}
	if flags&0x40 != 0 { // compressed size present
		if _, err := varint(); err != nil {
			return nil, err
		}
	}
	if flags&0x80 != 0 { // uncompressed size present
		if _, err := varint(); err != nil {
			return nil, err
		}
	}
	bcj := false
	dictCap := -1
	for i := 0; i < nfilters; i++ {
		id, err := varint()
		if err != nil {
			return nil, err
		}
		psize, err := varint()
		if err != nil || int(psize) > len(h) {
			return nil, errors.New("xz: bad filter properties")
		}
		props := h[:psize]
		h = h[psize:]
		switch {
		case id == xzFilterX86 && i < nfilters-1:
			if psize != 0 {
				return nil, errors.New("xz: BCJ with a start offset is not supported")
			}
			bcj = true
		case id == xzFilterLZMA2 && i == nfilters-1:
			if psize != 1 || props[0] > 40 {
				return nil, errors.New("xz: bad LZMA2 properties")
			}
			bits := uint(props[0])
			if bits == 40 {
				dictCap = 0xFFFFFFFF
			} else {
				dictCap = int((2 | (bits & 1)) << (bits/2 + 11))
			}
		default:
			return nil, fmt.Errorf("xz: unsupported filter %#x", id)
		}
	}
	if dictCap < 0 {
		return nil, errors.New("xz: no LZMA2 filter")
	}
	r, err := lzma.Reader2Config{DictCap: max(dictCap, lzma.MinDictCap)}.NewReader2(bytes.NewReader(body))
	if err != nil {
		return nil, fmt.Errorf("xz: %w", err)
	}
	out, err := io.ReadAll(io.LimitReader(r, int64(limit)+1))
	if err != nil {
		return nil, fmt.Errorf("xz: %w", err)
	}
	if len(out) > limit {
		return nil, errors.New("xz: decompressed data too large")
	}
	if bcj {
		unBCJx86(out)
	}
	return out, nil
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

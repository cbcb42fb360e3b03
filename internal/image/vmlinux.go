package image

import (
	"bytes"
	"compress/gzip"
	"debug/elf"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
)

// maxVmlinux bounds the decompressed kernel.
const maxVmlinux = 512 << 20

// ExtractVmlinux turns a bzImage into the uncompressed ELF vmlinux that
// Firecracker boots, like the kernel's scripts/extract-vmlinux but in Go: the
// compressed kernel sits in the bzImage's payload, whose offset and length the
// setup header records (boot protocol 2.08+).
func ExtractVmlinux(bzImage []byte) ([]byte, error) {
	if len(bzImage) < 0x250 || string(bzImage[0x202:0x206]) != "HdrS" {
		return nil, errors.New("not a bzImage (no HdrS setup header)")
	}
	if v := binary.LittleEndian.Uint16(bzImage[0x206:]); v < 0x0208 {
		return nil, fmt.Errorf("boot protocol %#x has no payload fields (need 2.08+)", v)
	}
	setupSects := int(bzImage[0x1f1])
	if setupSects == 0 {
		setupSects = 4
	}
	start := (setupSects + 1) * 512
	off := int(binary.LittleEndian.Uint32(bzImage[0x248:]))
	length := int(binary.LittleEndian.Uint32(bzImage[0x24c:]))
	if start+off+length > len(bzImage) || length <= 0 {
		return nil, errors.New("bzImage payload lies outside the file")
	}
	payload := bzImage[start+off : start+off+length]

	var out []byte
	var err error
	switch {
	case bytes.HasPrefix(payload, []byte{0xfd, '7', 'z', 'X', 'Z', 0}):
		out, err = decodeKernelXZ(payload, maxVmlinux)
	case bytes.HasPrefix(payload, []byte{0x1f, 0x8b}):
		out, err = gunzipLimit(payload, maxVmlinux)
	case bytes.HasPrefix(payload, []byte{0x7f, 'E', 'L', 'F'}):
		out = payload // CONFIG_KERNEL_UNCOMPRESSED
	default:
		return nil, fmt.Errorf("unsupported kernel compression (payload starts %x); use a kernel compressed with xz or gzip, or pass its vmlinux", payload[:min(6, len(payload))])
	}
	if err != nil {
		return nil, fmt.Errorf("decompress kernel: %w", err)
	}
	f, err := elf.NewFile(bytes.NewReader(out))
	if err != nil {
		return nil, fmt.Errorf("decompressed kernel is not ELF: %w", err)
	}
	defer f.Close()
	if f.Machine != elf.EM_X86_64 || f.Type != elf.ET_EXEC {
		return nil, fmt.Errorf("decompressed kernel is %v %v, want an x86-64 executable", f.Machine, f.Type)
	}
	return out, nil
}

func gunzipLimit(data []byte, limit int) ([]byte, error) {
	gr, err := gzip.NewReader(bytes.NewReader(data))
	if err != nil {
		return nil, err
	}
	gr.Multistream(false) // the kernel appends its size after the stream
	out, err := io.ReadAll(io.LimitReader(gr, int64(limit)+1))
	if err != nil {
		return nil, err
	}
	if len(out) > limit {
		return nil, errors.New("decompressed data too large")
	}
	return out, nil
}

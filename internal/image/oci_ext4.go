package image

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"sort"
	"time"
)

// A read-only reader of the ext4 root filesystem a build writes
// (mkfs.ext4 -d), enough to turn it into an OCI layer. The build does not
// keep its debootstrap tree, and an image built earlier has only the ext4
// file; reading that file directly needs no root, no mount and no temporary
// copy of the tree (debugfs rdump would need root to restore owners and
// device nodes, and disk for a second copy), and it streams: only one
// directory listing and one read buffer are in memory at a time.
//
// It reads what mkfs.ext4 writes: extent-mapped files, linear or hashed
// (htree) directories, fast and slow symlinks, in-inode and block extended
// attributes. Anything it does not understand is an error, never a silently
// different tree.

const (
	ext4Magic        = 0xEF53
	ext4RootInode    = 2
	ext4XattrMagic   = 0xEA020000
	ext4ExtentMagic  = 0xF30A
	ext4MaxExtDepth  = 5 // the kernel's limit; deeper is corruption
	ext4GoodOldInode = 128

	ext4IncompatCompression = 0x1
	ext4IncompatFiletype    = 0x2
	ext4IncompatRecover     = 0x4
	ext4IncompatJournalDev  = 0x8
	ext4IncompatMetaBG      = 0x10
	ext4IncompatExtents     = 0x40
	ext4Incompat64Bit       = 0x80
	ext4IncompatMMP         = 0x100
	ext4IncompatFlexBG      = 0x200
	ext4IncompatEAInode     = 0x400
	ext4IncompatCsumSeed    = 0x2000
	ext4IncompatLargeDir    = 0x4000
	ext4IncompatInlineData  = 0x8000

	// ext4Understood are the incompatible features this reader handles
	// (inline data only as a clear error on the inode that uses it).
	ext4Understood = ext4IncompatFiletype | ext4IncompatExtents | ext4Incompat64Bit | ext4IncompatMMP |
		ext4IncompatFlexBG | ext4IncompatEAInode | ext4IncompatCsumSeed | ext4IncompatLargeDir | ext4IncompatInlineData

	ext4ExtentsFlag    = 0x80000
	ext4InlineDataFlag = 0x10000000

	sIFMT   = 0o170000
	sIFSOCK = 0o140000
	sIFLNK  = 0o120000
	sIFREG  = 0o100000
	sIFBLK  = 0o060000
	sIFDIR  = 0o040000
	sIFCHR  = 0o020000
	sIFIFO  = 0o010000
)

func le16(b []byte) uint16 { return binary.LittleEndian.Uint16(b) }
func le32(b []byte) uint32 { return binary.LittleEndian.Uint32(b) }

// ext4FS is an ext4 file system being read.
type ext4FS struct {
	r              io.ReaderAt
	blockSize      int64
	inodeSize      int64
	inodesPerGroup uint32
	inodesCount    uint32
	filetype       bool    // directory entries carry a file type byte (and 8-bit name lengths)
	inodeTables    []int64 // per block group, the first block of its inode table
	created        time.Time
}

// openExt4 reads the superblock and group descriptors of the file system in r.
func openExt4(r io.ReaderAt) (*ext4FS, error) {
	sb := make([]byte, 1024)
	if _, err := r.ReadAt(sb, 1024); err != nil {
		return nil, fmt.Errorf("reading the ext4 superblock: %w", err)
	}
	if le16(sb[56:]) != ext4Magic {
		return nil, errors.New("not an ext4 file system (no superblock magic)")
	}
	incompat := le32(sb[96:])
	if extra := incompat &^ ext4Understood; extra != 0 {
		what := fmt.Sprintf("incompatible features 0x%x", extra)
		switch {
		case extra&ext4IncompatRecover != 0:
			what = "a journal that needs recovery (run e2fsck on it)"
		case extra&ext4IncompatMetaBG != 0:
			what = "meta_bg"
		case extra&(ext4IncompatCompression|ext4IncompatJournalDev) != 0:
			what = "compression or an external journal"
		}
		return nil, fmt.Errorf("the ext4 file system uses %s, which this reader does not handle", what)
	}
	logBlock := le32(sb[24:])
	if logBlock > 6 {
		return nil, fmt.Errorf("ext4: block size 2^%d KiB is not valid", logBlock)
	}
	fs := &ext4FS{
		r:              r,
		blockSize:      1024 << logBlock,
		inodesCount:    le32(sb[0:]),
		inodesPerGroup: le32(sb[40:]),
		inodeSize:      ext4GoodOldInode,
		filetype:       incompat&ext4IncompatFiletype != 0,
		created:        time.Unix(int64(le32(sb[264:])), 0).UTC(),
	}
	if le32(sb[76:]) >= 1 { // dynamic revision: the inode size is in the superblock
		fs.inodeSize = int64(le16(sb[88:]))
	}
	if fs.inodeSize < ext4GoodOldInode || fs.inodeSize > fs.blockSize || fs.inodesPerGroup == 0 {
		return nil, fmt.Errorf("ext4: inode size %d or %d inodes per group is not valid", fs.inodeSize, fs.inodesPerGroup)
	}
	descSize := int64(32)
	blocks := uint64(le32(sb[4:]))
	if incompat&ext4Incompat64Bit != 0 {
		descSize = int64(le16(sb[254:]))
		blocks |= uint64(le32(sb[336:])) << 32
		if descSize < 64 || descSize > fs.blockSize {
			return nil, fmt.Errorf("ext4: group descriptor size %d is not valid", descSize)
		}
	}
	firstData, perGroup := uint64(le32(sb[20:])), uint64(le32(sb[32:]))
	if perGroup == 0 || blocks <= firstData {
		return nil, errors.New("ext4: the superblock's block counts are not valid")
	}
	groups := (blocks - firstData + perGroup - 1) / perGroup
	if groups*uint64(fs.inodesPerGroup) < uint64(fs.inodesCount) || groups > 1<<24 {
		return nil, errors.New("ext4: the superblock's group counts are not valid")
	}
	// The descriptors follow the superblock's block (block 1 with 1 KiB
	// blocks, where the superblock has block 1 to itself; else block 1).
	gdt := make([]byte, int64(groups)*descSize)
	if _, err := r.ReadAt(gdt, int64(firstData+1)*fs.blockSize); err != nil {
		return nil, fmt.Errorf("reading the ext4 group descriptors: %w", err)
	}
	fs.inodeTables = make([]int64, groups)
	for g := range fs.inodeTables {
		d := gdt[int64(g)*descSize:]
		table := uint64(le32(d[8:]))
		if descSize >= 64 {
			table |= uint64(le32(d[40:])) << 32
		}
		fs.inodeTables[g] = int64(table)
	}
	return fs, nil
}

// ext4Inode is what the layer needs of an inode.
type ext4Inode struct {
	num      uint32
	mode     uint32 // type and permission bits, as in stat's st_mode
	uid, gid uint32
	size     int64
	mtime    time.Time
	links    uint16
	flags    uint32
	block    [60]byte // the extent tree's root, a fast symlink's target, or block numbers
	fileACL  int64    // the block holding further extended attributes, if any
	xattrs   []byte   // the in-inode extended attribute area
}

func (in *ext4Inode) typ() uint32 { return in.mode & sIFMT }

func (fs *ext4FS) inode(num uint32) (*ext4Inode, error) {
	if num == 0 || num > fs.inodesCount {
		return nil, fmt.Errorf("ext4: inode %d out of range", num)
	}
	g, idx := (num-1)/fs.inodesPerGroup, (num-1)%fs.inodesPerGroup
	raw := make([]byte, fs.inodeSize)
	off := fs.inodeTables[g]*fs.blockSize + int64(idx)*fs.inodeSize
	if _, err := fs.r.ReadAt(raw, off); err != nil {
		return nil, fmt.Errorf("ext4: reading inode %d: %w", num, err)
	}
	in := &ext4Inode{
		num:     num,
		mode:    uint32(le16(raw[0:])),
		uid:     uint32(le16(raw[2:])) | uint32(le16(raw[120:]))<<16,
		gid:     uint32(le16(raw[24:])) | uint32(le16(raw[122:]))<<16,
		size:    int64(uint64(le32(raw[4:])) | uint64(le32(raw[108:]))<<32),
		links:   le16(raw[26:]),
		flags:   le32(raw[32:]),
		fileACL: int64(uint64(le32(raw[104:])) | uint64(le16(raw[118:]))<<32),
	}
	copy(in.block[:], raw[40:100])
	sec := int64(int32(le32(raw[16:])))
	if fs.inodeSize > ext4GoodOldInode {
		extra := int64(le16(raw[128:]))
		// i_mtime_extra's low two bits extend the seconds past 2038.
		if extra >= 12 && ext4GoodOldInode+extra <= fs.inodeSize {
			sec += int64(le32(raw[136:])&3) << 32
		}
		if start := ext4GoodOldInode + extra; start+4 <= fs.inodeSize && le32(raw[start:]) == ext4XattrMagic {
			in.xattrs = raw[start+4:]
		}
	}
	in.mtime = time.Unix(sec, 0).UTC()
	if in.size < 0 {
		return nil, fmt.Errorf("ext4: inode %d has a size that is not valid", num)
	}
	return in, nil
}

// extent maps file blocks [logical, logical+length) to disk blocks from start.
type extent struct {
	logical   int64
	start     int64
	length    int64
	unwritten bool // allocated but never written: reads as zeros
}

// extents returns a file's extents in logical order.
func (fs *ext4FS) extents(in *ext4Inode) ([]extent, error) {
	if in.flags&ext4InlineDataFlag != 0 {
		return nil, fmt.Errorf("ext4: inode %d keeps its data inline, which this reader does not handle", in.num)
	}
	if in.flags&ext4ExtentsFlag == 0 {
		if in.size == 0 {
			return nil, nil
		}
		return nil, fmt.Errorf("ext4: inode %d maps its blocks without extents (ext2/3 style), which this reader does not handle", in.num)
	}
	var out []extent
	if err := fs.walkExtents(in, in.block[:], ext4MaxExtDepth, &out); err != nil {
		return nil, err
	}
	sort.Slice(out, func(i, j int) bool { return out[i].logical < out[j].logical })
	return out, nil
}

func (fs *ext4FS) walkExtents(in *ext4Inode, node []byte, maxDepth int, out *[]extent) error {
	if len(node) < 12 || le16(node[0:]) != ext4ExtentMagic {
		return fmt.Errorf("ext4: inode %d has a corrupt extent tree", in.num)
	}
	entries, depth := int(le16(node[2:])), int(le16(node[6:]))
	if depth > maxDepth || 12+12*entries > len(node) {
		return fmt.Errorf("ext4: inode %d has a corrupt extent tree", in.num)
	}
	for i := range entries {
		e := node[12+12*i:]
		if depth == 0 {
			length, unwritten := int64(le16(e[4:])), false
			if length > 32768 { // the top half of the range marks an unwritten extent
				length, unwritten = length-32768, true
			}
			start := int64(uint64(le16(e[6:]))<<32 | uint64(le32(e[8:])))
			*out = append(*out, extent{logical: int64(le32(e[0:])), start: start, length: length, unwritten: unwritten})
			continue
		}
		child := int64(uint64(le32(e[4:])) | uint64(le16(e[8:]))<<32)
		buf := make([]byte, fs.blockSize)
		if _, err := fs.r.ReadAt(buf, child*fs.blockSize); err != nil {
			return fmt.Errorf("ext4: inode %d: reading an extent block: %w", in.num, err)
		}
		if le16(buf[6:]) != uint16(depth-1) {
			return fmt.Errorf("ext4: inode %d has a corrupt extent tree", in.num)
		}
		if err := fs.walkExtents(in, buf, depth-1, out); err != nil {
			return err
		}
	}
	return nil
}

// open returns a reader of a regular file's (or directory's, or slow
// symlink's) contents: exactly in.size bytes, holes and unwritten extents
// as zeros.
func (fs *ext4FS) open(in *ext4Inode) (*ext4File, error) {
	ext, err := fs.extents(in)
	if err != nil {
		return nil, err
	}
	return &ext4File{fs: fs, ext: ext, size: in.size}, nil
}

type ext4File struct {
	fs   *ext4FS
	ext  []extent
	i    int // the first extent that may hold off: reads are sequential
	off  int64
	size int64
}

func (f *ext4File) Read(p []byte) (int, error) {
	if f.off >= f.size {
		return 0, io.EOF
	}
	p = p[:min(int64(len(p)), f.size-f.off)]
	bs := f.fs.blockSize
	blk := f.off / bs
	for f.i < len(f.ext) && f.ext[f.i].logical+f.ext[f.i].length <= blk {
		f.i++
	}
	var n int
	switch {
	case f.i == len(f.ext) || f.ext[f.i].logical > blk: // a hole up to the next extent
		if f.i < len(f.ext) {
			p = p[:min(int64(len(p)), f.ext[f.i].logical*bs-f.off)]
		}
		clear(p)
		n = len(p)
	default:
		e := f.ext[f.i]
		p = p[:min(int64(len(p)), (e.logical+e.length)*bs-f.off)]
		if e.unwritten {
			clear(p)
			n = len(p)
		} else {
			var err error
			n, err = f.fs.r.ReadAt(p, (e.start+blk-e.logical)*bs+f.off%bs)
			if err != nil && !(errors.Is(err, io.EOF) && n == len(p)) {
				return n, fmt.Errorf("ext4: reading file data: %w", err)
			}
		}
	}
	f.off += int64(n)
	return n, nil
}

// readAll reads a small file (a directory, a symlink target) whole.
func (fs *ext4FS) readAll(in *ext4Inode, limit int64) ([]byte, error) {
	if in.size > limit {
		return nil, fmt.Errorf("ext4: inode %d is %d bytes, more than the %d expected", in.num, in.size, limit)
	}
	f, err := fs.open(in)
	if err != nil {
		return nil, err
	}
	return io.ReadAll(f)
}

// ext4Dirent is one name in a directory.
type ext4Dirent struct {
	name  string
	inode uint32
}

// maxDirSize bounds how much of a directory is read into memory: a
// directory of a million entries is about 40 MiB.
const maxDirSize = 256 << 20

// readDir lists a directory by name, without "." and "..". Hashed (htree)
// directories read as linear ones: their index blocks look like empty
// entries, as ext4 keeps them for readers that do not know the index.
func (fs *ext4FS) readDir(in *ext4Inode) ([]ext4Dirent, error) {
	if in.typ() != sIFDIR {
		return nil, fmt.Errorf("ext4: inode %d is not a directory", in.num)
	}
	data, err := fs.readAll(in, maxDirSize)
	if err != nil {
		return nil, err
	}
	var out []ext4Dirent
	bs := int(fs.blockSize)
	for blk := 0; blk < len(data); blk += bs {
		b := data[blk:min(blk+bs, len(data))]
		for off := 0; off+8 <= len(b); {
			ino, recLen := le32(b[off:]), int(le16(b[off+4:]))
			if recLen == 0 && bs == 65536 { // 64 KiB blocks encode a whole-block entry as 0
				recLen = bs
			}
			nameLen := int(b[off+6])
			if !fs.filetype {
				nameLen = int(le16(b[off+6:]))
			}
			if recLen < 8 || off+recLen > len(b) || 8+nameLen > recLen {
				return nil, fmt.Errorf("ext4: directory inode %d has a corrupt entry", in.num)
			}
			if name := string(b[off+8 : off+8+nameLen]); ino != 0 && name != "." && name != ".." {
				out = append(out, ext4Dirent{name: name, inode: ino})
			}
			off += recLen
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].name < out[j].name })
	return out, nil
}

// readlink returns a symlink's target.
func (fs *ext4FS) readlink(in *ext4Inode) (string, error) {
	// A target shorter than the 60 bytes of i_block lives there (a "fast"
	// symlink) unless the inode says it has blocks mapped by extents.
	if in.flags&(ext4ExtentsFlag|ext4InlineDataFlag) == 0 && in.size < int64(len(in.block)) {
		return string(in.block[:in.size]), nil
	}
	b, err := fs.readAll(in, 4096)
	return string(b), err
}

// xattr returns the value of one extended attribute, or nil. index is
// ext4's name prefix number (6: "security."), name the rest of the name.
func (fs *ext4FS) xattr(in *ext4Inode, index byte, name string) ([]byte, error) {
	// In the inode, value offsets count from the first entry.
	if v, err := findXattr(in, in.xattrs, in.xattrs, index, name); v != nil || err != nil {
		return v, err
	}
	if in.fileACL == 0 {
		return nil, nil
	}
	blk := make([]byte, fs.blockSize)
	if _, err := fs.r.ReadAt(blk, in.fileACL*fs.blockSize); err != nil {
		return nil, fmt.Errorf("ext4: inode %d: reading its attribute block: %w", in.num, err)
	}
	if le32(blk) != ext4XattrMagic {
		return nil, fmt.Errorf("ext4: inode %d has a corrupt attribute block", in.num)
	}
	// In a block, entries start after its 32-byte header, and value offsets
	// count from the start of the block.
	return findXattr(in, blk[32:], blk, index, name)
}

func findXattr(in *ext4Inode, entries, values []byte, index byte, name string) ([]byte, error) {
	for off := 0; off+16 <= len(entries) && le32(entries[off:]) != 0; {
		e := entries[off:]
		nameLen, valueOff, valueSize := int(e[0]), int(le16(e[2:])), int(le32(e[8:]))
		if 16+nameLen > len(e) {
			return nil, fmt.Errorf("ext4: inode %d has a corrupt attribute entry", in.num)
		}
		if e[1] == index && string(e[16:16+nameLen]) == name {
			if le32(e[4:]) != 0 {
				return nil, fmt.Errorf("ext4: inode %d keeps an attribute in an inode of its own (ea_inode), which this reader does not handle", in.num)
			}
			if valueOff+valueSize > len(values) {
				return nil, fmt.Errorf("ext4: inode %d has a corrupt attribute value", in.num)
			}
			return append([]byte{}, values[valueOff:valueOff+valueSize]...), nil
		}
		off += (16 + nameLen + 3) &^ 3
	}
	return nil, nil
}

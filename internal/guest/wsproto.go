package guest

import "time"

// The workspace file API: what the host's files routes, workspace tarballs
// and archive uploads use. Unlike PathRead/PathWrite (the agent's tools,
// which may touch the whole guest), every path here is confined to the
// workspace, and the guest itself enforces that with its own view of the
// file system: paths are opened with openat2(RESOLVE_BENEATH) from the
// workspace directory, so neither ".." nor a symlink (the agent's, or one in
// an archive) leads out of it. Contents are streamed, never held whole.
const (
	PathWSList   = "/v1/ws/list"   // JSON WSPathRequest → WSListResponse
	PathWSRead   = "/v1/ws/read"   // JSON WSPathRequest → the file's bytes
	PathWSWrite  = "/v1/ws/write"  // ?path=&limit= with the bytes as body → WSWriteResponse
	PathWSTar    = "/v1/ws/tar"    // JSON WSTarRequest → a gzipped tar of the workspace
	PathWSUnpack = "/v1/ws/unpack" // ?maxBytes=&maxEntries= with an archive as body → WSUnpackResult

	// HeaderWSSize is the size of a file PathWSRead sends (also its Content-Length).
	HeaderWSSize = "X-Execlaw-Size"
	// ContentOctets and ContentGzip are the bodies of reads, writes and tarballs.
	ContentOctets = "application/octet-stream"
	ContentGzip   = "application/gzip"
)

// Limits of the workspace file API.
const (
	// MaxWSPathBytes and MaxWSNameBytes bound a path and each of its parts.
	MaxWSPathBytes = 4096
	MaxWSNameBytes = 255
	// MaxWSListEntries is the most entries one listing returns.
	MaxWSListEntries = 10000
	// MaxWSWriteBytes bounds one written file (the host's own cap, e.g.
	// --max-upload-mib, is usually lower).
	MaxWSWriteBytes int64 = 16 << 30

	// Tarballs: at most this many entries and bytes of file content, and
	// this long; past any of them the archive ends early, with a note file
	// (TarNoteName) saying so, and is still a valid archive.
	DefaultTarMaxEntries       = 100000
	DefaultTarMaxBytes   int64 = 8 << 30
	TarTimeLimit               = 10 * time.Minute
	// TarMaxDepth bounds how deep the tarball walks directories.
	TarMaxDepth = 128
	// TarPrefix is the directory every tarball entry is under.
	TarPrefix = "workspace/"
	// TarNoteName is the note a cut-short tarball ends with (under TarPrefix).
	TarNoteName = ".execlaw-archive-incomplete.txt"

	// Unpacking an uploaded archive: at most this many entries and bytes
	// unpacked (whatever the archive claims), and this long.
	DefaultUnpackMaxEntries       = 100000
	DefaultUnpackMaxBytes   int64 = 4 << 30
	UnpackTimeLimit               = 10 * time.Minute
	// MaxUnpackArchiveBytes bounds the archive itself, which the guest
	// keeps on its own disk while it unpacks (zip needs to seek).
	MaxUnpackArchiveBytes int64 = 16 << 30
)

// Entry types in a workspace listing.
const (
	WSFile    = "file"
	WSDir     = "dir"
	WSSymlink = "symlink"
	WSOther   = "other" // a FIFO, socket or device
)

// WSPathRequest names a path in the workspace: relative to it, or absolute
// inside it; "" is the workspace itself.
type WSPathRequest struct {
	Path string `json:"path"`
}

// WSEntry is one entry of a workspace directory. A symlink is reported as
// one, never followed.
type WSEntry struct {
	Name  string    `json:"name"`
	Type  string    `json:"type"`
	Size  int64     `json:"size"`
	MTime time.Time `json:"mtime"`
}

// WSListResponse is one directory of the workspace, sorted by name. Path is
// the directory relative to the workspace ("" for the workspace itself).
type WSListResponse struct {
	Path      string    `json:"path"`
	Entries   []WSEntry `json:"entries"`
	Truncated bool      `json:"truncated,omitempty"`
}

// WSWriteResponse is a file written: its path relative to the workspace, and
// the bytes written.
type WSWriteResponse struct {
	Path string `json:"path"`
	Size int64  `json:"size"`
}

// WSTarRequest asks for a tarball of the workspace; zero limits are the
// defaults, and larger ones are lowered to them.
type WSTarRequest struct {
	MaxEntries int   `json:"maxEntries,omitempty"`
	MaxBytes   int64 `json:"maxBytes,omitempty"`
}

// WSUnpackResult is what unpacking an archive did. Skipped counts entries
// that were left out (devices, FIFOs and the like: not files); Stripped is
// the single top-level directory every entry was in, which was unpacked as
// the workspace itself.
type WSUnpackResult struct {
	Format   string `json:"format"` // "tar.gz", "tar" or "zip"
	Files    int    `json:"files"`
	Dirs     int    `json:"dirs"`
	Symlinks int    `json:"symlinks"`
	Skipped  int    `json:"skipped"`
	Bytes    int64  `json:"bytes"`
	Stripped string `json:"stripped,omitempty"`
}

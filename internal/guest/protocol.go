// Package guest is the host<->guest control protocol: a small HTTP/JSON API that
// execlaw-guest serves inside every sandbox, and the client the host uses to call it.
//
// The transport is any byte stream (a Unix socket for the process driver, vsock or a
// yamux stream over virtio-serial for VMs, a yamux stream over an authenticated TLS
// connection for pods: pod.go); the protocol does not care. Everything
// the host reads from the guest is untrusted: sizes are bounded on both sides and
// every call carries a deadline.
package guest

import (
	"fmt"
	"time"
)

// Version is the protocol version the guest reports in Health.
const Version = "1"

// Limits shared by client and server. The server refuses anything larger; the
// client never trusts the server to have done so.
const (
	MaxRequestBytes   = 16 << 20 // largest request body the guest accepts (file writes)
	MaxReadBytes      = 8 << 20  // largest slice of a file one read returns
	MaxListEntries    = 10000    // most entries one list returns
	MaxStdinBytes     = 1 << 20  // largest stdin an exec request may carry
	MaxExecChunkBytes = 32 << 10 // largest output chunk in one exec frame
	MaxFrameBytes     = 256 << 10
	MaxResponseBytes  = 12 << 20 // largest non-streamed JSON answer (a full read, base64-encoded)
)

// Paths of the control API.
const (
	PathHealth    = "/v1/health"
	PathExec      = "/v1/exec"
	PathRead      = "/v1/files/read"
	PathWrite     = "/v1/files/write"
	PathStat      = "/v1/files/stat"
	PathList      = "/v1/files/list"
	PathStats     = "/v1/stats"
	PathShutdown  = "/v1/shutdown"
	ContentNDJSON = "application/x-ndjson"

	PathAttach       = "/v1/exec/attach"
	PathTunnelListen = "/v1/tunnel/listen"
	PathTunnelAccept = "/v1/tunnel/accept"
	PathTunnelClose  = "/v1/tunnel/close"
	PathForward      = "/v1/forward"
)

// Protocols a request switches to with "Connection: Upgrade" and "Upgrade:
// <name>"; the guest answers 101 Switching Protocols and the connection then
// carries that protocol instead of HTTP.
const (
	// UpgradeAttach: NDJSON both ways; InputFrame from the host, ExecFrame
	// from the guest.
	UpgradeAttach = "execlaw-attach/1"
	// UpgradeTunnel: raw bytes of one local TCP connection, both ways.
	UpgradeTunnel = "execlaw-tunnel/1"
	// UpgradeForward: raw bytes of one connection the guest made to a port of
	// its own loopback, both ways (the host reaching a service in the guest).
	UpgradeForward = "execlaw-forward/1"
)

// Health is the answer to GET /v1/health.
type Health struct {
	Version   string `json:"version"`
	Hostname  string `json:"hostname"`
	Kernel    string `json:"kernel"`
	Workspace string `json:"workspace"`
	PID1      bool   `json:"pid1"` // true when the guest runs as init (VM or PID namespace)
	// Boot is how long the guest took to come up, when it booted as a VM's init.
	Boot *BootTimes `json:"boot,omitempty"`
}

// BootTimes splits a VM's boot, as the guest measured it from kernel start.
type BootTimes struct {
	KernelMs int64 `json:"kernelMs"` // kernel start to /init
	InitMs   int64 `json:"initMs"`   // /init to the control API listening
}

// ExecRequest asks the guest to run a program. Relative Dir is resolved against
// the workspace; empty Dir means the workspace itself.
type ExecRequest struct {
	Argv       []string `json:"argv"`
	Dir        string   `json:"dir,omitempty"`
	Env        []string `json:"env,omitempty"` // KEY=VALUE, added to the guest's base environment
	Stdin      []byte   `json:"stdin,omitempty"`
	TimeoutSec int      `json:"timeoutSec,omitempty"` // 0: no timeout beyond the caller's context
	// TTY, on an attached exec only, runs the command on a pseudo-terminal
	// of this size (see pty.go): its output is one stdout stream, and
	// resize frames change the size.
	TTY *WindowSize `json:"tty,omitempty"`
}

// Frame types streamed by POST /v1/exec, one JSON object per line.
const (
	FrameStdout = "stdout"
	FrameStderr = "stderr"
	FrameExit   = "exit"
	FrameError  = "error"
)

// ExecFrame is one line of the exec stream. Output frames carry Data; the last
// frame is either an exit frame (the process ended) or an error frame (it could
// not be started or waited for).
type ExecFrame struct {
	Type       string `json:"type"`
	Data       []byte `json:"data,omitempty"`
	ExitCode   int    `json:"exitCode,omitempty"`
	Signal     string `json:"signal,omitempty"`
	TimedOut   bool   `json:"timedOut,omitempty"`
	DurationMs int64  `json:"durationMs,omitempty"`
	Message    string `json:"message,omitempty"`
}

// Frame types the host sends on an attached exec, one JSON object per line.
const (
	FrameStdin      = "stdin"       // Data is written to the command's stdin
	FrameStdinClose = "stdin_close" // the command's stdin is closed (after pending data)
	FrameSignal     = "signal"      // Signal is sent to the command's whole process group
	FrameResize     = "resize"      // Cols and Rows are the terminal's new size (TTY only)
)

// Signals an attached exec accepts in a signal frame.
const (
	SignalInt  = "INT"
	SignalTerm = "TERM"
	SignalKill = "KILL"
)

// InputFrame is one line the host sends on an attached exec.
type InputFrame struct {
	Type   string `json:"type"`
	Data   []byte `json:"data,omitempty"`
	Signal string `json:"signal,omitempty"`
	Cols   int    `json:"cols,omitempty"` // resize
	Rows   int    `json:"rows,omitempty"` // resize
}

// ExecResult is how a command ended.
type ExecResult struct {
	ExitCode int           // -1 when killed by a signal
	Signal   string        // e.g. "killed", empty when it exited normally
	TimedOut bool          // the request's TimeoutSec passed and the process group was killed
	Duration time.Duration // as measured by the guest
}

// Tunnel limits. A tunnel is a TCP listener on the guest's loopback whose
// connections are carried to the host over the control channel.
const (
	MaxTunnels       = 8
	MinTunnelPort    = 1024
	MaxTunnelPort    = 65535
	MaxTunnelNameLen = 32 // names match ^[a-z0-9-]{1,32}$
	MaxTunnelConns   = 64 // local connections per tunnel, waiting or carried
)

// TunnelAcceptWait is how long the guest holds a tunnel accept request open
// without a local connection before answering 204 No Content, so that a host
// that went away silently does not pin a request forever.
const TunnelAcceptWait = 5 * time.Minute

// TunnelRequest names a tunnel; Port is only used by listen.
type TunnelRequest struct {
	Name string `json:"name"`
	Port int    `json:"port,omitempty"`
}

// ReadRequest reads up to Limit bytes of Path starting at Offset.
type ReadRequest struct {
	Path   string `json:"path"`
	Offset int64  `json:"offset,omitempty"`
	Limit  int64  `json:"limit,omitempty"` // 0 or more than MaxReadBytes means MaxReadBytes
}

// ReadResponse is a slice of a file.
type ReadResponse struct {
	Data []byte `json:"data"`
	Size int64  `json:"size"` // the whole file's size
	EOF  bool   `json:"eof"`  // Data reaches the end of the file
}

// WriteRequest writes Data to Path, creating parent directories. Mode 0 means 0644.
type WriteRequest struct {
	Path   string `json:"path"`
	Data   []byte `json:"data"`
	Mode   uint32 `json:"mode,omitempty"`
	Append bool   `json:"append,omitempty"`
}

// PathRequest names one path (stat).
type PathRequest struct {
	Path string `json:"path"`
}

// ListRequest lists a directory; Recursive walks below it (skipping nothing but
// respecting Limit).
type ListRequest struct {
	Path      string `json:"path"`
	Recursive bool   `json:"recursive,omitempty"`
	Limit     int    `json:"limit,omitempty"`
}

// FileInfo describes one file. Path is as the guest sees it (absolute).
type FileInfo struct {
	Name    string    `json:"name"`
	Path    string    `json:"path"`
	Size    int64     `json:"size"`
	Mode    string    `json:"mode"` // e.g. "-rw-r--r--"
	IsDir   bool      `json:"isDir"`
	ModTime time.Time `json:"modTime"`
}

// ListResponse is a directory listing.
type ListResponse struct {
	Entries   []FileInfo `json:"entries"`
	Truncated bool       `json:"truncated"`
}

// Stats is the guest's view of its own resources.
type Stats struct {
	MemTotalMiB     int64   `json:"memTotalMiB"`
	MemAvailableMiB int64   `json:"memAvailableMiB"`
	DiskTotalMiB    int64   `json:"diskTotalMiB"`
	DiskFreeMiB     int64   `json:"diskFreeMiB"`
	Load1           float64 `json:"load1"`
	Load5           float64 `json:"load5"`
	Load15          float64 `json:"load15"`
	UptimeSec       float64 `json:"uptimeSec"`
	Processes       int     `json:"processes"`
}

// Error codes in ErrorResponse.
const (
	CodeNotFound   = "not_found"
	CodeInvalid    = "invalid"
	CodeTooLarge   = "too_large"
	CodeIsDir      = "is_dir"
	CodePermission = "permission"
	CodeInternal   = "internal"
	CodeConflict   = "conflict" // e.g. a tunnel port already in use
)

// ErrorResponse is the body of every non-2xx answer.
type ErrorResponse struct {
	Error string `json:"error"`
	Code  string `json:"code,omitempty"`
}

// Error is a failure the guest reported.
type Error struct {
	Status  int
	Code    string
	Message string
}

func (e *Error) Error() string {
	return fmt.Sprintf("guest: %s", e.Message)
}

// IsNotFound reports whether err is the guest saying a path does not exist.
func IsNotFound(err error) bool {
	ge, ok := err.(*Error)
	return ok && ge.Code == CodeNotFound
}

// ForwardRequest asks the guest to connect to 127.0.0.1:Port for the host.
type ForwardRequest struct {
	Port int `json:"port"`
}

package firecracker

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strings"
	"time"
)

// This file is a client for the part of Firecracker's REST API (served on its
// --api-sock Unix socket) that the driver uses. The request types mirror the
// definitions of firecracker-api-v1.16.1.yaml; spec_test.go checks every body
// the driver sends against that file.

const (
	// defaultAPITimeout bounds one API call whose context has no earlier
	// deadline. Every call is answered by the VMM's own thread in
	// milliseconds; InstanceStart loads the kernel first, which is still far
	// below this.
	defaultAPITimeout = 10 * time.Second
	// maxAPIResponseBytes bounds what is read of any answer. The VMM runs the
	// guest, so a compromised VMM is as untrusted as the guest.
	maxAPIResponseBytes = 64 << 10
	// maxFaultBytes bounds the fault message carried into error strings.
	maxFaultBytes = 2 << 10
	// snapshotAPITimeout bounds PUT /snapshot/create and /snapshot/load:
	// creating one writes the whole guest memory to a file before the VMM
	// answers, GiBs for a large guest on a slow disk.
	snapshotAPITimeout = 5 * time.Minute
)

// MachineConfig is the body of PUT /machine-config (definition
// MachineConfiguration). SMT is always sent, explicitly false: a session's
// vCPUs are not meant to be hyperthread siblings of each other's secrets.
type MachineConfig struct {
	VCPUCount  int  `json:"vcpu_count"`
	MemSizeMiB int  `json:"mem_size_mib"`
	SMT        bool `json:"smt"`
}

// BootSource is the body of PUT /boot-source. KernelImagePath is the
// uncompressed vmlinux ELF: x86_64 Firecracker does not boot a bzImage.
type BootSource struct {
	KernelImagePath string `json:"kernel_image_path"`
	InitrdPath      string `json:"initrd_path,omitempty"`
	BootArgs        string `json:"boot_args,omitempty"`
}

// Drive is the body of PUT /drives/{drive_id} for a virtio-block drive.
// IsRootDevice and IsReadOnly are always sent: the first is required by the
// definition, the second by virtio-block drives (see its description).
type Drive struct {
	DriveID      string `json:"drive_id"`
	PathOnHost   string `json:"path_on_host"`
	IsRootDevice bool   `json:"is_root_device"`
	IsReadOnly   bool   `json:"is_read_only"`
}

// NetworkInterface is the body of PUT /network-interfaces/{iface_id}.
type NetworkInterface struct {
	IfaceID     string `json:"iface_id"`
	HostDevName string `json:"host_dev_name"`
	GuestMAC    string `json:"guest_mac,omitempty"`
}

// Vsock is the body of PUT /vsock. The deprecated vsock_id is never sent.
type Vsock struct {
	GuestCID int    `json:"guest_cid"`
	UDSPath  string `json:"uds_path"`
}

// EntropyDevice is the body of PUT /entropy: a virtio-rng device, without a
// rate limiter.
type EntropyDevice struct{}

// ActionType is an InstanceActionInfo action_type.
type ActionType string

// The actions the driver uses.
const (
	ActionInstanceStart  ActionType = "InstanceStart"
	ActionSendCtrlAltDel ActionType = "SendCtrlAltDel"
)

type instanceActionInfo struct {
	ActionType ActionType `json:"action_type"`
}

// VMState is a Vm state, the body of PATCH /vm.
type VMState string

// The states PATCH /vm sets.
const (
	VMPaused  VMState = "Paused"
	VMResumed VMState = "Resumed"
)

type vmStateBody struct {
	State VMState `json:"state"`
}

// SnapshotType is a SnapshotCreateParams snapshot_type.
type SnapshotType string

// SnapshotFull is a snapshot of the whole guest memory (the driver takes no
// other kind).
const SnapshotFull SnapshotType = "Full"

// SnapshotCreateParams is the body of PUT /snapshot/create. Both paths are
// as the VMM sees them (inside its jail, when jailed); existing files there
// are truncated and overwritten.
type SnapshotCreateParams struct {
	SnapshotType SnapshotType `json:"snapshot_type,omitempty"`
	SnapshotPath string       `json:"snapshot_path"`
	MemFilePath  string       `json:"mem_file_path"`
}

// MemoryBackend is a SnapshotLoadParams mem_backend. With BackendType
// "File" the VMM maps BackendPath privately and reads pages from it on
// demand for as long as the VM runs.
type MemoryBackend struct {
	BackendType string `json:"backend_type"`
	BackendPath string `json:"backend_path"`
}

// MemoryBackendFile is the File backend_type.
const MemoryBackendFile = "File"

// NetworkOverride changes the TAP device behind a network interface on load.
type NetworkOverride struct {
	IfaceID     string `json:"iface_id"`
	HostDevName string `json:"host_dev_name"`
}

// VsockOverride changes the vsock device's Unix socket on load.
type VsockOverride struct {
	UDSPath string `json:"uds_path"`
}

// SnapshotLoadParams is the body of PUT /snapshot/load (never with the
// deprecated mem_file_path, nor with dirty page tracking: the driver takes
// only full snapshots).
type SnapshotLoadParams struct {
	SnapshotPath     string            `json:"snapshot_path"`
	MemBackend       *MemoryBackend    `json:"mem_backend,omitempty"`
	ResumeVM         bool              `json:"resume_vm"`
	NetworkOverrides []NetworkOverride `json:"network_overrides,omitempty"`
	VsockOverride    *VsockOverride    `json:"vsock_override,omitempty"`
}

// firecrackerVersion is the answer to GET /version.
type firecrackerVersion struct {
	FirecrackerVersion string `json:"firecracker_version"`
}

// InstanceInfo is the answer to GET /.
type InstanceInfo struct {
	AppName    string `json:"app_name"`
	ID         string `json:"id"`
	State      string `json:"state"` // "Not started", "Running" or "Paused"
	VMMVersion string `json:"vmm_version"`
}

// APIError is a non-2xx answer from the API. Fault is Firecracker's
// fault_message, which says what it did not like.
type APIError struct {
	Method     string
	Path       string
	StatusCode int
	Fault      string
}

func (e *APIError) Error() string {
	msg := e.Fault
	if msg == "" {
		msg = "no fault message"
	}
	return fmt.Sprintf("firecracker API %s %s: %d %s: %s", e.Method, e.Path, e.StatusCode, http.StatusText(e.StatusCode), msg)
}

// Client calls one Firecracker process's API. It is safe for concurrent use.
type Client struct {
	tr *http.Transport
	hc *http.Client
}

// NewClient returns a client for the API socket at path (which must fit in a
// Unix socket address; the driver itself dials long paths another way).
func NewClient(socketPath string) *Client {
	return newClient(func(ctx context.Context) (net.Conn, error) {
		var d net.Dialer
		return d.DialContext(ctx, "unix", socketPath)
	})
}

func newClient(dial func(ctx context.Context) (net.Conn, error)) *Client {
	protos := new(http.Protocols)
	protos.SetHTTP1(true)
	tr := &http.Transport{
		DialContext:            func(ctx context.Context, _, _ string) (net.Conn, error) { return dial(ctx) },
		Protocols:              protos,
		Proxy:                  nil,
		MaxIdleConns:           1,
		IdleConnTimeout:        30 * time.Second,
		MaxResponseHeaderBytes: 16 << 10,
		DisableCompression:     true,
	}
	return &Client{tr: tr, hc: &http.Client{
		Transport:     tr,
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}}
}

// Close drops idle connections.
func (c *Client) Close() { c.tr.CloseIdleConnections() }

// PutMachineConfig sets vCPUs and memory. Pre-boot only.
func (c *Client) PutMachineConfig(ctx context.Context, m MachineConfig) error {
	return c.put(ctx, "/machine-config", m)
}

// PutBootSource sets kernel, initrd and command line. Pre-boot only.
func (c *Client) PutBootSource(ctx context.Context, b BootSource) error {
	return c.put(ctx, "/boot-source", b)
}

// PutDrive adds a block device. Pre-boot only.
func (c *Client) PutDrive(ctx context.Context, d Drive) error {
	if err := checkID(d.DriveID); err != nil {
		return fmt.Errorf("drive: %w", err)
	}
	return c.put(ctx, "/drives/"+url.PathEscape(d.DriveID), d)
}

// PutNetworkInterface adds a virtio-net device backed by a TAP. Pre-boot only.
func (c *Client) PutNetworkInterface(ctx context.Context, n NetworkInterface) error {
	if err := checkID(n.IfaceID); err != nil {
		return fmt.Errorf("network interface: %w", err)
	}
	return c.put(ctx, "/network-interfaces/"+url.PathEscape(n.IfaceID), n)
}

// PutVsock adds the hybrid vsock device. Pre-boot only.
func (c *Client) PutVsock(ctx context.Context, v Vsock) error {
	return c.put(ctx, "/vsock", v)
}

// PutEntropy adds a virtio-rng device. Pre-boot only.
func (c *Client) PutEntropy(ctx context.Context) error {
	return c.put(ctx, "/entropy", EntropyDevice{})
}

// Action runs a synchronous action.
func (c *Client) Action(ctx context.Context, a ActionType) error {
	return c.put(ctx, "/actions", instanceActionInfo{ActionType: a})
}

// DescribeInstance returns GET /: who is serving and in what state.
func (c *Client) DescribeInstance(ctx context.Context) (InstanceInfo, error) {
	var info InstanceInfo
	b, err := c.do(ctx, http.MethodGet, "/", nil)
	if err != nil {
		return info, err
	}
	if err := json.Unmarshal(b, &info); err != nil {
		return info, fmt.Errorf("firecracker API GET /: bad answer: %w", err)
	}
	if info.State == "" {
		return info, fmt.Errorf("firecracker API GET /: answer has no state")
	}
	return info, nil
}

// Version returns GET /version: the VMM's own version, e.g. "1.16.1".
func (c *Client) Version(ctx context.Context) (string, error) {
	b, err := c.do(ctx, http.MethodGet, "/version", nil)
	if err != nil {
		return "", err
	}
	var v firecrackerVersion
	if err := json.Unmarshal(b, &v); err != nil {
		return "", fmt.Errorf("firecracker API GET /version: bad answer: %w", err)
	}
	if v.FirecrackerVersion == "" {
		return "", errors.New("firecracker API GET /version: answer has no version")
	}
	return clip(v.FirecrackerVersion, 64), nil
}

// PatchVM pauses or resumes a booted VM (PATCH /vm). Post-boot only.
func (c *Client) PatchVM(ctx context.Context, state VMState) error {
	return c.send(ctx, http.MethodPatch, "/vm", vmStateBody{State: state}, defaultAPITimeout)
}

// CreateSnapshot saves a paused VM into two files. Post-boot only.
func (c *Client) CreateSnapshot(ctx context.Context, p SnapshotCreateParams) error {
	return c.send(ctx, http.MethodPut, "/snapshot/create", p, snapshotAPITimeout)
}

// LoadSnapshot loads a snapshot into a VMM that has not been configured.
// When the VMM refuses, it ends itself.
func (c *Client) LoadSnapshot(ctx context.Context, p SnapshotLoadParams) error {
	return c.send(ctx, http.MethodPut, "/snapshot/load", p, snapshotAPITimeout)
}

func (c *Client) put(ctx context.Context, path string, body any) error {
	return c.send(ctx, http.MethodPut, path, body, defaultAPITimeout)
}

func (c *Client) send(ctx context.Context, method, path string, body any, timeout time.Duration) error {
	b, err := json.Marshal(body)
	if err != nil {
		return fmt.Errorf("firecracker API %s %s: %w", method, path, err)
	}
	_, err = c.doTimeout(ctx, method, path, b, timeout)
	return err
}

// do sends one request and returns the (bounded) body of a 2xx answer.
func (c *Client) do(ctx context.Context, method, path string, body []byte) ([]byte, error) {
	return c.doTimeout(ctx, method, path, body, defaultAPITimeout)
}

// doTimeout is do, bounded by timeout instead of defaultAPITimeout.
func (c *Client) doTimeout(ctx context.Context, method, path string, body []byte, timeout time.Duration) ([]byte, error) {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	var rd io.Reader
	if body != nil {
		rd = bytes.NewReader(body)
	}
	// The host name is a placeholder: the dialer decides where requests go.
	req, err := http.NewRequestWithContext(ctx, method, "http://localhost"+path, rd)
	if err != nil {
		return nil, fmt.Errorf("firecracker API %s %s: %w", method, path, err)
	}
	req.Header.Set("Accept", "application/json")
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := c.hc.Do(req)
	if err != nil {
		return nil, fmt.Errorf("firecracker API %s %s: %w", method, path, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, maxAPIResponseBytes+1))
	if err != nil {
		return nil, fmt.Errorf("firecracker API %s %s: reading answer: %w", method, path, err)
	}
	if len(b) > maxAPIResponseBytes {
		return nil, fmt.Errorf("firecracker API %s %s: answer exceeds %d bytes", method, path, maxAPIResponseBytes)
	}
	if resp.StatusCode < 200 || resp.StatusCode > 299 {
		e := &APIError{Method: method, Path: path, StatusCode: resp.StatusCode}
		var fault struct {
			FaultMessage string `json:"fault_message"`
		}
		if json.Unmarshal(b, &fault) == nil {
			e.Fault = clip(fault.FaultMessage, maxFaultBytes)
		} else if len(b) > 0 {
			e.Fault = clip(string(b), maxFaultBytes)
		}
		return nil, e
	}
	return b, nil
}

// checkID keeps device ids to what Firecracker accepts (alphanumeric and
// underscore), which also makes them safe in a URL path.
func checkID(id string) error {
	if id == "" || len(id) > 64 {
		return fmt.Errorf("id %q: want 1-64 characters", id)
	}
	for _, r := range id {
		if !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '_') {
			return fmt.Errorf("id %q: only letters, digits and _ are allowed", id)
		}
	}
	return nil
}

// clip bounds an untrusted string and keeps it printable UTF-8.
func clip(s string, n int) string {
	if len(s) > n {
		s = s[:n] + "..."
	}
	return strings.ToValidUTF8(strings.TrimSpace(s), "\uFFFD")
}

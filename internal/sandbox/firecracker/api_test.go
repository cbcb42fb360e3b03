package firecracker

import (
	"errors"
	"io"
	"net"
	"net/http"
	"path/filepath"
	"strings"
	"testing"
)

// apiServer serves handler on a Unix socket and returns a client for it.
func apiServer(t *testing.T, handler http.HandlerFunc) *Client {
	t.Helper()
	p := filepath.Join(t.TempDir(), "api.sock")
	ln, err := net.Listen("unix", p)
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: handler}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
	c := NewClient(p)
	t.Cleanup(c.Close)
	return c
}

func TestAPIClient(t *testing.T) {
	var got []string
	c := apiServer(t, func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		got = append(got, r.Method+" "+r.URL.Path+" "+r.Header.Get("Content-Type")+" "+string(b))
		switch r.URL.Path {
		case "/":
			io.WriteString(w, `{"app_name":"Firecracker","id":"x","state":"Not started","vmm_version":"1.16.1"}`)
		case "/drives/rootfs":
			w.WriteHeader(http.StatusBadRequest)
			io.WriteString(w, `{"fault_message":"Unable to open the block device: No such file"}`)
		case "/vsock":
			w.WriteHeader(http.StatusInternalServerError)
			io.WriteString(w, "not json")
		case "/entropy":
			w.Write([]byte(strings.Repeat("x", maxAPIResponseBytes+10)))
		default:
			w.WriteHeader(http.StatusNoContent)
		}
	})
	ctx := t.Context()
	info, err := c.DescribeInstance(ctx)
	if err != nil || info.State != "Not started" || info.VMMVersion != "1.16.1" {
		t.Fatalf("describe: %+v, %v", info, err)
	}
	if err := c.PutMachineConfig(ctx, MachineConfig{VCPUCount: 1, MemSizeMiB: 128}); err != nil {
		t.Fatal(err)
	}
	if want := `PUT /machine-config application/json {"vcpu_count":1,"mem_size_mib":128,"smt":false}`; got[len(got)-1] != want {
		t.Errorf("sent %q, want %q", got[len(got)-1], want)
	}

	err = c.PutDrive(ctx, Drive{DriveID: "rootfs", PathOnHost: "/x", IsReadOnly: true})
	var ae *APIError
	if !errors.As(err, &ae) || ae.StatusCode != 400 || ae.Fault != "Unable to open the block device: No such file" {
		t.Fatalf("fault: %#v", err)
	}
	if want := "firecracker API PUT /drives/rootfs: 400 Bad Request: Unable to open the block device: No such file"; err.Error() != want {
		t.Errorf("error text %q, want %q", err, want)
	}
	if err := c.PutVsock(ctx, Vsock{GuestCID: 3, UDSPath: "v.sock"}); err == nil || !strings.Contains(err.Error(), "500 Internal Server Error: not json") {
		t.Errorf("non-JSON fault: %v", err)
	}
	if err := c.PutEntropy(ctx); err == nil || !strings.Contains(err.Error(), "exceeds") {
		t.Errorf("oversized answer: %v", err)
	}
	if err := c.PutDrive(ctx, Drive{DriveID: "../actions"}); err == nil {
		t.Error("a drive id with a path in it was sent")
	}
	if err := c.Action(ctx, ActionInstanceStart); err != nil {
		t.Fatal(err)
	}
	if want := `PUT /actions application/json {"action_type":"InstanceStart"}`; got[len(got)-1] != want {
		t.Errorf("sent %q, want %q", got[len(got)-1], want)
	}
}

func TestAPIClientSnapshot(t *testing.T) {
	var got []string
	version := `{"firecracker_version":"1.16.1"}`
	c := apiServer(t, func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		got = append(got, r.Method+" "+r.URL.Path+" "+string(b))
		switch r.URL.Path {
		case "/version":
			io.WriteString(w, version)
		case "/snapshot/load":
			w.WriteHeader(http.StatusBadRequest)
			io.WriteString(w, `{"fault_message":"Load snapshot error: bad"}`)
		default:
			w.WriteHeader(http.StatusNoContent)
		}
	})
	ctx := t.Context()
	if v, err := c.Version(ctx); err != nil || v != "1.16.1" {
		t.Errorf("version %q, %v", v, err)
	}
	version = `{"version":"1.16.1"}`
	if v, err := c.Version(ctx); err == nil {
		t.Errorf("an answer without firecracker_version gave %q", v)
	}
	if err := c.PatchVM(ctx, VMPaused); err != nil {
		t.Fatal(err)
	}
	if err := c.CreateSnapshot(ctx, SnapshotCreateParams{SnapshotType: SnapshotFull, SnapshotPath: "/s", MemFilePath: "/m"}); err != nil {
		t.Fatal(err)
	}
	err := c.LoadSnapshot(ctx, SnapshotLoadParams{SnapshotPath: "/s", MemBackend: &MemoryBackend{BackendType: MemoryBackendFile, BackendPath: "/m"}, ResumeVM: true})
	var ae *APIError
	if !errors.As(err, &ae) || ae.StatusCode != 400 || ae.Fault != "Load snapshot error: bad" {
		t.Errorf("load: %v", err)
	}
	want := []string{
		"GET /version ", "GET /version ",
		`PATCH /vm {"state":"Paused"}`,
		`PUT /snapshot/create {"snapshot_type":"Full","snapshot_path":"/s","mem_file_path":"/m"}`,
		`PUT /snapshot/load {"snapshot_path":"/s","mem_backend":{"backend_type":"File","backend_path":"/m"},"resume_vm":true}`,
	}
	if strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Errorf("sent\n%s\nwant\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
}

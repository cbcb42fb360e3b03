// Package cgroup gives each VMM a control group of its own, with limits on
// memory, processes, CPU and IO, on both cgroup hierarchies:
//
//   - cgroup v2 (Debian 12's default): one hierarchy. Under systemd the
//     server gets a delegated subtree (Delegate=yes); v2 forbids processes
//     in a cgroup whose controllers are enabled for its children, so the
//     server first moves itself into a leaf, <own>/execlaw-<instance>-server,
//     then enables the controllers on <own> and creates
//     <own>/execlaw-<instance>/<vm>. As root, when its own cgroup holds other
//     processes too (a login shell's scope), it uses the hierarchy's root.
//   - cgroup v1 (and the hybrid layout, whose v2 mount holds no
//     controllers): one hierarchy per controller, /sys/fs/cgroup/memory,
//     pids, cpu, blkio...; the VM cgroups are <hierarchy>/execlaw-<instance>/<vm>
//     in each, the same relative path everywhere (what the Firecracker
//     jailer's --parent-cgroup needs). v1 has no safe delegation to an
//     unprivileged user, so this needs root.
//
// The package writes the cgroup files itself: the few operations needed
// (mkdir, a handful of files, two counters, rmdir) are simpler to read here
// than through a general library, and github.com/containerd/cgroups/v3
// would bring in its OCI runtime-spec types, D-Bus and eBPF dependencies for
// them.
//
// Everything the package creates is named for the server instance (a short
// hash of its data directory): Sweep removes what an earlier run of this
// instance left, and only that.
package cgroup

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
)

// Versions of the cgroup hierarchy.
const (
	V1 = 1
	V2 = 2
)

// wanted are the controllers VM cgroups get, memory first (the one that
// must be there); v1 calls io "blkio".
var (
	wantedV2 = []string{"memory", "pids", "cpu", "io"}
	wantedV1 = []string{"memory", "pids", "cpu", "blkio"}
)

// Manager creates the VM cgroups of one server instance.
type Manager struct {
	version  int
	instance string
	// hiers are the instance's directory in each hierarchy used, with the
	// controllers it carries (v2: one, with every controller enabled).
	hiers []hier
	// parentRel is the instance directory relative to each hierarchy's
	// root: the jailer's --parent-cgroup.
	parentRel string
	where     string
}

type hier struct {
	dir   string
	ctrls []string
}

func (h hier) has(ctrl string) bool { return slices.Contains(h.ctrls, ctrl) }

// New finds this host's cgroup hierarchy and prepares the directory this
// instance's VM cgroups go in. instance names this server (see
// network.InstanceID). The error says why per-VM cgroups cannot be had here.
func New(instance string) (*Manager, error) {
	return newManager(instance, "/proc/self")
}

func newManager(instance, proc string) (*Manager, error) {
	if !validName(instance) {
		return nil, fmt.Errorf("cgroup: instance name %q: want letters, digits, - and _", instance)
	}
	mi, err := os.ReadFile(filepath.Join(proc, "mountinfo"))
	if err != nil {
		return nil, err
	}
	cg, err := os.ReadFile(filepath.Join(proc, "cgroup"))
	if err != nil {
		return nil, err
	}
	mounts := parseMountinfo(mi)
	own := parseProcCgroup(cg)
	m := &Manager{instance: instance}
	for _, mt := range mounts {
		if mt.v2 && controllersOf(mt.dir)["memory"] {
			m.version = V2
			return m, m.setupV2(mt, own[""])
		}
	}
	m.version = V1
	return m, m.setupV1(mounts)
}

// Version is V1 or V2.
func (m *Manager) Version() int { return m.version }

// String says where the VM cgroups are.
func (m *Manager) String() string { return m.where }

// Dirs are the instance's directories, one per hierarchy.
func (m *Manager) Dirs() []string {
	out := make([]string, len(m.hiers))
	for i, h := range m.hiers {
		out[i] = h.dir
	}
	return out
}

func (m *Manager) dirName() string { return "execlaw-" + m.instance }

// serverLeaf is the v2 leaf the server moves itself into.
func (m *Manager) serverLeaf() string { return m.dirName() + "-server" }

func (m *Manager) setupV1(mounts []mountInfo) error {
	seen := map[string]bool{}
	var names []string
	for _, ctrl := range wantedV1 {
		var mt *mountInfo
		for i := range mounts {
			if !mounts[i].v2 && slices.Contains(mounts[i].opts, ctrl) {
				mt = &mounts[i]
				break
			}
		}
		if mt == nil {
			if ctrl == "memory" {
				return errors.New("cgroup: no memory controller is mounted (neither a cgroup v2 hierarchy with it nor a v1 memory hierarchy)")
			}
			continue
		}
		if seen[mt.dir] {
			continue
		}
		seen[mt.dir] = true
		dir := filepath.Join(mt.dir, m.dirName())
		if err := os.Mkdir(dir, 0o755); err != nil && !errors.Is(err, fs.ErrExist) {
			if ctrl == "memory" {
				return fmt.Errorf("cgroup v1: %w (per-VM cgroups on cgroup v1 need root: v1 cannot be delegated to an unprivileged user safely)", err)
			}
			continue
		}
		var ctrls []string
		for _, o := range mt.opts {
			if slices.Contains(wantedV1, o) || o == "cpuacct" {
				ctrls = append(ctrls, o)
			}
		}
		m.hiers = append(m.hiers, hier{dir: dir, ctrls: ctrls})
		names = append(names, strings.Join(ctrls, ","))
	}
	m.parentRel = m.dirName()
	m.where = fmt.Sprintf("cgroup v1 (%s): per-VM cgroups in %s in each hierarchy", strings.Join(names, " "), "/"+m.dirName())
	return nil
}

func (m *Manager) setupV2(mt mountInfo, own string) error {
	rootDir := mt.dir
	ownDir := onDisk(mt, own)
	var base, how string
	switch {
	case ownDir == rootDir:
		base, how = rootDir, "the hierarchy's root"
	case isServerLeaf(filepath.Base(ownDir)) && enabled(filepath.Dir(ownDir))["memory"]:
		// This process moved itself into a leaf before (another instance
		// in the same process, as in tests): its parent is ready.
		base, how = filepath.Dir(ownDir), "the server's delegated cgroup"
	default:
		err := moveToLeaf(ownDir, m.serverLeaf())
		switch {
		case err == nil:
			base, how = ownDir, "the server's delegated cgroup (the server moved into "+m.serverLeaf()+")"
		case os.Geteuid() == 0:
			base, how = rootDir, "the hierarchy's root ("+err.Error()+")"
		default:
			return fmt.Errorf("cgroup v2: %w; run the server under its systemd unit (Delegate=yes gives it a cgroup of its own) or as root", err)
		}
	}
	avail := controllersOf(base)
	if !avail["memory"] {
		return fmt.Errorf("cgroup v2: the memory controller is not available in %s (cgroup.controllers); with systemd, Delegate=yes hands it to the unit", base)
	}
	var ctrls []string
	for _, c := range wantedV2 {
		if avail[c] {
			ctrls = append(ctrls, c)
		}
	}
	if err := enable(base, ctrls); err != nil {
		return fmt.Errorf("cgroup v2: %w", err)
	}
	dir := filepath.Join(base, m.dirName())
	if err := os.Mkdir(dir, 0o755); err != nil && !errors.Is(err, fs.ErrExist) {
		return fmt.Errorf("cgroup v2: %w", err)
	}
	if err := enable(dir, ctrls); err != nil {
		return fmt.Errorf("cgroup v2: %w", err)
	}
	m.hiers = []hier{{dir: dir, ctrls: ctrls}}
	m.parentRel = strings.TrimPrefix(strings.TrimPrefix(dir, rootDir), "/")
	m.where = fmt.Sprintf("cgroup v2 (%s): per-VM cgroups in %s, under %s", strings.Join(ctrls, " "), dir, how)
	return nil
}

func isServerLeaf(name string) bool {
	return strings.HasPrefix(name, "execlaw-") && strings.HasSuffix(name, "-server")
}

// moveToLeaf moves this process from dir, its cgroup, into dir/leaf, so
// that dir may enable controllers for its children. It refuses when dir
// holds other processes: they are not this server's to move.
func moveToLeaf(dir, leaf string) error {
	pids, err := readPids(filepath.Join(dir, "cgroup.procs"))
	if err != nil {
		return err
	}
	self := os.Getpid()
	for _, p := range pids {
		if p != self {
			return fmt.Errorf("the server's cgroup %s holds other processes too (pid %d)", dir, p)
		}
	}
	l := filepath.Join(dir, leaf)
	if err := os.Mkdir(l, 0o755); err != nil && !errors.Is(err, fs.ErrExist) {
		return err
	}
	if err := writeFile(filepath.Join(l, "cgroup.procs"), strconv.Itoa(self)); err != nil {
		os.Remove(l)
		return err
	}
	return nil
}

// enable turns controllers on for dir's children, one at a time: a write
// naming several fails as a whole when one of them cannot be enabled.
// Memory must succeed; the others are best effort.
func enable(dir string, ctrls []string) error {
	on := enabled(dir)
	for _, c := range ctrls {
		if on[c] {
			continue
		}
		if err := writeFile(filepath.Join(dir, "cgroup.subtree_control"), "+"+c); err != nil && c == "memory" {
			return fmt.Errorf("enabling the memory controller in %s: %w", dir, err)
		}
	}
	return nil
}

func controllersOf(dir string) map[string]bool {
	return wordSet(filepath.Join(dir, "cgroup.controllers"))
}
func enabled(dir string) map[string]bool {
	return wordSet(filepath.Join(dir, "cgroup.subtree_control"))
}

func wordSet(path string) map[string]bool {
	b, _ := os.ReadFile(path)
	set := map[string]bool{}
	for _, w := range strings.Fields(string(b)) {
		set[w] = true
	}
	return set
}

// Sweep removes the VM cgroups an earlier run of this instance left (its
// VMMs died with it, or outlived it, like a jailed Firecracker: they are
// killed) and says which.
func (m *Manager) Sweep() ([]string, error) {
	names := map[string]bool{}
	for _, h := range m.hiers {
		entries, err := os.ReadDir(h.dir)
		if err != nil {
			return nil, err
		}
		for _, e := range entries {
			if e.IsDir() {
				names[e.Name()] = true
			}
		}
	}
	var removed []string
	var errs []error
	for _, n := range slices.Sorted(func(yield func(string) bool) {
		for n := range names {
			if !yield(n) {
				return
			}
		}
	}) {
		if err := m.Open(n).Remove(); err != nil {
			errs = append(errs, err)
			continue
		}
		removed = append(removed, n)
	}
	return removed, errors.Join(errs...)
}

// Close removes the instance's directories, once no VM cgroup is left in
// them. The v2 leaf the server moved into stays: the server is in it.
func (m *Manager) Close() error {
	var errs []error
	for _, h := range m.hiers {
		if err := os.Remove(h.dir); err != nil && !errors.Is(err, fs.ErrNotExist) {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// validName allows what session ids and jailer ids are made of.
func validName(s string) bool {
	if s == "" || len(s) > 128 || s == "." || s == ".." {
		return false
	}
	for _, r := range s {
		if !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '-' || r == '_' || r == '.') {
			return false
		}
	}
	return true
}

// mountInfo is one cgroup mount from /proc/self/mountinfo.
type mountInfo struct {
	dir  string   // mount point
	root string   // the part of the hierarchy mounted there (usually /)
	v2   bool     // cgroup2
	opts []string // super options: v1's controllers, name=...
}

func parseMountinfo(b []byte) []mountInfo {
	var out []mountInfo
	sc := bufio.NewScanner(bytes.NewReader(b))
	for sc.Scan() {
		// id parent maj:min root mountpoint opts [optional...] - fstype source superopts
		pre, post, ok := strings.Cut(sc.Text(), " - ")
		if !ok {
			continue
		}
		f, g := strings.Fields(pre), strings.Fields(post)
		if len(f) < 5 || len(g) < 3 || (g[0] != "cgroup" && g[0] != "cgroup2") {
			continue
		}
		out = append(out, mountInfo{dir: unescape(f[4]), root: unescape(f[3]), v2: g[0] == "cgroup2", opts: strings.Split(g[2], ",")})
	}
	return out
}

// unescape undoes mountinfo's octal escapes (\040 for a space...).
func unescape(s string) string {
	if !strings.Contains(s, `\`) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+4 <= len(s) {
			if n, err := strconv.ParseUint(s[i+1:i+4], 8, 8); err == nil {
				b.WriteByte(byte(n))
				i += 3
				continue
			}
		}
		b.WriteByte(s[i])
	}
	return b.String()
}

// parseProcCgroup maps each v1 controller to this process's cgroup in its
// hierarchy, and "" to its v2 cgroup.
func parseProcCgroup(b []byte) map[string]string {
	out := map[string]string{}
	for _, line := range strings.Split(string(b), "\n") {
		parts := strings.SplitN(line, ":", 3)
		if len(parts) != 3 {
			continue
		}
		if parts[1] == "" {
			out[""] = parts[2]
			continue
		}
		for _, c := range strings.Split(parts[1], ",") {
			out[c] = parts[2]
		}
	}
	return out
}

// onDisk is where cgroup path p of a hierarchy is, through mount mt.
func onDisk(mt mountInfo, p string) string {
	if mt.root != "/" {
		if rel, ok := strings.CutPrefix(p, mt.root); ok {
			p = rel
		}
	}
	return filepath.Join(mt.dir, p)
}

func writeFile(path, value string) error {
	f, err := os.OpenFile(path, os.O_WRONLY, 0)
	if err != nil {
		return err
	}
	_, err = f.WriteString(value)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("write %q to %s: %w", value, path, err)
	}
	return nil
}

func readPids(path string) ([]int, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	var pids []int
	for _, f := range strings.Fields(string(b)) {
		if p, err := strconv.Atoi(f); err == nil {
			pids = append(pids, p)
		}
	}
	return pids, nil
}

// readKey reads "key value" lines (memory.events, memory.oom_control) and
// returns key's value.
func readKey(path, key string) (uint64, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return 0, err
	}
	for _, line := range strings.Split(string(b), "\n") {
		if k, v, ok := strings.Cut(line, " "); ok && k == key {
			return strconv.ParseUint(strings.TrimSpace(v), 10, 64)
		}
	}
	return 0, fmt.Errorf("%s has no %s", path, key)
}

// JailerArgs are the Firecracker jailer's flags that make it create the VM
// cgroup itself, as <hierarchy>/<instance dir>/<jailer --id>, with limits l,
// and start Firecracker inside it. Open(id) is that cgroup afterwards.
// Files a controller missing here would hold are left out: the jailer fails
// on a file it cannot write.
func (m *Manager) JailerArgs(l Limits) []string {
	args := []string{"--cgroup-version", strconv.Itoa(m.version), "--parent-cgroup", m.parentRel}
	for _, s := range l.settings(m.version) {
		ok := false
		for _, h := range m.hiers {
			if h.has(controller(s.file)) {
				_, err := os.Stat(filepath.Join(h.dir, s.file))
				ok = err == nil
				break
			}
		}
		if ok {
			args = append(args, "--cgroup", s.file+"="+s.value)
		}
	}
	return args
}

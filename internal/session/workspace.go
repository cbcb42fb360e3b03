package session

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"sync"
	"time"

	"github.com/execlaw/execlaw/internal/event"
	"github.com/execlaw/execlaw/internal/guest"
	"github.com/execlaw/execlaw/internal/sandbox"
	"github.com/execlaw/execlaw/internal/workspace"
)

// A new session's workspace can start from a git repository (cloned inside
// the sandbox before the first turn) and/or an uploaded archive (unpacked
// there once it arrives, PUT /api/sessions/{id}/archive). Either happens
// while the session boots: its status events show the phases "clone" and
// "archive", and a failure ends the session with an error_event and an
// error that says why. Then the workspace's baseline is recorded in the
// session's directory, for its changes.

// ArchiveWait is how long a session created with archiveUpload waits for its
// archive before it gives up (and fails).
const ArchiveWait = 10 * time.Minute

// ErrNoWorkspace wraps why a session's workspace cannot be reached now: it
// is starting, paused or has ended.
var ErrNoWorkspace = errors.New("the session's workspace cannot be reached now")

// noWorkspace is ErrNoWorkspace with the reason as its message.
type noWorkspace struct{ reason string }

func (e *noWorkspace) Error() string        { return e.reason }
func (e *noWorkspace) Is(target error) bool { return target == ErrNoWorkspace }

// ErrNoArchive is an archive uploaded to a session that does not wait for
// one (it was not created with archiveUpload, or has had its archive).
var ErrNoArchive = errors.New("this session does not wait for an archive: create it with \"archiveUpload\": true and upload its archive once, before it is ready")

// wsPrep is what a new session does to its workspace before it is ready.
type wsPrep struct {
	repo    *workspace.Repo // with its token, which is forgotten once used
	ca      []byte
	archive chan archiveDelivery // nil unless the session waits for an archive

	mu        sync.Mutex
	delivered bool
}

type archiveDelivery struct {
	body io.Reader
	lim  guest.UnpackLimits
	done chan archiveResult
}

type archiveResult struct {
	res guest.WSUnpackResult
	err error
}

// checkWorkspace validates the workspace part of a new session's request
// (the rest is validate's) and returns what the session will do.
func (m *Manager) checkWorkspace(req CreateRequest, c *checked) (*wsPrep, error) {
	if req.Repo == nil && !req.ArchiveUpload {
		return nil, nil
	}
	p := &wsPrep{ca: m.cfg.RepoCA}
	if req.Repo != nil {
		r, err := req.Repo.Check(m.cfg.RepoPolicy)
		if err != nil {
			return nil, invalid("%v", err)
		}
		if c.set.Network != "full" {
			return nil, invalid(`repo needs "network": "full": the repository is cloned inside the sandbox`)
		}
		p.repo = &r
		safe := r.Safe()
		c.set.Repo = &safe
	}
	if req.ArchiveUpload {
		p.archive = make(chan archiveDelivery)
		c.set.ArchiveUpload = true
	}
	raw, err := json.Marshal(c.set)
	if err != nil {
		return nil, err
	}
	c.rec.Config = raw
	return p, nil
}

// prepareWorkspace clones, unpacks and records the baseline of a new
// session's workspace; a resumed session keeps what it has. The error says
// what failed, for the user.
func (s *Session) prepareWorkspace(sb sandbox.Sandbox) error {
	if s.resuming != nil {
		return nil
	}
	g, p := sb.Guest(), s.prep
	fresh := true
	if p != nil && p.repo != nil {
		fresh = false
		repo := *p.repo
		p.repo = nil // the token goes with it
		_ = s.emitStatus("clone", "cloning "+repo.URL)
		var last time.Time
		err := workspace.Clone(s.ctx, g, workspace.CloneOptions{Repo: repo, ExtraCA: p.ca, Progress: func(line string) {
			if line != "" && time.Since(last) >= 2*time.Second {
				last = time.Now()
				_ = s.emitStatus("clone", line)
			}
		}})
		if err != nil {
			return fmt.Errorf("the repository could not be cloned: %w", err)
		}
		_ = s.emitStatus("clone", "cloned "+repo.URL)
	}
	if p != nil && p.archive != nil {
		fresh = false
		_ = s.emitStatus("archive", "waiting for the archive upload")
		timer := time.NewTimer(ArchiveWait)
		defer timer.Stop()
		select {
		case d := <-p.archive:
			_ = s.emitStatus("archive", "unpacking the archive")
			res, err := g.WSUnpack(s.ctx, d.body, d.lim)
			d.done <- archiveResult{res: res, err: err}
			if err != nil {
				return fmt.Errorf("the archive could not be unpacked: %s", guestMessage(err))
			}
			msg := fmt.Sprintf("unpacked %s: %d files, %d directories, %d symbolic links", res.Format, res.Files, res.Dirs, res.Symlinks)
			if res.Skipped > 0 {
				msg += fmt.Sprintf(", %d special entries left out", res.Skipped)
			}
			_ = s.emitStatus("archive", msg)
		case <-timer.C:
			return fmt.Errorf("no archive was uploaded within %s", ArchiveWait)
		case <-s.ctx.Done():
			return context.Cause(s.ctx)
		}
	}
	s.recordBaseline(sb, fresh)
	return nil
}

// recordBaseline keeps how the workspace stands now, for its changes. A
// fresh workspace that is empty needs no more than a look.
func (s *Session) recordBaseline(sb sandbox.Sandbox, fresh bool) {
	ctx, cancel := context.WithTimeout(s.ctx, 90*time.Second)
	defer cancel()
	b := workspace.Baseline{At: time.Now().UTC(), Files: []workspace.ManifestEntry{}}
	empty := false
	if fresh {
		l, err := sb.Guest().WSList(ctx, "")
		empty = err == nil && len(l.Entries) == 0
	}
	var err error
	if !empty {
		b, err = workspace.Record(ctx, sb.Guest(), sb.Workspace())
	}
	if err == nil {
		err = b.Save(s.deps.dir)
	}
	if err != nil {
		s.deps.log.Warn("record the workspace baseline", "session", s.id, "err", err)
	}
}

// failPrepare ends a session whose workspace could not be prepared: its
// sandbox is stopped here (the boot goroutine holds it), and the session
// ends in error, saying why.
func (s *Session) failPrepare(sb sandbox.Sandbox, err error) {
	s.mu.Lock()
	ending := s.terminating
	if !ending {
		s.sb, s.bootErr = nil, err
	}
	s.mu.Unlock()
	if ending {
		return // terminate stops the sandbox
	}
	s.deps.log.Warn("workspace not prepared", "session", s.id, "err", err)
	_ = s.bus.Emit(context.Background(), event.Error, event.ErrorData{Message: err.Error()})
	s.stopSandbox(sb)
	go s.terminate(StateError, 1, err.Error())
}

// guestMessage is a guest's error without the "guest: " its type adds.
func guestMessage(err error) string {
	if ge, ok := errors.AsType[*guest.Error](err); ok {
		return ge.Message
	}
	return err.Error()
}

// UploadArchive hands a new session the archive its workspace starts from,
// read from body as it is unpacked, and answers what was unpacked. It waits
// for the sandbox to be up. The session must have been created with
// archiveUpload and not have had its archive yet (ErrNoArchive); a failure
// ends the session.
func (m *Manager) UploadArchive(ctx context.Context, user User, id string, body io.Reader, lim guest.UnpackLimits) (guest.WSUnpackResult, error) {
	s, running, err := m.Get(ctx, user, id)
	if err != nil {
		return guest.WSUnpackResult{}, err
	}
	if !running || s.prep == nil || s.prep.archive == nil {
		return guest.WSUnpackResult{}, ErrNoArchive
	}
	p := s.prep
	p.mu.Lock()
	taken := p.delivered
	p.delivered = true
	p.mu.Unlock()
	if taken {
		return guest.WSUnpackResult{}, ErrNoArchive
	}
	d := archiveDelivery{body: body, lim: lim, done: make(chan archiveResult, 1)}
	select {
	case p.archive <- d:
	case <-s.ctx.Done():
		return guest.WSUnpackResult{}, ErrEnded
	case <-ctx.Done():
		p.mu.Lock()
		p.delivered = false // never handed over: it may come again
		p.mu.Unlock()
		return guest.WSUnpackResult{}, ctx.Err()
	}
	r := <-d.done
	return r.res, r.err
}

// Workspace is a running session's workspace, for the files routes.
type Workspace struct {
	Guest *guest.Client
	Root  string // the workspace directory as the guest sees it
	Name  string // the session's name
	dir   string // the session's host directory (its baseline)
}

// Workspace returns one of user's sessions' workspace, if its sandbox runs
// and is ready; otherwise an error wrapping ErrNoWorkspace says why.
func (m *Manager) Workspace(ctx context.Context, user User, id string) (Workspace, error) {
	s, running, err := m.Get(ctx, user, id)
	if err != nil {
		return Workspace{}, err
	}
	if !running {
		rec, err := m.store.GetSession(ctx, id)
		if err != nil {
			return Workspace{}, err
		}
		if rec.State == StatePaused {
			return Workspace{}, &noWorkspace{"the session is paused: resume it (or send it a message) to reach its files"}
		}
		return Workspace{}, &noWorkspace{"the session has ended: its sandbox and files are gone"}
	}
	s.mu.Lock()
	sb, state, name, ending := s.sb, s.rec.State, s.rec.Name, s.terminating
	s.mu.Unlock()
	if sb == nil || ending || (state != StateActive && state != StateBusy) {
		return Workspace{}, &noWorkspace{fmt.Sprintf("the session is %s: its files can be reached once it is ready", state)}
	}
	return Workspace{Guest: sb.Guest(), Root: sb.Workspace(), Name: name, dir: s.deps.dir}, nil
}

// Changes is what changed in one of user's sessions' workspace since it
// began.
func (m *Manager) Changes(ctx context.Context, user User, id string) (workspace.Changes, error) {
	ws, err := m.Workspace(ctx, user, id)
	if err != nil {
		return workspace.Changes{}, err
	}
	var base *workspace.Baseline
	switch b, err := workspace.LoadBaseline(ws.dir); {
	case err == nil:
		base = &b
	case !errors.Is(err, os.ErrNotExist):
		return workspace.Changes{}, err
	}
	return workspace.Compute(ctx, ws.Guest, ws.Root, base)
}

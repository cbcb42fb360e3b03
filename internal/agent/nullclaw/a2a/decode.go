package a2a

import (
	"bytes"
	"encoding/json"
	"unicode/utf8"
)

// This file validates what the gateway answers: JSON-RPC envelopes, A2A
// results, and every id, state and part in them.

type rpcEnvelope struct {
	JSONRPC *string         `json:"jsonrpc"`
	ID      json.RawMessage `json:"id"`
	Result  json.RawMessage `json:"result"`
	Error   json.RawMessage `json:"error"`
}

// decodeResponse validates one JSON-RPC response and the event it carries.
func decodeResponse(data []byte, wantID string, lim Limits) (Event, error) {
	data = bytes.TrimSpace(data)
	if len(data) == 0 || data[0] != '{' {
		return Event{}, protoErr("event is not a JSON object")
	}
	var env rpcEnvelope
	if err := json.Unmarshal(data, &env); err != nil {
		return Event{}, protoErr("event JSON: %v", err)
	}
	if env.JSONRPC == nil || *env.JSONRPC != "2.0" {
		return Event{}, protoErr(`response is not JSON-RPC "2.0"`)
	}
	hasResult := len(env.Result) > 0 && string(env.Result) != "null"
	hasError := len(env.Error) > 0 && string(env.Error) != "null"
	if hasResult == hasError {
		return Event{}, protoErr("response must hold exactly one of result and error")
	}
	idNull := len(env.ID) == 0 || string(env.ID) == "null"
	if !(hasError && idNull) { // errors about unreadable requests may carry a null id
		var got string
		if idNull || json.Unmarshal(env.ID, &got) != nil || got != wantID {
			return Event{}, protoErr("response id %s does not answer request %q", clip(string(env.ID), 80), wantID)
		}
	}
	if hasError {
		var e struct {
			Code    *int            `json:"code"`
			Message *string         `json:"message"`
			Data    json.RawMessage `json:"data"`
		}
		if err := json.Unmarshal(env.Error, &e); err != nil || e.Code == nil || e.Message == nil {
			return Event{}, protoErr("malformed JSON-RPC error object")
		}
		re := &RPCError{Code: *e.Code, Message: CleanText(*e.Message, lim.MaxErrorBytes)}
		if len(e.Data) <= lim.MaxErrorBytes {
			re.Data = e.Data
		}
		return Event{}, re
	}
	return decodeResult(env.Result, lim)
}

func decodeResult(raw json.RawMessage, lim Limits) (Event, error) {
	if len(raw) == 0 || raw[0] != '{' {
		return Event{}, protoErr("result is not an object")
	}
	var head struct {
		Kind string `json:"kind"`
	}
	if err := json.Unmarshal(raw, &head); err != nil {
		return Event{}, protoErr("result: %v", err)
	}
	v := validator{lim: lim}
	switch EventKind(head.Kind) {
	case KindTask:
		var t Task
		if err := json.Unmarshal(raw, &t); err != nil {
			return Event{}, protoErr("task: %v", err)
		}
		v.task(&t)
		return Event{Kind: KindTask, Task: &t}, v.err
	case KindStatusUpdate:
		var s TaskStatusUpdateEvent
		if err := json.Unmarshal(raw, &s); err != nil {
			return Event{}, protoErr("status-update: %v", err)
		}
		v.id("taskId", s.TaskID)
		v.id("contextId", s.ContextID)
		v.status(&s.Status)
		return Event{Kind: KindStatusUpdate, StatusUpdate: &s}, v.err
	case KindArtifactUpdate:
		var a TaskArtifactUpdateEvent
		if err := json.Unmarshal(raw, &a); err != nil {
			return Event{}, protoErr("artifact-update: %v", err)
		}
		v.id("taskId", a.TaskID)
		v.id("contextId", a.ContextID)
		v.artifact(&a.Artifact)
		return Event{Kind: KindArtifactUpdate, ArtifactUpdate: &a}, v.err
	case KindMessage:
		var m Message
		if err := json.Unmarshal(raw, &m); err != nil {
			return Event{}, protoErr("message: %v", err)
		}
		v.id("messageId", m.MessageID)
		v.message(&m)
		if m.TaskID != "" {
			v.id("taskId", m.TaskID)
		}
		if m.ContextID != "" {
			v.id("contextId", m.ContextID)
		}
		return Event{Kind: KindMessage, Message: &m}, v.err
	case "":
		return Event{}, protoErr("result has no kind")
	default:
		return Event{}, protoErr("result of unknown kind %q", clip(head.Kind, 40))
	}
}

// validator records the first thing wrong with a decoded result.
type validator struct {
	lim Limits
	err error
}

func (v *validator) fail(format string, args ...any) {
	if v.err == nil {
		v.err = protoErr(format, args...)
	}
}

func (v *validator) id(field, s string) {
	switch {
	case s == "":
		v.fail("%s is missing", field)
	case len(s) > v.lim.MaxIDBytes:
		v.fail("%s is longer than %d bytes", field, v.lim.MaxIDBytes)
	case !v.validID(s):
		v.fail("%s has a control or invalid character", field)
	}
}

// validID: 1 to MaxIDBytes of UTF-8 without control characters.
func (v *validator) validID(s string) bool {
	if s == "" || len(s) > v.lim.MaxIDBytes || !utf8.ValidString(s) {
		return false
	}
	for _, r := range s {
		if r < 0x20 || r == 0x7f || r == utf8.RuneError {
			return false
		}
	}
	return true
}

func (v *validator) task(t *Task) {
	v.id("id", t.ID)
	v.id("contextId", t.ContextID)
	v.status(&t.Status)
	if len(t.Artifacts) > v.lim.MaxArtifacts {
		v.fail("task has %d artifacts, more than %d", len(t.Artifacts), v.lim.MaxArtifacts)
		return
	}
	for i := range t.Artifacts {
		v.artifact(&t.Artifacts[i])
	}
	if len(t.History) > v.lim.MaxHistory {
		v.fail("task has %d history messages, more than %d", len(t.History), v.lim.MaxHistory)
		return
	}
	for i := range t.History {
		v.message(&t.History[i])
	}
}

func (v *validator) status(s *TaskStatus) {
	if !s.State.valid() {
		v.fail("unknown task state %q", clip(string(s.State), 40))
	}
	if s.Message != nil {
		v.message(s.Message)
	}
}

func (v *validator) message(m *Message) {
	if m.Kind != "" && m.Kind != "message" {
		v.fail("message of kind %q", clip(m.Kind, 40))
	}
	if m.Role != "agent" && m.Role != "user" {
		v.fail("message role %q", clip(m.Role, 40))
	}
	v.parts(m.Parts)
}

func (v *validator) artifact(a *Artifact) {
	v.id("artifactId", a.ArtifactID)
	v.parts(a.Parts)
}

func (v *validator) parts(ps []Part) {
	if len(ps) > v.lim.MaxParts {
		v.fail("%d parts, more than %d", len(ps), v.lim.MaxParts)
		return
	}
	for _, p := range ps {
		switch p.Kind {
		case "text":
		case "data":
			if len(p.Data) == 0 || p.Data[0] != '{' {
				v.fail("data part without an object")
			}
		case "file":
			if len(p.File) == 0 || p.File[0] != '{' {
				v.fail("file part without an object")
			}
		default:
			v.fail("part of unknown kind %q", clip(p.Kind, 40))
		}
	}
}

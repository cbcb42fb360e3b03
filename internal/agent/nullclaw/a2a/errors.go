package a2a

import (
	"encoding/json"
	"errors"
	"fmt"
)

// JSON-RPC error codes nullclaw answers with (docs/en/gateway-api.md, "Error
// Codes"; src/a2a.zig).
const (
	CodeParseError           = -32700
	CodeInvalidRequest       = -32600
	CodeMethodNotFound       = -32601
	CodeInvalidParams        = -32602
	CodeInternalError        = -32603
	CodeTaskNotFound         = -32001
	CodeTaskNotCancelable    = -32002
	CodePushNotSupported     = -32003
	CodeContentTypeUnsupport = -32005
)

// Errors. Their texts name nullclaw: they reach the session log as they are.
var (
	// ErrProtocol is wrapped by every error about something the gateway sent
	// that breaks the protocol.
	ErrProtocol = errors.New("nullclaw: protocol violation")
	// ErrStreamEnded: the stream closed before the task reached a final state.
	ErrStreamEnded = errors.New("nullclaw: stream ended before the task finished")
	// ErrTooLarge: a line, event, stream or answer passed its limit.
	ErrTooLarge = errors.New("nullclaw: response exceeds limit")
	// ErrIdle: nothing arrived for the client's IdleTimeout.
	ErrIdle = errors.New("nullclaw: stream idle for too long")
	// ErrRequest: the request itself cannot be sent (bad argument).
	ErrRequest = errors.New("nullclaw: invalid request")
)

// RPCError is a JSON-RPC error object the gateway answered with, in a plain
// answer or as an event of a stream (nullclaw reports a failed streaming turn
// this way: -32603 "Agent processing failed").
type RPCError struct {
	Code    int
	Message string
	Data    json.RawMessage
}

func (e *RPCError) Error() string {
	return fmt.Sprintf("nullclaw: JSON-RPC error %d: %s", e.Code, e.Message)
}

// HTTPError is a non-200 answer of the gateway (nullclaw answers
// {"error":"..."} with 401 unauthorized, 404 "a2a not enabled", 413, 429
// "rate limited", 503 ...).
type HTTPError struct {
	StatusCode int
	Message    string
}

func (e *HTTPError) Error() string {
	if e.Message == "" {
		return fmt.Sprintf("nullclaw gateway: HTTP %d", e.StatusCode)
	}
	return fmt.Sprintf("nullclaw gateway: HTTP %d: %s", e.StatusCode, e.Message)
}

// IsNotCancelable reports whether err says the task had already finished
// (TaskNotCancelableError) or was gone (TaskNotFoundError).
func IsNotCancelable(err error) bool {
	var re *RPCError
	return errors.As(err, &re) && (re.Code == CodeTaskNotCancelable || re.Code == CodeTaskNotFound)
}

func protoErr(format string, args ...any) error {
	return fmt.Errorf("%w: %s", ErrProtocol, fmt.Sprintf(format, args...))
}

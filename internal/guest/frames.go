package guest

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"time"
)

// protocolError is the guest breaking the exec stream's rules, as opposed to
// the stream itself failing.
type protocolError string

func (e protocolError) Error() string { return string(e) }

func protocolErrorf(format string, a ...any) error { return protocolError(fmt.Sprintf(format, a...)) }

// frameReader reads the guest's exec frames (POST /v1/exec and attach).
type frameReader struct{ br *bufio.Reader }

// newFrameReader bounds one frame by the buffer: a longer line is a protocol
// violation, so the reader never holds more than MaxFrameBytes of it.
func newFrameReader(r io.Reader) *frameReader {
	return &frameReader{br: bufio.NewReaderSize(r, MaxFrameBytes)}
}

// next returns the next valid frame. The stream ending cleanly before a
// frame is io.ErrUnexpectedEOF: only the caller knows whether a terminal
// frame came already. Violations are protocolError; read errors are as is.
func (fr *frameReader) next() (ExecFrame, error) {
	for {
		line, rerr := fr.br.ReadSlice('\n')
		if errors.Is(rerr, bufio.ErrBufferFull) {
			return ExecFrame{}, protocolErrorf("frame larger than %d bytes", MaxFrameBytes)
		}
		if rerr != nil && rerr != io.EOF {
			return ExecFrame{}, rerr
		}
		if line = bytes.TrimSpace(line); len(line) > 0 {
			return decodeFrame(line)
		}
		if rerr == io.EOF {
			return ExecFrame{}, io.ErrUnexpectedEOF
		}
	}
}

// decodeFrame parses and checks one frame; guest-supplied strings come back
// bounded.
func decodeFrame(line []byte) (ExecFrame, error) {
	var f ExecFrame
	if err := json.Unmarshal(line, &f); err != nil {
		return ExecFrame{}, protocolErrorf("bad frame: %v", err)
	}
	switch f.Type {
	case FrameStdout, FrameStderr:
		if len(f.Data) > MaxExecChunkBytes {
			return ExecFrame{}, protocolErrorf("output chunk of %d bytes exceeds %d", len(f.Data), MaxExecChunkBytes)
		}
	case FrameExit:
		if f.DurationMs < 0 {
			return ExecFrame{}, protocolErrorf("negative duration in exit frame")
		}
		f.Signal = truncate(f.Signal, 64)
	case FrameError:
		f.Message = truncate(f.Message, maxMessageBytes)
	default:
		return ExecFrame{}, protocolErrorf("unknown frame type %q", truncate(f.Type, 32))
	}
	return f, nil
}

// Result is an exit frame as an ExecResult.
func (f ExecFrame) Result() ExecResult {
	return ExecResult{
		ExitCode: f.ExitCode,
		Signal:   f.Signal,
		TimedOut: f.TimedOut,
		Duration: time.Duration(f.DurationMs) * time.Millisecond,
	}
}

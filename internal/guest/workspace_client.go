package guest

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"
)

// The host's side of the workspace file API (wsproto.go). Answers are
// bounded here whatever the guest does: listings by count, reads by the size
// the guest announced, JSON answers by MaxResponseBytes.

// CodeTooOld is a guest without the workspace file API: its image predates it.
const CodeTooOld = "too_old"

// wsErr explains a guest that does not know the endpoint.
func wsErr(err error) error {
	if ge, ok := err.(*Error); ok && ge.Status == http.StatusNotFound && strings.HasPrefix(ge.Message, "no such endpoint") {
		return &Error{Status: http.StatusNotImplemented, Code: CodeTooOld,
			Message: "this sandbox's execlaw-guest predates the workspace file API: rebuild the guest image (execlaw image build)"}
	}
	return err
}

// WSList lists a directory of the workspace.
func (c *Client) WSList(ctx context.Context, path string) (WSListResponse, error) {
	var r WSListResponse
	if err := c.call(ctx, http.MethodPost, PathWSList, WSPathRequest{Path: path}, &r); err != nil {
		return WSListResponse{}, wsErr(err)
	}
	if len(r.Entries) > MaxWSListEntries {
		return WSListResponse{}, fmt.Errorf("guest list: answer has %d entries, more than %d", len(r.Entries), MaxWSListEntries)
	}
	return r, nil
}

// WSRead opens a file of the workspace for reading. The body yields at most
// size bytes (the size the guest announced); fewer means the file changed
// or the guest failed, and the read ends with io.ErrUnexpectedEOF. ctx
// bounds the whole read; close the body when done.
func (c *Client) WSRead(ctx context.Context, path string) (io.ReadCloser, int64, error) {
	resp, err := c.send(ctx, http.MethodPost, PathWSRead, WSPathRequest{Path: path})
	if err != nil {
		return nil, 0, err
	}
	if resp.StatusCode != http.StatusOK {
		defer resp.Body.Close()
		return nil, 0, wsErr(readError(resp))
	}
	size, err := strconv.ParseInt(resp.Header.Get(HeaderWSSize), 10, 64)
	if err != nil || size < 0 || (resp.ContentLength >= 0 && resp.ContentLength != size) {
		resp.Body.Close()
		return nil, 0, fmt.Errorf("guest read: bad size %q", truncate(resp.Header.Get(HeaderWSSize), 40))
	}
	return &sizedBody{r: io.LimitReader(resp.Body, size), left: size, c: resp.Body}, size, nil
}

// sizedBody is a body of a known size: ending early is an error.
type sizedBody struct {
	r    io.Reader
	left int64
	c    io.Closer
}

func (b *sizedBody) Read(p []byte) (int, error) {
	n, err := b.r.Read(p)
	b.left -= int64(n)
	if err == io.EOF && b.left > 0 {
		err = io.ErrUnexpectedEOF
	}
	return n, err
}

func (b *sizedBody) Close() error { return b.c.Close() }

// WSWrite writes content to a file of the workspace (parents made as
// needed), at most limit bytes: past it the write fails (CodeTooLarge) and
// the file is left as it was. So does any other failure: the new content
// replaces the old only once it is all written.
func (c *Client) WSWrite(ctx context.Context, path string, content io.Reader, limit int64) (WSWriteResponse, error) {
	q := url.Values{"path": {path}, "limit": {strconv.FormatInt(limit, 10)}}
	resp, err := c.sendBody(ctx, PathWSWrite, q, content, ContentOctets)
	if err != nil {
		return WSWriteResponse{}, err
	}
	var r WSWriteResponse
	if err := decodeAnswer(resp, PathWSWrite, &r); err != nil {
		return WSWriteResponse{}, err
	}
	return r, nil
}

// WSTar streams a gzipped tar of the workspace (entries under TarPrefix).
// The guest bounds it (req, and its own defaults) and ends an archive cut
// short with a note; the caller bounds what it copies all the same.
func (c *Client) WSTar(ctx context.Context, req WSTarRequest) (io.ReadCloser, error) {
	resp, err := c.send(ctx, http.MethodPost, PathWSTar, req)
	if err != nil {
		return nil, err
	}
	if resp.StatusCode != http.StatusOK {
		defer resp.Body.Close()
		return nil, wsErr(readError(resp))
	}
	return resp.Body, nil
}

// UnpackLimits bound unpacking an archive (zero: the guest's defaults).
type UnpackLimits struct {
	MaxBytes   int64 // bytes unpacked
	MaxEntries int
	MaxArchive int64 // the archive itself
}

// WSUnpack unpacks a .tar.gz, .tar or .zip archive (read from archive as it
// arrives) into the workspace.
func (c *Client) WSUnpack(ctx context.Context, archive io.Reader, lim UnpackLimits) (WSUnpackResult, error) {
	q := url.Values{}
	if lim.MaxBytes > 0 {
		q.Set("maxBytes", strconv.FormatInt(lim.MaxBytes, 10))
	}
	if lim.MaxEntries > 0 {
		q.Set("maxEntries", strconv.Itoa(lim.MaxEntries))
	}
	if lim.MaxArchive > 0 {
		q.Set("maxArchive", strconv.FormatInt(lim.MaxArchive, 10))
	}
	resp, err := c.sendBody(ctx, PathWSUnpack, q, archive, ContentOctets)
	if err != nil {
		return WSUnpackResult{}, err
	}
	var r WSUnpackResult
	if err := decodeAnswer(resp, PathWSUnpack, &r); err != nil {
		return WSUnpackResult{}, err
	}
	return r, nil
}

// sendBody posts a raw (streamed) body to path?q.
func (c *Client) sendBody(ctx context.Context, path string, q url.Values, body io.Reader, contentType string) (*http.Response, error) {
	u := baseURL + path
	if len(q) > 0 {
		u += "?" + q.Encode()
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, u, body)
	if err != nil {
		return nil, fmt.Errorf("guest %s: %w", path, err)
	}
	req.Header.Set("Content-Type", contentType)
	resp, err := c.hc.Do(req)
	if err != nil {
		return nil, fmt.Errorf("guest %s: %w", path, err)
	}
	return resp, nil
}

// decodeAnswer reads a small JSON answer, or the guest's error.
func decodeAnswer(resp *http.Response, path string, out any) error {
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return wsErr(readError(resp))
	}
	b, err := io.ReadAll(io.LimitReader(resp.Body, 64<<10+1))
	if err != nil {
		return fmt.Errorf("guest %s: reading answer: %w", path, err)
	}
	if len(b) > 64<<10 {
		return fmt.Errorf("guest %s: answer too large", path)
	}
	if err := json.Unmarshal(b, out); err != nil {
		return fmt.Errorf("guest %s: bad answer: %w", path, err)
	}
	return nil
}

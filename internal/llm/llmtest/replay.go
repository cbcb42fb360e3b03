package llmtest

import (
	"fmt"
	"net/http"
	"os"
	"strings"

	"github.com/goccy/go-yaml"
)

// NewReplay starts a fake that answers chat requests with the response
// bodies of a go-vcr (v2) cassette, in order and byte for byte, with their
// recorded status and headers. The provider, and so the endpoints served,
// follow the recorded request URLs. Requests are not matched against the
// recorded ones: the cassette is a script of replies. Turns enqueued later
// are served after the recording runs out.
func NewReplay(cassettePath string) (*Server, error) {
	c, err := loadCassette(cassettePath)
	if err != nil {
		return nil, err
	}
	var d dialect
	var steps []step
	for i, in := range c.Interactions {
		var this dialect
		switch {
		case strings.HasSuffix(in.Request.URL, "/v1/messages"):
			this = anthropicAPI{}
		case strings.HasSuffix(in.Request.URL, "/chat/completions"):
			this = openaiAPI{fingerprint: randomHex("fp_", 10)}
		default:
			return nil, fmt.Errorf("llmtest: %s: interaction %d: no fake serves %s", cassettePath, i, in.Request.URL)
		}
		if d == nil {
			d = this
		} else if d.name() != this.name() {
			return nil, fmt.Errorf("llmtest: %s mixes %s and %s interactions", cassettePath, d.name(), this.name())
		}
		steps = append(steps, step{replay: &recordedReply{
			status: in.Response.Code,
			header: in.Response.Headers,
			body:   in.Response.Body,
		}})
	}
	if d == nil {
		return nil, fmt.Errorf("llmtest: %s has no interactions", cassettePath)
	}
	return newServer(d, steps), nil
}

// cassette is the part of the go-vcr v2 format the fakes use.
type cassette struct {
	Version      int `yaml:"version"`
	Interactions []struct {
		Request struct {
			Body   string              `yaml:"body"`
			URL    string              `yaml:"url"`
			Method string              `yaml:"method"`
			Header map[string][]string `yaml:"headers"`
		} `yaml:"request"`
		Response struct {
			Body    string              `yaml:"body"`
			Headers map[string][]string `yaml:"headers"`
			Code    int                 `yaml:"code"`
		} `yaml:"response"`
	} `yaml:"interactions"`
}

func loadCassette(path string) (*cassette, error) {
	raw, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("llmtest: %w", err)
	}
	var c cassette
	if err := yaml.Unmarshal(raw, &c); err != nil {
		return nil, fmt.Errorf("llmtest: %s: %w", path, err)
	}
	if c.Version != 2 {
		return nil, fmt.Errorf("llmtest: %s: cassette version %d, want 2", path, c.Version)
	}
	return &c, nil
}

type recordedReply struct {
	status int
	header http.Header
	body   string
}

// write sends the recorded body one event at a time, flushing after each,
// so the client sees a stream rather than one burst.
func (rr *recordedReply) write(w http.ResponseWriter, stop <-chan struct{}, r *http.Request) {
	for k, vs := range rr.header {
		w.Header()[http.CanonicalHeaderKey(k)] = vs
	}
	w.WriteHeader(statusOr500(rr.status))
	rc := http.NewResponseController(w)
	rest := rr.body
	for rest != "" {
		select {
		case <-stop:
			return
		case <-r.Context().Done():
			return
		default:
		}
		n := strings.Index(rest, "\n\n")
		if n < 0 {
			n = len(rest)
		} else {
			n += 2
		}
		_, _ = w.Write([]byte(rest[:n]))
		_ = rc.Flush()
		rest = rest[n:]
	}
}

package credproxy

import (
	"crypto/sha256"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"
)

// A guest that opens connection after connection gets MaxConns served at
// once; the rest are refused with 503 at once instead of each holding host
// memory.
func TestConnectionCap(t *testing.T) {
	release := make(chan struct{})
	var once sync.Once
	t.Cleanup(func() { once.Do(func() { close(release) }) })
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		<-release
		w.Header().Set("Content-Type", "application/json")
		io.WriteString(w, `{"type":"message","usage":{"input_tokens":1,"output_tokens":1}}`)
	}))
	t.Cleanup(up.Close)
	r := newRig(t, "anthropic", up.URL)

	const opened = 4 * MaxConns
	statuses := make(chan int, opened)
	var wg sync.WaitGroup
	for range opened {
		wg.Go(func() {
			c, err := net.Dial("tcp", r.addr)
			if err != nil {
				statuses <- 0
				return
			}
			defer c.Close()
			_ = c.SetDeadline(time.Now().Add(30 * time.Second))
			body := `{"model":"m","max_tokens":1,"messages":[]}`
			fmt.Fprintf(c, "POST /v1/messages HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Api-Key: %s\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n%s", r.token, len(body), body)
			var status int
			fmt.Fscanf(c, "HTTP/1.1 %d", &status)
			statuses <- status
		})
	}
	// The refused ones answer while the served ones wait on the upstream.
	refused := 0
	deadline := time.After(30 * time.Second)
	for refused < opened-MaxConns {
		select {
		case s := <-statuses:
			if s != http.StatusServiceUnavailable {
				t.Fatalf("a connection past the cap answered %d before the upstream did", s)
			}
			refused++
		case <-deadline:
			t.Fatalf("%d of %d connections past the cap were refused", refused, opened-MaxConns)
		}
	}
	once.Do(func() { close(release) })
	wg.Wait()
	close(statuses)
	for s := range statuses {
		if s != http.StatusOK {
			t.Errorf("a served connection answered %d", s)
		}
	}
}

// Request bodies go upstream as they arrive: a body near the limit arrives
// intact while the proxy holds a small part of it, and one past the limit
// is refused with 413 without the upstream receiving it whole.
func TestStreamedBody(t *testing.T) {
	type got struct {
		n   int64
		sum [32]byte
	}
	bodies := make(chan got, 2)
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		h := sha256.New()
		n, _ := io.Copy(h, r.Body)
		var g got
		g.n = n
		copy(g.sum[:], h.Sum(nil))
		bodies <- g
		w.Header().Set("Content-Type", "application/json")
		io.WriteString(w, `{"type":"message","usage":{"input_tokens":1,"output_tokens":1}}`)
	}))
	t.Cleanup(up.Close)
	r := newRig(t, "anthropic", up.URL)

	send := func(size int64) int {
		pr, pw := io.Pipe()
		go func() {
			// A JSON body of size bytes, written in pieces.
			pw.Write([]byte(`{"messages":"`))
			chunk := strings.Repeat("a", 64<<10)
			for left := size - 15; left > 0; left -= int64(len(chunk)) {
				if _, err := io.WriteString(pw, chunk[:min(int64(len(chunk)), left)]); err != nil {
					return
				}
			}
			pw.Write([]byte(`"}`))
			pw.Close()
		}()
		req, _ := http.NewRequest(http.MethodPost, "http://"+r.addr+"/v1/messages", pr)
		req.Header = anthropicHeader(r.token)
		resp, err := r.client().Do(req)
		if err != nil {
			return 0
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		return resp.StatusCode
	}

	var before, peak runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	stop := make(chan struct{})
	sampled := make(chan struct{})
	go func() {
		defer close(sampled)
		for {
			var m runtime.MemStats
			runtime.ReadMemStats(&m)
			if m.HeapInuse > peak.HeapInuse {
				peak = m
			}
			select {
			case <-stop:
				return
			case <-time.After(time.Millisecond):
			}
		}
	}()
	status := send(maxBodyBytes - 1) // chunked: the proxy does not know the length ahead
	close(stop)
	<-sampled
	if status != http.StatusOK {
		t.Fatalf("a body under the limit answered %d", status)
	}
	g := <-bodies
	if g.n != maxBodyBytes-1 {
		t.Fatalf("upstream got %d bytes, want %d", g.n, maxBodyBytes-1)
	}
	// The test's own pipe, client and upstream stream too; a proxy holding
	// the body would add its 32 MiB.
	if grew := int64(peak.HeapInuse) - int64(before.HeapInuse); grew > 24<<20 {
		t.Errorf("heap grew by %d MiB while %d MiB passed through", grew>>20, maxBodyBytes>>20)
	}

	if status := send(maxBodyBytes + 1<<20); status != http.StatusRequestEntityTooLarge && status != 0 {
		t.Fatalf("a body past the limit answered %d", status)
	}
	// The upstream saw the request begin, then cut off at the limit.
	select {
	case g := <-bodies:
		if g.n > maxBodyBytes {
			t.Errorf("the upstream received %d bytes of a body past the limit", g.n)
		}
	case <-time.After(30 * time.Second):
		t.Error("the upstream never saw the request end")
	}
}

package mail

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

	"github.com/execlaw/execlaw/internal/egress"
)

// DefaultGateway is exe.dev's metadata address, where a VM reaches the
// platform's e-mail gateway.
const DefaultGateway = "http://169.254.169.254"

// GatewayPath is where the gateway takes messages.
const GatewayPath = "/gateway/email/send"

// Gateway sends mail through exe.dev's e-mail gateway: a JSON POST of
// {to, subject, body}. It sends plain text only, so the HTML part is left
// out; the gateway itself delivers only to the VM's owner and people the VM
// is shared with.
type Gateway struct {
	endpoint string
	client   *http.Client
}

// NewGateway makes a gateway sender for the base address (DefaultGateway
// when empty). timeout bounds each request (default 30s).
func NewGateway(base string, timeout time.Duration) (*Gateway, error) {
	if base == "" {
		base = DefaultGateway
	}
	u, err := url.Parse(base)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" || u.RawQuery != "" || u.Fragment != "" {
		return nil, fmt.Errorf("exe.dev gateway address %q must be an http(s) URL", base)
	}
	if timeout <= 0 {
		timeout = 30 * time.Second
	}
	// The gateway may be reached at exactly its configured address (on
	// exe.dev the metadata address, which every other client refuses), and
	// nothing else: no proxy, no redirects, no other address its name
	// might lead to.
	port := u.Port()
	if port == "" {
		port = map[string]string{"http": "80", "https": "443"}[u.Scheme]
	}
	policy, err := egress.Only(net.JoinHostPort(u.Hostname(), port))
	if err != nil {
		return nil, fmt.Errorf("exe.dev gateway address %q: %w", base, err)
	}
	return &Gateway{
		endpoint: strings.TrimRight(base, "/") + GatewayPath,
		client: &http.Client{
			Timeout:   timeout,
			Transport: egress.NewTransport(policy),
			CheckRedirect: func(*http.Request, []*http.Request) error {
				return http.ErrUseLastResponse
			},
		},
	}, nil
}

func (g *Gateway) String() string { return "exe.dev e-mail gateway " + g.endpoint }

// gatewayRequest is the gateway's documented body.
type gatewayRequest struct {
	To      string `json:"to"`
	Subject string `json:"subject"`
	Body    string `json:"body"`
}

// Send posts the message. Anything but a 2xx answer is a DeliveryError
// carrying the gateway's own words.
func (g *Gateway) Send(ctx context.Context, m Message) error {
	raw, err := json.Marshal(gatewayRequest{To: m.To, Subject: oneLine(m.Subject, 200), Body: m.Text})
	if err != nil {
		return err
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, g.endpoint, bytes.NewReader(raw))
	if err != nil {
		return err
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Accept", "application/json")
	resp, err := g.client.Do(req)
	if err != nil {
		var ue *url.Error
		if errors.As(err, &ue) {
			err = ue.Err // the URL is in the transport name already
		}
		return &DeliveryError{Transport: "exe.dev e-mail gateway", Err: err}
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 16<<10))
	var answer struct {
		Success bool   `json:"success"`
		Error   string `json:"error"`
	}
	_ = json.Unmarshal(body, &answer)
	if resp.StatusCode/100 != 2 || answer.Error != "" {
		msg := answer.Error
		if msg == "" {
			msg = oneLine(string(body), 300)
		}
		if msg == "" {
			msg = "no reason given"
		}
		return &DeliveryError{Transport: "exe.dev e-mail gateway", Err: fmt.Errorf("HTTP %d: %s", resp.StatusCode, oneLine(msg, 300))}
	}
	return nil
}

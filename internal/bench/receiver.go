package bench

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"time"

	"github.com/iotransit/iotransit/internal/pki"
)

// WebhookReceiver is an HTTPS webhook endpoint on loopback, with a
// certificate of its own CA, for the forward benchmark. Each path is routed
// to a ForwardTrace with the integration's signing secret; every request
// is answered 200 and recorded: its arrival time (once the whole body is
// in), its webhook-id, whether its Standard Webhooks signature verifies,
// and each Thingsee message of its body.
type WebhookReceiver struct {
	// CAPEM verifies the receiver's certificate (the integration's caPem).
	CAPEM string
	base  string
	srv   *http.Server

	mu     sync.Mutex
	routes map[string]receiverRoute
	stray  int64
}

type receiverRoute struct {
	trace *ForwardTrace
	key   []byte
}

// maxWebhookBody bounds what the receiver reads of a request: 1000
// messages of a few hundred bytes fit many times over.
const maxWebhookBody = 16 << 20

// StartWebhookReceiver starts a receiver on 127.0.0.1; Close stops it.
func StartWebhookReceiver() (*WebhookReceiver, error) {
	now := time.Now()
	ca, err := pki.NewCA("iotransit bench receiver CA", 24*time.Hour, now)
	if err != nil {
		return nil, fmt.Errorf("bench: receiver CA: %w", err)
	}
	key, err := pki.NewKey()
	if err != nil {
		return nil, fmt.Errorf("bench: receiver key: %w", err)
	}
	leaf, _, err := ca.IssueServer(key.Public(), []string{"127.0.0.1", "localhost"}, 24*time.Hour, now)
	if err != nil {
		return nil, fmt.Errorf("bench: receiver certificate: %w", err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, fmt.Errorf("bench: receiver listen: %w", err)
	}
	r := &WebhookReceiver{CAPEM: string(ca.CertPEM), base: "https://" + ln.Addr().String(), routes: map[string]receiverRoute{}}
	r.srv = &http.Server{Handler: http.HandlerFunc(r.serve), ReadHeaderTimeout: 10 * time.Second}
	tl := tls.NewListener(ln, &tls.Config{
		MinVersion:   tls.VersionTLS12,
		Certificates: []tls.Certificate{{Certificate: [][]byte{leaf.Raw}, PrivateKey: key, Leaf: leaf}},
	})
	go func() { _ = r.srv.Serve(tl) }()
	return r, nil
}

// URL returns the receiver's address for path ("/hook/steady").
func (r *WebhookReceiver) URL(path string) string { return r.base + path }

// Route sends the requests to path to trace, verified with secret (whsec_…).
func (r *WebhookReceiver) Route(path string, trace *ForwardTrace, secret string) error {
	key, err := ParseWebhookSecret(secret)
	if err != nil {
		return err
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	r.routes[path] = receiverRoute{trace: trace, key: key}
	return nil
}

// Stray returns how many requests came to a path without a route.
func (r *WebhookReceiver) Stray() int64 {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.stray
}

// Close stops the receiver and closes its connections.
func (r *WebhookReceiver) Close() error { return r.srv.Close() }

func (r *WebhookReceiver) serve(w http.ResponseWriter, req *http.Request) {
	body, err := io.ReadAll(io.LimitReader(req.Body, maxWebhookBody))
	at := time.Now()
	if err != nil {
		http.Error(w, "read body", http.StatusBadRequest)
		return
	}
	r.mu.Lock()
	rt, ok := r.routes[req.URL.Path]
	if !ok || req.Method != http.MethodPost {
		r.stray++
		r.mu.Unlock()
		http.NotFound(w, req)
		return
	}
	r.mu.Unlock()
	id := req.Header.Get(headerWebhookID)
	sigErr := VerifyWebhook(rt.key, id, req.Header.Get(headerWebhookTimestamp), req.Header.Get(headerWebhookSignature), body, at)
	rt.trace.receive(at, id, body, sigErr)
	w.WriteHeader(http.StatusOK)
}

// APIClient calls a node's HTTPS API as the operator.
type APIClient struct {
	base string
	key  string
	hc   *http.Client
}

// NewAPIClient returns a client of the API at addr (host:port), verifying
// the server with caPEM and authenticating with the operator key.
func NewAPIClient(addr, operatorKey string, caPEM []byte) (*APIClient, error) {
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(caPEM) {
		return nil, errors.New("bench: no API server CA")
	}
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return nil, fmt.Errorf("bench: API address %q: %w", addr, err)
	}
	tr := &http.Transport{TLSClientConfig: &tls.Config{MinVersion: tls.VersionTLS12, RootCAs: pool, ServerName: host}}
	return &APIClient{base: "https://" + addr, key: operatorKey, hc: &http.Client{Transport: tr, Timeout: 30 * time.Second}}, nil
}

// Close releases the client's connections.
func (c *APIClient) Close() { c.hc.CloseIdleConnections() }

// do sends a request with a JSON body (nil: none) and decodes a JSON
// answer into out (nil: discard); an answer other than want is an error.
func (c *APIClient) do(ctx context.Context, method, path string, in, out any, want int) error {
	var body io.Reader
	if in != nil {
		b, err := json.Marshal(in)
		if err != nil {
			return err
		}
		body = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, c.base+path, body)
	if err != nil {
		return err
	}
	req.Header.Set("Authorization", "Bearer "+c.key)
	if in != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	res, err := c.hc.Do(req)
	if err != nil {
		return fmt.Errorf("bench: %s %s: %w", method, path, err)
	}
	defer res.Body.Close()
	b, err := io.ReadAll(io.LimitReader(res.Body, 1<<20))
	if err != nil {
		return fmt.Errorf("bench: %s %s: %w", method, path, err)
	}
	if res.StatusCode != want {
		return fmt.Errorf("bench: %s %s: HTTP %d: %s", method, path, res.StatusCode, strings.TrimSpace(string(b)))
	}
	if out != nil {
		if err := json.Unmarshal(b, out); err != nil {
			return fmt.Errorf("bench: %s %s: decode answer: %w", method, path, err)
		}
	}
	return nil
}

// WebhookIntegration is what creating a webhook integration returns.
type WebhookIntegration struct {
	ID string
	// Secret is the signing secret the server generated (shown once).
	Secret string
}

// CreateWebhook creates a webhook integration of tenant that posts to
// target (verified with caPEM) in batches of at most maxMessages, waiting
// at most maxWait for a batch to fill.
func (c *APIClient) CreateWebhook(ctx context.Context, tenant, name, target, caPEM string, maxMessages int, maxWait time.Duration) (WebhookIntegration, error) {
	in := map[string]any{
		"name": name, "type": "webhook",
		"webhook": map[string]any{"url": target, "caPem": caPEM},
		"batch":   map[string]any{"maxMessages": maxMessages, "maxWait": maxWait.String()},
	}
	var out struct {
		ID      string `json:"id"`
		Webhook struct {
			Secret string `json:"secret"`
		} `json:"webhook"`
	}
	if err := c.do(ctx, http.MethodPost, "/v1/tenants/"+url.PathEscape(tenant)+"/integrations", in, &out, http.StatusCreated); err != nil {
		return WebhookIntegration{}, err
	}
	if out.ID == "" || out.Webhook.Secret == "" {
		return WebhookIntegration{}, errors.New("bench: the created integration has no id or no signing secret in the answer")
	}
	return WebhookIntegration{ID: out.ID, Secret: out.Webhook.Secret}, nil
}

// IntegrationStatus is what the API shows of an integration's delivery.
type IntegrationStatus struct {
	// At is when it was read.
	At          time.Time          `json:"at"`
	Backlog     uint64             `json:"backlog"`
	DeadLetters uint64             `json:"deadLetters"`
	State       IntegrationCounter `json:"state"`
}

// IntegrationCounter is the integration's delivery state (GET …/integrations/{id}).
type IntegrationCounter struct {
	Delivered           uint64 `json:"delivered"`
	Batches             uint64 `json:"batches"`
	Failed              uint64 `json:"failedAttempts"`
	DeadLettered        uint64 `json:"deadLettered"`
	ConsecutiveFailures int    `json:"consecutiveFailures"`
	LastError           string `json:"lastError,omitempty"`
}

// Integration reads an integration's delivery state and backlog.
func (c *APIClient) Integration(ctx context.Context, tenant, id string) (*IntegrationStatus, error) {
	var s IntegrationStatus
	if err := c.do(ctx, http.MethodGet, "/v1/tenants/"+url.PathEscape(tenant)+"/integrations/"+url.PathEscape(id), nil, &s, http.StatusOK); err != nil {
		return nil, err
	}
	s.At = time.Now()
	return &s, nil
}

// DeleteIntegration deletes an integration (its delivery stops).
func (c *APIClient) DeleteIntegration(ctx context.Context, tenant, id string) error {
	return c.do(ctx, http.MethodDelete, "/v1/tenants/"+url.PathEscape(tenant)+"/integrations/"+url.PathEscape(id), nil, nil, http.StatusNoContent)
}

package bench

import (
	"context"
	"crypto/tls"
	"fmt"
	"io"
	"net"
	"net/http"
	"slices"
	"sync"
	"time"

	"github.com/iotransit/iotransit/client"
	"github.com/iotransit/iotransit/internal/pki"
	"github.com/iotransit/iotransit/receiver"
)

// WebhookReceiver is an HTTPS webhook endpoint, on loopback unless told
// otherwise, with a certificate of its own CA, for the forward benchmark.
// Each path is routed to a ForwardTrace with the integration's signing
// secret; every request is answered 200 and recorded: its arrival time
// (once the whole body is in), its webhook-id, whether its Standard
// Webhooks signature verifies, and each Thingsee message of its body.
// During an outage (Unavailable) it answers 503 instead and records only
// that it refused.
type WebhookReceiver struct {
	// CAPEM verifies the receiver's certificate (the integration's caPem).
	CAPEM string
	base  string
	srv   *http.Server

	mu          sync.Mutex
	routes      map[string]receiverRoute
	stray       int64
	refuseUntil time.Time
}

type receiverRoute struct {
	trace    *ForwardTrace
	verifier *receiver.Verifier
}

// maxWebhookBody bounds what the receiver reads of a request: 1000
// messages of a few hundred bytes fit many times over.
const maxWebhookBody = 16 << 20

// StartWebhookReceiver starts a receiver listening on addr, host:port
// ("": 127.0.0.1 on a free port); Close stops it. Its certificate names
// the host, 127.0.0.1 and localhost, so the host must be the name or
// address the forwarding server reaches it by, not a wildcard.
func StartWebhookReceiver(addr string) (*WebhookReceiver, error) {
	if addr == "" {
		addr = "127.0.0.1:0"
	}
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return nil, fmt.Errorf("bench: receiver address %q: %w", addr, err)
	}
	if ip := net.ParseIP(host); host == "" || ip != nil && ip.IsUnspecified() {
		return nil, fmt.Errorf("bench: receiver address %q: give the host the server reaches the receiver by (its certificate names it), not a wildcard", addr)
	}
	now := time.Now()
	ca, err := pki.NewCA("iotransit bench receiver CA", 24*time.Hour, now)
	if err != nil {
		return nil, fmt.Errorf("bench: receiver CA: %w", err)
	}
	key, err := pki.NewKey()
	if err != nil {
		return nil, fmt.Errorf("bench: receiver key: %w", err)
	}
	names := []string{"127.0.0.1", "localhost"}
	if !slices.Contains(names, host) {
		names = append(names, host)
	}
	leaf, _, err := ca.IssueServer(key.Public(), names, 24*time.Hour, now)
	if err != nil {
		return nil, fmt.Errorf("bench: receiver certificate: %w", err)
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("bench: receiver listen: %w", err)
	}
	_, port, _ := net.SplitHostPort(ln.Addr().String())
	r := &WebhookReceiver{CAPEM: string(ca.CertPEM), base: "https://" + net.JoinHostPort(host, port), routes: map[string]receiverRoute{}}
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
	v, err := receiver.NewVerifier(secret)
	if err != nil {
		return err
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	r.routes[path] = receiverRoute{trace: trace, verifier: v}
	return nil
}

// Stray returns how many requests came to a path without a route.
func (r *WebhookReceiver) Stray() int64 {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.stray
}

// Unavailable makes the receiver answer every request 503 (Retry-After:
// 1) for d from now, as an endpoint in an outage does: the server must
// deliver those batches again later. The refusals are counted in the
// route's ForwardResult.Refused.
func (r *WebhookReceiver) Unavailable(d time.Duration) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.refuseUntil = time.Now().Add(d)
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
	refuse := at.Before(r.refuseUntil)
	r.mu.Unlock()
	if refuse {
		rt.trace.refused()
		w.Header().Set("Retry-After", "1")
		http.Error(w, "receiver unavailable (bench outage)", http.StatusServiceUnavailable)
		return
	}
	id := req.Header.Get(receiver.HeaderID)
	sigErr := rt.verifier.VerifyAt(body, req.Header, at)
	rt.trace.receive(at, id, body, sigErr)
	w.WriteHeader(http.StatusOK)
}

// WebhookIntegration is what creating a webhook integration returns.
type WebhookIntegration struct {
	ID string
	// Secret is the signing secret the server generated (shown once).
	Secret string
}

// IntegrationStatus is what the API shows of an integration's delivery
// (GET …/integrations/{id}), and when it was read.
type IntegrationStatus struct {
	// At is when it was read.
	At          time.Time               `json:"at"`
	Backlog     uint64                  `json:"backlog"`
	DeadLetters uint64                  `json:"deadLetters"`
	State       client.IntegrationState `json:"state"`
}

// ReadIntegration reads, through api, an integration's delivery state and
// backlog.
func ReadIntegration(ctx context.Context, api *client.Client, tenant, id string) (*IntegrationStatus, error) {
	v, err := api.GetIntegration(ctx, tenant, id)
	if err != nil {
		return nil, fmt.Errorf("bench: read integration %s: %w", id, err)
	}
	return &IntegrationStatus{At: time.Now(), Backlog: v.Backlog, DeadLetters: v.DeadLetters, State: v.State}, nil
}

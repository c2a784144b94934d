package testutil

import (
	"crypto/tls"
	"io"
	"net"
	"net/http"
	"sync"
	"testing"
	"time"

	"github.com/iotransit/iotransit/internal/pki"
)

// Delivery is one request a Receiver got.
type Delivery struct {
	URI    string // the request target: path and query
	Header http.Header
	Body   []byte
	At     time.Time
}

// Receiver is a real HTTPS webhook receiver on loopback with its own CA.
// Handle decides each answer (default 200); every request is recorded.
type Receiver struct {
	URL   string
	CAPEM string
	Addr  string

	mu       sync.Mutex
	handle   func(w http.ResponseWriter, r *http.Request, body []byte) bool
	got      []Delivery
	srv      *http.Server
	ln       net.Listener
	cert     tls.Certificate
	accepted int
}

// NewReceiver starts a receiver; it is closed at cleanup.
func NewReceiver(t testing.TB) *Receiver {
	t.Helper()
	ca, err := pki.NewCA("receiver test CA", time.Hour, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	r := &Receiver{CAPEM: string(ca.CertPEM), cert: *ServerCert(t, ca, "127.0.0.1", "localhost")}
	r.Start(t, "127.0.0.1:0")
	return r
}

// Start (re)starts the receiver on addr (its previous address to resume
// after Stop).
func (r *Receiver) Start(t testing.TB, addr string) {
	t.Helper()
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		t.Fatalf("receiver listen %s: %v", addr, err)
	}
	r.mu.Lock()
	r.ln = tls.NewListener(&countingListener{Listener: ln, r: r}, &tls.Config{Certificates: []tls.Certificate{r.cert}, MinVersion: tls.VersionTLS12})
	r.Addr = ln.Addr().String()
	r.URL = "https://" + r.Addr + "/hook"
	r.srv = &http.Server{Handler: http.HandlerFunc(r.serve), ReadHeaderTimeout: 5 * time.Second}
	srv, l := r.srv, r.ln
	r.mu.Unlock()
	go func() { _ = srv.Serve(l) }()
	t.Cleanup(func() { _ = srv.Close() })
}

// Stop closes the listener and every connection (connections are then refused).
func (r *Receiver) Stop() {
	r.mu.Lock()
	srv := r.srv
	r.mu.Unlock()
	_ = srv.Close()
}

type countingListener struct {
	net.Listener
	r *Receiver
}

func (l *countingListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err == nil {
		l.r.mu.Lock()
		l.r.accepted++
		l.r.mu.Unlock()
	}
	return c, err
}

// Accepted returns how many connections the receiver accepted.
func (r *Receiver) Accepted() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.accepted
}

// Handle sets the answer function: it returns true when it answered, false
// to let the default 200 answer.
func (r *Receiver) Handle(fn func(w http.ResponseWriter, req *http.Request, body []byte) bool) {
	r.mu.Lock()
	r.handle = fn
	r.mu.Unlock()
}

func (r *Receiver) serve(w http.ResponseWriter, req *http.Request) {
	body, _ := io.ReadAll(io.LimitReader(req.Body, 16<<20))
	r.mu.Lock()
	r.got = append(r.got, Delivery{URI: req.RequestURI, Header: req.Header.Clone(), Body: body, At: time.Now()})
	h := r.handle
	r.mu.Unlock()
	if h != nil && h(w, req, body) {
		return
	}
	w.WriteHeader(http.StatusOK)
}

// Got returns the requests received so far.
func (r *Receiver) Got() []Delivery {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]Delivery(nil), r.got...)
}

package bench

import (
	"context"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/iotransit/iotransit/client"
	"github.com/iotransit/iotransit/internal/pki"
	"github.com/iotransit/iotransit/internal/securefile"
)

// Provisioning through the management API, for a server in another
// process: what an operator and a factory would do, with a certificate
// cache on disk so that a rerun does not enroll again.

// ProvisionConfig says where and how ProvisionAPI provisions gateways.
type ProvisionConfig struct {
	// API is the server's management API; its credential is the operator
	// key (it creates the tenant when absent), or a key of the tenant when
	// Admin is set.
	API *client.Client
	// Admin, when set, is the operator's client, which creates and reads
	// the tenant while API, a key of the tenant with a rate limit of its
	// own, provisions the gateways.
	Admin *client.Client
	// Tenant holds the gateways.
	Tenant string
	// Serials are the gateways to provision.
	Serials []string
	// Registered says the gateways are the tenant's already (claimed):
	// they are not registered again, which only the operator may do.
	Registered bool
	// CacheDir holds the keys and certificates of earlier runs, under
	// CacheKey(API, CA)/Tenant/ ("": no cache).
	CacheDir string
	// CAPEM verifies the server (MQTT and API); part of the cache key.
	CAPEM []byte
	// ServerName is the name the gateways verify the MQTT server's
	// certificate for.
	ServerName string
	// Parallel bounds the gateways provisioned at once (default 8).
	Parallel int
	// Progress, when set, is told how far provisioning is.
	Progress func(format string, args ...any)
}

// ProvisionStats says what ProvisionAPI did.
type ProvisionStats struct {
	// Enrolled gateways got a new certificate; Reused ones had a valid
	// one in the cache.
	Enrolled int64 `json:"enrolled"`
	Reused   int64 `json:"reused"`
	// Seconds is how long provisioning took.
	Seconds float64 `json:"seconds"`
	// CacheDir is where the keys and certificates are kept.
	CacheDir string `json:"cacheDir,omitempty"`
}

// cacheMinValidity is how long a cached certificate must still be valid to
// be reused.
const cacheMinValidity = time.Hour

// CacheKey names the cache directory of a server: a hash of its API URL
// and of the CA that verifies it, so that another server, or the same
// address with a new CA (a reset development server), never reuses a
// certificate it did not issue.
func CacheKey(apiURL string, caPEM []byte) string {
	h := sha256.New()
	io.WriteString(h, apiURL)
	h.Write([]byte{0})
	h.Write(caPEM)
	return hex.EncodeToString(h.Sum(nil))[:16]
}

// DefaultCacheDir is os.UserCacheDir()/iotransit/bench, or "" when the
// system has no cache directory.
func DefaultCacheDir() string {
	d, err := os.UserCacheDir()
	if err != nil {
		return ""
	}
	return filepath.Join(d, "iotransit", "bench")
}

// ProvisionAPI makes sure every serial of cfg is a registered gateway of
// cfg.Tenant with a valid certificate whose key only this process (and
// its cache) holds: it creates the tenant when absent, reuses a cached
// certificate that the tenant's CA verifies and that stays valid for at
// least an hour, and otherwise registers the gateway (an existing one is
// fine), creates an enrollment token and enrolls a certificate request
// made here. The API's 429 answers are waited out (RetryTransport).
func ProvisionAPI(ctx context.Context, cfg ProvisionConfig) ([]Gateway, *ProvisionStats, error) {
	start := time.Now()
	if cfg.Parallel <= 0 {
		cfg.Parallel = 8
	}
	if cfg.Progress == nil {
		cfg.Progress = func(string, ...any) {}
	}
	serverPool := x509.NewCertPool()
	if !serverPool.AppendCertsFromPEM(cfg.CAPEM) {
		return nil, nil, errors.New("bench: no PEM certificate in the CA")
	}
	api, admin := cfg.API, cfg.API
	if cfg.Admin != nil {
		admin = cfg.Admin
	}
	if _, err := admin.CreateTenant(ctx, cfg.Tenant); err != nil && !isConflict(err) {
		return nil, nil, fmt.Errorf("bench: create tenant %s: %w", cfg.Tenant, err)
	}
	ten, err := admin.GetTenant(ctx, cfg.Tenant)
	if err != nil {
		return nil, nil, fmt.Errorf("bench: tenant %s: %w", cfg.Tenant, err)
	}
	tenantPool := x509.NewCertPool()
	if !tenantPool.AppendCertsFromPEM([]byte(ten.CACert)) {
		return nil, nil, fmt.Errorf("bench: tenant %s has no CA certificate", cfg.Tenant)
	}
	stats := &ProvisionStats{}
	dir := ""
	if cfg.CacheDir != "" {
		dir = filepath.Join(cfg.CacheDir, CacheKey(api.Server(), cfg.CAPEM), cfg.Tenant)
		if err := os.MkdirAll(dir, 0o700); err != nil {
			return nil, nil, fmt.Errorf("bench: certificate cache: %w", err)
		}
		stats.CacheDir = dir
	}

	gws := make([]Gateway, len(cfg.Serials))
	errs := make([]error, len(cfg.Serials))
	var done atomic.Int64
	sem := make(chan struct{}, cfg.Parallel)
	var wg sync.WaitGroup
	stop := make(chan struct{})
	go func() { // progress every 2 s
		t := time.NewTicker(2 * time.Second)
		defer t.Stop()
		for {
			select {
			case <-stop:
				return
			case <-t.C:
				cfg.Progress("provisioning: %d of %d gateways (%d reused from the cache, %d enrolled)",
					done.Load(), len(cfg.Serials), atomic.LoadInt64(&stats.Reused), atomic.LoadInt64(&stats.Enrolled))
			}
		}
	}()
	for i, serial := range cfg.Serials {
		wg.Go(func() {
			sem <- struct{}{}
			defer func() { <-sem; done.Add(1) }()
			cert, reused, err := gatewayCert(ctx, cfg, dir, tenantPool, serial)
			if err != nil {
				errs[i] = fmt.Errorf("bench: provision %s: %w", serial, err)
				return
			}
			if reused {
				atomic.AddInt64(&stats.Reused, 1)
			} else {
				atomic.AddInt64(&stats.Enrolled, 1)
			}
			gws[i] = Gateway{Serial: serial, TLS: &tls.Config{
				MinVersion: tls.VersionTLS12, Certificates: []tls.Certificate{*cert},
				RootCAs: serverPool, ServerName: cfg.ServerName,
			}}
		})
	}
	wg.Wait()
	close(stop)
	stats.Seconds = time.Since(start).Seconds()
	if err := errors.Join(errs...); err != nil {
		return nil, nil, err
	}
	return gws, stats, nil
}

// gatewayCert returns the gateway's certificate from the cache, or enrolls
// a new one and caches it.
func gatewayCert(ctx context.Context, cfg ProvisionConfig, dir string, tenantCA *x509.CertPool, serial string) (*tls.Certificate, bool, error) {
	certFile, keyFile := filepath.Join(dir, serial+".crt"), filepath.Join(dir, serial+".key")
	if dir != "" {
		if c := cachedCert(certFile, keyFile, tenantCA, serial); c != nil {
			return c, true, nil
		}
	}
	api := cfg.API
	if !cfg.Registered {
		if _, err := api.RegisterGateway(ctx, cfg.Tenant, client.RegisterGatewayRequest{Serial: serial}); err != nil && !isConflict(err) {
			return nil, false, fmt.Errorf("register: %w", err)
		}
	}
	tok, err := api.CreateEnrollmentToken(ctx, cfg.Tenant, client.CreateEnrollmentTokenRequest{Serial: serial, TTL: "10m0s"})
	if err != nil {
		return nil, false, fmt.Errorf("enrollment token: %w", err)
	}
	key, csr, err := pki.NewCSR(serial)
	if err != nil {
		return nil, false, err
	}
	enr, err := api.Enroll(ctx, tok.Token, csr)
	if err != nil {
		return nil, false, fmt.Errorf("enroll: %w", err)
	}
	keyPEM, err := pki.EncodeKeyPEM(key)
	if err != nil {
		return nil, false, err
	}
	cert, err := tls.X509KeyPair([]byte(enr.Certificate), keyPEM)
	if err != nil {
		return nil, false, fmt.Errorf("the enrolled certificate: %w", err)
	}
	if dir != "" {
		// The key first: a certificate without its key is never reused.
		if err := securefile.WriteAtomic(keyFile, keyPEM, 0o600); err != nil {
			return nil, false, err
		}
		if err := securefile.WriteAtomic(certFile, []byte(enr.Certificate), 0o644); err != nil {
			return nil, false, err
		}
	}
	return &cert, false, nil
}

// cachedCert returns the cached key pair of serial when the tenant's CA
// verifies it for client authentication and it stays valid for
// cacheMinValidity; nil otherwise.
func cachedCert(certFile, keyFile string, tenantCA *x509.CertPool, serial string) *tls.Certificate {
	certPEM, err1 := os.ReadFile(certFile)
	keyPEM, err2 := os.ReadFile(keyFile)
	if err1 != nil || err2 != nil {
		return nil
	}
	cert, err := tls.X509KeyPair(certPEM, keyPEM)
	if err != nil || cert.Leaf == nil || cert.Leaf.Subject.CommonName != serial {
		return nil
	}
	if time.Until(cert.Leaf.NotAfter) < cacheMinValidity {
		return nil
	}
	if _, err := cert.Leaf.Verify(x509.VerifyOptions{Roots: tenantCA, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}); err != nil {
		return nil
	}
	return &cert
}

// isConflict reports a 409 answer: the tenant or gateway exists already.
func isConflict(err error) bool {
	var p *client.Problem
	return errors.As(err, &p) && p.Status == http.StatusConflict
}

// RetryTransport is an http.RoundTripper that waits out the API's rate
// limits: a 429 answer is retried after its Retry-After (seconds or an
// HTTP date; 1 s when absent), up to MaxRetries times, within the
// request's context. Every request the client package makes can be sent
// again (its body is a byte slice).
type RetryTransport struct {
	Base       http.RoundTripper
	MaxRetries int
	// Waits counts the 429 answers waited out.
	Waits atomic.Int64
}

// RoundTrip sends req, again after each 429.
func (t *RetryTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	for attempt := 0; ; attempt++ {
		resp, err := t.Base.RoundTrip(req)
		if err != nil || resp.StatusCode != http.StatusTooManyRequests || attempt >= t.MaxRetries {
			return resp, err
		}
		if req.Body != nil && req.GetBody == nil {
			return resp, nil
		}
		wait := retryAfter(resp.Header.Get("Retry-After"), time.Now())
		_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 1<<16))
		resp.Body.Close()
		t.Waits.Add(1)
		timer := time.NewTimer(wait)
		select {
		case <-req.Context().Done():
			timer.Stop()
			return nil, req.Context().Err()
		case <-timer.C:
		}
		if req.GetBody != nil {
			body, err := req.GetBody()
			if err != nil {
				return nil, err
			}
			req = req.Clone(req.Context())
			req.Body = body
		}
	}
}

// retryAfter parses a Retry-After header: seconds or an HTTP date; 1 s
// when absent or unreadable, at most a minute.
func retryAfter(h string, now time.Time) time.Duration {
	d := time.Second
	if s, err := strconv.Atoi(h); err == nil && s >= 0 {
		d = time.Duration(s) * time.Second
	} else if t, err := http.ParseTime(h); err == nil {
		d = t.Sub(now)
	}
	return min(max(d, 100*time.Millisecond), time.Minute)
}

// NewAPIClient returns a client of the management API at server, verified
// by caPEM, that sends the credential and waits out 429 answers.
func NewAPIClient(server string, caPEM []byte, credential string) (*client.Client, *RetryTransport, error) {
	return NewAPIClientFrom(server, caPEM, credential, nil)
}

// NewAPIClientFrom is NewAPIClient whose connections leave from local (nil:
// the system's choice): the API limits requests per client address.
func NewAPIClientFrom(server string, caPEM []byte, credential string, local net.Addr) (*client.Client, *RetryTransport, error) {
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(caPEM) {
		return nil, nil, errors.New("bench: no PEM certificate in the CA")
	}
	rt := &RetryTransport{MaxRetries: 30, Base: &http.Transport{
		Proxy:               http.ProxyFromEnvironment,
		TLSClientConfig:     &tls.Config{MinVersion: tls.VersionTLS12, RootCAs: pool},
		DialContext:         (&net.Dialer{Timeout: 30 * time.Second, KeepAlive: 30 * time.Second, LocalAddr: local}).DialContext,
		TLSHandshakeTimeout: 10 * time.Second,
		ForceAttemptHTTP2:   true,
		MaxIdleConnsPerHost: 16,
	}}
	c, err := client.New(client.Config{Server: server, Credential: credential, Timeout: 2 * time.Minute,
		HTTPClient: &http.Client{Transport: rt}, UserAgent: "iotransit-bench"})
	if err != nil {
		return nil, nil, err
	}
	return c, rt, nil
}

package agent

import (
	"context"
	"crypto"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io/fs"
	"net/http"
	"os"
	"sync/atomic"
	"time"

	"github.com/iotransit/iotransit/client"
	"github.com/iotransit/iotransit/internal/pki"
	"github.com/iotransit/iotransit/internal/retry"
	"github.com/iotransit/iotransit/internal/securefile"
)

// identity is the gateway's certificate and the key store's key for it.
// The certificate swaps at a renewal; a connection made after it presents
// the new one.
type identity struct {
	cert atomic.Pointer[tls.Certificate]
}

func (id *identity) leaf() *x509.Certificate { return id.cert.Load().Leaf }

// tlsConfig is the client TLS of both MQTT and the API (Reenroll).
func (a *Agent) tlsConfig(serverName string) *tls.Config {
	return &tls.Config{
		MinVersion: tls.VersionTLS12,
		RootCAs:    a.pool,
		ServerName: serverName,
		GetClientCertificate: func(*tls.CertificateRequestInfo) (*tls.Certificate, error) {
			return a.id.cert.Load(), nil
		},
	}
}

// certificate pairs the PEM chain with key, checking that it is the
// gateway's certificate for that key.
func certificate(chainPEM []byte, key crypto.Signer, serial string) (*tls.Certificate, error) {
	certs, err := pki.ParseCertsPEM(chainPEM)
	if err != nil || len(certs) == 0 {
		return nil, fmt.Errorf("agent: the certificate chain does not parse: %v", err)
	}
	leaf := certs[0]
	if !samePublic(leaf.PublicKey, key.Public()) {
		return nil, errors.New("agent: the certificate is not for the gateway's key")
	}
	if leaf.Subject.CommonName != serial {
		return nil, fmt.Errorf("agent: the certificate is for %q, not %q", leaf.Subject.CommonName, serial)
	}
	c := &tls.Certificate{PrivateKey: key, Leaf: leaf}
	for _, x := range certs {
		c.Certificate = append(c.Certificate, x.Raw)
	}
	return c, nil
}

// samePublic reports whether two public keys are equal.
func samePublic(a, b crypto.PublicKey) bool {
	k, ok := a.(interface{ Equal(crypto.PublicKey) bool })
	return ok && k.Equal(b)
}

// loadIdentity returns the gateway's identity: the stored certificate, or
// a new one from /v1/enroll on the first start. It finishes a renewal a
// crash interrupted.
func loadIdentity(ctx context.Context, a *Agent) (*identity, error) {
	key, err := a.store.Identity()
	if err != nil {
		return nil, fmt.Errorf("agent: identity key: %w", err)
	}
	if err := a.finishRenewal(key); err != nil {
		return nil, err
	}
	if key, err = a.store.Identity(); err != nil {
		return nil, fmt.Errorf("agent: identity key: %w", err)
	}
	chain, err := os.ReadFile(a.path("cert.pem"))
	if errors.Is(err, fs.ErrNotExist) {
		if a.cfg.EnrollToken == "" {
			return nil, errors.New("agent: not enrolled yet: the first start needs an enrollment token")
		}
		if chain, err = a.enroll(ctx, key); err != nil {
			return nil, err
		}
	} else if err != nil {
		return nil, err
	}
	c, err := certificate(chain, key, a.cfg.Serial)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", a.path("cert.pem"), err)
	}
	id := &identity{}
	id.cert.Store(c)
	a.log.Info("gateway identity", "certificate", fmt.Sprintf("%x", c.Leaf.SerialNumber), "not_after", c.Leaf.NotAfter)
	return id, nil
}

// enroll spends the token on a CSR of key and stores the chain.
func (a *Agent) enroll(ctx context.Context, key crypto.Signer) ([]byte, error) {
	csr, err := pki.MakeCSR(key, a.cfg.Serial)
	if err != nil {
		return nil, err
	}
	api, err := client.New(client.Config{Server: a.cfg.Server, RootCAs: a.pool, UserAgent: "iotransit-agent/" + Version})
	if err != nil {
		return nil, err
	}
	defer api.Close()
	e, err := api.Enroll(ctx, a.cfg.EnrollToken, csr)
	if err != nil {
		return nil, fmt.Errorf("agent: enroll: %w", err)
	}
	chain := []byte(e.Certificate)
	if _, err := certificate(chain, key, a.cfg.Serial); err != nil {
		return nil, fmt.Errorf("agent: enroll: %w", err)
	}
	if err := securefile.WriteAtomic(a.path("cert.pem"), chain, 0o644); err != nil {
		return nil, err
	}
	a.log.Info("enrolled", "tenant", e.Tenant, "certificate", e.CertificateSerial, "not_after", e.NotAfter)
	return chain, nil
}

// finishRenewal completes or abandons a renewal that a stop interrupted:
// next-cert.pem for the next key is promoted; one for the identity key
// (promoted, not yet renamed) is renamed; anything else is removed.
func (a *Agent) finishRenewal(ident crypto.Signer) error {
	next, err := os.ReadFile(a.path("next-cert.pem"))
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	if _, err := certificate(next, ident, a.cfg.Serial); err == nil {
		return os.Rename(a.path("next-cert.pem"), a.path("cert.pem"))
	}
	if nk, err := a.store.Next(); err == nil {
		if _, err := certificate(next, nk, a.cfg.Serial); err == nil {
			if err := a.store.Promote(); err != nil {
				return fmt.Errorf("agent: finish renewal: %w", err)
			}
			return os.Rename(a.path("next-cert.pem"), a.path("cert.pem"))
		}
	}
	a.log.Warn("removing a renewal's certificate that matches no key")
	return os.Remove(a.path("next-cert.pem"))
}

// issuerBackdate is how far iotransit's CA backdates NotBefore (for
// clocks behind its own); the life of a certificate starts that much
// later.
const issuerBackdate = 5 * time.Minute

// renewAt is when the certificate c should be renewed: at two thirds of
// its life from its issue.
func renewAt(c *x509.Certificate) time.Time {
	start := c.NotBefore.Add(issuerBackdate)
	if !start.Before(c.NotAfter) {
		start = c.NotBefore
	}
	return start.Add(c.NotAfter.Sub(start) * 2 / 3)
}

// renewLoop renews the certificate at two thirds of its life, retrying
// with backoff; the old certificate stays in use until a new one is
// stored.
func (a *Agent) renewLoop(ctx context.Context) {
	for {
		if !retry.Sleep(ctx, time.Until(renewAt(a.id.leaf()))) {
			return
		}
		err := retry.Until(ctx, a.cfg.RenewBackoff, a.Renew, func(err error, wait time.Duration) {
			a.log.Error("certificate renewal failed; the current certificate stays in use", "err", err, "retry_in", wait, "not_after", a.id.leaf().NotAfter)
		})
		if err != nil {
			return
		}
	}
}

// Renew asks /v1/reenroll (mutual TLS with the current certificate) for a
// certificate of a next key, stores it and makes it the identity. On
// failure the current certificate stays, and the failure is in the status.
func (a *Agent) Renew(ctx context.Context) (err error) {
	a.renewMu.Lock()
	defer a.renewMu.Unlock()
	defer func() {
		a.mu.Lock()
		if err != nil {
			a.renewErr = err.Error()
		} else {
			a.renewErr = ""
		}
		a.mu.Unlock()
		a.markChanged()
	}()
	next, err := a.store.CreateNext()
	if err != nil {
		return fmt.Errorf("agent: next key: %w", err)
	}
	csr, err := pki.MakeCSR(next, a.cfg.Serial)
	if err != nil {
		return err
	}
	api, err := client.New(client.Config{Server: a.cfg.Server, RootCAs: a.pool, Certificate: a.id.cert.Load(), UserAgent: "iotransit-agent/" + Version, Timeout: 30 * time.Second})
	if err != nil {
		return err
	}
	defer api.Close()
	e, err := api.Reenroll(ctx, csr)
	if err != nil {
		return fmt.Errorf("agent: reenroll: %w", err)
	}
	chain := []byte(e.Certificate)
	c, err := certificate(chain, next, a.cfg.Serial)
	if err != nil {
		return fmt.Errorf("agent: reenroll: %w", err)
	}
	if err := securefile.WriteAtomic(a.path("next-cert.pem"), chain, 0o644); err != nil {
		return err
	}
	if err := a.store.Promote(); err != nil {
		return fmt.Errorf("agent: promote the next key: %w", err)
	}
	// The old key is gone (a token destroys it): the new certificate is
	// the one to present from now on, even if renaming it fails (the next
	// start finishes the renewal).
	a.id.cert.Store(c)
	if err := os.Rename(a.path("next-cert.pem"), a.path("cert.pem")); err != nil {
		return err
	}
	a.log.Info("certificate renewed", "certificate", e.CertificateSerial, "not_after", e.NotAfter)
	return nil
}

// APIClient returns a client of the API over mutual TLS with the gateway's
// certificate, the current one at each connection (renewals included):
// for the firmware updater's TUF fetches and reports.
func (a *Agent) APIClient() (*client.Client, error) {
	u, err := client.ParseServerURL(a.cfg.Server)
	if err != nil {
		return nil, err
	}
	tr := &http.Transport{TLSClientConfig: a.tlsConfig(u.Hostname()), ForceAttemptHTTP2: true}
	return client.New(client.Config{Server: a.cfg.Server, UserAgent: "iotransit-agent/" + Version,
		HTTPClient: &http.Client{Transport: tr, Timeout: time.Minute}})
}

package pki_test

import (
	"crypto"
	"crypto/tls"
	"errors"
	"sync/atomic"
	"testing"
	"time"

	"github.com/iotransit/iotransit/internal/pki"
	tu "github.com/iotransit/iotransit/internal/testutil"
)

// TestPKIKeyPairsLoadAsTLSPairs: the key pairs made through a CSR (client)
// and directly (server) carry their leaf, and their PEM form loads as a TLS
// key pair.
func TestPKIKeyPairsLoadAsTLSPairs(t *testing.T) {
	ca := liveCA(t)
	now := time.Now()
	client, err := ca.IssueClientKeyPair("TSGW06DEV00000001", time.Hour, now)
	if err != nil {
		t.Fatal(err)
	}
	if client.Leaf.Subject.CommonName != "TSGW06DEV00000001" || client.Leaf.NotAfter.After(now.Add(time.Hour)) || client.Leaf.NotAfter.Before(now) {
		t.Errorf("client leaf %v until %v", client.Leaf.Subject, client.Leaf.NotAfter)
	}
	server, err := ca.IssueServerKeyPair([]string{"127.0.0.1"}, time.Hour, now)
	if err != nil {
		t.Fatal(err)
	}
	if len(server.Leaf.IPAddresses) != 1 || server.Leaf.IPAddresses[0].String() != "127.0.0.1" {
		t.Errorf("server leaf for %v", server.Leaf.IPAddresses)
	}
	for _, kp := range []*tls.Certificate{client, server} {
		certPEM, keyPEM, err := pki.KeyPairPEM(kp)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := tls.X509KeyPair(certPEM, keyPEM); err != nil {
			t.Errorf("PEM of %s: %v", kp.Leaf.Subject.CommonName, err)
		}
	}
}

// TestPKINewKeyPairSignsTheRequestItMade: sign gets the key and its request,
// and a sign error comes back as is.
func TestPKINewKeyPairSignsTheRequestItMade(t *testing.T) {
	ca := liveCA(t)
	kp, err := pki.NewKeyPair("cn-1", func(key crypto.Signer, csrPEM []byte) ([]byte, error) {
		csr, err := pki.ParseCSR(csrPEM)
		if err != nil {
			return nil, err
		}
		if pub, ok := csr.PublicKey.(interface{ Equal(crypto.PublicKey) bool }); !ok || !pub.Equal(key.Public()) {
			return nil, errors.New("the request is not for the key")
		}
		_, certPEM, err := ca.SignClient(csr, "cn-1", time.Hour, time.Now())
		return certPEM, err
	})
	if err != nil || kp.Leaf.Subject.CommonName != "cn-1" {
		t.Fatalf("key pair %v, %v", kp, err)
	}
	boom := errors.New("refused")
	if _, err := pki.NewKeyPair("cn-2", func(crypto.Signer, []byte) ([]byte, error) { return nil, boom }); !errors.Is(err, boom) {
		t.Fatalf("sign error: %v", err)
	}
}

// TestPKIRenewingSourceReissuesUntilStopped: the source serves a new
// certificate at two thirds of the lifetime, keeps the current one when a
// renewal fails, and renews no more once stopped.
func TestPKIRenewingSourceReissuesUntilStopped(t *testing.T) {
	ca := liveCA(t)
	var issued, failures atomic.Int32
	fail := atomic.Bool{}
	issue := func() (*tls.Certificate, error) {
		if fail.Load() {
			return nil, errors.New("CA unavailable")
		}
		issued.Add(1)
		return ca.IssueServerKeyPair([]string{"localhost"}, time.Hour, time.Now())
	}
	const lifetime = 60 * time.Millisecond
	src, stop, err := pki.RenewingSource(lifetime, issue, func(error) { failures.Add(1) })
	if err != nil {
		t.Fatal(err)
	}
	first, _ := src.GetCertificate(nil)
	tu.Eventually(t, 5*time.Second, 5*time.Millisecond, func() error {
		if c, _ := src.GetCertificate(nil); c == first {
			return errors.New("not renewed")
		}
		return nil
	})
	fail.Store(true)
	failed := func(n int32) func() error {
		return func() error {
			if failures.Load() < n {
				return errors.New("no failed renewal reported")
			}
			return nil
		}
	}
	tu.Eventually(t, 5*time.Second, 5*time.Millisecond, failed(1))
	current, _ := src.GetCertificate(nil) // every renewal from now on fails
	tu.Eventually(t, 5*time.Second, 5*time.Millisecond, failed(2))
	if c, _ := src.GetCertificate(nil); c != current {
		t.Fatal("a failed renewal replaced the certificate")
	}
	fail.Store(false)
	stop()
	stop() // a second call is harmless
	n := issued.Load()
	time.Sleep(3 * lifetime)
	if issued.Load() != n {
		t.Fatalf("renewed after stop: %d, then %d", n, issued.Load())
	}
	if _, _, err := pki.RenewingSource(lifetime, func() (*tls.Certificate, error) { return nil, errors.New("no") }, nil); err == nil {
		t.Fatal("a first issue that fails gave a source")
	}
}

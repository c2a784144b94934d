package testutil

import (
	"crypto"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"math/big"
	"testing"
	"time"

	"github.com/iotransit/iotransit/internal/pki"
)

// KeyPair makes a key and a CSR for commonName, has sign turn the CSR into
// a certificate (PEM, leaf first) and returns the key pair: the one
// key→CSR→certificate path of the tests (pki.NewKeyPair).
func KeyPair(t testing.TB, commonName string, sign func(key crypto.Signer, csrPEM []byte) (certPEM []byte, err error)) *tls.Certificate {
	t.Helper()
	kp, err := pki.NewKeyPair(commonName, sign)
	if err != nil {
		t.Fatalf("key pair for %s: %v", commonName, err)
	}
	return kp
}

// CSR makes a key and a PEM certificate request for commonName, for tests
// that send the request themselves; the key pair holds only the key.
func CSR(t testing.TB, commonName string) ([]byte, *tls.Certificate) {
	t.Helper()
	key, csr, err := pki.NewCSR(commonName)
	if err != nil {
		t.Fatal(err)
	}
	return csr, &tls.Certificate{PrivateKey: key}
}

// SignWith signs a client certificate for commonName with ca, valid from
// notBefore for validity, without recording it anywhere: the way to mint
// expired, foreign or unregistered certificates.
func SignWith(t testing.TB, ca *pki.CA, commonName string, now time.Time, validity time.Duration) *tls.Certificate {
	t.Helper()
	kp, err := ca.IssueClientKeyPair(commonName, validity, now)
	if err != nil {
		t.Fatalf("sign %s: %v", commonName, err)
	}
	return kp
}

// ClientCertPEM issues a client certificate for commonName from ca, valid
// for an hour, as PEM.
func ClientCertPEM(t testing.TB, ca *pki.CA, commonName string) (certPEM, keyPEM string) {
	t.Helper()
	c, k, err := pki.KeyPairPEM(SignWith(t, ca, commonName, time.Now(), time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	return string(c), string(k)
}

// ServerCert issues a server certificate for hosts from ca, valid for an
// hour.
func ServerCert(t testing.TB, ca *pki.CA, hosts ...string) *tls.Certificate {
	t.Helper()
	kp, err := ca.IssueServerKeyPair(hosts, time.Hour, time.Now())
	if err != nil {
		t.Fatalf("server certificate for %v: %v", hosts, err)
	}
	return kp
}

// SelfSigned returns a self-signed client certificate for commonName.
func SelfSigned(t testing.TB, commonName string) *tls.Certificate {
	t.Helper()
	return KeyPair(t, commonName, func(key crypto.Signer, _ []byte) ([]byte, error) {
		tmpl := &x509.Certificate{
			SerialNumber: big.NewInt(time.Now().UnixNano()),
			Subject:      pkix.Name{CommonName: commonName},
			NotBefore:    time.Now().Add(-time.Hour),
			NotAfter:     time.Now().Add(time.Hour),
			KeyUsage:     x509.KeyUsageDigitalSignature,
			ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
		}
		der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
		return pki.EncodeCertPEM(der), err
	})
}

// Forged returns a client certificate for commonName that claims to come
// from ca (the issuer name and authority key id are ca's, both public) but
// is signed by a key of its own, valid from notBefore to notAfter: what an
// attacker who read a tenant's CA certificate can make.
func Forged(t testing.TB, ca *x509.Certificate, commonName string, notBefore, notAfter time.Time) *tls.Certificate {
	t.Helper()
	return KeyPair(t, commonName, func(key crypto.Signer, _ []byte) ([]byte, error) {
		issuer := &x509.Certificate{Subject: ca.Subject, SubjectKeyId: ca.SubjectKeyId}
		tmpl := &x509.Certificate{
			SerialNumber: big.NewInt(time.Now().UnixNano()),
			Subject:      pkix.Name{CommonName: commonName},
			NotBefore:    notBefore,
			NotAfter:     notAfter,
			KeyUsage:     x509.KeyUsageDigitalSignature,
			ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
		}
		der, err := x509.CreateCertificate(rand.Reader, tmpl, issuer, key.Public(), key)
		return pki.EncodeCertPEM(der), err
	})
}

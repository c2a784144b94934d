package pki_test

import (
	"bytes"
	"crypto"
	"crypto/ecdh"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
	"encoding/pem"
	"errors"
	"math/big"
	"net"
	"net/url"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/iotransit/iotransit/internal/pki"
	tu "github.com/iotransit/iotransit/internal/testutil"
)

const serial = "TSGW06DEV00000001"

var now = time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)

func newCA(t testing.TB, validity time.Duration) *pki.CA {
	t.Helper()
	return newCAAt(t, validity, now)
}

func newCAAt(t testing.TB, validity time.Duration, at time.Time) *pki.CA {
	t.Helper()
	ca, err := pki.NewCA("test tenant CA", validity, at)
	if err != nil {
		t.Fatalf("new CA: %v", err)
	}
	return ca
}

func newKey(t testing.TB) *ecdsa.PrivateKey {
	t.Helper()
	k, err := pki.NewKey()
	if err != nil {
		t.Fatal(err)
	}
	return k
}

// csrPEM makes a PEM CSR from tmpl signed by key.
func csrPEM(t testing.TB, key crypto.Signer, tmpl *x509.CertificateRequest) []byte {
	t.Helper()
	der, err := x509.CreateCertificateRequest(rand.Reader, tmpl, key)
	if err != nil {
		t.Fatalf("create CSR: %v", err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: der})
}

func parseCSR(t testing.TB, b []byte) *x509.CertificateRequest {
	t.Helper()
	csr, err := pki.ParseCSR(b)
	if err != nil {
		t.Fatalf("parse CSR: %v", err)
	}
	return csr
}

// signClient issues a gateway certificate for serial at when.
func signClient(t testing.TB, ca *pki.CA, when time.Time, validity time.Duration) (*x509.Certificate, *ecdsa.PrivateKey) {
	t.Helper()
	key := newKey(t)
	b, err := pki.MakeCSR(key, serial)
	if err != nil {
		t.Fatal(err)
	}
	cert, _, err := ca.SignClient(parseCSR(t, b), serial, validity, when)
	if err != nil {
		t.Fatalf("sign client: %v", err)
	}
	return cert, key
}

func TestPKINewCA(t *testing.T) {
	ca := newCA(t, 10*365*24*time.Hour)
	c := ca.Cert
	if !c.IsCA || !c.BasicConstraintsValid || c.MaxPathLen != 0 || !c.MaxPathLenZero {
		t.Errorf("CA constraints: IsCA %v valid %v maxPathLen %d zero %v", c.IsCA, c.BasicConstraintsValid, c.MaxPathLen, c.MaxPathLenZero)
	}
	if c.KeyUsage != x509.KeyUsageCertSign|x509.KeyUsageCRLSign {
		t.Errorf("CA key usage %v", c.KeyUsage)
	}
	pub, ok := c.PublicKey.(*ecdsa.PublicKey)
	if !ok || pub.Curve != elliptic.P256() {
		t.Errorf("CA key is %T, want ECDSA P-256", c.PublicKey)
	}
	if len(c.SubjectKeyId) == 0 {
		t.Error("CA has no subject key id")
	}
	if c.Subject.CommonName != "test tenant CA" {
		t.Errorf("CN %q", c.Subject.CommonName)
	}
	if !c.NotBefore.Before(now) || !c.NotAfter.Equal(now.Add(10*365*24*time.Hour)) {
		t.Errorf("validity %v..%v", c.NotBefore, c.NotAfter)
	}
	if err := c.CheckSignatureFrom(c); err != nil {
		t.Errorf("not self-signed: %v", err)
	}
	if got, err := pki.ParseCertPEM(ca.CertPEM); err != nil || !got.Equal(c) {
		t.Errorf("CertPEM does not hold the certificate: %v", err)
	}
	if other := newCA(t, time.Hour); other.Cert.SerialNumber.Cmp(c.SerialNumber) == 0 || c.SerialNumber.Sign() <= 0 {
		t.Error("CA serial numbers are not random and positive")
	}
}

// p224CSR builds a CSR for a P-224 key by hand: the stdlib refuses to make one.
func p224CSR(t testing.TB) []byte {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P224(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	spki, err := x509.MarshalPKIXPublicKey(&key.PublicKey)
	if err != nil {
		t.Fatal(err)
	}
	subject, err := asn1.Marshal(pkix.Name{CommonName: serial}.ToRDNSequence())
	if err != nil {
		t.Fatal(err)
	}
	info := struct {
		Version    int
		Subject    asn1.RawValue
		PublicKey  asn1.RawValue
		Attributes []asn1.RawValue `asn1:"tag:0"`
	}{Subject: asn1.RawValue{FullBytes: subject}, PublicKey: asn1.RawValue{FullBytes: spki}, Attributes: []asn1.RawValue{}}
	tbs, err := asn1.Marshal(info)
	if err != nil {
		t.Fatal(err)
	}
	digest := sha256.Sum256(tbs)
	sig, err := ecdsa.SignASN1(rand.Reader, key, digest[:])
	if err != nil {
		t.Fatal(err)
	}
	der, err := asn1.Marshal(struct {
		TBS       asn1.RawValue
		Algorithm pkix.AlgorithmIdentifier
		Signature asn1.BitString
	}{
		TBS:       asn1.RawValue{FullBytes: tbs},
		Algorithm: pkix.AlgorithmIdentifier{Algorithm: asn1.ObjectIdentifier{1, 2, 840, 10045, 4, 3, 2}}, // ecdsa-with-SHA256
		Signature: asn1.BitString{Bytes: sig, BitLength: 8 * len(sig)},
	})
	if err != nil {
		t.Fatal(err)
	}
	// The fixture itself must be a well-formed, correctly signed CSR, so that
	// only the key strength can refuse it.
	csr, err := x509.ParseCertificateRequest(der)
	if err != nil {
		t.Fatalf("P-224 fixture does not parse: %v", err)
	}
	if err := csr.CheckSignature(); err != nil {
		t.Fatalf("P-224 fixture signature: %v", err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: der})
}

func TestPKIParseCSR(t *testing.T) {
	good := csrPEM(t, newKey(t), &x509.CertificateRequest{Subject: pkix.Name{CommonName: serial}})
	rsa1024, err := rsa.GenerateKey(rand.Reader, 1024)
	if err != nil {
		t.Fatal(err)
	}
	rsa2048, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	p384, err := ecdsa.GenerateKey(elliptic.P384(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	p521, err := ecdsa.GenerateKey(elliptic.P521(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	_, ed, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	block, _ := pem.Decode(good)
	badSig := bytes.Clone(block.Bytes)
	badSig[len(badSig)-1] ^= 0x01 // last byte of the signature
	big := csrPEM(t, newKey(t), &x509.CertificateRequest{
		Subject:         pkix.Name{CommonName: serial},
		ExtraExtensions: []pkix.Extension{{Id: asn1.ObjectIdentifier{1, 3, 6, 1, 4, 1, 99999, 1}, Value: bytes.Repeat([]byte{4}, 20<<10)}},
	})
	cn := &x509.CertificateRequest{Subject: pkix.Name{CommonName: serial}}
	tests := []struct {
		name    string
		in      []byte
		wantErr interface{ Is(error) bool } // nil: accepted
	}{
		{name: "P-256", in: good},
		{name: "P-256 with trailing newlines", in: append(bytes.Clone(good), "\n\n"...)},
		{name: "P-384", in: csrPEM(t, p384, cn)},
		{name: "Ed25519", in: csrPEM(t, ed, cn)},
		{name: "RSA 2048", in: csrPEM(t, rsa2048, cn)},
		{name: "RSA 1024", in: csrPEM(t, rsa1024, cn), wantErr: pki.ErrCSRWeakKey},
		{name: "P-224", in: p224CSR(t), wantErr: pki.ErrCSRWeakKey},
		// P-521 is not weak, but it is outside the accepted list.
		{name: "P-521", in: csrPEM(t, p521, cn), wantErr: pki.ErrCSRWeakKey},
		{name: "empty", in: nil, wantErr: pki.ErrCSRInvalid},
		{name: "not PEM", in: []byte("hello"), wantErr: pki.ErrCSRInvalid},
		{name: "DER instead of PEM", in: block.Bytes, wantErr: pki.ErrCSRInvalid},
		{name: "truncated PEM", in: good[:len(good)/2], wantErr: pki.ErrCSRInvalid},
		{name: "wrong block type", in: pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: block.Bytes}), wantErr: pki.ErrCSRInvalid},
		{name: "garbage in block", in: pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: []byte("not asn.1")}), wantErr: pki.ErrCSRInvalid},
		{name: "trailing data", in: append(bytes.Clone(good), "extra"...), wantErr: pki.ErrCSRInvalid},
		{name: "two CSRs", in: append(bytes.Clone(good), good...), wantErr: pki.ErrCSRInvalid},
		{name: "bad signature", in: pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: badSig}), wantErr: pki.ErrCSRInvalid},
		{name: "oversize CSR", in: big, wantErr: pki.ErrCSRInvalid},
		{name: "oversize padding", in: append(bytes.Clone(good), bytes.Repeat([]byte("\n"), 16<<10)...), wantErr: pki.ErrCSRInvalid},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			csr, err := pki.ParseCSR(tc.in)
			if tc.wantErr == nil {
				if err != nil {
					t.Fatalf("refused: %v", err)
				}
				if csr.Subject.CommonName != serial {
					t.Fatalf("CN %q", csr.Subject.CommonName)
				}
				return
			}
			if !tc.wantErr.Is(err) {
				t.Fatalf("error %v, want %v", err, tc.wantErr)
			}
			if csr != nil {
				t.Fatal("a refused CSR was returned")
			}
		})
	}
}

func TestPKISignClientUsesOnlyCSRKey(t *testing.T) {
	ca := newCA(t, 365*24*time.Hour)
	key := newKey(t)
	// A CSR that asks for everything a gateway must not get.
	bc, err := asn1.Marshal(struct {
		IsCA       bool `asn1:"optional"`
		MaxPathLen int  `asn1:"optional,default:-1"`
	}{IsCA: true, MaxPathLen: 5})
	if err != nil {
		t.Fatal(err)
	}
	eku, err := asn1.Marshal([]asn1.ObjectIdentifier{{1, 3, 6, 1, 5, 5, 7, 3, 1}, {1, 3, 6, 1, 5, 5, 7, 3, 3}}) // serverAuth, codeSigning
	if err != nil {
		t.Fatal(err)
	}
	u, _ := url.Parse("spiffe://evil/admin")
	b := csrPEM(t, key, &x509.CertificateRequest{
		Subject:        pkix.Name{CommonName: serial, Organization: []string{"Evil Corp"}, OrganizationalUnit: []string{"admins"}},
		DNSNames:       []string{"api.iotransit.dev", "*.iotransit.dev"},
		IPAddresses:    []net.IP{net.ParseIP("10.0.0.1")},
		EmailAddresses: []string{"root@example.com"},
		URIs:           []*url.URL{u},
		ExtraExtensions: []pkix.Extension{
			{Id: asn1.ObjectIdentifier{2, 5, 29, 19}, Critical: true, Value: bc},
			{Id: asn1.ObjectIdentifier{2, 5, 29, 37}, Value: eku},
		},
	})
	cert, certPEM, err := ca.SignClient(parseCSR(t, b), serial, 24*time.Hour, now)
	if err != nil {
		t.Fatalf("sign: %v", err)
	}
	if parsed, err := pki.ParseCertPEM(certPEM); err != nil || !parsed.Equal(cert) {
		t.Fatalf("PEM does not hold the certificate: %v", err)
	}
	if cert.IsCA || !cert.BasicConstraintsValid {
		t.Errorf("IsCA %v, basic constraints valid %v", cert.IsCA, cert.BasicConstraintsValid)
	}
	if len(cert.DNSNames)+len(cert.IPAddresses)+len(cert.EmailAddresses)+len(cert.URIs) != 0 {
		t.Errorf("SANs copied from the CSR: %v %v %v %v", cert.DNSNames, cert.IPAddresses, cert.EmailAddresses, cert.URIs)
	}
	if !slices.Equal(cert.ExtKeyUsage, []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}) || len(cert.UnknownExtKeyUsage) != 0 {
		t.Errorf("EKU %v %v, want client auth only", cert.ExtKeyUsage, cert.UnknownExtKeyUsage)
	}
	if cert.KeyUsage != x509.KeyUsageDigitalSignature {
		t.Errorf("key usage %v", cert.KeyUsage)
	}
	if cert.Subject.String() != "CN="+serial {
		t.Errorf("subject %q, want only the CN", cert.Subject.String())
	}
	for _, ext := range cert.Extensions {
		if ext.Id.Equal(asn1.ObjectIdentifier{1, 3, 6, 1, 4, 1, 99999, 1}) {
			t.Error("a CSR extension was copied")
		}
	}
	if !key.PublicKey.Equal(cert.PublicKey) {
		t.Error("certificate key is not the CSR key")
	}
	if !bytes.Equal(cert.AuthorityKeyId, ca.Cert.SubjectKeyId) {
		t.Error("authority key id is not the CA's subject key id (the registry finds the tenant by it)")
	}
	if err := cert.CheckSignatureFrom(ca.Cert); err != nil {
		t.Errorf("not signed by the CA: %v", err)
	}
	if !cert.NotBefore.Before(now) || !cert.NotAfter.Equal(now.Add(24*time.Hour)) {
		t.Errorf("validity %v..%v", cert.NotBefore, cert.NotAfter)
	}
	got := pki.SerialHex(cert)
	back, ok := new(big.Int).SetString(got, 16)
	if !ok || back.Cmp(cert.SerialNumber) != 0 || strings.ToLower(got) != got {
		t.Errorf("SerialHex = %q for serial %s", got, cert.SerialNumber.Text(16))
	}
	if len(pki.Fingerprint(cert)) != 64 {
		t.Errorf("fingerprint %q", pki.Fingerprint(cert))
	}
	if err := pki.VerifyClient(cert, nil, ca.Cert, now); err != nil {
		t.Errorf("issued certificate does not verify: %v", err)
	}
}

func TestPKISignClientRefusesCNMismatch(t *testing.T) {
	ca := newCA(t, time.Hour)
	tests := []struct {
		name string
		cn   string
	}{
		{name: "other serial", cn: "TSGW06DEV00000002"},
		{name: "case differs", cn: strings.ToLower(serial)},
		{name: "prefix", cn: serial[:16]},
		{name: "suffix", cn: serial + "X"},
		{name: "empty", cn: ""},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			b := csrPEM(t, newKey(t), &x509.CertificateRequest{Subject: pkix.Name{CommonName: tc.cn}})
			cert, certPEM, err := ca.SignClient(parseCSR(t, b), serial, time.Hour, now)
			if !pki.ErrCSRCNMismatch.Is(err) {
				t.Fatalf("error %v, want ErrCSRCNMismatch", err)
			}
			if cert != nil || certPEM != nil {
				t.Fatal("a certificate was returned with the error")
			}
		})
	}
}

func TestPKISignClientRefusesWeakKeyOfUncheckedCSR(t *testing.T) {
	// SignClient does not trust that ParseCSR ran.
	ca := newCA(t, time.Hour)
	weak, err := rsa.GenerateKey(rand.Reader, 1024)
	if err != nil {
		t.Fatal(err)
	}
	csr := &x509.CertificateRequest{Subject: pkix.Name{CommonName: serial}, PublicKey: &weak.PublicKey}
	if _, _, err := ca.SignClient(csr, serial, time.Hour, now); !pki.ErrCSRWeakKey.Is(err) {
		t.Fatalf("error %v, want ErrCSRWeakKey", err)
	}
}

func TestPKIValidityClippedToCA(t *testing.T) {
	ca := newCA(t, 48*time.Hour)
	cert, _ := signClient(t, ca, now, 365*24*time.Hour)
	if !cert.NotAfter.Equal(ca.Cert.NotAfter) {
		t.Fatalf("client NotAfter %v outlives the CA's %v", cert.NotAfter, ca.Cert.NotAfter)
	}
	srv, _, err := ca.IssueServer(newKey(t).Public(), []string{"localhost"}, 365*24*time.Hour, now)
	if err != nil {
		t.Fatal(err)
	}
	if !srv.NotAfter.Equal(ca.Cert.NotAfter) {
		t.Fatalf("server NotAfter %v outlives the CA's %v", srv.NotAfter, ca.Cert.NotAfter)
	}
}

func TestPKIIssueServer(t *testing.T) {
	ca := newCA(t, 365*24*time.Hour)
	tests := []struct {
		name    string
		hosts   []string
		wantDNS []string
		wantIP  []string
	}{
		{name: "dns", hosts: []string{"mqtt.example.com"}, wantDNS: []string{"mqtt.example.com"}},
		{name: "ipv4", hosts: []string{"127.0.0.1"}, wantIP: []string{"127.0.0.1"}},
		{name: "ipv6", hosts: []string{"::1"}, wantIP: []string{"::1"}},
		{name: "mixed", hosts: []string{"localhost", "127.0.0.1", "::1", "api.example.com"},
			wantDNS: []string{"localhost", "api.example.com"}, wantIP: []string{"127.0.0.1", "::1"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			cert, certPEM, err := ca.IssueServer(newKey(t).Public(), tc.hosts, 24*time.Hour, now)
			if err != nil {
				t.Fatalf("issue: %v", err)
			}
			if len(certPEM) == 0 || cert.Subject.CommonName != tc.hosts[0] {
				t.Errorf("CN %q", cert.Subject.CommonName)
			}
			if !slices.Equal(cert.DNSNames, tc.wantDNS) {
				t.Errorf("DNS names %v, want %v", cert.DNSNames, tc.wantDNS)
			}
			var ips []string
			for _, ip := range cert.IPAddresses {
				ips = append(ips, ip.String())
			}
			if !slices.Equal(ips, tc.wantIP) {
				t.Errorf("IPs %v, want %v", ips, tc.wantIP)
			}
			if !slices.Equal(cert.ExtKeyUsage, []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}) || cert.IsCA {
				t.Errorf("EKU %v IsCA %v", cert.ExtKeyUsage, cert.IsCA)
			}
			roots := x509.NewCertPool()
			roots.AddCert(ca.Cert)
			for _, h := range tc.hosts {
				if _, err := cert.Verify(x509.VerifyOptions{DNSName: h, Roots: roots, CurrentTime: now}); err != nil {
					t.Errorf("does not verify for %s: %v", h, err)
				}
			}
		})
	}
	if _, _, err := ca.IssueServer(newKey(t).Public(), nil, time.Hour, now); err == nil {
		t.Fatal("a server certificate without hosts was issued")
	}
	if _, _, err := ca.IssueServer(newKey(t).Public(), []string{"localhost"}, 0, now); err == nil {
		t.Fatal("a certificate with zero validity was issued")
	}
	if _, _, err := ca.IssueServer(newKey(t).Public(), []string{"localhost"}, time.Hour, ca.Cert.NotAfter.Add(time.Second)); err == nil {
		t.Fatal("an expired CA issued a certificate")
	}
}

func TestPKIVerifyClient(t *testing.T) {
	// Made a week before now, so that a certificate backdated two days is
	// issued while the CA was valid.
	ca := newCAAt(t, 10*365*24*time.Hour, now.Add(-7*24*time.Hour))
	foreign := newCA(t, 10*365*24*time.Hour)
	ok, _ := signClient(t, ca, now, 24*time.Hour)
	expired, _ := signClient(t, ca, now.Add(-48*time.Hour), 24*time.Hour)
	future, _ := signClient(t, ca, now.Add(time.Hour), 24*time.Hour)
	fromForeign, _ := signClient(t, foreign, now, 24*time.Hour)
	server, _, err := ca.IssueServer(newKey(t).Public(), []string{"localhost"}, 24*time.Hour, now)
	if err != nil {
		t.Fatal(err)
	}
	// A foreign CA with the same name as ours: trust is by key, not by name.
	sameName, err := pki.NewCA(ca.Cert.Subject.CommonName, time.Hour, now)
	if err != nil {
		t.Fatal(err)
	}
	fromSameName, _ := signClient(t, sameName, now, time.Hour)
	// Forgeries that copy our issuer name and key id (both public) but are
	// signed by another key: whatever their validity period, they are not
	// ours, and must never be reported as our expired certificates.
	forge := func(notBefore, notAfter time.Time) *x509.Certificate {
		return tu.Forged(t, ca.Cert, serial, notBefore, notAfter).Leaf
	}
	forgedExpired := forge(now.Add(-48*time.Hour), now.Add(-24*time.Hour))
	forgedFuture := forge(now.Add(time.Hour), now.Add(48*time.Hour))
	forgedCurrent := forge(now.Add(-time.Hour), now.Add(time.Hour))
	tests := []struct {
		name    string
		leaf    *x509.Certificate
		at      time.Time
		wantErr error
	}{
		{name: "valid", leaf: ok, at: now},
		{name: "valid at last second", leaf: ok, at: ok.NotAfter},
		{name: "expired", leaf: expired, at: now, wantErr: pki.ErrChainExpired},
		{name: "expired a second ago", leaf: ok, at: ok.NotAfter.Add(time.Second), wantErr: pki.ErrChainExpired},
		{name: "not yet valid", leaf: future, at: now, wantErr: pki.ErrChainNotYetValid},
		{name: "foreign CA", leaf: fromForeign, at: now, wantErr: pki.ErrChainUnknownCA},
		{name: "foreign CA with our name", leaf: fromSameName, at: now, wantErr: pki.ErrChainUnknownCA},
		{name: "server certificate as client", leaf: server, at: now, wantErr: pki.ErrChainUsage},
		{name: "forged with our key id, expired", leaf: forgedExpired, at: now, wantErr: pki.ErrChainUnknownCA},
		{name: "forged with our key id, not yet valid", leaf: forgedFuture, at: now, wantErr: pki.ErrChainUnknownCA},
		{name: "forged with our key id, current", leaf: forgedCurrent, at: now, wantErr: pki.ErrChainUnknownCA},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			err := pki.VerifyClient(tc.leaf, nil, ca.Cert, tc.at)
			if tc.wantErr == nil {
				if err != nil {
					t.Fatalf("refused: %v", err)
				}
				return
			}
			if !errors.Is(err, tc.wantErr) {
				t.Fatalf("error %v, want %v", err, tc.wantErr)
			}
		})
	}
}

func TestPKILoadCA(t *testing.T) {
	ca := newCA(t, time.Hour)
	other := newCA(t, time.Hour)
	der, err := ca.KeyDER()
	if err != nil {
		t.Fatal(err)
	}
	otherDER, err := other.KeyDER()
	if err != nil {
		t.Fatal(err)
	}
	x, err := ecdh.X25519().GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	notSigner, err := x509.MarshalPKCS8PrivateKey(x)
	if err != nil {
		t.Fatal(err)
	}
	loaded, err := pki.LoadCA(ca.CertPEM, der)
	if err != nil {
		t.Fatalf("load: %v", err)
	}
	if !loaded.Cert.Equal(ca.Cert) || !loaded.Key.Public().(*ecdsa.PublicKey).Equal(ca.Key.Public()) {
		t.Fatal("loaded CA differs")
	}
	// The loaded CA signs certificates that verify against the original.
	cert, _ := signClient(t, loaded, now, time.Minute)
	if err := pki.VerifyClient(cert, nil, ca.Cert, now); err != nil {
		t.Fatalf("certificate of the loaded CA: %v", err)
	}
	tests := []struct {
		name     string
		certPEM  []byte
		keyDER   []byte
		wantText string
	}{
		{name: "key of another CA", certPEM: ca.CertPEM, keyDER: otherDER, wantText: "does not match"},
		{name: "key not a signer", certPEM: ca.CertPEM, keyDER: notSigner, wantText: "not a signer"},
		{name: "garbage key", certPEM: ca.CertPEM, keyDER: []byte("garbage"), wantText: "parse CA key"},
		{name: "no certificate", certPEM: []byte("garbage"), keyDER: der, wantText: "pki.cert_invalid"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := pki.LoadCA(tc.certPEM, tc.keyDER)
			if err == nil || got != nil {
				t.Fatal("LoadCA accepted it")
			}
			if !strings.Contains(err.Error(), tc.wantText) {
				t.Fatalf("error %q, want it to mention %q", err, tc.wantText)
			}
		})
	}
}

func TestPKIParseKeyPEM(t *testing.T) {
	ec := newKey(t)
	rk, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	_, ed, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	pkcs8 := func(k crypto.Signer) []byte {
		b, err := pki.EncodeKeyPEM(k)
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	sec1, err := x509.MarshalECPrivateKey(ec)
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name    string
		in      []byte
		want    crypto.PublicKey // nil: refused
		wantErr string
	}{
		{name: "PKCS8 ECDSA", in: pkcs8(ec), want: ec.Public()},
		{name: "PKCS8 RSA", in: pkcs8(rk), want: rk.Public()},
		{name: "PKCS8 Ed25519", in: pkcs8(ed), want: ed.Public()},
		{name: "SEC1", in: pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: sec1}), want: ec.Public()},
		{name: "PKCS1", in: pem.EncodeToMemory(&pem.Block{Type: "RSA PRIVATE KEY", Bytes: x509.MarshalPKCS1PrivateKey(rk)}), want: rk.Public()},
		{name: "no PEM", in: []byte("nope"), wantErr: "no PEM block"},
		{name: "SEC1 bytes labelled PKCS1", in: pem.EncodeToMemory(&pem.Block{Type: "RSA PRIVATE KEY", Bytes: sec1}), wantErr: "parse key"},
		{name: "garbage", in: pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: []byte("x")}), wantErr: "parse key"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			k, err := pki.ParseKeyPEM(tc.in)
			if tc.want == nil {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("error %v, want it to mention %q", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatalf("parse: %v", err)
			}
			if !k.Public().(interface{ Equal(crypto.PublicKey) bool }).Equal(tc.want) {
				t.Fatal("parsed key differs")
			}
		})
	}
}

func TestPKIParseCertsPEM(t *testing.T) {
	a, b := newCA(t, time.Hour), newCA(t, time.Hour)
	keyPEM, err := pki.EncodeKeyPEM(newKey(t))
	if err != nil {
		t.Fatal(err)
	}
	bundle := slices.Concat(a.CertPEM, keyPEM, b.CertPEM)
	certs, err := pki.ParseCertsPEM(bundle)
	if err != nil || len(certs) != 2 || !certs[0].Equal(a.Cert) || !certs[1].Equal(b.Cert) {
		t.Fatalf("bundle: %d certificates, %v", len(certs), err)
	}
	tests := []struct {
		name string
		in   []byte
	}{
		{name: "empty", in: nil},
		{name: "only a key", in: keyPEM},
		{name: "garbage certificate", in: pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: []byte("x")})},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if _, err := pki.ParseCertsPEM(tc.in); !pki.ErrCertInvalid.Is(err) {
				t.Fatalf("error %v, want ErrCertInvalid", err)
			}
		})
	}
}

// Package pki holds iotransit's certificate operations: tenant certificate
// authorities (ECDSA P-256), signing gateway certificates only from a CSR
// (the private key never leaves the gateway), server certificates, client
// chain verification, and the TLS configurations of every listener.
//
// It is stateless: where CA keys are kept (encrypted, through kms) and which
// certificates are revoked is the registry's business.
package pki

import (
	"bytes"
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/iotransit/iotransit/internal/fault"
)

// Faults a client can see.
var (
	ErrCSRInvalid    = fault.Define("pki.csr_invalid", fault.InvalidArgument, "the CSR is not a valid PEM certificate request with a good signature")
	ErrCSRWeakKey    = fault.Define("pki.csr_weak_key", fault.InvalidArgument, "the CSR key is too weak: use ECDSA P-256/P-384, Ed25519 or RSA of at least 2048 bits")
	ErrCSRCNMismatch = fault.Define("pki.csr_cn_mismatch", fault.InvalidArgument, "the CSR subject common name must be the gateway serial")
	ErrCertInvalid   = fault.Define("pki.cert_invalid", fault.InvalidArgument, "the certificate is not valid PEM")
	errRandomFailed  = errors.New("pki: crypto/rand failed")
	backdate         = 5 * time.Minute
)

// NewKey makes an ECDSA P-256 private key.
func NewKey() (*ecdsa.PrivateKey, error) {
	return ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
}

// CA is a certificate authority: its certificate and private key.
type CA struct {
	Cert    *x509.Certificate
	CertPEM []byte
	Key     crypto.Signer
}

func serialNumber() (*big.Int, error) {
	// 128 random bits, positive (RFC 5280 §4.1.2.2 allows up to 20 octets).
	b := make([]byte, 16)
	if _, err := rand.Read(b); err != nil {
		return nil, errRandomFailed
	}
	b[0] &= 0x7f
	return new(big.Int).SetBytes(b), nil
}

func keyID(pub crypto.PublicKey) ([]byte, error) {
	der, err := x509.MarshalPKIXPublicKey(pub)
	if err != nil {
		return nil, fmt.Errorf("pki: marshal public key: %w", err)
	}
	sum := sha256.Sum256(der)
	return sum[:20], nil
}

// NewCA makes a self-signed CA with a fresh P-256 key. The CA may sign only
// end-entity certificates (path length 0).
func NewCA(commonName string, validity time.Duration, now time.Time) (*CA, error) {
	key, err := NewKey()
	if err != nil {
		return nil, fmt.Errorf("pki: CA key: %w", err)
	}
	sn, err := serialNumber()
	if err != nil {
		return nil, err
	}
	skid, err := keyID(key.Public())
	if err != nil {
		return nil, err
	}
	tmpl := &x509.Certificate{
		SerialNumber:          sn,
		Subject:               pkix.Name{CommonName: commonName, Organization: []string{"iotransit"}},
		NotBefore:             now.Add(-backdate),
		NotAfter:              now.Add(validity),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
		BasicConstraintsValid: true,
		IsCA:                  true,
		MaxPathLen:            0,
		MaxPathLenZero:        true,
		SubjectKeyId:          skid,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		return nil, fmt.Errorf("pki: create CA certificate: %w", err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, fmt.Errorf("pki: parse CA certificate: %w", err)
	}
	return &CA{Cert: cert, CertPEM: EncodeCertPEM(der), Key: key}, nil
}

// KeyDER returns the CA private key as PKCS#8 DER, for sealing by kms.
func (ca *CA) KeyDER() ([]byte, error) {
	return x509.MarshalPKCS8PrivateKey(ca.Key)
}

// LoadCA rebuilds a CA from its certificate PEM and PKCS#8 key DER, checking
// that they belong together.
func LoadCA(certPEM, keyDER []byte) (*CA, error) {
	cert, err := ParseCertPEM(certPEM)
	if err != nil {
		return nil, err
	}
	k, err := x509.ParsePKCS8PrivateKey(keyDER)
	if err != nil {
		return nil, fmt.Errorf("pki: parse CA key: %w", err)
	}
	signer, ok := k.(crypto.Signer)
	if !ok {
		return nil, errors.New("pki: CA key is not a signer")
	}
	if !publicKeysEqual(signer.Public(), cert.PublicKey) {
		return nil, errors.New("pki: CA key does not match CA certificate")
	}
	return &CA{Cert: cert, CertPEM: certPEM, Key: signer}, nil
}

func publicKeysEqual(a, b crypto.PublicKey) bool {
	type equaler interface{ Equal(crypto.PublicKey) bool }
	e, ok := a.(equaler)
	return ok && e.Equal(b)
}

// EncodeCertPEM encodes a DER certificate as PEM.
func EncodeCertPEM(der []byte) []byte {
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
}

// EncodeKeyPEM encodes a private key as a PKCS#8 PEM block.
func EncodeKeyPEM(key crypto.Signer) ([]byte, error) {
	der, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return nil, fmt.Errorf("pki: marshal key: %w", err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}), nil
}

// ParseKeyPEM parses a PKCS#8, SEC1 (EC) or PKCS#1 (RSA) private key PEM.
func ParseKeyPEM(b []byte) (crypto.Signer, error) {
	block, _ := pem.Decode(b)
	if block == nil {
		return nil, errors.New("pki: no PEM block in key")
	}
	var k any
	var err error
	switch block.Type {
	case "EC PRIVATE KEY":
		k, err = x509.ParseECPrivateKey(block.Bytes)
	case "RSA PRIVATE KEY":
		k, err = x509.ParsePKCS1PrivateKey(block.Bytes)
	default:
		k, err = x509.ParsePKCS8PrivateKey(block.Bytes)
	}
	if err != nil {
		return nil, fmt.Errorf("pki: parse key: %w", err)
	}
	s, ok := k.(crypto.Signer)
	if !ok {
		return nil, errors.New("pki: key is not a signer")
	}
	return s, nil
}

// ParseCertPEM parses the first certificate of a PEM bundle.
func ParseCertPEM(b []byte) (*x509.Certificate, error) {
	certs, err := ParseCertsPEM(b)
	if err != nil {
		return nil, err
	}
	return certs[0], nil
}

// ParseCertsPEM parses every certificate of a PEM bundle; there must be one.
func ParseCertsPEM(b []byte) ([]*x509.Certificate, error) {
	var out []*x509.Certificate
	for {
		var block *pem.Block
		block, b = pem.Decode(b)
		if block == nil {
			break
		}
		if block.Type != "CERTIFICATE" {
			continue
		}
		c, err := x509.ParseCertificate(block.Bytes)
		if err != nil {
			return nil, ErrCertInvalid.Wrap(err)
		}
		out = append(out, c)
	}
	if len(out) == 0 {
		return nil, ErrCertInvalid.New()
	}
	return out, nil
}

// MakeCSR makes a PEM certificate request for commonName signed by key.
func MakeCSR(key crypto.Signer, commonName string) ([]byte, error) {
	der, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{
		Subject: pkix.Name{CommonName: commonName},
	}, key)
	if err != nil {
		return nil, fmt.Errorf("pki: create CSR: %w", err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: der}), nil
}

// NewCSR makes a P-256 key and a PEM certificate request for commonName
// signed by it.
func NewCSR(commonName string) (*ecdsa.PrivateKey, []byte, error) {
	key, err := NewKey()
	if err != nil {
		return nil, nil, fmt.Errorf("pki: key for %s: %w", commonName, err)
	}
	csr, err := MakeCSR(key, commonName)
	if err != nil {
		return nil, nil, err
	}
	return key, csr, nil
}

// NewKeyPair makes a P-256 key and a certificate request for commonName,
// has sign turn the request into a certificate (PEM, leaf first), and
// returns the key pair with its leaf. It is how iotransit's own tools (the
// dev bootstrap, bench, tests) get a certificate for a key they hold: the
// key stays here, only the request travels.
func NewKeyPair(commonName string, sign func(key crypto.Signer, csrPEM []byte) (certPEM []byte, err error)) (*tls.Certificate, error) {
	key, csr, err := NewCSR(commonName)
	if err != nil {
		return nil, err
	}
	certPEM, err := sign(key, csr)
	if err != nil {
		return nil, err
	}
	leaf, err := ParseCertPEM(certPEM)
	if err != nil {
		return nil, err
	}
	return &tls.Certificate{Certificate: [][]byte{leaf.Raw}, PrivateKey: key, Leaf: leaf}, nil
}

// IssueClientKeyPair makes a key and issues it a client certificate for
// commonName through a CSR, as the registry does for a gateway.
func (ca *CA) IssueClientKeyPair(commonName string, validity time.Duration, now time.Time) (*tls.Certificate, error) {
	return NewKeyPair(commonName, func(_ crypto.Signer, csrPEM []byte) ([]byte, error) {
		csr, err := ParseCSR(csrPEM)
		if err != nil {
			return nil, err
		}
		_, certPEM, err := ca.SignClient(csr, commonName, validity, now)
		return certPEM, err
	})
}

// IssueServerKeyPair makes a key and issues it a server certificate for
// hosts (DNS names or IP addresses).
func (ca *CA) IssueServerKeyPair(hosts []string, validity time.Duration, now time.Time) (*tls.Certificate, error) {
	key, err := NewKey()
	if err != nil {
		return nil, fmt.Errorf("pki: server key: %w", err)
	}
	cert, _, err := ca.IssueServer(key.Public(), hosts, validity, now)
	if err != nil {
		return nil, err
	}
	return &tls.Certificate{Certificate: [][]byte{cert.Raw}, PrivateKey: key, Leaf: cert}, nil
}

// KeyPairPEM returns the leaf certificate and the private key of c as PEM.
func KeyPairPEM(c *tls.Certificate) (certPEM, keyPEM []byte, err error) {
	key, ok := c.PrivateKey.(crypto.Signer)
	if !ok {
		return nil, nil, errors.New("pki: key is not a signer")
	}
	if keyPEM, err = EncodeKeyPEM(key); err != nil {
		return nil, nil, err
	}
	return EncodeCertPEM(c.Certificate[0]), keyPEM, nil
}

// maxCSRBytes bounds what ParseCSR looks at.
const maxCSRBytes = 16 << 10

// ParseCSR parses a PEM certificate request, checks its signature and
// refuses weak keys.
func ParseCSR(b []byte) (*x509.CertificateRequest, error) {
	if len(b) > maxCSRBytes {
		return nil, ErrCSRInvalid.WithDetail("the CSR is larger than %d bytes", maxCSRBytes)
	}
	b = bytes.TrimSpace(b)
	if !bytes.HasPrefix(b, []byte("-----BEGIN ")) { // nothing may precede the block
		return nil, ErrCSRInvalid.New()
	}
	block, rest := pem.Decode(b)
	if block == nil || (block.Type != "CERTIFICATE REQUEST" && block.Type != "NEW CERTIFICATE REQUEST") || len(bytes.TrimSpace(rest)) != 0 {
		return nil, ErrCSRInvalid.New()
	}
	csr, err := x509.ParseCertificateRequest(block.Bytes)
	if err != nil {
		return nil, ErrCSRInvalid.Wrap(err)
	}
	if err := csr.CheckSignature(); err != nil {
		return nil, ErrCSRInvalid.Wrap(err)
	}
	if err := checkKeyStrength(csr.PublicKey); err != nil {
		return nil, err
	}
	return csr, nil
}

func checkKeyStrength(pub crypto.PublicKey) error {
	switch k := pub.(type) {
	case *ecdsa.PublicKey:
		if k.Curve == elliptic.P256() || k.Curve == elliptic.P384() {
			return nil
		}
		return ErrCSRWeakKey.WithDetail("ECDSA curve %s is not accepted", k.Curve.Params().Name)
	case ed25519.PublicKey:
		return nil
	case *rsa.PublicKey:
		if k.N.BitLen() >= 2048 {
			return nil
		}
		return ErrCSRWeakKey.WithDetail("RSA key has %d bits", k.N.BitLen())
	default:
		return ErrCSRWeakKey.WithDetail("key type %T is not accepted", pub)
	}
}

// SignClient issues a client (gateway) certificate from csr. Only the CSR's
// public key is used; its subject common name must equal commonName, and
// any extensions it asks for are ignored.
func (ca *CA) SignClient(csr *x509.CertificateRequest, commonName string, validity time.Duration, now time.Time) (*x509.Certificate, []byte, error) {
	if csr.Subject.CommonName != commonName {
		return nil, nil, ErrCSRCNMismatch.New()
	}
	if err := checkKeyStrength(csr.PublicKey); err != nil {
		return nil, nil, err
	}
	return ca.issue(csr.PublicKey, &x509.Certificate{
		Subject:     pkix.Name{CommonName: commonName},
		KeyUsage:    x509.KeyUsageDigitalSignature,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
	}, validity, now)
}

// IssueServer issues a server certificate for hosts (DNS names or IP
// addresses) to pub.
func (ca *CA) IssueServer(pub crypto.PublicKey, hosts []string, validity time.Duration, now time.Time) (*x509.Certificate, []byte, error) {
	if len(hosts) == 0 {
		return nil, nil, errors.New("pki: a server certificate needs at least one host name")
	}
	tmpl := &x509.Certificate{
		Subject:     pkix.Name{CommonName: hosts[0]},
		KeyUsage:    x509.KeyUsageDigitalSignature,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	for _, h := range hosts {
		if ip := net.ParseIP(h); ip != nil {
			tmpl.IPAddresses = append(tmpl.IPAddresses, ip)
		} else {
			tmpl.DNSNames = append(tmpl.DNSNames, h)
		}
	}
	return ca.issue(pub, tmpl, validity, now)
}

func (ca *CA) issue(pub crypto.PublicKey, tmpl *x509.Certificate, validity time.Duration, now time.Time) (*x509.Certificate, []byte, error) {
	if validity <= 0 {
		return nil, nil, fmt.Errorf("pki: validity %s must be positive", validity)
	}
	if !now.Before(ca.Cert.NotAfter) || now.Before(ca.Cert.NotBefore) {
		return nil, nil, errors.New("pki: the CA is not valid now")
	}
	sn, err := serialNumber()
	if err != nil {
		return nil, nil, err
	}
	skid, err := keyID(pub)
	if err != nil {
		return nil, nil, err
	}
	tmpl.SerialNumber = sn
	tmpl.NotBefore = now.Add(-backdate)
	tmpl.NotAfter = now.Add(validity)
	if tmpl.NotAfter.After(ca.Cert.NotAfter) {
		tmpl.NotAfter = ca.Cert.NotAfter
	}
	tmpl.BasicConstraintsValid = true
	tmpl.SubjectKeyId = skid
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.Cert, pub, ca.Key)
	if err != nil {
		return nil, nil, fmt.Errorf("pki: sign certificate: %w", err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, nil, fmt.Errorf("pki: parse issued certificate: %w", err)
	}
	return cert, EncodeCertPEM(der), nil
}

// SerialHex returns a certificate serial number as lowercase hex, the form
// the registry records.
func SerialHex(c *x509.Certificate) string {
	return hex.EncodeToString(c.SerialNumber.Bytes())
}

// Fingerprint returns the SHA-256 of the certificate DER as lowercase hex.
func Fingerprint(c *x509.Certificate) string {
	sum := sha256.Sum256(c.Raw)
	return hex.EncodeToString(sum[:])
}

// Reasons a client chain is refused.
var (
	ErrChainUnknownCA   = errors.New("certificate not issued by the tenant CA")
	ErrChainExpired     = errors.New("certificate expired")
	ErrChainNotYetValid = errors.New("certificate not yet valid")
	ErrChainUsage       = errors.New("certificate not valid for client authentication")
)

// VerifyClient verifies that leaf (with optional intermediates) chains to ca
// and may be used for client authentication at now.
//
// The chain is proved before anything else is reported: x509's Verify
// reports a leaf outside its validity period before it checks a single
// signature, so a certificate that only copies ca's name and key id (both
// public) would be "expired", as if ca had issued it. Here a time error is
// returned only when the same chain verifies, signatures and usage
// included, at a moment within the leaf's validity; anything else is
// ErrChainUnknownCA.
func VerifyClient(leaf *x509.Certificate, intermediates []*x509.Certificate, ca *x509.Certificate, now time.Time) error {
	err := verifyClientAt(leaf, intermediates, ca, now)
	var inv x509.CertificateInvalidError
	if err == nil || !errors.As(err, &inv) || inv.Reason != x509.Expired {
		return chainError(err)
	}
	// A time error (of the leaf, an intermediate or ca): prove the chain at
	// the edge of the leaf's validity nearest to now.
	at, timeErr := leaf.NotAfter, ErrChainExpired
	if now.Before(leaf.NotBefore) {
		at, timeErr = leaf.NotBefore, ErrChainNotYetValid
	}
	if err := verifyClientAt(leaf, intermediates, ca, at); err != nil {
		return fmt.Errorf("%w: %v", ErrChainUnknownCA, err)
	}
	return timeErr
}

func verifyClientAt(leaf *x509.Certificate, intermediates []*x509.Certificate, ca *x509.Certificate, at time.Time) error {
	roots := x509.NewCertPool()
	roots.AddCert(ca)
	inter := x509.NewCertPool()
	for _, c := range intermediates {
		inter.AddCert(c)
	}
	_, err := leaf.Verify(x509.VerifyOptions{
		Roots:         roots,
		Intermediates: inter,
		CurrentTime:   at,
		KeyUsages:     []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
	})
	return err
}

// chainError maps a verification error other than a time error to the
// package's reasons. x509 reports a usage error only for chains whose
// signatures verified.
func chainError(err error) error {
	if err == nil {
		return nil
	}
	var inv x509.CertificateInvalidError
	if errors.As(err, &inv) && inv.Reason == x509.IncompatibleUsage {
		return ErrChainUsage
	}
	var ua x509.UnknownAuthorityError
	if errors.As(err, &ua) {
		return ErrChainUnknownCA
	}
	return fmt.Errorf("%w: %v", ErrChainUnknownCA, err)
}

// CertSource serves a certificate that can be replaced at run time (rotation
// without a restart), from tls.Config.GetCertificate.
type CertSource struct {
	cert atomic.Pointer[tls.Certificate]
}

// NewCertSource returns a source serving c.
func NewCertSource(c *tls.Certificate) *CertSource {
	s := &CertSource{}
	s.cert.Store(c)
	return s
}

// Set replaces the served certificate.
func (s *CertSource) Set(c *tls.Certificate) { s.cert.Store(c) }

// GetCertificate implements tls.Config.GetCertificate.
func (s *CertSource) GetCertificate(*tls.ClientHelloInfo) (*tls.Certificate, error) {
	return s.cert.Load(), nil
}

// RenewingSource returns a source serving the certificate issue makes, and
// a new one from issue at two thirds of each lifetime, until stop is
// called. A renewal that fails keeps the current certificate, is reported
// to failed, and is tried again two thirds of a lifetime later. stop waits
// for a renewal under way and may be called more than once.
func RenewingSource(lifetime time.Duration, issue func() (*tls.Certificate, error), failed func(error)) (src *CertSource, stop func(), err error) {
	c, err := issue()
	if err != nil {
		return nil, nil, err
	}
	src = NewCertSource(c)
	quit, done := make(chan struct{}), make(chan struct{})
	go func() {
		defer close(done)
		for {
			select {
			case <-quit:
				return
			case <-time.After(lifetime * 2 / 3):
				if c, err := issue(); err != nil {
					failed(err)
				} else {
					src.Set(c)
				}
			}
		}
	}()
	var once sync.Once
	return src, func() {
		once.Do(func() { close(quit) })
		<-done
	}, nil
}

// secureCipherSuites are the TLS 1.2 suites offered: forward secret AEADs
// only. TLS 1.3 suites are not configurable and all are good.
var secureCipherSuites = []uint16{
	tls.TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256,
	tls.TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384,
	tls.TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256,
	tls.TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256,
	tls.TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384,
	tls.TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256,
}

// ServerTLSConfig returns the base configuration of a listener: TLS 1.2
// minimum (1.3 preferred by the library), forward-secret AEAD suites, the
// certificate from src. Callers add client authentication.
func ServerTLSConfig(src *CertSource) *tls.Config {
	return &tls.Config{
		MinVersion:     tls.VersionTLS12,
		CipherSuites:   secureCipherSuites,
		GetCertificate: src.GetCertificate,
	}
}

// GatewayTLSConfig returns the configuration of the gateway (MQTT) listener:
// a client certificate is required, and verify decides whether its chain
// and identity are acceptable. No CA list is sent to clients (it would name
// every tenant), so verification is wholly verify's.
func GatewayTLSConfig(src *CertSource, verify func(tls.ConnectionState) error) *tls.Config {
	c := ServerTLSConfig(src)
	c.ClientAuth = tls.RequireAnyClientCert
	c.VerifyConnection = verify
	return c
}

package keystore_test

import (
	"bytes"
	"crypto"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"net"
	"path/filepath"
	"testing"
	"time"

	"github.com/iotransit/iotransit/internal/gateway/keystore"
	"github.com/iotransit/iotransit/internal/pki"
	"github.com/iotransit/iotransit/internal/testutil"
)

// backend is one kind of store under the same tests.
type backend struct {
	name string
	// fresh makes an empty store of this kind and returns what opens it
	// (again); every store opened is closed when the test ends.
	fresh func(t *testing.T) (open func(t *testing.T) keystore.Store)
}

// backends are the kinds of store built in; the token store adds itself
// in a build with cgo.
var backends = []backend{{name: "file", fresh: freshFileStore}}

func freshFileStore(t *testing.T) func(t *testing.T) keystore.Store {
	dir := filepath.Join(t.TempDir(), "keys")
	return func(t *testing.T) keystore.Store {
		t.Helper()
		s, err := keystore.Open(keystore.Config{Dir: dir})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { s.Close() })
		return s
	}
}

// eachBackend runs fn against a fresh store of every kind.
func eachBackend(t *testing.T, fn func(t *testing.T, open func(t *testing.T) keystore.Store)) {
	for _, b := range backends {
		t.Run(b.name, func(t *testing.T) { fn(t, b.fresh(t)) })
	}
}

// publicOf returns a function that fails t on an error and returns the
// public key otherwise: publicOf(t)(s.Identity()).
func publicOf(t *testing.T) func(crypto.Signer, error) crypto.PublicKey {
	return func(k crypto.Signer, err error) crypto.PublicKey {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
		return k.Public()
	}
}

func samePublic(a, b crypto.PublicKey) bool {
	type equaler interface{ Equal(crypto.PublicKey) bool }
	e, ok := a.(equaler)
	return ok && e.Equal(b)
}

// TestKeystoreIdentityEnrollsAndAuthenticates: the identity key signs a
// certificate request that x509 verifies and the CA signs, then completes
// a real mutual-TLS handshake with that certificate, in TLS 1.2 and 1.3.
func TestKeystoreIdentityEnrollsAndAuthenticates(t *testing.T) {
	now := time.Now()
	ca, err := pki.NewCA("keystore test CA", time.Hour, now)
	if err != nil {
		t.Fatal(err)
	}
	eachBackend(t, func(t *testing.T, open func(t *testing.T) keystore.Store) {
		key, err := open(t).Identity()
		if err != nil {
			t.Fatal(err)
		}
		csrPEM, err := pki.MakeCSR(key, "GW-0001")
		if err != nil {
			t.Fatal(err)
		}
		csr, err := pki.ParseCSR(csrPEM) // checks the request's signature
		if err != nil {
			t.Fatalf("the CSR does not verify: %v", err)
		}
		if !samePublic(csr.PublicKey, key.Public()) {
			t.Fatal("the CSR carries another public key")
		}
		leaf, _, err := ca.SignClient(csr, "GW-0001", time.Hour, now)
		if err != nil {
			t.Fatal(err)
		}
		for _, version := range []uint16{tls.VersionTLS12, tls.VersionTLS13} {
			t.Run(tls.VersionName(version), func(t *testing.T) {
				cn, err := mutualTLS(t, ca, tls.Certificate{Certificate: [][]byte{leaf.Raw}, PrivateKey: key, Leaf: leaf}, version)
				if err != nil || cn != "GW-0001" {
					t.Fatalf("handshake: client %q, %v", cn, err)
				}
			})
		}
	})
}

// mutualTLS makes one handshake of a client holding cert with a server
// that requires a client certificate from ca, and returns the client's
// common name as the server verified it.
func mutualTLS(t *testing.T, ca *pki.CA, cert tls.Certificate, version uint16) (string, error) {
	t.Helper()
	roots := x509.NewCertPool()
	roots.AddCert(ca.Cert)
	l, err := tls.Listen("tcp", "127.0.0.1:0", &tls.Config{
		Certificates: []tls.Certificate{*testutil.ServerCert(t, ca, "127.0.0.1")},
		ClientAuth:   tls.RequireAndVerifyClientCert,
		ClientCAs:    roots,
		MinVersion:   version,
		MaxVersion:   version,
	})
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	type result struct {
		cn  string
		err error
	}
	done := make(chan result, 1)
	go func() {
		c, err := l.Accept()
		if err != nil {
			done <- result{err: err}
			return
		}
		defer c.Close()
		tc := c.(*tls.Conn)
		tc.SetDeadline(time.Now().Add(10 * time.Second * testutil.Slowdown()))
		if err := tc.Handshake(); err != nil {
			done <- result{err: fmt.Errorf("server: %w", err)}
			return
		}
		_, err = tc.Write([]byte("ok"))
		done <- result{cn: tc.ConnectionState().PeerCertificates[0].Subject.CommonName, err: err}
	}()
	c, err := tls.DialWithDialer(&net.Dialer{Timeout: 10 * time.Second * testutil.Slowdown()}, "tcp", l.Addr().String(), &tls.Config{
		Certificates: []tls.Certificate{cert},
		RootCAs:      roots,
		ServerName:   "127.0.0.1",
		MinVersion:   version,
		MaxVersion:   version,
	})
	if err != nil {
		return "", fmt.Errorf("client: %w", err)
	}
	defer c.Close()
	// In TLS 1.3 a client certificate the server refuses shows here.
	if b, err := io.ReadAll(c); err != nil || string(b) != "ok" {
		r := <-done
		return "", fmt.Errorf("client read %q: %v (server: %v)", b, err, r.err)
	}
	r := <-done
	return r.cn, r.err
}

// TestKeystoreReloadsTheSameKeys: a store opened again holds the same
// identity and opens what it sealed before.
func TestKeystoreReloadsTheSameKeys(t *testing.T) {
	eachBackend(t, func(t *testing.T, open func(t *testing.T) keystore.Store) {
		s := open(t)
		before := publicOf(t)(s.Identity())
		again := publicOf(t)(s.Identity())
		if !samePublic(before, again) {
			t.Fatal("a second Identity made another key")
		}
		sealed, err := s.Seal([]byte("queue data key"), []byte("queue"))
		if err != nil {
			t.Fatal(err)
		}
		if err := s.Close(); err != nil {
			t.Fatal(err)
		}
		s = open(t)
		if after := publicOf(t)(s.Identity()); !samePublic(before, after) {
			t.Fatal("the identity changed across a reopen")
		}
		got, err := s.Open(sealed, []byte("queue"))
		if err != nil || string(got) != "queue data key" {
			t.Fatalf("open after reopen: %q, %v", got, err)
		}
	})
}

// TestKeystoreRenewalSwitchesKeys: the next key lives beside the identity
// (across a reopen) until Promote makes it the identity and deletes the
// old one, or DiscardNext deletes it.
func TestKeystoreRenewalSwitchesKeys(t *testing.T) {
	eachBackend(t, func(t *testing.T, open func(t *testing.T) keystore.Store) {
		s := open(t)
		if _, err := s.CreateNext(); !errors.Is(err, keystore.ErrNoKey) {
			t.Fatalf("CreateNext without an identity: %v, want ErrNoKey", err)
		}
		if err := s.Promote(); !errors.Is(err, keystore.ErrNoKey) {
			t.Fatalf("Promote without keys: %v, want ErrNoKey", err)
		}
		old := publicOf(t)(s.Identity())
		if _, err := s.Next(); !errors.Is(err, keystore.ErrNoKey) {
			t.Fatalf("Next before a renewal: %v, want ErrNoKey", err)
		}
		next := publicOf(t)(s.CreateNext())
		if samePublic(old, next) {
			t.Fatal("the next key is the identity")
		}
		if again := publicOf(t)(s.CreateNext()); !samePublic(next, again) {
			t.Fatal("a second CreateNext made a third key")
		}
		s.Close()

		s = open(t)
		if got := publicOf(t)(s.Identity()); !samePublic(old, got) {
			t.Fatal("the identity changed before Promote")
		}
		if got := publicOf(t)(s.Next()); !samePublic(next, got) {
			t.Fatal("the next key did not survive a reopen")
		}
		if err := s.Promote(); err != nil {
			t.Fatal(err)
		}
		if got := publicOf(t)(s.Identity()); !samePublic(next, got) {
			t.Fatal("Promote did not make the next key the identity")
		}
		if _, err := s.Next(); !errors.Is(err, keystore.ErrNoKey) {
			t.Fatalf("Next after Promote: %v, want ErrNoKey (the old key deleted)", err)
		}

		third := publicOf(t)(s.CreateNext())
		if samePublic(third, old) || samePublic(third, next) {
			t.Fatal("a renewal reused a key")
		}
		if err := s.DiscardNext(); err != nil {
			t.Fatal(err)
		}
		if err := s.DiscardNext(); err != nil {
			t.Fatalf("DiscardNext without a next key: %v", err)
		}
		if _, err := s.Next(); !errors.Is(err, keystore.ErrNoKey) {
			t.Fatalf("Next after DiscardNext: %v, want ErrNoKey", err)
		}
		s.Close()
		s = open(t)
		if got := publicOf(t)(s.Identity()); !samePublic(next, got) {
			t.Fatal("the promoted identity did not survive a reopen")
		}
	})
}

// TestKeystoreSealedSecretsRefuseTampering: a sealed secret opens only
// unchanged, with its own associated data and in its own store; the
// plaintext does not show in it.
func TestKeystoreSealedSecretsRefuseTampering(t *testing.T) {
	eachBackend(t, func(t *testing.T, open func(t *testing.T) keystore.Store) {
		s := open(t)
		secret := []byte("mesh key-delivery private key 32")
		aad := []byte("mesh-delivery-key")
		sealed, err := s.Seal(secret, aad)
		if err != nil {
			t.Fatal(err)
		}
		if bytes.Contains(sealed, secret) || bytes.Contains(sealed, secret[:8]) {
			t.Fatal("the sealed secret shows its plaintext")
		}
		if again, _ := s.Seal(secret, aad); bytes.Equal(again, sealed) {
			t.Fatal("two seals of one secret are equal (nonce reused)")
		}
		if got, err := s.Open(sealed, aad); err != nil || !bytes.Equal(got, secret) {
			t.Fatalf("open: %q, %v", got, err)
		}
		if empty, err := s.Seal(nil, nil); err != nil {
			t.Fatal(err)
		} else if got, err := s.Open(empty, nil); err != nil || len(got) != 0 {
			t.Fatalf("empty secret: %q, %v", got, err)
		}

		other, err := keystore.OpenFile(t.TempDir())
		if err != nil {
			t.Fatal(err)
		}
		foreign, err := other.Seal(secret, aad)
		if err != nil {
			t.Fatal(err)
		}
		flip := func(i int) []byte {
			b := bytes.Clone(sealed)
			b[i] ^= 0x01
			return b
		}
		for _, tc := range []struct {
			name   string
			sealed []byte
			aad    []byte
		}{
			{name: "format byte changed", sealed: flip(0), aad: aad},
			{name: "nonce changed", sealed: flip(5), aad: aad},
			{name: "ciphertext changed", sealed: flip(1 + 12 + 3), aad: aad},
			{name: "tag changed", sealed: flip(len(sealed) - 1), aad: aad},
			{name: "truncated", sealed: sealed[:len(sealed)-1], aad: aad},
			{name: "tag only", sealed: sealed[:1+12+16], aad: aad},
			{name: "too short", sealed: sealed[:10], aad: aad},
			{name: "empty", sealed: nil, aad: aad},
			{name: "extended", sealed: append(bytes.Clone(sealed), 0), aad: aad},
			{name: "other aad", sealed: sealed, aad: []byte("queue-data-key")},
			{name: "no aad", sealed: sealed, aad: nil},
			{name: "sealed by another store", sealed: foreign, aad: aad},
		} {
			t.Run(tc.name, func(t *testing.T) {
				got, err := s.Open(tc.sealed, tc.aad)
				if !errors.Is(err, keystore.ErrNotAuthentic) || got != nil {
					t.Fatalf("open: %q, %v; want ErrNotAuthentic", got, err)
				}
			})
		}
		if _, err := s.Seal(make([]byte, keystore.MaxSecret+1), aad); err == nil {
			t.Fatal("sealed a secret larger than MaxSecret")
		}
	})
}

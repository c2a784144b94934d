package node

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/tls"
	"encoding/json"
	"fmt"
	"os"
	"time"

	"github.com/iotransit/iotransit/internal/backbone"
	"github.com/iotransit/iotransit/internal/backbone/names"
	"github.com/iotransit/iotransit/internal/kms"
	"github.com/iotransit/iotransit/internal/pki"
)

// systemKeys is the kms owner of platform secrets (not a tenant: tenant ids
// cannot start with '_').
const systemKeys = "_system"

// secrets are the platform's own secrets: records in the system bucket,
// sealed by kms under systemKeys, made by the first node that starts.
type secrets struct {
	keys  *kms.Keyring
	store kms.KeyStore
}

func (n *Node) secrets(ctx context.Context) (secrets, error) {
	kv, err := n.bb.KV(ctx, names.SystemBucket, 1)
	if err != nil {
		return secrets{}, err
	}
	return secrets{keys: n.keys, store: backbone.KeyStore{KV: kv}}, nil
}

// signingKey returns the platform Ed25519 key called name.
func (s secrets) signingKey(ctx context.Context, name string) (ed25519.PrivateKey, error) {
	rec := kms.Record{Store: s.store, Name: name, Owner: systemKeys, AAD: []byte("node/system-key/" + name)}
	_, seed, err := s.keys.GetOrCreate(ctx, rec, func() ([]byte, []byte, error) {
		seed := make([]byte, ed25519.SeedSize)
		_, err := rand.Read(seed)
		return nil, seed, err
	})
	if err != nil {
		return nil, err
	}
	if len(seed) != ed25519.SeedSize {
		return nil, fmt.Errorf("%s has a bad size", name)
	}
	return ed25519.NewKeyFromSeed(seed), nil
}

// serverCARecord is how the internal server CA is stored: its certificate,
// and its key sealed by kms.
type serverCARecord struct {
	Cert string `json:"cert"`
	Key  []byte `json:"key"` // PKCS#8, sealed by kms
}

// serverCA returns the internal server CA, creating it on first start.
func (s secrets) serverCA(ctx context.Context) (*pki.CA, error) {
	rec := kms.Record{
		Store: s.store, Name: "server-ca", Owner: systemKeys, AAD: []byte("node/server-ca-key"),
		Encode: func(certPEM, sealedKey []byte) ([]byte, error) {
			return json.Marshal(serverCARecord{Cert: string(certPEM), Key: sealedKey})
		},
		Decode: func(stored []byte) ([]byte, []byte, error) {
			var r serverCARecord
			err := json.Unmarshal(stored, &r)
			return []byte(r.Cert), r.Key, err
		},
	}
	certPEM, keyDER, err := s.keys.GetOrCreate(ctx, rec, func() ([]byte, []byte, error) {
		ca, err := pki.NewCA("iotransit server CA", 20*365*24*time.Hour, time.Now())
		if err != nil {
			return nil, nil, err
		}
		der, err := ca.KeyDER()
		return ca.CertPEM, der, err
	})
	if err != nil {
		return nil, err
	}
	return pki.LoadCA(certPEM, keyDER)
}

// serverCertificateValidity is the lifetime of a certificate from the
// internal server CA; it is renewed at two thirds of it.
const serverCertificateValidity = 90 * 24 * time.Hour

// serverCertificate returns the certificate source of the listeners: the
// operator's files, or a certificate from the internal server CA renewed
// in the background until the node closes.
func (n *Node) serverCertificate(ctx context.Context, sec secrets) (*pki.CertSource, error) {
	if n.cfg.TLSCertFile != "" {
		c, err := tls.LoadX509KeyPair(n.cfg.TLSCertFile, n.cfg.TLSKeyFile)
		if err != nil {
			return nil, fmt.Errorf("load --tls-cert/--tls-key: %w", err)
		}
		pemBytes, err := os.ReadFile(n.cfg.TLSCertFile)
		if err != nil {
			return nil, err
		}
		certs, err := pki.ParseCertsPEM(pemBytes)
		if err != nil {
			return nil, err
		}
		n.serverCA = pki.EncodeCertPEM(certs[len(certs)-1].Raw)
		return pki.NewCertSource(&c), nil
	}
	ca, err := sec.serverCA(ctx)
	if err != nil {
		return nil, err
	}
	n.serverCA = ca.CertPEM
	src, stop, err := pki.RenewingSource(serverCertificateValidity, func() (*tls.Certificate, error) {
		return ca.IssueServerKeyPair(n.cfg.ServerNames, serverCertificateValidity, time.Now())
	}, func(err error) {
		n.log.Error("renew server certificate", "error", err)
	})
	if err != nil {
		return nil, err
	}
	n.onClose(stop)
	return src, nil
}

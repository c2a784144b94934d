package node_test

import (
	"bytes"
	"context"
	"crypto"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/iotransit/iotransit/client"
	"github.com/iotransit/iotransit/internal/credential"
	"github.com/iotransit/iotransit/internal/pki"
	tu "github.com/iotransit/iotransit/internal/testutil"
	"github.com/iotransit/iotransit/internal/testutil/nodetest"
)

// kidOf returns the "kid" header of a JWT.
func kidOf(tok string) string {
	raw, _ := base64.RawURLEncoding.DecodeString(strings.Split(tok, ".")[0])
	var h struct{ Kid string }
	_ = json.Unmarshal(raw, &h)
	return h.Kid
}

// TestNodeKeyRotationReachesTheOtherNode: each of the three key rotations
// made through node 1's API is used by node 2 within about a second: its
// tokens carry the new kid, it lists the new audit key, and it issues
// certificates from the new tenant CA while still accepting node 1's.
func TestNodeKeyRotationReachesTheOtherNode(t *testing.T) {
	n1, n2 := nodetest.StartPair(t, nil)
	ctx := context.Background()
	api1, api2 := nodetest.NewAPI(t, n1).Client, nodetest.NewAPI(t, n2).Client
	if _, err := api1.CreateTenant(ctx, "acme"); err != nil {
		t.Fatal(err)
	}
	oc, err := api1.CreateOAuth2Client(ctx, "acme", client.CreateOAuth2ClientRequest{Scopes: []string{credential.ScopeGatewaysRead}})
	if err != nil {
		t.Fatal(err)
	}
	within := time.Second * tu.Slowdown() * 3 / 2 // the poll is a quarter second; JetStream round trips add little

	cases := []struct {
		name   string
		rotate func() (string, error) // the new key's id
		seen   func(id string) error  // nil once node 2 uses it
	}{
		{
			name: "jwt",
			rotate: func() (string, error) {
				ks, err := api1.RotateJWTKey(ctx)
				if err != nil {
					return "", err
				}
				return ks.JWT[len(ks.JWT)-1].ID, nil
			},
			seen: func(id string) error {
				tok, err := api2.Token(ctx, oc.ID, oc.ClientSecret)
				if err != nil {
					return err
				}
				if kidOf(tok.AccessToken) != id {
					return fmt.Errorf("node 2 signs with kid %s, want %s", kidOf(tok.AccessToken), id)
				}
				// And node 1 accepts node 2's token.
				_, err = api1.WithCredential(tok.AccessToken).ListGateways(ctx, "acme", client.GatewayQuery{})
				return err
			},
		},
		{
			name: "audit",
			rotate: func() (string, error) {
				ks, err := api1.RotateAuditKey(ctx)
				if err != nil {
					return "", err
				}
				return ks.Audit[len(ks.Audit)-1].ID, nil
			},
			seen: func(id string) error {
				ks, err := api2.PlatformKeys(ctx)
				if err != nil {
					return err
				}
				if cur := ks.Audit[len(ks.Audit)-1]; cur.ID != id || cur.State != client.KeyCurrent {
					return fmt.Errorf("node 2's current audit key is %s", cur.ID)
				}
				return nil
			},
		},
		{
			name: "ca",
			rotate: func() (string, error) {
				st, err := api1.RotateCA(ctx, "acme", client.RotateCARequest{Overlap: "1h"})
				if err != nil {
					return "", err
				}
				return st.Versions[0].Fingerprint, nil
			},
			seen: func(fp string) error {
				serial := "TSGW06ROT00000001"
				if _, ok := n2.Registry().Gateway("acme", serial); !ok {
					return errors.New("gateway not on node 2 yet")
				}
				cert, err := pki.NewKeyPair(serial, func(_ crypto.Signer, csr []byte) ([]byte, error) {
					certPEM, _, err := n2.Registry().IssueCertificate(ctx, "acme", serial, csr, time.Hour)
					return certPEM, err
				})
				if err != nil {
					return err
				}
				leaf, err := x509.ParseCertificate(cert.Certificate[0])
				if err != nil {
					return err
				}
				ca, err := n2.Registry().CA(ctx, "acme")
				if err != nil {
					return err
				}
				caCert, err := pki.ParseCertPEM(ca.CertPEM)
				if err != nil {
					return err
				}
				if pki.Fingerprint(caCert) != fp || !bytes.Equal(leaf.AuthorityKeyId, caCert.SubjectKeyId) {
					return errors.New("node 2 still issues from the old CA")
				}
				if _, err := n1.Registry().Authenticate([]*x509.Certificate{leaf}, time.Now()); err != nil {
					return fmt.Errorf("node 1 refuses node 2's new certificate: %w", err)
				}
				return nil
			},
		},
	}
	if _, err := n1.Registry().RegisterGateway(ctx, "acme", "TSGW06ROT00000001"); err != nil {
		t.Fatal(err)
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			id, err := tc.rotate()
			if err != nil {
				t.Fatal(err)
			}
			tu.Eventually(t, within, 50*time.Millisecond, func() error { return tc.seen(id) })
		})
	}
}

package api_test

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"errors"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"github.com/iotransit/iotransit/client"
	"github.com/iotransit/iotransit/internal/audit"
	"github.com/iotransit/iotransit/internal/credential"
	"github.com/iotransit/iotransit/internal/node"
	"github.com/iotransit/iotransit/internal/pki"
	"github.com/iotransit/iotransit/internal/registry"
	tu "github.com/iotransit/iotransit/internal/testutil"
	"github.com/iotransit/iotransit/internal/testutil/nodetest"
)

// chained returns kp presenting the certificates of chainPEM (leaf first).
func chained(t *testing.T, kp *tls.Certificate, chainPEM string) (*tls.Certificate, []*x509.Certificate) {
	t.Helper()
	chain, err := pki.ParseCertsPEM([]byte(chainPEM))
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range chain {
		kp.Certificate = append(kp.Certificate, c.Raw)
	}
	kp.Leaf = chain[0]
	return kp, chain
}

// reenroll renews a gateway's certificate over mutual TLS with cur and
// returns the status and, on success, the new key pair and its chain.
func reenroll(t *testing.T, w *world, serial string, cur *tls.Certificate) (int, *tls.Certificate, []*x509.Certificate) {
	t.Helper()
	csr, next := csrFor(t, serial)
	c := &http.Client{Transport: &http.Transport{TLSClientConfig: nodetest.ClientTLS(t, w.n, cur)}}
	defer c.CloseIdleConnections()
	body, _ := json.Marshal(map[string]string{"csr": csr})
	resp, err := c.Post(w.api.Base()+"/v1/reenroll", "application/json", bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != 200 {
		return resp.StatusCode, nil, nil
	}
	var e enrolled
	if err := json.NewDecoder(resp.Body).Decode(&e); err != nil {
		t.Fatal(err)
	}
	kp, chain := chained(t, next, e.Certificate)
	return 200, kp, chain
}

// connects reports whether a gateway connects over MQTT (paho) with cert.
func connects(t *testing.T, w *world, cert *tls.Certificate, serial string) bool {
	t.Helper()
	up, err := nodetest.Dial(t, w.n, cert, serial, nil)
	if up != nil {
		_ = up.Close()
	}
	return err == nil
}

// TestAPICARotationOverlapThenRetire walks a gateway across a CA rotation:
// its old-CA certificate connects during the overlap, renews onto the new
// CA (the chain it gets names the new CA), the new certificate connects;
// once the old version is retired its live session ends and its
// certificates are refused over MQTT and for renewal while the new one
// works; a certificate from another tenant's CA is never accepted.
func TestAPICARotationOverlapThenRetire(t *testing.T) {
	w := newWorld(t)
	ctx := context.Background()
	serial := w.gateway("acme")
	e, kp := enroll(t, w, "acme", serial)
	oldCert, oldChain := chained(t, kp, e.Certificate)
	if len(oldChain) != 2 || !connects(t, w, oldCert, serial) {
		t.Fatalf("before rotation: chain of %d, or the gateway does not connect", len(oldChain))
	}
	acmeKeys := w.byTen["acme"].allKey

	var st client.TenantCA
	if r := w.api.Do("POST", "/v1/tenants/acme/ca/rotate", acmeKeys, map[string]string{"overlap": "1h"}); r.Status != 200 {
		t.Fatalf("rotate: %d %s", r.Status, r.Body)
	} else {
		r.Decode(t, &st)
	}
	if st.CurrentVersion != 2 || len(st.Versions) != 2 || !st.Rotated ||
		st.Versions[0].State != client.KeyCurrent || st.Versions[1].State != client.KeyOverlap ||
		st.Versions[1].Fingerprint != pki.Fingerprint(oldChain[1]) || strings.Count(st.Bundle, "BEGIN CERTIFICATE") != 2 {
		t.Fatalf("state after rotation: %+v", st)
	}
	newCA, err := pki.ParseCertPEM([]byte(st.Versions[0].Certificate))
	if err != nil {
		t.Fatal(err)
	}
	if ten, _ := w.n.Registry().Tenant("acme"); ten.CACert != st.Versions[0].Certificate {
		t.Fatal("the tenant record does not show the new CA")
	}

	// Overlap: the old certificate still connects and renews.
	if !connects(t, w, oldCert, serial) {
		t.Fatal("the old-CA certificate is refused during the overlap")
	}
	status, newCert, newChain := reenroll(t, w, serial, oldCert)
	if status != 200 {
		t.Fatalf("renewal with the old-CA certificate during the overlap: %d", status)
	}
	if len(newChain) != 2 || !newChain[1].Equal(newCA) || !bytes.Equal(newChain[0].AuthorityKeyId, newCA.SubjectKeyId) {
		t.Fatal("the renewed certificate is not issued by the new CA, or its chain does not end with it")
	}
	if err := pki.VerifyClient(newChain[0], nil, newCA, time.Now()); err != nil {
		t.Fatalf("the renewed certificate does not verify under the new CA: %v", err)
	}
	if !connects(t, w, newCert, serial) {
		t.Fatal("the new-CA certificate does not connect")
	}
	// The overlap ends by itself: an hour on, the old CA's certificate is
	// refused, the new one not.
	later := time.Now().Add(61 * time.Minute)
	var refused *registry.RefusedError
	if _, err := w.n.Registry().Authenticate([]*x509.Certificate{oldChain[0]}, later); !errors.As(err, &refused) || refused.Reason != registry.ReasonCARetired || refused.Tenant != "acme" {
		t.Fatalf("old certificate after the overlap: %v", err)
	}
	if _, err := w.n.Registry().Authenticate([]*x509.Certificate{newChain[0]}, later); err != nil {
		t.Fatalf("new certificate after the overlap: %v", err)
	}

	// A certificate for the same gateway from beta's CA: never acme's.
	betaCA, err := w.n.Registry().CA(ctx, "beta")
	if err != nil {
		t.Fatal(err)
	}
	if foreign := tu.SignWith(t, betaCA, serial, time.Now().Add(-time.Minute), time.Hour); connects(t, w, foreign, serial) {
		t.Fatal("a certificate from another tenant's CA connects")
	}

	// A session open on the old certificate when its CA is retired ends.
	live, err := nodetest.Dial(t, w.n, oldCert, serial, nil)
	if err != nil {
		t.Fatalf("a live session on the old certificate: %v", err)
	}

	// Retire the old version: refused at once, the new one accepted.
	cases := []struct {
		name   string
		body   any
		key    string
		status int
		code   string
	}{
		{name: "the current version", body: map[string]int{"version": 2}, key: acmeKeys, status: 400, code: "registry.ca_current"},
		{name: "an unknown version", body: map[string]int{"version": 7}, key: acmeKeys, status: 404, code: "registry.ca_version_not_found"},
		{name: "by another tenant", body: map[string]int{}, key: w.byTen["beta"].allKey, status: 404, code: "registry.tenant_not_found"},
		{name: "without keys:write", body: map[string]int{}, key: w.key("acme", []string{credential.ScopeKeysRead}), status: 403, code: "api.scope_missing"},
		{name: "every previous version", body: map[string]int{}, key: acmeKeys, status: 200},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			r := w.api.Do("POST", "/v1/tenants/acme/ca/retire", tc.key, tc.body)
			if tc.status != 200 {
				wantProblem(t, "retire", r, tc.status, tc.code, "")
				return
			}
			if r.Status != 200 {
				t.Fatalf("retire: %d %s", r.Status, r.Body)
			}
			r.Decode(t, &st)
			if st.Versions[1].State != client.KeyRetired || strings.Count(st.Bundle, "BEGIN CERTIFICATE") != 1 {
				t.Fatalf("state after retirement: %+v", st)
			}
		})
	}
	select {
	case <-live.Done():
	case <-time.After(5 * time.Second * tu.Slowdown()):
		t.Error("the session on the old-CA certificate goes on after its CA was retired")
	}
	if connects(t, w, oldCert, serial) {
		t.Error("the old-CA certificate connects after its CA was retired")
	}
	if status, _, _ := reenroll(t, w, serial, oldCert); status != 401 {
		t.Errorf("renewal with the old-CA certificate after retirement: %d", status)
	}
	if !connects(t, w, newCert, serial) {
		t.Error("the new-CA certificate is refused after the old CA was retired")
	}
	var got client.TenantCA
	if code := w.api.Get("/v1/tenants/acme/ca", &got); code != 200 || got.CurrentVersion != 2 || len(got.Versions) != 2 {
		t.Errorf("status: %d %+v", code, got)
	}
	// Audited in the tenant's log.
	var page client.Page[client.AuditEntry]
	w.api.Do("GET", "/v1/tenants/acme/audit?action=ca.rotate", w.api.Key(), nil).Decode(t, &page)
	if len(page.Items) != 1 || page.Items[0].Detail["version"] != "2" || page.Items[0].Detail["overlap"] != "1h0m0s" {
		t.Errorf("ca.rotate audit entries: %+v", page.Items)
	}
}

// jwtKID returns the "kid" header of a JWT.
func jwtKID(t *testing.T, tok string) string {
	t.Helper()
	raw, err := base64.RawURLEncoding.DecodeString(strings.Split(tok, ".")[0])
	if err != nil {
		t.Fatal(err)
	}
	var h struct{ Kid string }
	if err := json.Unmarshal(raw, &h); err != nil {
		t.Fatal(err)
	}
	return h.Kid
}

// TestAPIJWTKeyRotation: a token issued before a rotation keeps working,
// a new one carries the new key id, the public keys are listed, and tokens
// naming an unknown key id or signed by a key the platform does not hold
// are refused.
func TestAPIJWTKeyRotation(t *testing.T) {
	w := newWorld(t)
	ctx := context.Background()
	op := w.api.Client
	oc, err := op.CreateOAuth2Client(ctx, "acme", client.CreateOAuth2ClientRequest{Scopes: []string{credential.ScopeGatewaysRead}})
	if err != nil {
		t.Fatal(err)
	}
	before, err := op.Token(ctx, oc.ID, oc.ClientSecret)
	if err != nil {
		t.Fatal(err)
	}
	rotated, err := op.RotateJWTKey(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(rotated.JWT) != 2 || rotated.JWT[0].State != client.KeyRetired || rotated.JWT[1].State != client.KeyCurrent ||
		rotated.JWT[0].ID != jwtKID(t, before.AccessToken) || rotated.JWT[1].CreatedAt == nil || rotated.JWT[0].RetiredAt == nil {
		t.Fatalf("keys after rotation: %+v", rotated.JWT)
	}
	after, err := op.Token(ctx, oc.ID, oc.ClientSecret)
	if err != nil {
		t.Fatal(err)
	}
	if jwtKID(t, after.AccessToken) != rotated.JWT[1].ID {
		t.Fatalf("new token kid %q, want %q", jwtKID(t, after.AccessToken), rotated.JWT[1].ID)
	}
	forge := func(kid string) string {
		_, key, _ := ed25519.GenerateKey(rand.Reader)
		claims := credential.Claims{Tenant: "acme", Scope: credential.ScopeGatewaysRead, RegisteredClaims: jwt.RegisteredClaims{
			Issuer: "iotransit", Subject: oc.ID, Audience: jwt.ClaimStrings{"iotransit"},
			IssuedAt: jwt.NewNumericDate(time.Now()), ExpiresAt: jwt.NewNumericDate(time.Now().Add(5 * time.Minute)),
		}}
		tok := jwt.NewWithClaims(jwt.SigningMethodEdDSA, claims)
		tok.Header["kid"] = kid
		s, err := tok.SignedString(key)
		if err != nil {
			t.Fatal(err)
		}
		return s
	}
	cases := []struct {
		name   string
		token  string
		status int
	}{
		{name: "a token from before the rotation", token: before.AccessToken, status: 200},
		{name: "a token from after the rotation", token: after.AccessToken, status: 200},
		{name: "an unknown key id", token: forge("0123456789abcdef"), status: 401},
		{name: "the current key id on a forged signature", token: forge(rotated.JWT[1].ID), status: 401},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			if r := w.api.Do("GET", "/v1/tenants/acme/gateways", tc.token, nil); r.Status != tc.status {
				t.Fatalf("%d %s, want %d", r.Status, r.Body, tc.status)
			}
		})
	}
	// Only the operator rotates or lists the platform keys.
	if r := w.api.Do("POST", "/v1/system/jwt/rotate", w.byTen["acme"].allKey, nil); r.Status != 403 {
		t.Errorf("a tenant rotates the JWT key: %d", r.Status)
	}
	if r := w.api.Do("GET", "/v1/system/keys", w.byTen["acme"].allKey, nil); r.Status != 403 {
		t.Errorf("a tenant lists the platform keys: %d", r.Status)
	}
	var page client.Page[client.AuditEntry]
	w.api.Do("GET", "/v1/tenants/_system/audit?action=system.jwt_key.rotate", w.api.Key(), nil).Decode(t, &page)
	if len(page.Items) != 1 || page.Items[0].Detail["keyId"] != rotated.JWT[1].ID {
		t.Errorf("system.jwt_key.rotate audit entries: %+v", page.Items)
	}
}

// TestAPIAuditVerifiesAcrossKeyRotation signs checkpoints of a tenant's log
// before and after a rotation of the audit key; the log verifies, and the
// listed public keys are those the key ids name. (A checkpoint of a key the
// system does not know fails: internal/audit's TestAuditVerifiesAcrossKeyRotation.)
func TestAPIAuditVerifiesAcrossKeyRotation(t *testing.T) {
	n := nodetest.Start(t, func(c *node.Config) {
		nodetest.NoLimits(c)
		c.Audit.CheckpointInterval = 50 * time.Millisecond
	})
	a := nodetest.NewAPI(t, n)
	ctx := context.Background()
	if _, err := a.Client.CreateTenant(ctx, "acme"); err != nil {
		t.Fatal(err)
	}
	signed := func(min uint64) {
		t.Helper()
		tu.Eventually(t, 10*time.Second, 20*time.Millisecond, func() error {
			r, err := a.Client.VerifyAudit(ctx, "acme")
			if err != nil {
				return err
			}
			if !r.OK || r.LastSignedSeq < min {
				return errors.New("not signed yet: " + r.Problem)
			}
			return nil
		})
	}
	register := func(serial string) uint64 {
		t.Helper()
		if _, err := a.Client.RegisterGateway(ctx, "acme", client.RegisterGatewayRequest{Serial: serial}); err != nil {
			t.Fatal(err)
		}
		r, err := a.Client.VerifyAudit(ctx, "acme")
		if err != nil {
			t.Fatal(err)
		}
		return r.Entries
	}
	signed(register("TSGW06ROT00000001"))
	keys, err := a.Client.RotateAuditKey(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(keys.Audit) != 2 || keys.Audit[1].State != client.KeyCurrent || keys.Audit[0].State != client.KeyRetired {
		t.Fatalf("audit keys after rotation: %+v", keys.Audit)
	}
	signed(register("TSGW06ROT00000002"))
	r, err := a.Client.VerifyAudit(ctx, "acme")
	if err != nil || !r.OK || r.Checkpoints < 2 {
		t.Fatalf("verify across the rotation: %+v, %v", r, err)
	}

	if len(keys.Audit[0].PublicKey) != ed25519.PublicKeySize || audit.KeyID(ed25519.PublicKey(keys.Audit[1].PublicKey)) != keys.Audit[1].ID {
		t.Errorf("listed audit keys: %+v", keys.Audit)
	}
}

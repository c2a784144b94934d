package agent_test

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/iotransit/iotransit/client"
	"github.com/iotransit/iotransit/internal/node"
	"github.com/iotransit/iotransit/internal/retry"
	"github.com/iotransit/iotransit/internal/testutil"
)

// TestRenewal: with short-lived certificates the agent renews at two
// thirds of their life, again and again, and stays connected: messages
// sent across the renewals are all stored.
func TestRenewal(t *testing.T) {
	c := newCloud(t, func(cfg *node.Config) { cfg.CertValidity = 6 * time.Second })
	const serial = "TSGW06AGT00000008"
	a := start(t, c.config(t, t.TempDir(), serial, c.token(t, serial)))
	nw := newNetwork(t, 1)
	nw.deliver(t, a.Agent)
	first := a.Certificate()
	if life := time.Until(first.NotAfter); life > 7*time.Second {
		t.Fatalf("the certificate lives %s; the node's validity is 6s", life)
	}
	seen := map[string]bool{first.SerialNumber.String(): true}
	counter := uint32(0)
	testutil.Eventually(t, 40*time.Second*testutil.Slowdown(), 200*time.Millisecond, func() error {
		send(t, a.MeshAddr().String(), nw.frame(t, 2, 1, 1, counter))
		counter++
		seen[a.Certificate().SerialNumber.String()] = true
		if len(seen) < 3 {
			return fmt.Errorf("%d certificates so far", len(seen))
		}
		return nil
	})
	if !time.Now().After(first.NotAfter) {
		t.Fatalf("the first certificate is still valid")
	}
	// The session made with an expired certificate may end; the next one
	// presents the new certificate. Every message gets through.
	waitStored(t, c, "TSGW06AGT00000008", int(counter))
	if st := a.Status(); st.Renewal != "" {
		t.Errorf("status reports a renewal failure: %q", st.Renewal)
	}
}

// TestRenewalFailure: a renewal that fails (the API is away) is reported
// in the status and retried; the current certificate stays in use, and
// messages still flow over MQTT.
func TestRenewalFailure(t *testing.T) {
	c := newCloud(t, nil)
	const serial = "TSGW06AGT00000009"
	dir := t.TempDir()
	cfg := c.config(t, dir, serial, c.token(t, serial))
	a := start(t, cfg)
	a.stop()

	cfg.EnrollToken = ""
	cfg.Server = fmt.Sprintf("https://127.0.0.1:%d", testutil.FreePort(t))
	cfg.RenewBackoff = retry.Backoff{Base: 20 * time.Millisecond, Max: 100 * time.Millisecond}
	b := start(t, cfg)
	nw := newNetwork(t, 1)
	nw.deliver(t, b.Agent)
	before := b.Certificate()
	if err := b.Renew(context.Background()); err == nil {
		t.Fatal("a renewal without the API succeeded")
	}
	if st := b.Status(); st.Renewal == "" {
		t.Error("the status does not report the failed renewal")
	}
	if b.Certificate() != before {
		t.Error("the certificate changed after a failed renewal")
	}
	send(t, b.MeshAddr().String(), nw.frame(t, 2, 1, 1, 0))
	waitStored(t, c, serial, 1)

	// The API back: the next renewal succeeds and clears the report.
	b.stop()
	cfg.Server = "https://" + c.n.APIAddr()
	r := start(t, cfg)
	if err := r.Renew(context.Background()); err != nil {
		t.Fatalf("renewal: %v", err)
	}
	if r.Certificate().SerialNumber.Cmp(before.SerialNumber) == 0 {
		t.Error("the certificate did not change")
	}
	if st := r.Status(); st.Renewal != "" {
		t.Errorf("status still reports %q", st.Renewal)
	}
	send(t, r.MeshAddr().String(), nw.frame(t, 2, 1, 1, 1))
	waitStored(t, c, serial, 2)
}

// TestAPIClient: the agent's API client presents the gateway's current
// certificate (after a renewal too), so the gateway-only routes know it;
// a client without it is refused.
func TestAPIClient(t *testing.T) {
	c := newCloud(t, nil)
	const serial = "TSGW06AGT00000013"
	a := start(t, c.config(t, t.TempDir(), serial, c.token(t, serial)))
	api, err := a.APIClient()
	if err != nil {
		t.Fatal(err)
	}
	defer api.Close()
	plain, err := client.New(client.Config{Server: "https://" + c.n.APIAddr(), CAPEM: c.n.ServerCAPEM()})
	if err != nil {
		t.Fatal(err)
	}
	defer plain.Close()
	_, anonErr := plain.GatewayTUF(context.Background(), "timestamp.json", 1<<20)
	if anonErr == nil {
		t.Fatal("a client without a certificate read the gateway route")
	}
	for _, when := range []string{"enrolled", "renewed"} {
		if when == "renewed" {
			if err := a.Renew(context.Background()); err != nil {
				t.Fatal(err)
			}
		}
		// The tenant has no firmware repository: the route answers for
		// the gateway, which it knows, not as for a stranger.
		_, err := api.GatewayTUF(context.Background(), "timestamp.json", 1<<20)
		t.Logf("%s: %v (without a certificate: %v)", when, err, anonErr)
		if err == nil || !strings.Contains(err.Error(), "firmware.not_found") {
			t.Errorf("%s: %v, want firmware.not_found (the gateway known, the tenant without a repository)", when, err)
		}
	}
}

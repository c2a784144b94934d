package ingest_test

import (
	"crypto/tls"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/iotransit/iotransit/client"
	"github.com/iotransit/iotransit/internal/gateway"
	"github.com/iotransit/iotransit/internal/node"
	tu "github.com/iotransit/iotransit/internal/testutil"
	"github.com/iotransit/iotransit/internal/testutil/nodetest"
)

func ptr[T any](v T) *T { return &v }

// Gateways of the second tenant of the policy tests.
const (
	gwC = "TSGW06BET00000003"
	gwD = "TSGW06BET00000004"
)

// policyPair starts two nodes on one backbone with gateways of two
// tenants, acme (gwA, gwB) and beta (gwC, gwD), each reachable on the
// second node.
func policyPair(t *testing.T) (n1, n2 *node.Node, certs map[string]*tls.Certificate) {
	t.Helper()
	n1, n2 = nodetest.StartPair(t, nil)
	certs = map[string]*tls.Certificate{}
	for _, g := range []struct{ tenant, serial string }{{tenant, gwA}, {tenant, gwB}, {"beta", gwC}, {"beta", gwD}} {
		certs[g.serial] = nodetest.Gateway(t, n1, g.tenant, g.serial)
	}
	tu.Eventually(t, 5*time.Second, 10*time.Millisecond, func() error {
		for _, s := range []string{gwA, gwB} {
			if _, ok := n2.Registry().Gateway(tenant, s); !ok {
				return fmt.Errorf("node 2 does not know %s", s)
			}
		}
		for _, s := range []string{gwC, gwD} {
			if _, ok := n2.Registry().Gateway("beta", s); !ok {
				return fmt.Errorf("node 2 does not know %s", s)
			}
		}
		return nil
	})
	return n1, n2, certs
}

// dial connects the gateway serial to n (closed at cleanup).
func dial(t *testing.T, n *node.Node, certs map[string]*tls.Certificate, serial string) *gateway.Uplink {
	t.Helper()
	up, err := nodetest.Dial(t, n, certs[serial], serial, nil)
	if err != nil {
		t.Fatalf("%s: %v", serial, err)
	}
	return up
}

// setPolicy sets a tenant's policy through the first node's API and waits
// until the second node applies it, which must take under a second.
func setPolicy(t *testing.T, n1, n2 *node.Node, id string, p client.Policy) {
	t.Helper()
	start := time.Now()
	want, err := nodetest.NewAPI(t, n1).Client.SetPolicy(t.Context(), id, p)
	if err != nil {
		t.Fatalf("set policy: %v", err)
	}
	tu.Eventually(t, time.Second, 5*time.Millisecond, func() error {
		got, _ := n2.Registry().Tenant(id)
		if policyString(got.Policy) != policyString(want.Policy) {
			return fmt.Errorf("node 2 applies %s, want %s", policyString(got.Policy), policyString(want.Policy))
		}
		return nil
	})
	t.Logf("policy of %s reached the second node in %s", id, time.Since(start))
}

func policyString(p client.Policy) string {
	var b strings.Builder
	fmt.Fprintf(&b, "%v", p.StrictValidation != nil && *p.StrictValidation)
	if q := p.Quotas; q != nil {
		if q.IngestMsgsPerSecond != nil {
			fmt.Fprintf(&b, " rate %g", *q.IngestMsgsPerSecond)
		}
		if q.IngestBurst != nil {
			fmt.Fprintf(&b, " burst %d", *q.IngestBurst)
		}
		if q.ConcurrentConnections != nil {
			fmt.Fprintf(&b, " conns %d", *q.ConcurrentConnections)
		}
		if q.StoredBytes != nil {
			fmt.Fprintf(&b, " stored %d", *q.StoredBytes)
		}
	}
	return b.String()
}

// A tenant's message rate, set on one node, applies on the other within a
// second: its gateway gets PUBACK 0x96 just past its burst and was
// accepted at it; the other tenant's gateway is unaffected.
func TestIngestPolicyRateOnEveryNode(t *testing.T) {
	n1, n2, certs := policyPair(t)
	setPolicy(t, n1, n2, tenant, client.Policy{Quotas: &client.Quotas{IngestMsgsPerSecond: ptr(0.01), IngestBurst: ptr(3)}})
	a, c := dial(t, n2, certs, gwA), dial(t, n2, certs, gwC)
	for i := range 4 {
		res, err := a.Publish(ctx(t), []byte(tu.Thingsee(sensor, 1700000000+int64(i), 20)), 1)
		if err != nil {
			t.Fatal(err)
		}
		want := byte(0)
		if i == 3 {
			want = 0x96
		}
		if res.ReasonCode != want {
			t.Fatalf("acme publish %d: 0x%02x %q, want 0x%02x", i, res.ReasonCode, res.Reason, want)
		}
		if want == 0x96 && !strings.Contains(res.Reason, "0.01") {
			t.Errorf("reason %q does not name the tenant's rate", res.Reason)
		}
	}
	for i := range 10 {
		res, err := c.Publish(ctx(t), []byte(tu.Thingsee(sensor, 1700000000+int64(i), 20)), 1)
		if err != nil || res.ReasonCode != 0 {
			t.Fatalf("beta publish %d while acme is at its rate: %v 0x%02x %q", i, err, res.ReasonCode, res.Reason)
		}
	}
	// Lifting the policy gives acme the node's rate again (its bucket
	// refills at that rate from where it was: within milliseconds).
	setPolicy(t, n1, n2, tenant, client.Policy{})
	tu.Eventually(t, time.Second, 10*time.Millisecond, func() error {
		res, err := a.Publish(ctx(t), []byte(tu.Thingsee(sensor, 1700000100, 20)), 1)
		if err != nil || res.ReasonCode != 0 {
			return fmt.Errorf("acme after the policy was lifted: %v 0x%02x %q", err, res.ReasonCode, res.Reason)
		}
		return nil
	})
}

// A tenant's connection count: the connection at it is taken, the one past
// it gets CONNACK 0x97; the other tenant connects as many as it likes.
func TestIngestPolicyConnectionsOnEveryNode(t *testing.T) {
	n1, n2, certs := policyPair(t)
	setPolicy(t, n1, n2, tenant, client.Policy{Quotas: &client.Quotas{ConcurrentConnections: ptr(1)}})
	dial(t, n2, certs, gwA) // the connection at the quota
	_, err := nodetest.Dial(t, n2, certs[gwB], gwB, nil)
	var ce *gateway.ConnectError
	if !errors.As(err, &ce) || ce.ReasonCode != 0x97 {
		t.Fatalf("the connection past the quota: %v, want CONNACK 0x97", err)
	}
	for _, s := range []string{gwC, gwD} {
		dial(t, n2, certs, s) // beta's while acme is at its quota
	}
}

// strictValidation set on one node refuses an unknown tsmId on the other
// (all rejected: PUBACK 0x99); the other tenant still accepts it.
func TestIngestPolicyStrictValidationOnEveryNode(t *testing.T) {
	n1, n2, certs := policyPair(t)
	unknown := []byte(`{"tsmId":99100,"tsmEv":10,"tsmTs":1700000000,"tsmTuid":"` + sensor + `"}`)
	a, c := dial(t, n2, certs, gwA), dial(t, n2, certs, gwC)
	if res, err := a.Publish(ctx(t), unknown, 1); err != nil || res.ReasonCode != 0 {
		t.Fatalf("unknown tsmId before the policy: %v 0x%02x", err, res.ReasonCode)
	}
	setPolicy(t, n1, n2, tenant, client.Policy{StrictValidation: ptr(true)})
	if res, err := a.Publish(ctx(t), unknown, 1); err != nil || res.ReasonCode != 0x99 {
		t.Fatalf("unknown tsmId at a strict tenant: %v 0x%02x %q, want 0x99", err, res.ReasonCode, res.Reason)
	}
	if res, err := c.Publish(ctx(t), unknown, 1); err != nil || res.ReasonCode != 0 {
		t.Fatalf("unknown tsmId at the other tenant: %v 0x%02x", err, res.ReasonCode)
	}
}

// A tenant's message rate holds for uploads larger than its burst: such an
// upload is taken when the bucket is full, and the messages past the burst
// are owed, so that the gateway's next uploads wait for them (it used to
// pay only the burst for any upload: a burst of 2 let 40 messages through
// each time the bucket refilled).
func TestIngestPolicyRateUploadsLargerThanBurst(t *testing.T) {
	n1, n2, certs := policyPair(t)
	setPolicy(t, n1, n2, tenant, client.Policy{Quotas: &client.Quotas{IngestMsgsPerSecond: ptr(1.0), IngestBurst: ptr(2)}})
	a := dial(t, n2, certs, gwA)
	upload := func(from int64) []byte {
		msgs := make([]string, 40)
		for i := range msgs {
			msgs[i] = tu.Thingsee(sensor, from+int64(i), 20)
		}
		return []byte("[" + strings.Join(msgs, ",") + "]")
	}
	res, err := a.Publish(ctx(t), upload(1700000000), 1)
	if err != nil || res.ReasonCode != 0 {
		t.Fatalf("first upload of 40 on a full bucket: %v 0x%02x %q", err, res.ReasonCode, res.Reason)
	}
	first := time.Now()
	// 40 messages at 1/s are paid for 38 s later; the bucket of 2 refills
	// in 2 s, when the old rule took another 40.
	for i := int64(1); time.Since(first) < 3500*time.Millisecond; i++ {
		res, err := a.Publish(ctx(t), upload(1700000000+100*i), 1)
		if err != nil {
			t.Fatal(err)
		}
		if res.ReasonCode == 0 && time.Since(first) < 30*time.Second {
			t.Fatalf("upload %d of 40 messages taken %s after the first, at 1 message/s", i, time.Since(first).Round(time.Millisecond))
		}
		time.Sleep(250 * time.Millisecond) // pacing the attempts, not a wait for a result
	}
}

package ingest_test

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/iotransit/iotransit/client"
	"github.com/iotransit/iotransit/internal/backbone/names"
	"github.com/iotransit/iotransit/internal/node"
	tu "github.com/iotransit/iotransit/internal/testutil"
	"github.com/iotransit/iotransit/internal/testutil/nodetest"
)

// A tenant's stored-bytes quota, set on one node, applies on the other
// within a second: once its message stream is full its gateway gets
// PUBACK 0x97 (counted, and shown with the policy as used against the
// limit), every upload acknowledged before is stored, and the other
// tenant's gateway is unaffected; lifting the quota lets the gateway in
// again.
func TestIngestPolicyStoredBytesOnEveryNode(t *testing.T) {
	n1, n2, certs := policyPair(t)
	quota := int64(1 << 20)
	loose := client.Quotas{IngestMsgsPerSecond: ptr(1e6), IngestBurst: ptr(1000000)}
	withQuota := loose
	withQuota.StoredBytes = &quota
	setPolicy(t, n1, n2, tenant, client.Policy{Quotas: &withQuota})
	a, c := dial(t, n2, certs, gwA), dial(t, n2, certs, gwC)
	ts := int64(1700000000)
	upload := func() []byte {
		msgs := make([]string, 100)
		for i := range msgs {
			ts++
			msgs[i] = tu.Thingsee(sensor, ts, 20)
		}
		return []byte("[" + strings.Join(msgs, ",") + "]")
	}
	acked := 0
	for i := 0; ; i++ {
		res, err := a.Publish(ctx(t), upload(), 1)
		if err != nil {
			t.Fatal(err)
		}
		if res.ReasonCode == 0x97 {
			if !strings.Contains(res.Reason, "stored-bytes quota") {
				t.Errorf("reason %q does not name the quota", res.Reason)
			}
			break
		}
		if res.ReasonCode != 0 || i > 200 {
			t.Fatalf("upload %d: 0x%02x %q", i, res.ReasonCode, res.Reason)
		}
		acked += 100
	}
	if res, err := c.Publish(ctx(t), upload(), 1); err != nil || res.ReasonCode != 0 {
		t.Fatalf("beta at acme's full quota: %+v %v", res, err)
	}
	st, err := n2.JetStream().Stream(ctx(t), names.MessageStream(tenant))
	if err != nil {
		t.Fatal(err)
	}
	info, err := st.Info(ctx(t))
	if err != nil {
		t.Fatal(err)
	}
	// The refused upload may have stored some of its messages (a resend
	// stores them once): never fewer than were acknowledged.
	if got := int(info.State.Msgs); got < acked || got >= acked+100 || info.State.Bytes > uint64(quota) {
		t.Fatalf("the stream holds %d messages (%d bytes), %d acknowledged", got, info.State.Bytes, acked)
	}
	if n := tu.Counter(t, n2.Metrics(), "iotransit_ingest_quota_refusals_total", map[string]string{"tenant": tenant, "quota": "stored_bytes"}); n != 1 {
		t.Errorf("refusals counted: %g, want 1", n)
	}
	v, err := nodetest.NewAPI(t, n2).Client.GetPolicy(ctx(t), tenant)
	if err != nil {
		t.Fatal(err)
	}
	if u := v.Usage; u == nil || u.StoredBytes.Limit != quota || u.StoredBytes.Used != int64(info.State.Bytes) || u.StoredBytes.Refused != 1 {
		t.Fatalf("usage %+v, want %d of %d used, 1 refused", v.Usage, info.State.Bytes, quota)
	}
	setPolicy(t, n1, n2, tenant, client.Policy{Quotas: &loose})
	tu.Eventually(t, time.Second, 10*time.Millisecond, func() error {
		res, err := a.Publish(ctx(t), upload(), 1)
		if err != nil {
			return err
		}
		if res.ReasonCode != 0 {
			return fmt.Errorf("after lifting the quota: 0x%02x %q", res.ReasonCode, res.Reason)
		}
		return nil
	})
}

// Under the node's default stored-bytes quota (--tenant-stored-bytes), an
// MQTT 3.1.1 gateway, which has no reason code, gets no acknowledgement
// once its tenant's stream is full and its connection is closed: it keeps
// the upload to send again; every upload acknowledged before is stored.
func TestIngestStoredBytesQuotaMQTT311(t *testing.T) {
	n := nodetest.Start(t, func(c *node.Config) { c.Store.StoredBytes = 1 << 20 })
	lost := make(chan error, 1)
	c, err := dial311(t, n, nodetest.Gateway(t, n, tenant, gwA), gwA, lost)
	if err != nil {
		t.Fatal(err)
	}
	ts, acked := int64(1700000000), 0
	for i := 0; ; i++ {
		msgs := make([]string, 100)
		for j := range msgs {
			ts++
			msgs[j] = tu.Thingsee(sensor, ts, 20)
		}
		ok, _ := publish311(c, "v1/gw/"+gwA+"/up", 1, "["+strings.Join(msgs, ",")+"]", 5*time.Second)
		if !ok {
			break
		}
		if i > 200 {
			t.Fatal("still acknowledged past the quota")
		}
		acked += 100
	}
	select {
	case <-lost:
	case <-time.After(5 * time.Second):
		t.Error("connection not closed at the quota")
	}
	st, err := n.JetStream().Stream(ctx(t), names.MessageStream(tenant))
	if err != nil {
		t.Fatal(err)
	}
	info, err := st.Info(ctx(t))
	if err != nil {
		t.Fatal(err)
	}
	if got := int(info.State.Msgs); got < acked || acked == 0 {
		t.Fatalf("the stream holds %d messages, %d acknowledged", got, acked)
	}
}

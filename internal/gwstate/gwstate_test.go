package gwstate_test

import (
	"context"
	"crypto/ecdh"
	"encoding/json"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/iotransit/iotransit/internal/backbone/names"
	"github.com/iotransit/iotransit/internal/gwproto"
	"github.com/iotransit/iotransit/internal/gwstate"
	tu "github.com/iotransit/iotransit/internal/testutil"
	"github.com/iotransit/iotransit/internal/testutil/nodetest"
)

const (
	tenant = "acme"
	gwA    = "TSGW06ACM00000001"
)

func ctx(t *testing.T) context.Context {
	c, cancel := context.WithTimeout(context.Background(), 20*time.Second*tu.Slowdown())
	t.Cleanup(cancel)
	return c
}

// TestStateWritesAreBounded sends many messages and checks that the
// gateway's state bucket got a write for the connect and the status, not
// one per message, while the API still shows when it was last seen.
func TestStateWritesAreBounded(t *testing.T) {
	n := nodetest.Start(t, nil)
	api := nodetest.NewAPI(t, n).Client
	up, err := nodetest.Dial(t, n, nodetest.Gateway(t, n, tenant, gwA), gwA, nil)
	if err != nil {
		t.Fatal(err)
	}
	bucket := names.GatewayStateBucket(tenant)
	writes := func() uint64 {
		s, err := n.JetStream().Stream(ctx(t), "KV_"+bucket)
		if err != nil {
			return 0 // not made yet
		}
		info, err := s.Info(ctx(t))
		if err != nil {
			t.Fatal(err)
		}
		return info.State.LastSeq
	}
	tu.Eventually(t, 5*time.Second, 20*time.Millisecond, func() error {
		if w := writes(); w != 1 {
			return fmt.Errorf("%d writes after the connect, want 1", w)
		}
		return nil
	})
	var last time.Time
	for i := range 200 {
		if _, err := up.Publish(ctx(t), []byte(tu.Thingsee("TSEN01ABC12345678", 1700000000+int64(i), 21)), 1); err != nil {
			t.Fatal(err)
		}
		if i == 199 {
			last = time.Now()
		}
	}
	g, err := api.GetGateway(ctx(t), tenant, gwA)
	if err != nil || g.LastSeen == nil || g.LastSeen.Before(last.Add(-time.Second)) {
		t.Fatalf("lastSeen %v after the last message at %v (%v)", g.LastSeen, last, err)
	}
	if w := writes(); w != 1 {
		t.Errorf("%d writes after 200 messages, want still 1 (at most one per %v)", w, 30*time.Second)
	}
	// A status is written within its interval, without its key-delivery key.
	k, err := ecdh.X25519().GenerateKey(nil)
	if err != nil {
		t.Fatal(err)
	}
	st, _ := json.Marshal(gwproto.Status{AgentVersion: "v9", KeyDeliveryKey: k.PublicKey().Bytes()})
	if res, err := up.PublishTo(ctx(t), gwproto.StatusTopic(gwA), st, 1); err != nil || res.ReasonCode != 0 {
		t.Fatalf("status: %v %+v", err, res)
	}
	kv, err := n.JetStream().KeyValue(ctx(t), bucket)
	if err != nil {
		t.Fatal(err)
	}
	tu.Eventually(t, 5*time.Second, 50*time.Millisecond, func() error {
		e, err := kv.Get(ctx(t), gwA)
		if err != nil {
			return err
		}
		var s gwstate.State
		if err := json.Unmarshal(e.Value(), &s); err != nil {
			return err
		}
		if s.Status == nil || s.Status.AgentVersion != "v9" {
			return errors.New("status not written yet")
		}
		if s.Status.KeyDeliveryKey != nil {
			t.Error("the key-delivery key was stored")
		}
		return nil
	})
	if w := writes(); w != 2 {
		t.Errorf("%d writes after the status, want 2", w)
	}
}

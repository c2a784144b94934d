package forward_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/iotransit/iotransit/internal/backbone/names"
	"github.com/iotransit/iotransit/internal/forward"
	tu "github.com/iotransit/iotransit/internal/testutil"
	"github.com/iotransit/iotransit/internal/testutil/nodetest"
)

// TestForwardDeleteRemovesWhatDeliveryMade: the registry's Delete of an
// integration the engine delivers leaves nothing of it behind when it
// returns: not the engine's lease, consumer, dead-letter stream or
// delivery state.
func TestForwardDeleteRemovesWhatDeliveryMade(t *testing.T) {
	tn, serial, device := "acme", "TSGW06ACM00000001", "TSEN01ABC00000001"
	n := nodetest.Start(t, nil)
	cert := nodetest.Gateway(t, n, tn, serial)
	rcv := tu.NewReceiver(t)
	reg, js, ctx := n.Forward(), n.JetStream(), context.Background()
	in, _, err := reg.Create(ctx, tn, forward.Integration{Name: "short-lived", Type: forward.TypeWebhook,
		Webhook: &forward.WebhookConfig{URL: rcv.URL, CAPEM: rcv.CAPEM}})
	if err != nil {
		t.Fatal(err)
	}
	up, err := nodetest.Dial(t, n, cert, serial, nil)
	if err != nil {
		t.Fatal(err)
	}
	if res, err := up.Publish(ctx, []byte(tu.Thingsee(device, time.Now().Unix(), 21.5)), 1); err != nil || res.ReasonCode != 0 {
		t.Fatalf("publish: %v %+v", err, res)
	}
	leased := func() (bool, error) {
		leases, err := js.KeyValue(ctx, names.LeasesBucket) // made by the first worker
		if err != nil {
			return false, err
		}
		keys, err := leases.Keys(ctx)
		if errors.Is(err, jetstream.ErrNoKeysFound) {
			return false, nil
		}
		for _, k := range keys {
			if strings.Contains(k, in.ID) {
				return true, nil
			}
		}
		return false, err
	}
	tu.Eventually(t, 10*time.Second, 20*time.Millisecond, func() error {
		v, err := reg.Get(ctx, tn, in.ID)
		if err != nil {
			return err
		}
		if v.State.Delivered != 1 {
			return fmt.Errorf("delivered %d of 1", v.State.Delivered)
		}
		if ok, err := leased(); !ok {
			return fmt.Errorf("no lease (%v)", err)
		}
		return nil
	})

	if err := reg.Delete(ctx, tn, in.ID); err != nil {
		t.Fatal(err)
	}
	if ok, err := leased(); ok || err != nil {
		t.Errorf("lease held after Delete returned (err %v)", err)
	}
	if st, err := js.Stream(ctx, names.MessageStream(tn)); err != nil {
		t.Error(err)
	} else if _, err := st.Consumer(ctx, names.IntegrationConsumer(in.ID)); !errors.Is(err, jetstream.ErrConsumerNotFound) {
		t.Errorf("consumer after Delete: %v", err)
	}
	if _, err := js.Stream(ctx, names.DeadLetterStream(tn, in.ID)); !errors.Is(err, jetstream.ErrStreamNotFound) {
		t.Errorf("dead-letter stream after Delete: %v", err)
	}
	if skv, err := js.KeyValue(ctx, forward.StateBucket(tn)); err != nil {
		t.Error(err)
	} else if _, err := skv.Get(ctx, in.ID); !errors.Is(err, jetstream.ErrKeyNotFound) {
		t.Errorf("delivery state after Delete: %v", err)
	}
	if _, err := reg.Get(ctx, tn, in.ID); !forward.ErrIntegrationNotFound.Is(err) {
		t.Errorf("Get after Delete: %v", err)
	}
}

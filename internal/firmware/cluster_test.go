package firmware_test

import (
	"encoding/json"
	"errors"
	"testing"
	"time"

	"github.com/iotransit/iotransit/client"
	"github.com/iotransit/iotransit/internal/firmware/firmwaretest"
	"github.com/iotransit/iotransit/internal/gwproto"
	tu "github.com/iotransit/iotransit/internal/testutil"
	"github.com/iotransit/iotransit/internal/testutil/nodetest"
)

// TestFirmwareNoticeReachesAGatewayOnAnotherNode runs two nodes on one
// JetStream: a rollout made through one node's API reaches, retained, a
// gateway that connects to the other node afterwards (each node publishes
// the notices it sees in KV on its own broker).
func TestFirmwareNoticeReachesAGatewayOnAnotherNode(t *testing.T) {
	n1, n2 := nodetest.StartPair(t, nodetest.NoLimits)
	repo := firmwaretest.Init(t, n1, "acme")
	if err := repo.Publish([]byte("cluster image"), "TSGW06", "1.0.0"); err != nil {
		t.Fatal(err)
	}
	const serial = "TSGW06ACME0000009"
	tu.Eventually(t, 10*time.Second, 50*time.Millisecond, func() error {
		if _, ok := n2.Registry().Tenant("acme"); !ok {
			return errors.New("node 2 does not know acme yet")
		}
		return nil
	})
	cert := nodetest.Gateway(t, n2, "acme", serial)
	tu.Eventually(t, 10*time.Second, 50*time.Millisecond, func() error {
		if _, ok := n1.Registry().Gateway("acme", serial); !ok {
			return errors.New("node 1 does not know the gateway yet")
		}
		return nil
	})
	ro, err := repo.Client.CreateRollout(ctx(t), "acme", client.CreateRolloutRequest{Target: "TSGW06", Version: "1.0.0", Serials: []string{serial}})
	if err != nil {
		t.Fatal(err)
	}
	want := gwproto.FirmwareNotice{RolloutID: ro.ID, Target: "TSGW06", Version: "1.0.0"}
	// The gateway connects to node 2 after the rollout; it may be there
	// before node 2's watch published the notice: reconnect until it is.
	tu.Eventually(t, 15*time.Second, 100*time.Millisecond, func() error {
		u, err := nodetest.Dial(t, n2, cert, serial, nil)
		if err != nil {
			return err
		}
		defer u.Close()
		got, err := notices(t, u, serial)
		if err != nil {
			return err
		}
		select {
		case b := <-got:
			var n gwproto.FirmwareNotice
			if err := json.Unmarshal(b, &n); err != nil || n != want {
				t.Fatalf("notice %s, want %+v", b, want)
			}
			return nil
		case <-time.After(time.Second):
			return errors.New("no retained notice on node 2")
		}
	})
}

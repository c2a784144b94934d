package firmware_test

import (
	"context"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/paho"

	"github.com/iotransit/iotransit/client"
	"github.com/iotransit/iotransit/internal/firmware/firmwaretest"
	"github.com/iotransit/iotransit/internal/gateway"
	"github.com/iotransit/iotransit/internal/gwproto"
	"github.com/iotransit/iotransit/internal/testutil/nodetest"
)

// TestFirmwareNoticeStaysWithItsTenant: a rollout names a gateway that
// its tenant then deletes before it ever connected; the serial becomes
// another tenant's gateway. That gateway must not get the first tenant's
// notice (its rollout id, model and version) on its firmware topic, nor
// act on it.
func TestFirmwareNoticeStaysWithItsTenant(t *testing.T) {
	n := nodetest.Start(t, nodetest.NoLimits)
	repo := firmwaretest.Init(t, n, "acme")
	if err := repo.Publish([]byte("acme image"), "TSGW06", "1.0.0"); err != nil {
		t.Fatal(err)
	}
	const serial = "TSGW06MOVE0000001"
	nodetest.Gateway(t, n, "acme", serial)
	if _, err := repo.Client.CreateRollout(ctx(t), "acme", client.CreateRolloutRequest{Target: "TSGW06", Version: "1.0.0", Serials: []string{serial}}); err != nil {
		t.Fatal(err)
	}
	if err := n.Registry().DeleteGateway(context.Background(), "acme", serial); err != nil {
		t.Fatal(err)
	}
	cert := nodetest.Gateway(t, n, "globex", serial)
	u, err := nodetest.Dial(t, n, cert, serial, nil)
	if err != nil {
		t.Fatal(err)
	}
	got, err := notices(t, u, serial)
	if err != nil {
		t.Fatal(err)
	}
	select {
	case b := <-got:
		t.Fatalf("globex's gateway got acme's firmware notice %s", b)
	case <-time.After(2 * time.Second):
	}
}

// notices subscribes u to the firmware topic of serial and returns the
// first notice it gets.
func notices(t *testing.T, u *gateway.Uplink, serial string) (<-chan []byte, error) {
	got := make(chan []byte, 1)
	u.Client().AddOnPublishReceived(func(pr paho.PublishReceived) (bool, error) {
		if pr.Packet.Topic == gwproto.FirmwareTopic(serial) {
			select {
			case got <- pr.Packet.Payload:
			default:
			}
		}
		return true, nil
	})
	_, err := u.Client().Subscribe(ctx(t), &paho.Subscribe{Subscriptions: []paho.SubscribeOptions{{Topic: gwproto.FirmwareTopic(serial), QoS: 1}}})
	return got, err
}

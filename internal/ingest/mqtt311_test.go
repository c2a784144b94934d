package ingest_test

import (
	"crypto/tls"
	"strings"
	"testing"
	"time"

	mqtt311 "github.com/eclipse/paho.mqtt.golang"

	"github.com/iotransit/iotransit/internal/backbone/names"
	"github.com/iotransit/iotransit/internal/node"
	tu "github.com/iotransit/iotransit/internal/testutil"
	"github.com/iotransit/iotransit/internal/testutil/nodetest"
)

// dial311 connects an MQTT 3.1.1 client (eclipse/paho.mqtt.golang), which
// has no reason codes: refusals are closed connections or withheld acks.
func dial311(t *testing.T, n *node.Node, cert *tls.Certificate, clientID string, lost chan<- error) (mqtt311.Client, error) {
	t.Helper()
	o := mqtt311.NewClientOptions().
		AddBroker("tls://" + n.MQTTAddr()).
		SetClientID(clientID).
		SetTLSConfig(nodetest.ClientTLS(t, n, cert)).
		SetProtocolVersion(4).
		SetCleanSession(true).
		SetAutoReconnect(false).
		SetConnectTimeout(5 * time.Second)
	if lost != nil {
		o.SetConnectionLostHandler(func(_ mqtt311.Client, err error) { lost <- err })
	}
	c := mqtt311.NewClient(o)
	tok := c.Connect()
	if !tok.WaitTimeout(10 * time.Second) {
		return nil, tok.Error()
	}
	if err := tok.Error(); err != nil {
		return nil, err
	}
	t.Cleanup(func() { c.Disconnect(100) })
	return c, nil
}

func publish311(c mqtt311.Client, topic string, qos byte, payload string, wait time.Duration) (acked bool, err error) {
	tok := c.Publish(topic, qos, false, payload)
	if !tok.WaitTimeout(wait) {
		return false, nil
	}
	return tok.Error() == nil, tok.Error()
}

func TestIngestMQTT311(t *testing.T) {
	n := nodetest.Start(t, nil)
	cert := nodetest.Gateway(t, n, tenant, gwA)
	c, err := dial311(t, n, cert, gwA, nil)
	if err != nil {
		t.Fatal(err)
	}
	up := "v1/gw/" + gwA + "/up"
	if acked, err := publish311(c, up, 1, tu.Thingsee(sensor, 1700000000, 20), 5*time.Second); !acked {
		t.Fatalf("valid publish not acked: %v", err)
	}
	// Nothing valid: acknowledged once the rejection is stored (resending
	// cannot fix it); MQTT 3.1.1 has no reason code to say more.
	if acked, err := publish311(c, up, 1, tu.Thingsee(sensor, 1700000000, 200), 5*time.Second); !acked {
		t.Fatalf("invalid publish not acked: %v", err)
	}
	api := nodetest.NewAPI(t, n)
	if msgs := api.Messages(tenant, 10); len(msgs) != 1 {
		t.Errorf("stored %d, want 1", len(msgs))
	}
	if rej := api.Rejected(tenant, 10); len(rej) != 1 || rej[0].Code != "thingsee.field_range" {
		t.Errorf("rejected = %+v", rej)
	}

	t.Run("client id of another gateway", func(t *testing.T) {
		_, err := dial311(t, n, nodetest.Gateway(t, n, tenant, gwB), gwA, nil)
		if err == nil || !strings.Contains(strings.ToLower(err.Error()), "identifier") {
			t.Fatalf("connect = %v, want identifier rejected (0x02)", err)
		}
	})
	t.Run("publish to another gateway's topic closes the connection", func(t *testing.T) {
		lost := make(chan error, 1)
		c, err := dial311(t, n, cert, gwA, lost)
		if err != nil {
			t.Fatal(err)
		}
		if acked, _ := publish311(c, "v1/gw/"+gwB+"/up", 1, tu.Thingsee(sensor, 1700000100, 20), 2*time.Second); acked {
			t.Error("publish to a foreign topic was acknowledged")
		}
		select {
		case <-lost:
		case <-time.After(5 * time.Second):
			t.Error("connection not closed")
		}
	})
	t.Run("QoS 2 is refused", func(t *testing.T) {
		lost := make(chan error, 1)
		c, err := dial311(t, n, cert, gwA, lost)
		if err != nil {
			t.Fatal(err)
		}
		if acked, _ := publish311(c, up, 2, tu.Thingsee(sensor, 1700000200, 20), 2*time.Second); acked {
			t.Error("QoS 2 publish completed")
		}
		select {
		case <-lost:
		case <-time.After(5 * time.Second):
			t.Error("connection not closed")
		}
		if msgs := api.Messages(tenant, 10); len(msgs) != 1 {
			t.Errorf("QoS 2 message stored: %d messages", len(msgs))
		}
	})
	t.Run("unpersistable publish is not acked and the connection closes", func(t *testing.T) {
		lost := make(chan error, 1)
		c, err := dial311(t, n, cert, gwA, lost)
		if err != nil {
			t.Fatal(err)
		}
		if err := n.JetStream().DeleteStream(ctx(t), names.MessageStream(tenant)); err != nil {
			t.Fatal(err)
		}
		if acked, _ := publish311(c, up, 1, tu.Thingsee(sensor, 1700000300, 20), 5*time.Second); acked {
			t.Error("acknowledged a publish that was not stored")
		}
		select {
		case <-lost:
		case <-time.After(5 * time.Second):
			t.Error("connection not closed")
		}
	})
}

package ingest_test

import (
	"context"
	"crypto/tls"
	"fmt"
	"io"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/paho"

	"github.com/iotransit/iotransit/internal/ingest"
	tu "github.com/iotransit/iotransit/internal/testutil"
	"github.com/iotransit/iotransit/internal/testutil/nodetest"
)

// TestIngestRefusesTopicAliases: the server announces no topic aliases
// (Topic Alias Maximum absent in CONNACK, which means 0), so a publish that
// uses one is a protocol error: DISCONNECT 0x94 (Topic Alias invalid,
// [MQTT-3.2.2-17] [MQTT-3.3.2-9]), not a misleading 0x87 from an ACL that
// saw no topic, and nothing is stored.
func TestIngestRefusesTopicAliases(t *testing.T) {
	n := nodetest.Start(t, nil)
	cert := nodetest.Gateway(t, n, tenant, gwA)
	tests := []struct {
		name  string
		topic string // the alias's first use names the topic; later ones do not
	}{
		{name: "alias with its topic", topic: ingest.UpTopic(gwA)},
		{name: "alias alone", topic: ""},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			conn, err := tls.Dial("tcp", n.MQTTAddr(), nodetest.ClientTLS(t, n, cert))
			if err != nil {
				t.Fatal(err)
			}
			defer conn.Close()
			disconnected := make(chan byte, 1)
			c := paho.NewClient(paho.ClientConfig{Conn: conn, OnServerDisconnect: func(d *paho.Disconnect) { disconnected <- d.ReasonCode }})
			ca, err := c.Connect(ctx(t), &paho.Connect{ClientID: gwA, KeepAlive: 30, CleanStart: true})
			if err != nil {
				t.Fatal(err)
			}
			if ca.Properties != nil && ca.Properties.TopicAliasMaximum != nil && *ca.Properties.TopicAliasMaximum != 0 {
				t.Fatalf("CONNACK announces %d topic aliases", *ca.Properties.TopicAliasMaximum)
			}
			alias := uint16(1)
			pctx, cancel := context.WithTimeout(ctx(t), 5*time.Second*tu.Slowdown())
			defer cancel()
			answered := make(chan string, 1)
			go func() { // paho waits for the PUBACK until its context ends
				res, err := c.Publish(pctx, &paho.Publish{Topic: tc.topic, QoS: 1, Payload: []byte(tu.Thingsee(sensor, 1700000000, 20)),
					Properties: &paho.PublishProperties{TopicAlias: &alias}})
				if res != nil {
					answered <- fmt.Sprintf("PUBACK 0x%02x (%v)", res.ReasonCode, err)
					return
				}
				answered <- fmt.Sprintf("no PUBACK (%v)", err)
			}()
			select {
			case code := <-disconnected:
				if code != 0x94 {
					t.Errorf("DISCONNECT 0x%02x, want 0x94 (topic alias invalid)", code)
				}
			case <-time.After(5 * time.Second * tu.Slowdown()):
				t.Fatalf("publish with a topic alias: %s, want DISCONNECT 0x94", <-answered)
			}
		})
	}
	if msgs := nodetest.NewAPI(t, n).Messages(tenant, 10); len(msgs) != 0 {
		t.Errorf("%d messages stored from publishes with a topic alias", len(msgs))
	}
}

// TestIngestGrantsTheExactDownFilter: v1/gw/{serial}/down itself (no
// wildcard, no level below) is the gateway's own, as the ACL intends.
func TestIngestGrantsTheExactDownFilter(t *testing.T) {
	n := nodetest.Start(t, nil)
	up, err := nodetest.Dial(t, n, nodetest.Gateway(t, n, tenant, gwA), gwA, nil)
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name   string
		filter string
		ok     bool
	}{
		{name: "own down", filter: "v1/gw/" + gwA + "/down", ok: true},
		{name: "another gateway's down", filter: "v1/gw/" + gwB + "/down", ok: false},
		{name: "own down, longer last level", filter: "v1/gw/" + gwA + "/downx", ok: false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			sa, err := up.Client().Subscribe(ctx(t), &paho.Subscribe{Subscriptions: []paho.SubscribeOptions{{Topic: tc.filter, QoS: 1}}})
			if sa == nil {
				t.Fatalf("subscribe %s: %v", tc.filter, err)
			}
			if granted := sa.Reasons[0] < 0x80; granted != tc.ok {
				t.Errorf("subscribe %s: reason 0x%02x, want granted=%v", tc.filter, sa.Reasons[0], tc.ok)
			}
		})
	}
}

// TestIngestMQTT311EmptyClientIDWithoutCleanSession: MQTT 3.1.1 has no
// reason code 0x80; a CONNECT with an empty client id and CleanSession 0 is
// answered with return code 0x02, identifier rejected ([MQTT-3.1.3-8]).
func TestIngestMQTT311EmptyClientIDWithoutCleanSession(t *testing.T) {
	n := nodetest.Start(t, nil)
	conn, err := tls.Dial("tcp", n.MQTTAddr(), nodetest.ClientTLS(t, n, nodetest.Gateway(t, n, tenant, gwA)))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	connect := []byte{
		0x10, 12, // CONNECT, remaining length
		0x00, 0x04, 'M', 'Q', 'T', 'T', 0x04, // protocol name and level 4 (3.1.1)
		0x00,       // flags: CleanSession 0, no will, no user name or password
		0x00, 0x1e, // keepalive 30 s
		0x00, 0x00, // client id ""
	}
	if _, err := conn.Write(connect); err != nil {
		t.Fatal(err)
	}
	_ = conn.SetReadDeadline(time.Now().Add(5 * time.Second * tu.Slowdown()))
	ack := make([]byte, 4)
	if _, err := io.ReadFull(conn, ack); err != nil {
		t.Fatalf("no CONNACK: %v", err)
	}
	if ack[0] != 0x20 || ack[1] != 2 || ack[3] != 0x02 {
		t.Fatalf("CONNACK % x, want 20 02 00 02 (identifier rejected)", ack)
	}
	if _, err := conn.Read(make([]byte, 1)); err != io.EOF {
		t.Errorf("after the refusal the connection is still open: %v", err)
	}
}

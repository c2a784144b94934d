package ingest_test

import (
	"bytes"
	"crypto/tls"
	"fmt"
	"net"
	"net/url"
	"os/exec"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/paho"
	mqtt311 "github.com/eclipse/paho.mqtt.golang"

	"github.com/iotransit/iotransit/internal/ingest"
	"github.com/iotransit/iotransit/internal/node"
	tu "github.com/iotransit/iotransit/internal/testutil"
	"github.com/iotransit/iotransit/internal/testutil/nodetest"
)

// tap is a client's connection that notes the packet ids of the QoS 1
// PUBLISHes it writes and of the PUBACKs it reads, in wire order, and the
// most publishes it had unacknowledged at once. It is a sync.Locker, which
// paho takes around the several writes of one packet: concurrent publishes
// would interleave their bytes otherwise.
type tap struct {
	net.Conn
	sync.Mutex         // held by a writer of one packet
	mu                 sync.Mutex
	out, in            []byte // bytes not yet framed
	published, acked   []uint16
	inFlight, maxAhead int
}

func (c *tap) Write(b []byte) (int, error) {
	c.mu.Lock()
	c.out = frames(append(c.out, b...), func(typ, flags byte, body []byte) {
		if typ == 3 && flags&0x06 != 0 && len(body) >= 2 {
			n := int(body[0])<<8 | int(body[1])
			if len(body) >= 2+n+2 {
				c.published = append(c.published, uint16(body[2+n])<<8|uint16(body[3+n]))
				c.inFlight++
				c.maxAhead = max(c.maxAhead, c.inFlight)
			}
		}
	})
	c.mu.Unlock()
	return c.Conn.Write(b)
}

func (c *tap) Read(b []byte) (int, error) {
	n, err := c.Conn.Read(b)
	c.mu.Lock()
	c.in = frames(append(c.in, b[:n]...), func(typ, _ byte, body []byte) {
		if typ == 4 && len(body) >= 2 {
			c.acked = append(c.acked, uint16(body[0])<<8|uint16(body[1]))
			c.inFlight--
		}
	})
	c.mu.Unlock()
	return n, err
}

// frames calls fn with each whole MQTT packet at the start of b and
// returns what is left.
func frames(b []byte, fn func(typ, flags byte, body []byte)) []byte {
	for len(b) >= 2 {
		n, mult, i := 0, 1, 1
		for ; i < len(b) && i <= 4; i++ {
			n += int(b[i]&0x7f) * mult
			mult *= 128
			if b[i]&0x80 == 0 {
				break
			}
		}
		if i >= len(b) || len(b) < i+1+n {
			return b
		}
		fn(b[0]>>4, b[0]&0x0f, b[i+1:i+1+n])
		b = b[i+1+n:]
	}
	return b
}

// check fails the test unless every publish was acknowledged in the order
// sent, with more than one in flight at some point.
func (c *tap) check(t *testing.T, n int) {
	t.Helper()
	c.mu.Lock()
	defer c.mu.Unlock()
	if len(c.published) != n || fmt.Sprint(c.acked) != fmt.Sprint(c.published) {
		t.Errorf("PUBACK ids %v\nfor PUBLISH ids %v", c.acked, c.published)
	}
	if c.maxAhead < 2 {
		t.Errorf("at most %d publish in flight: nothing was pipelined", c.maxAhead)
	}
	t.Logf("%d publishes, up to %d in flight", n, c.maxAhead)
}

// thingseeLines returns n distinct valid messages.
func thingseeLines(n int, base int64) []string {
	out := make([]string, n)
	for i := range out {
		out[i] = tu.Thingsee(sensor, base+int64(i), 20)
	}
	return out
}

// dialTapped connects gateway gwA of tenant through paho (MQTT 5) over a
// tap.
func dialTapped(t *testing.T, n *node.Node) (*paho.Client, *tap, *paho.Connack) {
	t.Helper()
	cert := nodetest.Gateway(t, n, tenant, gwA)
	conn, err := tls.Dial("tcp", n.MQTTAddr(), nodetest.ClientTLS(t, n, cert))
	if err != nil {
		t.Fatal(err)
	}
	tc := &tap{Conn: conn}
	c := paho.NewClient(paho.ClientConfig{Conn: tc})
	ca, err := c.Connect(ctx(t), &paho.Connect{ClientID: gwA, KeepAlive: 30, CleanStart: true})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Disconnect(&paho.Disconnect{}) })
	return c, tc, ca
}

// TestIngestPipelinePahoV5: paho (MQTT 5) honours the announced Receive
// Maximum and keeps many publishes in flight; their PUBACKs come back in
// the order the PUBLISHes went out, every one a success, and every message
// is stored.
func TestIngestPipelinePahoV5(t *testing.T) {
	n := nodetest.Start(t, nil)
	c, tc, ca := dialTapped(t, n)
	if ca.Properties == nil || ca.Properties.ReceiveMaximum == nil || *ca.Properties.ReceiveMaximum != 32 {
		t.Errorf("CONNACK properties %+v, want Receive Maximum 32", ca.Properties)
	}
	const total = 300
	lines := thingseeLines(total, 1700000000)
	var wg sync.WaitGroup
	errs := make(chan error, total)
	for _, m := range lines {
		wg.Go(func() {
			res, err := c.Publish(ctx(t), &paho.Publish{Topic: ingest.UpTopic(gwA), QoS: 1, Payload: []byte(m)})
			if err == nil && res.ReasonCode != 0 {
				err = fmt.Errorf("reason 0x%02x %s", res.ReasonCode, res.Properties.ReasonString)
			}
			if err != nil {
				errs <- err
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatalf("publish: %v", err)
	}
	tc.check(t, total)
	if msgs := nodetest.NewAPI(t, n).Messages(tenant, total+10); len(msgs) != total {
		t.Errorf("stored %d, want %d", len(msgs), total)
	}
}

// TestIngestPipelineMQTT311: an MQTT 3.1.1 client (paho.mqtt.golang), which
// is told no Receive Maximum, publishes without waiting: every publish is
// acknowledged, in order, and stored.
func TestIngestPipelineMQTT311(t *testing.T) {
	n := nodetest.Start(t, nil)
	cert := nodetest.Gateway(t, n, tenant, gwA)
	var tc *tap
	o := mqtt311.NewClientOptions().
		AddBroker("tls://" + n.MQTTAddr()).
		SetClientID(gwA).
		SetProtocolVersion(4).
		SetCleanSession(true).
		SetAutoReconnect(false).
		SetConnectTimeout(5 * time.Second).
		SetCustomOpenConnectionFn(func(u *url.URL, _ mqtt311.ClientOptions) (net.Conn, error) {
			conn, err := tls.Dial("tcp", u.Host, nodetest.ClientTLS(t, n, cert))
			if err != nil {
				return nil, err
			}
			tc = &tap{Conn: conn}
			return tc, nil
		})
	c := mqtt311.NewClient(o)
	if tok := c.Connect(); !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
		t.Fatalf("connect: %v", tok.Error())
	}
	defer c.Disconnect(100)
	const total = 300
	var toks []mqtt311.Token
	for _, m := range thingseeLines(total, 1700000000) {
		toks = append(toks, c.Publish(ingest.UpTopic(gwA), 1, false, m))
	}
	for i, tok := range toks {
		if !tok.WaitTimeout(10*time.Second*tu.Slowdown()) || tok.Error() != nil {
			t.Fatalf("publish %d not acknowledged: %v", i, tok.Error())
		}
	}
	tc.check(t, total)
	if msgs := nodetest.NewAPI(t, n).Messages(tenant, total+10); len(msgs) != total {
		t.Errorf("stored %d, want %d", len(msgs), total)
	}
}

// TestIngestPipelineMosquittoPubLines: mosquitto_pub -l sends one message
// per line of its input with up to 20 in flight; under MQTT 5 and 3.1.1
// every line is stored and the client exits cleanly (it waits for every
// PUBACK).
func TestIngestPipelineMosquittoPubLines(t *testing.T) {
	tu.RequirePeer(t, "mosquitto_pub")
	n := nodetest.Start(t, nil)
	cmd, _, ok := strings.Cut(n.DevPublishCommand(), " -m ")
	if !ok {
		t.Fatalf("no -m in %q", n.DevPublishCommand())
	}
	const lines = 400
	tests := []struct {
		name    string
		version string
		base    int64
	}{
		{name: "MQTT 5", version: "mqttv5", base: 1700000000},
		{name: "MQTT 3.1.1", version: "mqttv311", base: 1700100000},
	}
	want := 0
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			line := strings.Replace(cmd, "-V mqttv5", "-V "+tc.version, 1) + " -l"
			var in bytes.Buffer
			for i := range lines {
				fmt.Fprintf(&in, `{"tsmId":12100,"tsmEv":10,"tsmTs":%d,"tsmTuid":"TSEN01DEV00000042","temp":%d}`+"\n", tc.base+int64(i), i%40)
			}
			run := exec.CommandContext(ctx(t), "sh", "-c", line)
			run.Stdin = &in
			if out, err := run.CombinedOutput(); err != nil {
				t.Fatalf("%s: %v\n%s", line, err, out)
			}
			want += lines
			if msgs := nodetest.NewAPI(t, n).Messages(node.DevTenant, 2*lines+10); len(msgs) != want {
				t.Errorf("stored %d, want %d", len(msgs), want)
			}
		})
	}
}

// TestIngestPipelineStatusInOrder: a status between uploads is answered in
// its place, and an invalid one (MQTT 5: PUBACK 0x99 with its reason) does
// not stop the uploads after it.
func TestIngestPipelineStatusInOrder(t *testing.T) {
	c, tc, _ := dialTapped(t, nodetest.Start(t, nil))
	type sent struct {
		topic, payload string
		want           byte
	}
	var msgs []sent
	for i, m := range thingseeLines(20, 1700000000) {
		msgs = append(msgs, sent{topic: ingest.UpTopic(gwA), payload: m})
		if i == 10 {
			msgs = append(msgs, sent{topic: "v1/gw/" + gwA + "/status", payload: "not a status", want: 0x99})
		}
	}
	var wg sync.WaitGroup
	results := make([]string, len(msgs))
	for i, m := range msgs {
		wg.Go(func() {
			res, err := c.Publish(ctx(t), &paho.Publish{Topic: m.topic, QoS: 1, Payload: []byte(m.payload)})
			switch {
			case res == nil:
				results[i] = fmt.Sprintf("no PUBACK: %v", err)
			case res.ReasonCode != m.want:
				results[i] = fmt.Sprintf("0x%02x, want 0x%02x", res.ReasonCode, m.want)
			}
		})
	}
	wg.Wait()
	for i, r := range results {
		if r != "" {
			t.Errorf("publish %d: %s", i, r)
		}
	}
	tc.check(t, len(msgs))
}

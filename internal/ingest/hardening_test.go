package ingest_test

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/eclipse/paho.golang/paho"

	"github.com/iotransit/iotransit/internal/gateway"
	"github.com/iotransit/iotransit/internal/ingest"
	"github.com/iotransit/iotransit/internal/node"
	"github.com/iotransit/iotransit/internal/registry"
	tu "github.com/iotransit/iotransit/internal/testutil"
	"github.com/iotransit/iotransit/internal/testutil/nodetest"
)

// A connection whose CONNACK cannot be written (the client allows packets
// of 1 byte) must not keep a slot of the tenant's connection quota.
func TestIngestFailedConnackFreesTheQuota(t *testing.T) {
	n := nodetest.Start(t, func(c *node.Config) { c.Ingest.MaxConnsPerTenant = 3 })
	cert := nodetest.Gateway(t, n, tenant, gwA)
	for range 3 {
		conn, err := tls.Dial("tcp", n.MQTTAddr(), nodetest.ClientTLS(t, n, cert))
		if err != nil {
			t.Fatal(err)
		}
		one := uint32(1)
		c := paho.NewClient(paho.ClientConfig{Conn: conn})
		cctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		_, _ = c.Connect(cctx, &paho.Connect{ClientID: gwA, KeepAlive: 30, CleanStart: true,
			Properties: &paho.ConnectProperties{MaximumPacketSize: &one}})
		cancel()
		conn.Close()
	}
	certB := nodetest.Gateway(t, n, tenant, gwB)
	tu.Eventually(t, 5*time.Second, 100*time.Millisecond, func() error {
		up, err := nodetest.Dial(t, n, certB, gwB, nil)
		var ce *gateway.ConnectError
		if errors.As(err, &ce) && ce.ReasonCode == 0x97 {
			return fmt.Errorf("tenant quota still taken: %v", err)
		}
		if err != nil {
			return err
		}
		up.Close()
		return nil
	})
}

// A gateway revoked after its TLS handshake but before its CONNECT was
// not found by the revocation's kick: CONNECT must check again.
func TestIngestRevokedBetweenHandshakeAndConnect(t *testing.T) {
	n := nodetest.Start(t, nil)
	cert := nodetest.Gateway(t, n, tenant, gwA)
	conn, err := tls.Dial("tcp", n.MQTTAddr(), nodetest.ClientTLS(t, n, cert))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	time.Sleep(300 * time.Millisecond) // TLS 1.3: the server verifies the client certificate after the client's Finished
	if _, err := n.Registry().SetGatewayState(ctx(t), tenant, gwA, registry.StateRevoked); err != nil {
		t.Fatal(err)
	}
	time.Sleep(300 * time.Millisecond) // the revocation's kick has run, and found no session
	c := paho.NewClient(paho.ClientConfig{Conn: conn})
	ca, err := c.Connect(ctx(t), &paho.Connect{ClientID: gwA, KeepAlive: 30, CleanStart: true})
	if err == nil && ca.ReasonCode == 0 {
		res, perr := c.Publish(ctx(t), &paho.Publish{Topic: ingest.UpTopic(gwA), QoS: 1, Payload: []byte(tu.Thingsee(sensor, 1700000000, 20))})
		t.Fatalf("revoked gateway connected; publish: %+v %v; %d stored", res, perr, len(nodetest.NewAPI(t, n).Messages(tenant, 10)))
	}
}

// Subscriptions stay under down/, shallow and few: mochi builds a
// topic-tree node per level under one lock for all tenants.
func TestIngestBoundsSubscriptions(t *testing.T) {
	n := nodetest.Start(t, nil)
	up, err := nodetest.Dial(t, n, nodetest.Gateway(t, n, tenant, gwA), gwA, nil)
	if err != nil {
		t.Fatal(err)
	}
	sub := func(filter string) byte {
		t.Helper()
		sa, err := up.Client().Subscribe(ctx(t), &paho.Subscribe{Subscriptions: []paho.SubscribeOptions{{Topic: filter, QoS: 1}}})
		if err != nil && sa == nil {
			t.Fatalf("subscribe %.80s: %v", filter, err)
		}
		return sa.Reasons[0]
	}
	down := "v1/gw/" + gwA + "/down"
	for _, f := range []string{down + "/#", down + "/errors", down + "/a/b/+"} {
		if r := sub(f); r >= 0x80 {
			t.Errorf("%s refused: 0x%02x", f, r)
		}
	}
	for _, f := range []string{down + "/a/b/c/d", down + "/x" + strings.Repeat("/a", 32000), down + "/" + strings.Repeat("x", 300)} {
		if r := sub(f); r != 0x87 {
			t.Errorf("%.60s…: 0x%02x, want 0x87", f, r)
		}
	}
	ok := 0
	for i := range 30 {
		if sub(fmt.Sprintf("%s/f%d", down, i)) < 0x80 {
			ok++
		}
	}
	if held := 3 + ok; held != 16 {
		t.Errorf("%d subscriptions held, want at most 16", held)
	}
}

// The message rate limit is the gateway's, not its connection's:
// reconnecting does not grant a new burst.
func TestIngestRateLimitSurvivesReconnect(t *testing.T) {
	n := nodetest.Start(t, func(c *node.Config) { c.Ingest.MsgRate, c.Ingest.MsgBurst = 0.01, 3 })
	cert := nodetest.Gateway(t, n, tenant, gwA)
	ok := 0
	for conn := range 3 {
		up, err := nodetest.Dial(t, n, cert, gwA, nil)
		if err != nil {
			t.Fatal(err)
		}
		for i := range 3 {
			res, err := up.Publish(ctx(t), []byte(tu.Thingsee(sensor, 1700000000+int64(conn*10+i), 20)), 1)
			if err == nil && res.ReasonCode == 0 {
				ok++
			}
		}
		up.Close()
	}
	if ok != 3 {
		t.Fatalf("burst 3 at 0.01/s: %d messages accepted over three connections", ok)
	}
}

// The PUBACK reason string is cut on a character boundary.
func TestIngestPubackReasonIsUTF8(t *testing.T) {
	n := nodetest.Start(t, nil)
	up, err := nodetest.Dial(t, n, nodetest.Gateway(t, n, tenant, gwA), gwA, nil)
	if err != nil {
		t.Fatal(err)
	}
	top := strings.Repeat("k", 64)
	key := strings.Repeat("é", 32)
	msg := `{"tsmId":12100,"tsmEv":10,"tsmTs":1700000000,"tsmTuid":"` + sensor + `","` + top + `":{"` + key + `":1,"` + key + `":2}}`
	res, err := up.Publish(ctx(t), []byte(msg), 1)
	if err != nil {
		t.Fatal(err)
	}
	if res.ReasonCode != 0x99 || !utf8.ValidString(res.Reason) {
		t.Fatalf("PUBACK 0x%02x, reason %q", res.ReasonCode, res.Reason)
	}
}

// An error report names at most 50 rejections and counts the rest.
func TestIngestErrorReportIsBounded(t *testing.T) {
	n := nodetest.Start(t, func(c *node.Config) { c.Ingest.MsgBurst = 20000 })
	reports := make(chan []byte, 4)
	up, err := nodetest.Dial(t, n, nodetest.Gateway(t, n, tenant, gwA), gwA, func(c *gateway.UplinkConfig) {
		c.OnReport = func(b []byte) { reports <- b }
	})
	if err != nil {
		t.Fatal(err)
	}
	bad := `{"tsmId":16100,"tsmEv":10,"tsmTs":1700000000,"tsmTuid":"` + sensor + `","` + strings.Repeat("z", 64) + `":1}`
	payload := "[" + strings.Repeat(bad+",", 999) + bad + "]"
	if res, err := up.Publish(ctx(t), []byte(payload), 1); err != nil || res.ReasonCode != 0x99 {
		t.Fatalf("publish: %+v %v", res, err)
	}
	select {
	case b := <-reports:
		var r struct {
			Rejected []json.RawMessage
			More     int
		}
		if err := json.Unmarshal(b, &r); err != nil {
			t.Fatal(err)
		}
		if len(r.Rejected) != 50 || r.More != 950 {
			t.Errorf("report names %d rejections and %d more, want 50 and 950", len(r.Rejected), r.More)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("no report")
	}
}

// A serial deleted in one tenant and registered in another does not get
// the old gateway's stored MQTT session (its subscriptions and unread
// reports about the old tenant's sensors).
func TestIngestSessionNotInheritedAcrossTenants(t *testing.T) {
	n := nodetest.Start(t, nil)
	conn, err := tls.Dial("tcp", n.MQTTAddr(), nodetest.ClientTLS(t, n, nodetest.Gateway(t, n, tenant, gwA)))
	if err != nil {
		t.Fatal(err)
	}
	c := paho.NewClient(paho.ClientConfig{Conn: conn, EnableManualAcknowledgment: true})
	exp := uint32(3600)
	if _, err := c.Connect(ctx(t), &paho.Connect{ClientID: gwA, KeepAlive: 30, CleanStart: true,
		Properties: &paho.ConnectProperties{SessionExpiryInterval: &exp}}); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Subscribe(ctx(t), &paho.Subscribe{Subscriptions: []paho.SubscribeOptions{{Topic: ingest.ErrorsTopic(gwA), QoS: 1}}}); err != nil {
		t.Fatal(err)
	}
	bad := `{"tsmId":16100,"tsmEv":10,"tsmTs":1700000000,"tsmTuid":"TSEN01SECRETACME1","` + strings.Repeat("z", 64) + `":1}`
	// Refused (0x99, which paho returns as an error); the report follows.
	_, _ = c.Publish(ctx(t), &paho.Publish{Topic: ingest.UpTopic(gwA), QoS: 1, Payload: []byte(bad)})
	time.Sleep(200 * time.Millisecond) // the report is in the session, unacknowledged
	conn.Close()

	if err := n.Registry().DeleteGateway(ctx(t), tenant, gwA); err != nil {
		t.Fatal(err)
	}
	certB := nodetest.Gateway(t, n, "other", gwA)
	got := make(chan []byte, 4)
	connB, err := tls.Dial("tcp", n.MQTTAddr(), nodetest.ClientTLS(t, n, certB))
	if err != nil {
		t.Fatal(err)
	}
	cb := paho.NewClient(paho.ClientConfig{Conn: connB, OnPublishReceived: []func(paho.PublishReceived) (bool, error){
		func(pr paho.PublishReceived) (bool, error) { got <- pr.Packet.Payload; return true, nil }}})
	ca, err := cb.Connect(ctx(t), &paho.Connect{ClientID: gwA, KeepAlive: 30, CleanStart: false})
	if err != nil {
		t.Fatal(err)
	}
	defer cb.Disconnect(&paho.Disconnect{})
	select {
	case b := <-got:
		t.Fatalf("the other tenant's gateway (session present %v) received the old tenant's report: %s", ca.SessionPresent, b)
	case <-time.After(time.Second):
	}
}

// One host holding silent connections (no TLS handshake) cannot take every
// pending-handshake slot: it is bounded per address, and gateways from
// other addresses still connect.
func TestIngestPendingHandshakesBoundedPerAddress(t *testing.T) {
	n := nodetest.Start(t, func(c *node.Config) {
		c.Ingest.MaxPendingHandshakes, c.Ingest.MaxPendingPerAddress, c.Ingest.ConnectTimeout = 8, 4, 10*time.Second
	})
	cert := nodetest.Gateway(t, n, tenant, gwA)
	d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.IPv4(127, 0, 0, 2)}, Timeout: time.Second}
	var silent []net.Conn
	for range 10 {
		c, err := d.Dial("tcp", n.MQTTAddr())
		if err != nil {
			t.Skipf("no second loopback address: %v", err)
		}
		silent = append(silent, c)
	}
	defer func() {
		for _, c := range silent {
			c.Close()
		}
	}()
	// Beyond 4, the host's connections are closed at once; the 4 pending
	// ones stay open until the connect timeout (10 s), past this wait.
	var closed atomic.Int32
	var wg sync.WaitGroup
	for _, c := range silent {
		wg.Go(func() {
			_ = c.SetReadDeadline(time.Now().Add(3 * time.Second))
			if _, err := c.Read(make([]byte, 1)); !isTimeout(err) {
				closed.Add(1)
			}
		})
	}
	wg.Wait()
	if closed := closed.Load(); closed != 6 {
		t.Errorf("%d of 10 silent connections closed at once, want 6", closed)
	}
	up, err := nodetest.Dial(t, n, cert, gwA, nil)
	if err != nil {
		t.Fatalf("a gateway is locked out by one host's silent connections: %v", err)
	}
	up.Close()
}

func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}

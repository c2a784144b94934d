package hostile_test

import (
	"context"
	"crypto/tls"
	"errors"
	"net"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/paho"
	"github.com/eclipse/paho.golang/paho/log"

	"github.com/iotransit/iotransit/client"
	"github.com/iotransit/iotransit/internal/ingest"
	"github.com/iotransit/iotransit/internal/node"
	"github.com/iotransit/iotransit/internal/registry"
	tu "github.com/iotransit/iotransit/internal/testutil"
	"github.com/iotransit/iotransit/internal/testutil/nodetest"
)

// Attacks on what the gateway side attributes and logs: a refusal is a
// tenant's only once the peer proved it holds the certificate's key, and
// every line the server writes about a gateway is within its budget.

// TestHostileCertificateWithoutItsKeyWritesNothingToTheTenant: a
// certificate is public (the gateway shows it in every handshake, the
// enrollment answer holds it); its private key is not. Go's TLS server
// calls VerifyConnection before it reads the client's CertificateVerify,
// so the registry decides before the peer proved it holds the key; the
// refusal used to be attributed then. Someone with a copy of a revoked
// gateway's certificate, and any key of the same type, must not be able
// to write "gateway X refused" entries into the tenant's log.
func TestHostileCertificateWithoutItsKeyWritesNothingToTheTenant(t *testing.T) {
	const serial, marker = "TSGW06BET00000009", "TSGW06BET00000008"
	n := nodetest.Start(t, nil)
	genuine := nodetest.Gateway(t, n, "beta", serial)
	markerCert := nodetest.Gateway(t, n, "beta", marker)
	for _, s := range []string{serial, marker} {
		if _, err := n.Registry().SetGatewayState(context.Background(), "beta", s, registry.StateRevoked); err != nil {
			t.Fatal(err)
		}
	}
	// The genuine chain, with a key that is not its own.
	stolen := &tls.Certificate{Certificate: genuine.Certificate, PrivateKey: tu.SelfSigned(t, "attacker").PrivateKey}
	cfg := nodetest.ClientTLS(t, n, stolen)
	before, _ := connectionEntries(t, n, "beta")
	const tries = 30
	for range tries {
		nodetest.Handshake(n.MQTTAddr(), cfg)
	}
	// Then a revoked gateway with its own key: beta's refusal. The audit
	// queue is in order, so once it is written everything before it is.
	nodetest.Handshake(n.MQTTAddr(), nodetest.ClientTLS(t, n, markerCert))
	var after []client.AuditEntry
	tu.Eventually(t, 20*time.Second, 50*time.Millisecond, func() error {
		after, _ = connectionEntries(t, n, "beta")
		for _, e := range after[len(before):] {
			if e.Actor == "gateway:"+marker {
				return nil
			}
		}
		return errors.New("the genuine refusal is not in beta's log yet")
	})
	var framed int
	for _, e := range after[len(before):] {
		if e.Actor == "gateway:"+serial {
			framed++
		}
	}
	if framed > 0 {
		t.Errorf("%d entries in beta's log naming gateway %s from a peer that never proved its key (reasons %v)", framed, serial, refusals(t, n))
	}
}

// TestHostileDeniedPublishFloodIsBudgeted: a gateway (one stolen key is
// enough) publishes at QoS 0 to a topic it may not use. mochi checks the
// ACL before OnPublish, so the message rate limit never sees these, and
// each one used to write a "topic refused" line to the server log: the log
// grew at the gateway's packet rate. Log lines about one gateway must stay
// within a budget, as its connection events do.
func TestHostileDeniedPublishFloodIsBudgeted(t *testing.T) {
	const serial, flood = "TSGW06BET00000010", 1000
	lines, logger := countLines(t)
	n := nodetest.Start(t, func(c *node.Config) { c.Logger = logger })
	cfg := nodetest.ClientTLS(t, n, nodetest.Gateway(t, n, "beta", serial))
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	conn, err := (&tls.Dialer{Config: cfg}).DialContext(ctx, "tcp", n.MQTTAddr())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	// paho writes a QoS 0 publish straight to the connection, unlocked, in
	// several writes, while its pinger sends its first PINGREQ at once: the
	// two interleave into a malformed packet. No pinger, then.
	c := paho.NewClient(paho.ClientConfig{Conn: conn, PingHandler: noPinger{}})
	if ca, err := c.Connect(ctx, &paho.Connect{ClientID: serial, KeepAlive: 30, CleanStart: true}); err != nil || ca.ReasonCode != 0 {
		t.Fatalf("connect: %v %v", ca, err)
	}
	start := time.Now()
	for range flood {
		if _, err := c.Publish(ctx, &paho.Publish{Topic: "v1/gw/TSGW06BET00000011/up", QoS: 0, Payload: []byte("{}")}); err != nil {
			t.Fatal(err)
		}
	}
	// A QoS 1 publish to its own topic: its PUBACK comes after every
	// packet before it was read (mochi reads a client's packets in order).
	_, _ = c.Publish(ctx, &paho.Publish{Topic: "v1/gw/" + serial + "/up", QoS: 1, Payload: []byte("{}")})
	if got := lines.containing("topic refused"); got == 0 {
		t.Fatal("no denied publish was logged: the test did not reach the ACL")
	}
	max := budget(ingest.DefaultConfig().Events.Gateway, time.Since(start))
	if got := lines.containing("topic refused"); got > max {
		t.Errorf("%d 'topic refused' log lines for %d denied publishes of one gateway, budget %d", got, flood, max)
	}
}

// TestHostileWillReconnectLoopLogIsBudgeted: a gateway that reconnects in
// a loop with a will message is budgeted in the audit log, and its "will
// message dropped" lines share that budget (every CONNECT used to write
// one).
func TestHostileWillReconnectLoopLogIsBudgeted(t *testing.T) {
	const serial, loops = "TSGW06BET00000012", 100
	lines, logger := countLines(t)
	n := nodetest.Start(t, func(c *node.Config) { c.Logger = logger })
	cfg := nodetest.ClientTLS(t, n, nodetest.Gateway(t, n, "beta", serial))
	start := time.Now()
	for range loops {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		conn, err := (&tls.Dialer{Config: cfg}).DialContext(ctx, "tcp", n.MQTTAddr())
		if err != nil {
			cancel()
			t.Fatal(err)
		}
		c := paho.NewClient(paho.ClientConfig{Conn: conn})
		will := &paho.WillMessage{Topic: "v1/gw/" + serial + "/down/errors", Payload: []byte("x")}
		if _, err := c.Connect(ctx, &paho.Connect{ClientID: serial, KeepAlive: 30, CleanStart: true, WillMessage: will}); err != nil {
			cancel()
			t.Fatal(err)
		}
		_ = c.Disconnect(&paho.Disconnect{})
		conn.Close()
		cancel()
	}
	max := budget(ingest.DefaultConfig().Events.Gateway, time.Since(start))
	if got := lines.containing("will message dropped"); got > max {
		t.Errorf("%d 'will message dropped' log lines for %d reconnects of one gateway, budget %d", got, loops, max)
	}
}

// noPinger is a paho pinger that sends nothing (the test is over long
// before a keepalive).
type noPinger struct{}

func (noPinger) Run(ctx context.Context, _ net.Conn, _ uint16) error {
	<-ctx.Done()
	return nil
}
func (noPinger) PacketSent()         {}
func (noPinger) PacketReceived()     {}
func (noPinger) PingResp()           {}
func (noPinger) SetDebug(log.Logger) {}

package ingest_test

import (
	"bytes"
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"os/exec"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/paho"

	"github.com/iotransit/iotransit/internal/backbone/names"
	"github.com/iotransit/iotransit/internal/gateway"
	"github.com/iotransit/iotransit/internal/ingest"
	"github.com/iotransit/iotransit/internal/node"
	"github.com/iotransit/iotransit/internal/pki"
	"github.com/iotransit/iotransit/internal/registry"
	tu "github.com/iotransit/iotransit/internal/testutil"
	"github.com/iotransit/iotransit/internal/testutil/nodetest"
)

const (
	tenant = "acme"
	gwA    = "TSGW06ACM00000001"
	gwB    = "TSGW06ACM00000002"
	sensor = "TSEN01ABC12345678"
)

func ctx(t *testing.T) context.Context {
	c, cancel := context.WithTimeout(context.Background(), 20*time.Second*tu.Slowdown())
	t.Cleanup(cancel)
	return c
}

func refused(t *testing.T, n *node.Node, reason string) float64 {
	return tu.Counter(t, n.Metrics(), "iotransit_ingest_connections_refused_total", map[string]string{"reason": reason})
}

func TestIngestStoresValidMessage(t *testing.T) {
	n := nodetest.Start(t, nil)
	up, err := nodetest.Dial(t, n, nodetest.Gateway(t, n, tenant, gwA), gwA, nil)
	if err != nil {
		t.Fatal(err)
	}
	payload := tu.Thingsee(sensor, 1700000000, 21.5)
	res, err := up.Publish(ctx(t), []byte(payload), 1)
	if err != nil || res.ReasonCode != 0 {
		t.Fatalf("publish: %v, reason 0x%02x %q", err, res.ReasonCode, res.Reason)
	}
	// The PUBACK came after the store: the message is readable at once.
	msgs := nodetest.NewAPI(t, n).Messages(tenant, 10)
	if len(msgs) != 1 {
		t.Fatalf("stored %d messages, want 1", len(msgs))
	}
	m := msgs[0]
	if m.Gateway != gwA || len(m.ID) != 32 {
		t.Errorf("gateway %q id %q", m.Gateway, m.ID)
	}
	// Byte-for-byte the accepted message, plus cloud-added fields at the end.
	if !bytes.HasPrefix(m.Message, []byte(strings.TrimSuffix(payload, "}"))) {
		t.Errorf("stored message %s does not start with the accepted bytes %s", m.Message, payload)
	}
	var got map[string]any
	if err := json.Unmarshal(m.Message, &got); err != nil {
		t.Fatal(err)
	}
	if got["tsmGw"] != gwA {
		t.Errorf("tsmGw = %v, want the uploading gateway", got["tsmGw"])
	}
	cloudTs, _ := got["tsmCloudTs"].(float64)
	if d := time.Since(time.Unix(int64(cloudTs), 0)); d < -time.Second || d > time.Minute {
		t.Errorf("tsmCloudTs %v is not the receive time", got["tsmCloudTs"])
	}
	if c := tu.Counter(t, n.Metrics(), "iotransit_ingest_messages_total", map[string]string{"outcome": "stored"}); c != 1 {
		t.Errorf("stored counter = %v, want 1", c)
	}
}

func TestIngestArrayStoresGoodAndRejectsBad(t *testing.T) {
	n := nodetest.Start(t, nil)
	reports := make(chan []byte, 4)
	up, err := nodetest.Dial(t, n, nodetest.Gateway(t, n, tenant, gwA), gwA, func(c *gateway.UplinkConfig) {
		c.OnReport = func(b []byte) { reports <- b }
	})
	if err != nil {
		t.Fatal(err)
	}
	payload := "[" + tu.Thingsee(sensor, 1700000000, 21.5) + "," +
		tu.Thingsee(sensor, 1700000060, 120) + "," + // out of range
		tu.Thingsee(sensor, 1700000120, 22) + "]"
	res, err := up.Publish(ctx(t), []byte(payload), 1)
	if err != nil || res.ReasonCode != 0 {
		t.Fatalf("publish: %v, reason 0x%02x %q", err, res.ReasonCode, res.Reason)
	}
	api := nodetest.NewAPI(t, n)
	if msgs := api.Messages(tenant, 10); len(msgs) != 2 {
		t.Fatalf("stored %d messages, want the 2 good ones", len(msgs))
	}
	rej := api.Rejected(tenant, 10)
	if len(rej) != 1 {
		t.Fatalf("rejected %d, want 1", len(rej))
	}
	if r := rej[0]; r.Index != 1 || r.Code != "thingsee.field_range" || r.Field != "temp" || !strings.Contains(r.Reason, "120") || !bytes.Contains(r.Message, []byte(`"temp":120`)) {
		t.Errorf("rejected entry = %+v", r)
	}
	select {
	case b := <-reports:
		var rep struct {
			Accepted int
			Rejected []struct {
				Index  int
				Code   string
				Reason string
			}
		}
		if err := json.Unmarshal(b, &rep); err != nil {
			t.Fatalf("report %s: %v", b, err)
		}
		if rep.Accepted != 2 || len(rep.Rejected) != 1 || rep.Rejected[0].Index != 1 || rep.Rejected[0].Code != "thingsee.field_range" || rep.Rejected[0].Reason == "" {
			t.Errorf("report = %s", b)
		}
	case <-time.After(5 * time.Second * tu.Slowdown()):
		t.Fatal("no report on down/errors")
	}
}

func TestIngestAllInvalidGetsPayloadFormatInvalid(t *testing.T) {
	n := nodetest.Start(t, nil)
	up, err := nodetest.Dial(t, n, nodetest.Gateway(t, n, tenant, gwA), gwA, nil)
	if err != nil {
		t.Fatal(err)
	}
	cases := []struct{ name, payload, code string }{
		{"out of range", tu.Thingsee(sensor, 1700000000, 99), "thingsee.field_range"},
		{"not json", "temp=21", "thingsee.payload_invalid"},
		{"bad tuid", tu.Thingsee("TSPOD6789", 1700000000, 20), "thingsee.tuid_format"},
		{"other gateway's tsmGw", `{"tsmId":13100,"tsmEv":10,"tsmTs":1700000000,"tsmTuid":"` + sensor + `","tsmGw":"` + gwB + `","moveCount":1}`, "thingsee.gateway_mismatch"},
		{"far future", tu.Thingsee(sensor, time.Now().Add(24*time.Hour).Unix(), 20), "thingsee.ts_future"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			res, err := up.Publish(ctx(t), []byte(tc.payload), 1)
			if err != nil {
				t.Fatal(err)
			}
			if res.ReasonCode != 0x99 || !strings.Contains(res.Reason, tc.code) {
				t.Errorf("PUBACK 0x%02x %q, want 0x99 naming %s", res.ReasonCode, res.Reason, tc.code)
			}
		})
	}
	if msgs := nodetest.NewAPI(t, n).Messages(tenant, 10); len(msgs) != 0 {
		t.Errorf("stored %d invalid messages", len(msgs))
	}
	if rej := nodetest.NewAPI(t, n).Rejected(tenant, 10); len(rej) != len(cases) {
		t.Errorf("rejected stream has %d, want %d", len(rej), len(cases))
	}
}

// TestIngestMosquittoPub runs the exact command the dev bootstrap prints, as
// an independent MQTT 5 client.
func TestIngestMosquittoPub(t *testing.T) {
	tu.RequirePeer(t, "mosquitto_pub")
	n := nodetest.Start(t, nil)
	cmd := n.DevPublishCommand()
	out, err := exec.CommandContext(ctx(t), "sh", "-c", cmd).CombinedOutput()
	if err != nil {
		t.Fatalf("%s: %v\n%s", cmd, err, out)
	}
	msgs := nodetest.NewAPI(t, n).Messages(node.DevTenant, 10)
	if len(msgs) != 1 || msgs[0].Gateway != node.DevGateway {
		t.Fatalf("after mosquitto_pub: %+v", msgs)
	}
	// MQTT 3.1.1 through mosquitto_pub too.
	v311 := strings.Replace(cmd, "-V mqttv5", "-V mqttv311", 1)
	v311 = strings.Replace(v311, `"temp":21.5`, `"temp":19.5`, 1)
	if out, err := exec.CommandContext(ctx(t), "sh", "-c", v311).CombinedOutput(); err != nil {
		t.Fatalf("%s: %v\n%s", v311, err, out)
	}
	if msgs := nodetest.NewAPI(t, n).Messages(node.DevTenant, 10); len(msgs) != 2 {
		t.Fatalf("after MQTT 3.1.1 mosquitto_pub: %d messages, want 2", len(msgs))
	}
}

func TestIngestClosesSilentConnections(t *testing.T) {
	n := nodetest.Start(t, func(c *node.Config) { c.Ingest.ConnectTimeout = 500 * time.Millisecond })
	cert := nodetest.Gateway(t, n, tenant, gwA)

	closedWithin := func(t *testing.T, c net.Conn) {
		t.Helper()
		_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
		start := time.Now()
		_, err := io.ReadAll(c)
		var ne net.Error
		if errors.As(err, &ne) && ne.Timeout() {
			t.Fatalf("server kept the connection open for 5s")
		}
		if d := time.Since(start); d > 3*time.Second {
			t.Fatalf("closed after %s", d)
		}
	}
	t.Run("no TLS handshake", func(t *testing.T) {
		c, err := net.Dial("tcp", n.MQTTAddr())
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		closedWithin(t, c)
		tu.Eventually(t, 2*time.Second, 20*time.Millisecond, func() error {
			if refused(t, n, "handshake_timeout") < 1 {
				return errors.New("handshake timeout not counted")
			}
			return nil
		})
	})
	t.Run("no CONNECT", func(t *testing.T) {
		c, err := tls.Dial("tcp", n.MQTTAddr(), nodetest.ClientTLS(t, n, cert))
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		closedWithin(t, c)
	})
}

func TestIngestRefusesClientIDOfAnotherGateway(t *testing.T) {
	n := nodetest.Start(t, nil)
	a, err := nodetest.Dial(t, n, nodetest.Gateway(t, n, tenant, gwA), gwA, nil)
	if err != nil {
		t.Fatal(err)
	}
	// Gateway B, with its own valid certificate, claims A's client id.
	_, err = nodetest.Dial(t, n, nodetest.Gateway(t, n, tenant, gwB), gwA, nil)
	var ce *gateway.ConnectError
	if !errors.As(err, &ce) || ce.ReasonCode != 0x85 {
		t.Fatalf("takeover attempt: %v, want CONNACK 0x85", err)
	}
	// A's session is untouched.
	if res, err := a.Publish(ctx(t), []byte(tu.Thingsee(sensor, 1700000000, 20)), 1); err != nil || res.ReasonCode != 0 {
		t.Fatalf("A after the attempt: %v 0x%02x", err, res.ReasonCode)
	}
	if c := refused(t, n, "client_id_mismatch"); c != 1 {
		t.Errorf("client_id_mismatch counted %v times", c)
	}
}

func TestIngestAssignsSerialToEmptyClientID(t *testing.T) {
	n := nodetest.Start(t, nil)
	cert := nodetest.Gateway(t, n, tenant, gwA)
	conn, err := tls.Dial("tcp", n.MQTTAddr(), nodetest.ClientTLS(t, n, cert))
	if err != nil {
		t.Fatal(err)
	}
	c := paho.NewClient(paho.ClientConfig{Conn: conn})
	ca, err := c.Connect(ctx(t), &paho.Connect{ClientID: "", KeepAlive: 30, CleanStart: true})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Disconnect(&paho.Disconnect{})
	if ca.Properties == nil || ca.Properties.AssignedClientID != gwA {
		t.Fatalf("assigned client id = %+v, want %s", ca.Properties, gwA)
	}
}

func TestIngestRefusesBadCertificates(t *testing.T) {
	n := nodetest.Start(t, nil)
	reg := n.Registry()
	nodetest.Gateway(t, n, tenant, gwA) // registered, certified gateway of acme
	acmeCA, err := reg.CA(context.Background(), tenant)
	if err != nil {
		t.Fatal(err)
	}
	nodetest.Gateway(t, n, "other", "TSGW06OTH00000001")
	otherCA, err := reg.CA(context.Background(), "other")
	if err != nil {
		t.Fatal(err)
	}
	strangerCA, err := pki.NewCA("stranger", time.Hour, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	nodetest.Gateway(t, n, tenant, "TSGW06ACM00000003")                      // registers the gateway
	short := nodetest.Enroll(t, n, tenant, "TSGW06ACM00000003", time.Second) // NotAfter = now + 1s
	revoked := nodetest.Gateway(t, n, tenant, "TSGW06ACM00000004")
	if _, err := reg.SetGatewayState(context.Background(), tenant, "TSGW06ACM00000004", registry.StateRevoked); err != nil {
		t.Fatal(err)
	}
	isolated := nodetest.Gateway(t, n, tenant, "TSGW06ACM00000005")
	if _, err := reg.SetGatewayState(context.Background(), tenant, "TSGW06ACM00000005", registry.StateIsolated); err != nil {
		t.Fatal(err)
	}
	time.Sleep(time.Until(short.Leaf.NotAfter) + 100*time.Millisecond)

	cases := []struct {
		name   string
		cert   *tls.Certificate
		serial string
		reason string
	}{
		{"no client certificate", nil, gwA, registry.ReasonNoCertificate},
		{"another tenant's CA", tu.SignWith(t, otherCA, gwA, time.Now(), time.Hour), gwA, registry.ReasonUnregistered},
		{"unknown CA", tu.SignWith(t, strangerCA, gwA, time.Now(), time.Hour), gwA, registry.ReasonUnknownCA},
		{"self-signed with a registered serial", tu.SelfSigned(t, gwA), gwA, registry.ReasonUnknownCA},
		{"expired", short, "TSGW06ACM00000003", registry.ReasonExpired},
		{"revoked gateway", revoked, "TSGW06ACM00000004", registry.ReasonRevoked},
		{"isolated gateway", isolated, "TSGW06ACM00000005", registry.ReasonIsolated},
		{"unregistered serial", tu.SignWith(t, acmeCA, "TSGW06ACM00000099", time.Now(), time.Hour), "TSGW06ACM00000099", registry.ReasonUnregistered},
		{"certificate the registry never issued", tu.SignWith(t, acmeCA, gwA, time.Now(), time.Hour), gwA, registry.ReasonCertUnknown},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			before := refused(t, n, tc.reason)
			u, err := nodetest.Dial(t, n, tc.cert, tc.serial, nil)
			if err == nil {
				u.Close()
				t.Fatal("connected")
			}
			tu.Eventually(t, 2*time.Second, 10*time.Millisecond, func() error {
				if got := refused(t, n, tc.reason); got != before+1 {
					return fmt.Errorf("refusals for %s: %v, want %v (dial error: %v)", tc.reason, got, before+1, err)
				}
				return nil
			})
		})
	}
}

func TestIngestRefusesTLS11(t *testing.T) {
	n := nodetest.Start(t, nil)
	cfg := nodetest.ClientTLS(t, n, nodetest.Gateway(t, n, tenant, gwA))
	cfg.MinVersion, cfg.MaxVersion = tls.VersionTLS10, tls.VersionTLS11
	c, err := tls.Dial("tcp", n.MQTTAddr(), cfg)
	if err == nil {
		c.Close()
		t.Fatal("TLS 1.1 handshake succeeded")
	}
	tu.Eventually(t, 2*time.Second, 10*time.Millisecond, func() error {
		if refused(t, n, "tls_version") != 1 {
			return errors.New("tls_version refusal not counted")
		}
		return nil
	})
}

func TestIngestTopicACL(t *testing.T) {
	n := nodetest.Start(t, nil)
	up, err := nodetest.Dial(t, n, nodetest.Gateway(t, n, tenant, gwA), gwA, nil)
	if err != nil {
		t.Fatal(err)
	}
	msg := []byte(tu.Thingsee(sensor, 1700000000, 20))
	// An MQTT 5 refusal says which topics the gateway may use.
	allowed := "not authorized: gateway " + gwA + " may publish only to v1/gw/" + gwA + "/up and v1/gw/" + gwA + "/status, and subscribe only to v1/gw/" + gwA + "/down/#"
	for _, topic := range []string{"v1/gw/" + gwB + "/up", "v1/gw/" + gwA + "/down/errors", "v1/gw/" + gwA + "/upx", "$SYS/x"} {
		res, err := up.PublishTo(ctx(t), topic, msg, 1)
		if err != nil || res.ReasonCode != 0x87 || !strings.HasPrefix(res.Reason, allowed) {
			t.Errorf("publish to %s: %v 0x%02x %q, want 0x87 with reason %q…", topic, err, res.ReasonCode, res.Reason, allowed)
		}
	}
	for _, tc := range []struct {
		filter string
		ok     bool
	}{{"#", false}, {"v1/gw/+/down/#", false}, {"v1/gw/" + gwB + "/down/#", false}, {"$share/g/v1/gw/" + gwA + "/down/#", false}, {"v1/gw/" + gwA + "/down/#", true}} {
		sa, err := up.Client().Subscribe(ctx(t), &paho.Subscribe{Subscriptions: []paho.SubscribeOptions{{Topic: tc.filter, QoS: 1}}})
		if sa == nil {
			t.Fatalf("subscribe %s: %v", tc.filter, err)
		}
		granted := sa.Reasons[0] < 0x80
		if granted != tc.ok {
			t.Errorf("subscribe %s: reason 0x%02x, want granted=%v", tc.filter, sa.Reasons[0], tc.ok)
		}
		reason := ""
		if sa.Properties != nil {
			reason = sa.Properties.ReasonString
		}
		if want := !tc.ok; strings.HasPrefix(reason, allowed) != want {
			t.Errorf("subscribe %s: SUBACK reason %q, want the allowed topics: %v", tc.filter, reason, want)
		}
	}
	if msgs := nodetest.NewAPI(t, n).Messages(tenant, 10); len(msgs) != 0 {
		t.Errorf("%d messages stored from refused topics", len(msgs))
	}
}

func TestIngestRefusesOversizedPayload(t *testing.T) {
	n := nodetest.Start(t, func(c *node.Config) { c.Ingest.MaxPayload = 1024 })
	up, err := nodetest.Dial(t, n, nodetest.Gateway(t, n, tenant, gwA), gwA, nil)
	if err != nil {
		t.Fatal(err)
	}
	big := `[` + strings.Repeat(tu.Thingsee(sensor, 1700000000, 20)+",", 20) + tu.Thingsee(sensor, 1700000000, 20) + `]`
	res, err := up.Publish(ctx(t), []byte(big), 1)
	if err != nil || res.ReasonCode != 0x95 || !strings.Contains(res.Reason, "1024") {
		t.Fatalf("oversized: %v 0x%02x %q, want 0x95 naming the limit", err, res.ReasonCode, res.Reason)
	}
	if rej := nodetest.NewAPI(t, n).Rejected(tenant, 10); len(rej) != 1 || rej[0].Code != "ingest.payload_too_large" {
		t.Errorf("rejected = %+v", rej)
	}
	if msgs := nodetest.NewAPI(t, n).Messages(tenant, 10); len(msgs) != 0 {
		t.Errorf("stored %d", len(msgs))
	}
}

func TestIngestRateLimit(t *testing.T) {
	n := nodetest.Start(t, func(c *node.Config) { c.Ingest.MsgRate, c.Ingest.MsgBurst = 0.01, 3 })
	up, err := nodetest.Dial(t, n, nodetest.Gateway(t, n, tenant, gwA), gwA, nil)
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 4; i++ {
		res, err := up.Publish(ctx(t), []byte(tu.Thingsee(sensor, 1700000000+int64(i), 20)), 1)
		if err != nil {
			t.Fatal(err)
		}
		want := byte(0)
		if i == 3 {
			want = 0x96
		}
		if res.ReasonCode != want {
			t.Errorf("publish %d: 0x%02x %q, want 0x%02x", i, res.ReasonCode, res.Reason, want)
		}
	}
	if msgs := nodetest.NewAPI(t, n).Messages(tenant, 10); len(msgs) != 3 {
		t.Errorf("stored %d, want 3", len(msgs))
	}
}

func TestIngestStoresResendOnce(t *testing.T) {
	n := nodetest.Start(t, nil)
	up, err := nodetest.Dial(t, n, nodetest.Gateway(t, n, tenant, gwA), gwA, nil)
	if err != nil {
		t.Fatal(err)
	}
	payload := []byte("[" + tu.Thingsee(sensor, 1700000000, 20) + "," + tu.Thingsee(sensor, 1700000060, 21) + "]")
	for i := 0; i < 3; i++ { // a gateway replaying its buffer after a reconnect
		if res, err := up.Publish(ctx(t), payload, 1); err != nil || res.ReasonCode != 0 {
			t.Fatalf("publish %d: %v 0x%02x", i, err, res.ReasonCode)
		}
	}
	if msgs := nodetest.NewAPI(t, n).Messages(tenant, 10); len(msgs) != 2 {
		t.Fatalf("stored %d, want 2", len(msgs))
	}
	if c := tu.Counter(t, n.Metrics(), "iotransit_ingest_messages_total", map[string]string{"outcome": "duplicate"}); c != 4 {
		t.Errorf("duplicates counted %v, want 4", c)
	}
}

func TestIngestDoesNotAckWhatItCannotPersist(t *testing.T) {
	n := nodetest.Start(t, nil)
	disconnected := make(chan byte, 1)
	up, err := nodetest.Dial(t, n, nodetest.Gateway(t, n, tenant, gwA), gwA, func(c *gateway.UplinkConfig) {
		c.OnDisconnect = func(reason byte, err error) { disconnected <- reason }
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := n.JetStream().DeleteStream(ctx(t), names.MessageStream(tenant)); err != nil {
		t.Fatal(err)
	}
	pctx, cancel := context.WithTimeout(ctx(t), 5*time.Second)
	defer cancel()
	res, err := up.Publish(pctx, []byte(tu.Thingsee(sensor, 1700000000, 20)), 1)
	if err == nil {
		t.Fatalf("publish was acknowledged (0x%02x) though it could not be stored", res.ReasonCode)
	}
	select {
	case reason := <-disconnected:
		if reason != 0x89 {
			t.Errorf("DISCONNECT reason 0x%02x, want 0x89 (server busy)", reason)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("connection not closed")
	}
	if c := tu.Counter(t, n.Metrics(), "iotransit_ingest_publishes_refused_total", map[string]string{"reason": "persist"}); c != 1 {
		t.Errorf("persist failures counted %v", c)
	}
}

func TestIngestRevocationDropsLiveSession(t *testing.T) {
	n := nodetest.Start(t, nil)
	cert := nodetest.Gateway(t, n, tenant, gwA)
	up, err := nodetest.Dial(t, n, cert, gwA, nil)
	if err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	if _, err := n.Registry().SetGatewayState(ctx(t), tenant, gwA, registry.StateRevoked); err != nil {
		t.Fatal(err)
	}
	select {
	case <-up.Done():
		if d := time.Since(start); d > time.Second {
			t.Errorf("session dropped after %s, want < 1s", d)
		}
	case <-time.After(3 * time.Second):
		t.Fatal("live session of a revoked gateway still open")
	}
	if _, err := nodetest.Dial(t, n, cert, gwA, nil); err == nil {
		t.Fatal("revoked gateway reconnected")
	}
}

// TestIngestDropsWillMessages checks that a gateway cannot make the broker
// publish on its behalf: a will aimed at another gateway's errors topic is
// never delivered.
func TestIngestDropsWillMessages(t *testing.T) {
	n := nodetest.Start(t, nil)
	got := make(chan []byte, 1)
	if _, err := nodetest.Dial(t, n, nodetest.Gateway(t, n, tenant, gwB), gwB, func(c *gateway.UplinkConfig) {
		c.OnReport = func(b []byte) { got <- b }
	}); err != nil {
		t.Fatal(err)
	}
	conn, err := tls.Dial("tcp", n.MQTTAddr(), nodetest.ClientTLS(t, n, nodetest.Gateway(t, n, tenant, gwA)))
	if err != nil {
		t.Fatal(err)
	}
	c := paho.NewClient(paho.ClientConfig{Conn: conn})
	if _, err := c.Connect(ctx(t), &paho.Connect{
		ClientID: gwA, KeepAlive: 30, CleanStart: true,
		WillMessage: &paho.WillMessage{Topic: ingest.ErrorsTopic(gwB), QoS: 1, Payload: []byte(`{"forged":true}`)},
	}); err != nil {
		t.Fatal(err)
	}
	conn.Close() // abrupt: a will would be sent now
	select {
	case b := <-got:
		t.Fatalf("gateway B received a will of gateway A: %s", b)
	case <-time.After(time.Second):
	}
}

// TestIngestDropsSessionOnSupersededCertificate: a gateway keeps two valid
// certificates; a renewal that supersedes the one a live session uses ends
// that session, and the certificate cannot connect again.
func TestIngestDropsSessionOnSupersededCertificate(t *testing.T) {
	n := nodetest.Start(t, nil)
	first := nodetest.Gateway(t, n, tenant, gwA)
	up, err := nodetest.Dial(t, n, first, gwA, nil)
	if err != nil {
		t.Fatal(err)
	}
	nodetest.Enroll(t, n, tenant, gwA, 24*time.Hour) // the first stays valid
	select {
	case <-up.Done():
		t.Fatal("a session on a still valid certificate was closed")
	case <-time.After(500 * time.Millisecond):
	}
	nodetest.Enroll(t, n, tenant, gwA, 24*time.Hour) // supersedes the first
	select {
	case <-up.Done():
	case <-time.After(5 * time.Second):
		t.Fatal("the session on a superseded certificate is still open")
	}
	if _, err := nodetest.Dial(t, n, first, gwA, nil); err == nil {
		t.Fatal("a superseded certificate connected")
	}
}

// ticketCounter is a client session cache that counts the session
// tickets it is given.
type ticketCounter struct {
	tls.ClientSessionCache
	puts atomic.Int64
}

func (c *ticketCounter) Put(key string, cs *tls.ClientSessionState) {
	if cs != nil {
		c.puts.Add(1)
	}
	c.ClientSessionCache.Put(key, cs)
}

// TestIngestSendsNoSessionTickets: the gateway listener resumes no TLS
// session (a resumed session proves the peer holds the session's secret,
// not its certificate's key) and so sends no tickets, in TLS 1.2 and 1.3;
// every connection is a full handshake, and a gateway connects as before.
func TestIngestSendsNoSessionTickets(t *testing.T) {
	n := nodetest.Start(t, nil)
	cert := nodetest.Gateway(t, n, tenant, gwA)
	for _, tc := range []struct {
		name    string
		version uint16
	}{
		{name: "TLS 1.2", version: tls.VersionTLS12},
		{name: "TLS 1.3", version: tls.VersionTLS13},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cache := &ticketCounter{ClientSessionCache: tls.NewLRUClientSessionCache(4)}
			cfg := nodetest.ClientTLS(t, n, cert)
			cfg.MinVersion, cfg.MaxVersion, cfg.ClientSessionCache = tc.version, tc.version, cache
			for i := range 2 {
				conn, err := tls.Dial("tcp", n.MQTTAddr(), cfg)
				if err != nil {
					t.Fatal(err)
				}
				if conn.ConnectionState().DidResume {
					t.Errorf("connection %d resumed a session", i)
				}
				// CONNACK read: a TLS 1.3 ticket, sent after the handshake, is taken in.
				c := paho.NewClient(paho.ClientConfig{Conn: conn})
				if _, err := c.Connect(ctx(t), &paho.Connect{ClientID: gwA, KeepAlive: 30, CleanStart: true}); err != nil {
					t.Fatalf("connection %d: %v", i, err)
				}
				_ = c.Disconnect(&paho.Disconnect{})
			}
			if got := cache.puts.Load(); got != 0 {
				t.Errorf("the client was given %d session tickets, want none", got)
			}
		})
	}
}

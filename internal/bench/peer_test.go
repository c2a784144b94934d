package bench

import (
	"context"
	"fmt"
	"os"
	"testing"
	"time"

	"github.com/iotransit/iotransit/internal/backbone/names"
	"github.com/iotransit/iotransit/internal/node"
	"github.com/iotransit/iotransit/internal/testutil"
	"github.com/iotransit/iotransit/internal/testutil/nodetest"
)

// TestRunAgainstNode runs the load against a real in-process node and
// checks that every acknowledged publish was stored.
func TestRunAgainstNode(t *testing.T) {
	n := nodetest.Start(t, func(c *node.Config) {
		c.Ingest.MsgRate, c.Ingest.MsgBurst = 1e9, 1e6
	})
	var gws []Gateway
	for i := range 3 {
		serial := fmt.Sprintf("TSGW06BNC%08d", i)
		cert := nodetest.Gateway(t, n, "bench", serial)
		gws = append(gws, Gateway{Serial: serial, TLS: nodetest.ClientTLS(t, n, cert)})
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	res, err := Run(ctx, Target{Name: "iotransit", Addr: n.MQTTAddr(), Gateways: gws},
		Config{Warmup: 200 * time.Millisecond, Duration: time.Second, Payload: PayloadArray10})
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("%+v", res)
	if res.Acked == 0 || res.Errors.Total != 0 || len(res.ReasonCodes) != 0 {
		t.Fatalf("acked %d, errors %+v, reason codes %v", res.Acked, res.Errors, res.ReasonCodes)
	}
	if res.Latency.Count != int(res.Acked) || res.Latency.P50Ms <= 0 || res.Latency.MaxMs < res.Latency.P99Ms {
		t.Errorf("latency %+v for %d acked", res.Latency, res.Acked)
	}
	st, err := n.JetStream().Stream(ctx, names.MessageStream("bench"))
	if err != nil {
		t.Fatal(err)
	}
	info, err := st.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if stored := int64(info.State.Msgs); stored != res.TotalMessagesAcked {
		t.Errorf("stored %d messages, acknowledged %d", stored, res.TotalMessagesAcked)
	}
}

// TestRunRefusedConnect: a gateway the server does not know fails the run
// with the gateway named.
func TestRunRefusedConnect(t *testing.T) {
	n := nodetest.Start(t, nil)
	cert := testutil.SelfSigned(t, "TSGW06BNC00000009")
	_, err := Run(context.Background(), Target{Name: "iotransit", Addr: n.MQTTAddr(), Gateways: []Gateway{
		{Serial: "TSGW06BNC00000009", TLS: nodetest.ClientTLS(t, n, cert)},
	}}, Config{Duration: time.Second})
	if err == nil {
		t.Fatal("a self-signed gateway connected")
	}
	t.Log(err)
}

func TestRunAgainstMosquitto(t *testing.T) {
	testutil.RequireMosquitto(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	m, err := StartMosquitto(ctx, []string{"TSGW06BNC00000000", "TSGW06BNC00000001"})
	if err != nil {
		t.Fatal(err)
	}
	defer func() {
		if err := m.Close(); err != nil {
			t.Error(err)
		}
		select {
		case <-m.Exited():
		default:
			t.Error("mosquitto still running after Close")
		}
		if _, err := os.Stat(m.dir); !os.IsNotExist(err) {
			t.Errorf("mosquitto files left in %s", m.dir)
		}
	}()
	t.Logf("%s on %s", m.Version, m.Addr())
	res, err := Run(ctx, m.Target(), Config{Warmup: 200 * time.Millisecond, Duration: time.Second})
	if err != nil {
		t.Fatalf("%v\nmosquitto log:\n%s", err, m.Log())
	}
	t.Logf("%+v", res)
	if res.Acked == 0 || res.Errors.Total != 0 {
		t.Fatalf("acked %d, errors %+v\nmosquitto log:\n%s", res.Acked, res.Errors, m.Log())
	}
	// The broker requires a client certificate: a connection without one
	// (or with one from another CA) is refused.
	tgt := m.Target()
	tgt.Gateways = tgt.Gateways[:1]
	noCert := tgt.Gateways[0].TLS.Clone()
	noCert.Certificates = nil
	tgt.Gateways[0].TLS = noCert
	if _, err := Run(ctx, tgt, Config{Duration: 100 * time.Millisecond}); err == nil {
		t.Error("mosquitto accepted a gateway without a client certificate")
	}
}

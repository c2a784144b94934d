package bench

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/iotransit/iotransit/internal/node"
	"github.com/iotransit/iotransit/internal/testutil/nodetest"
)

// TestMeasureAPIAbuseAgainstNode runs the costly-read measurement, small,
// against a real in-process dev node: the tenant is filled, every read is
// measured (the node's read budget refuses none of these few), and the
// other tenant's GETs are timed in both windows.
func TestMeasureAPIAbuseAgainstNode(t *testing.T) {
	n := nodetest.Start(t, func(c *node.Config) { c.Ingest.MsgRate, c.Ingest.MsgBurst = 1e9, 1e6 })
	ca, err := os.ReadFile(filepath.Join(n.DevGatewayDir(), "ca.pem"))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	rep, err := MeasureAPIAbuse(ctx, AbuseConfig{
		Server: "https://" + n.APIAddr(), CAPEM: ca, OperatorKey: n.OperatorKey(),
		MQTTAddr: n.MQTTAddr(), GatewayDir: n.DevGatewayDir(), Tenant: node.DevTenant, Gateway: node.DevGateway,
		PID: os.Getpid(), Messages: 150, Rejected: 120, AuditEntries: 60,
		Requests: 2, Pause: 10 * time.Millisecond, AbuseRate: 20, VictimRate: 20, Window: 500 * time.Millisecond,
	})
	if err != nil {
		t.Fatal(err)
	}
	if rep.Holding.Messages < 150 || rep.Holding.Rejected < 120 || rep.Holding.AuditEntries < 60 {
		t.Errorf("holding %+v", rep.Holding)
	}
	want := map[string]string{"messages?limit=1000": "200", "stream?after=<missing key>": "404", "rejected?code=<no match>": "200", "audit?actor=nobody": "200"}
	for _, c := range rep.Reads {
		if c.Requests < 2 || c.Statuses[want[c.Read]] != c.Requests || c.Refused {
			t.Errorf("%s: %+v", c.Read, c)
		}
		delete(want, c.Read)
	}
	if len(want) != 0 {
		t.Errorf("reads not measured: %v", want)
	}
	if rep.Quiet.Latency.Count == 0 || rep.Abused.Latency.Count == 0 || rep.Quiet.Errors+rep.Abused.Errors != 0 || len(rep.Abused.Abuser) == 0 {
		t.Errorf("victim windows: %+v / %+v", rep.Quiet, rep.Abused)
	}
	var out bytes.Buffer
	if err := rep.WriteTable(&out); err != nil || !strings.Contains(out.String(), "audit?actor=nobody") {
		t.Errorf("table: %v\n%s", err, out.String())
	}
}

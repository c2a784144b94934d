package node_test

import (
	"context"
	"encoding/json"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/iotransit/iotransit/internal/gateway"
	"github.com/iotransit/iotransit/internal/node"
	"github.com/iotransit/iotransit/internal/testutil/nodetest"
)

// TestFsyncAlwaysGroupCommitsUploads: a node with --fsync always stores
// what several MQTT 5 gateways upload at once (each keeping publishes in
// flight) in shared commits (iotransit_store_commit_batch_messages holds
// batches of more than one message), acknowledges every publish, and
// stores each message once.
func TestFsyncAlwaysGroupCommitsUploads(t *testing.T) {
	n := nodetest.Start(t, func(c *node.Config) { c.Fsync = node.FsyncAlways })
	const (
		gateways = 8
		each     = 100
	)
	base := time.Now().Add(-time.Hour).Unix()
	ups := make([]*gateway.Uplink, gateways)
	for g := range ups {
		serial := fmt.Sprintf("TSGW06FSY%08d", g)
		up, err := nodetest.Dial(t, n, nodetest.Gateway(t, n, node.DevTenant, serial), serial, nil)
		if err != nil {
			t.Fatal(err)
		}
		ups[g] = up
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	var (
		wg       sync.WaitGroup
		mu       sync.Mutex
		failures []string
	)
	for g, up := range ups {
		wg.Go(func() {
			pending := make([]*gateway.Pending, 0, each)
			for i := range each {
				msg := fmt.Sprintf(`{"tsmId":13100,"tsmEv":10,"tsmTs":%d,"tsmTuid":"TSPR04FSY%08d","moveCount":%d}`, base+int64(i), g, i)
				p, err := up.Send(ctx, []byte(msg))
				if err != nil {
					mu.Lock()
					failures = append(failures, fmt.Sprintf("gateway %d, publish %d: %v", g, i, err))
					mu.Unlock()
					return
				}
				pending = append(pending, p)
			}
			for i, p := range pending {
				res, err := p.Wait(ctx)
				if err != nil || res.ReasonCode != 0 {
					mu.Lock()
					failures = append(failures, fmt.Sprintf("gateway %d, publish %d: %v, reason 0x%02x %s", g, i, err, res.ReasonCode, res.Reason))
					mu.Unlock()
				}
			}
		})
	}
	wg.Wait()
	for _, f := range failures {
		t.Error(f)
	}
	if len(failures) > 0 {
		t.FailNow()
	}

	seen := map[string]bool{}
	for _, m := range nodetest.NewAPI(t, n).Messages(node.DevTenant, 1000) {
		var v struct {
			TsmTuid   string
			MoveCount int
		}
		if err := json.Unmarshal(m.Message, &v); err != nil {
			t.Fatal(err)
		}
		k := fmt.Sprintf("%s/%d", v.TsmTuid, v.MoveCount)
		if seen[k] {
			t.Errorf("%s stored twice", k)
		}
		seen[k] = true
	}
	if len(seen) != gateways*each {
		t.Errorf("%d messages stored, want %d", len(seen), gateways*each)
	}

	mfs, err := n.Metrics().Gather()
	if err != nil {
		t.Fatal(err)
	}
	var commits, messages uint64
	for _, mf := range mfs {
		if mf.GetName() == "iotransit_store_commit_batch_messages" {
			for _, m := range mf.GetMetric() {
				commits += m.GetHistogram().GetSampleCount()
				messages += uint64(m.GetHistogram().GetSampleSum())
			}
		}
	}
	t.Logf("%d messages in %d commits", messages, commits)
	if messages < gateways*each || messages <= commits {
		t.Errorf("%d messages in %d commits: want all %d, in batches of more than one", messages, commits, gateways*each)
	}
}

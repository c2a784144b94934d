package bench

import (
	"context"
	"regexp"
	"strings"
	"testing"
	"time"
)

// TestMeasureExternalForward measures the forwarding of a node through
// its API and MQTT listener only, to the bench's receiver, at a steady
// rate: every acknowledged message arrives once and in its device's order,
// and the figures agree with two independent counts, the receiver's
// requests and the message stream's growth. With the receiver answering
// 503 for a while, the server delivers those batches again and nothing is
// missing.
func TestMeasureExternalForward(t *testing.T) {
	for _, tc := range []struct {
		name   string
		outage time.Duration
	}{
		{"steady", 0},
		{"receiver outage", 1500 * time.Millisecond},
	} {
		t.Run(tc.name, func(t *testing.T) {
			o := ExternalForwardOptions{Server: externalNode(t, 3), Outage: tc.outage,
				Forward: Options{ForwardBatch: 20, ForwardWait: 10 * time.Millisecond, ForwardConcurrency: 2}}
			ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
			defer cancel()
			cfg := tinyLoad
			cfg.Duration, cfg.Rate = time.Second, 150
			rep, failures, err := MeasureExternalForward(ctx, NewHeader(ModeExternal, "test", map[string]string{}), o, cfg)
			if err != nil || len(failures) > 0 {
				t.Fatalf("err %v, failures %v", err, failures)
			}
			fr, st := rep.Forward, rep.Stored
			if fr == nil || st == nil || rep.Run == nil {
				t.Fatalf("report %+v", rep)
			}
			defer func() {
				if t.Failed() {
					t.Logf("forward %+v\nstored %+v", fr, st)
				}
			}()
			// Nothing lost, nothing twice, nothing out of order.
			if fr.Published == 0 || fr.Acked != fr.Published || fr.Arrived != fr.Acked || fr.Missing != 0 || !fr.Drained {
				t.Errorf("published %d, acked %d, arrived %d, missing %d, drained %v", fr.Published, fr.Acked, fr.Arrived, fr.Missing, fr.Drained)
			}
			if fr.OrderViolations != 0 || fr.Unknown != 0 || fr.SignatureFailures != 0 || fr.BadRequests != 0 {
				t.Errorf("order violations %d, unknown %d, signature failures %d, bad requests %d: %v", fr.OrderViolations, fr.Unknown, fr.SignatureFailures, fr.BadRequests, fr.Samples)
			}
			// The receiver's own count of what it got, duplicates aside.
			if fr.MessagesReceived-fr.Duplicates != fr.Arrived {
				t.Errorf("the receiver got %d messages with %d duplicates, the trace %d distinct", fr.MessagesReceived, fr.Duplicates, fr.Arrived)
			}
			// The stream's count: what the bench saw acknowledged is what the
			// server stored, and what arrived.
			if !st.OK || st.Acked != fr.Acked || st.Delta != uint64(fr.Arrived) || rep.Run.TotalMessagesAcked != fr.Acked {
				t.Errorf("stored %+v, the trace %d acked, %d arrived, the load %d acked", st, fr.Acked, fr.Arrived, rep.Run.TotalMessagesAcked)
			}
			if fr.E2E.Count == 0 || fr.E2E.P50Ms <= 0 || fr.E2E.P999Ms < fr.E2E.P99Ms || fr.Concurrency != 2 || fr.MaxBatch > 20 {
				t.Errorf("e2e %+v, lanes %d, max batch %d", fr.E2E, fr.Concurrency, fr.MaxBatch)
			}
			if rep.ServerCPUPerMessageUs == nil || rep.ServerRSSBytes <= 0 || rep.Throughput <= 0 {
				t.Errorf("server CPU per message %v, RSS %d, throughput %.0f", rep.ServerCPUPerMessageUs, rep.ServerRSSBytes, rep.Throughput)
			}
			if a := fr.AfterWait; a == nil || a.Backlog != 0 || a.State.Delivered != uint64(fr.Arrived) {
				t.Errorf("integration after the wait %+v", a)
			}
			switch {
			case tc.outage == 0 && (fr.Refused != 0 || fr.Duplicates != 0 || fr.DeliveredPerSecond <= 0):
				t.Errorf("no outage, yet %d refusals, %d duplicates, %.0f delivered/s", fr.Refused, fr.Duplicates, fr.DeliveredPerSecond)
			case tc.outage > 0 && (fr.Refused == 0 || fr.AfterWait == nil || fr.AfterWait.State.Failed == 0):
				t.Errorf("an outage the server did not notice: %d refusals, integration %+v", fr.Refused, fr.AfterWait)
			}
			var table strings.Builder
			rep.WriteTable(&table)
			for _, want := range []string{`forward: delivered messages/s +\d+\n`, `e2e latency p99 / p99\.9 +[\d.]+ ms / `, `order violations \(devices\) +0\n`, `missing \(acked, not arrived\) +0, after`} {
				if !regexp.MustCompile(want).MatchString(table.String()) {
					t.Errorf("table lacks %s:\n%s", want, table.String())
				}
			}
		})
	}
}

// TestMeasureExternalForwardInterruptedDeletesItsIntegration: a run
// interrupted (Ctrl-C) while it waits for the messages to arrive still
// deletes its integration: left behind, the server would go on forwarding
// to a receiver that is gone, retrying and dead-lettering.
func TestMeasureExternalForwardInterruptedDeletesItsIntegration(t *testing.T) {
	o := ExternalForwardOptions{Server: externalNode(t, 1), Forward: Options{ForwardBatch: 20, ForwardWait: 10 * time.Millisecond}}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	run, interrupt := context.WithCancel(ctx)
	defer interrupt()
	cfg := tinyLoad
	cfg.Rate = 20
	cfg.Progress = func(format string, _ ...any) {
		if strings.Contains(format, "load done") {
			interrupt()
		}
	}
	_, _, _ = MeasureExternalForward(run, NewHeader(ModeExternal, "test", map[string]string{}), o, cfg)
	if run.Err() == nil {
		t.Fatal("the run was not interrupted while it waited")
	}
	api, _, err := NewAPIClient(o.Server.APIURL, o.Server.CAPEM, o.Server.OperatorKey)
	if err != nil {
		t.Fatal(err)
	}
	defer api.Close()
	list, err := api.ListIntegrations(ctx, o.Server.Tenant)
	if err != nil || len(list) != 0 {
		t.Errorf("integrations left: %+v, %v", list, err)
	}
}

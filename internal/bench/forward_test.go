package bench

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"log/slog"
	"net/http"
	"strconv"
	"testing"
	"time"

	"github.com/iotransit/iotransit/internal/forward"
	"github.com/iotransit/iotransit/internal/forward/webhook"
	"github.com/iotransit/iotransit/receiver"
)

// forwarded returns the webhook body the node would make of payloads:
// their messages with tsmCloudTs appended, as one JSON array.
func forwarded(t *testing.T, cloud time.Time, payloads ...[]byte) []byte {
	t.Helper()
	var msgs [][]byte
	for _, p := range payloads {
		p = bytes.TrimSpace(p)
		if p[0] == '[' {
			for m := range bytes.SplitSeq(p[1:len(p)-1], []byte("},{")) {
				m = bytes.TrimPrefix(bytes.TrimSuffix(m, []byte("}")), []byte("{"))
				msgs = append(msgs, []byte("{"+string(m)+"}"))
			}
		} else {
			msgs = append(msgs, p)
		}
	}
	var b bytes.Buffer
	b.WriteByte('[')
	for i, m := range msgs {
		if i > 0 {
			b.WriteByte(',')
		}
		b.Write(m[:len(m)-1])
		fmt.Fprintf(&b, `,"tsmCloudTs":%.3f}`, float64(cloud.UnixMilli())/1000)
	}
	b.WriteByte(']')
	return b.Bytes()
}

// TestForwardTrace matches received messages with their publishes:
// arrivals, duplicates, unknown messages, missing ones and the latencies.
func TestForwardTrace(t *testing.T) {
	for _, kind := range []PayloadKind{PayloadTypical, PayloadArray10} {
		t.Run(string(kind), func(t *testing.T) {
			const gateways, pubs = 3, 20
			tr := NewForwardTrace(gateways, kind.Messages())
			t0 := time.Now().Truncate(time.Second)
			payloads := make([][][]byte, gateways)
			for g := range gateways {
				gen := newPayloadGen(kind, g, fmt.Sprintf("TSGW06BNC%08d", g))
				for j := range pubs {
					at := t0.Add(time.Duration(j) * 100 * time.Millisecond) // 10 per second: tsmTs changes
					tr.Published(g, int64(j), at)
					payloads[g] = append(payloads[g], gen.next(at))
					tr.Answered(g, int64(j), j != pubs-1) // the last one failed
				}
			}
			// Everything arrives 20 ms after its publish except gateway 2's
			// publish 5 (never) and 6 (twice); one message is foreign.
			for g := range gateways {
				for j := range pubs {
					if g == 2 && j == 5 {
						continue
					}
					at := t0.Add(time.Duration(j)*100*time.Millisecond + 20*time.Millisecond)
					body := forwarded(t, at.Add(-5*time.Millisecond), payloads[g][j])
					tr.receive(at, fmt.Sprintf("msg_%d_%d", g, j), body, nil)
					if g == 2 && j == 6 {
						tr.receive(at.Add(time.Second), fmt.Sprintf("msg_%d_%d", g, j), body, nil)
					}
				}
			}
			foreign := []byte(`[{"tsmId":12100,"tsmEv":10,"temp":1.0,"tsmTs":1,"tsmTuid":"TSEN01ABC00000001","tsmCloudTs":2}]`)
			tr.receive(t0.Add(3*time.Second), "msg_foreign", foreign, nil)
			tr.receive(t0.Add(3*time.Second), "msg_bad", []byte(`{"not":"an array"}`), fmt.Errorf("bad signature"))

			per := int64(kind.Messages())
			arrived, undelivered := tr.Progress()
			if arrived != (gateways*pubs-1)*per || undelivered != per {
				t.Errorf("progress: arrived %d, undelivered %d", arrived, undelivered)
			}
			// The window holds publishes 0..9 (the first second).
			r := tr.Result(t0, t0.Add(time.Second))
			if r.Published != gateways*pubs*per || r.Acked != gateways*(pubs-1)*per {
				t.Errorf("published %d, acked %d", r.Published, r.Acked)
			}
			if r.Arrived != (gateways*pubs-1)*per || r.Missing != per || r.ArrivedUnacked != gateways*per {
				t.Errorf("arrived %d, missing %d, arrived unacked %d", r.Arrived, r.Missing, r.ArrivedUnacked)
			}
			if r.Duplicates != per || r.RetriedBatches != 1 || r.Unknown != 1 || r.BadRequests != 1 || r.SignatureFailures != 1 {
				t.Errorf("duplicates %d, retried %d, unknown %d, bad %d, signature failures %d",
					r.Duplicates, r.RetriedBatches, r.Unknown, r.BadRequests, r.SignatureFailures)
			}
			if r.Batches != gateways*pubs+1-1+2 || r.MaxBatch != int(per) {
				t.Errorf("batches %d, max %d", r.Batches, r.MaxBatch)
			}
			// In the window: 10 publishes per gateway, gateway 2's publish 5 missing.
			if want := int((gateways*10 - 1) * per); r.E2E.Count != want || r.E2E.P50Ms != 20 || r.E2E.MaxMs != 20 {
				t.Errorf("e2e %+v, want %d samples of 20 ms", r.E2E, want)
			}
			if r.CloudToReceiver.P50Ms < 4 || r.CloudToReceiver.P50Ms > 6 {
				t.Errorf("cloud to receiver %+v, want about 5 ms", r.CloudToReceiver)
			}
			// Received in the window: publishes 0..9 of each gateway (the last
			// at 920 ms) but gateway 2's 5, which is still pending at its end.
			if want := (gateways*10 - 1) * per; r.DeliveredInWindow != want || r.PendingAtWindowEnd != per {
				t.Errorf("delivered in window %d (want %d), pending at its end %d", r.DeliveredInWindow, want, r.PendingAtWindowEnd)
			}
			if len(r.Samples) == 0 {
				t.Error("no samples")
			}
		})
	}
}

// TestForwardTraceWrap: lght repeats every 200000 publishes; tsmTs tells
// them apart.
func TestForwardTraceWrap(t *testing.T) {
	tr := NewForwardTrace(1, 1)
	t0 := time.Unix(1_800_000_000, 0)
	gen := newPayloadGen(PayloadTypical, 0, "TSGW06BNC00000000")
	var last []byte
	for j := range lghtModulus + 2 {
		at := t0.Add(time.Duration(j) * time.Millisecond)
		tr.Published(0, int64(j), at)
		tr.Answered(0, int64(j), true)
		p := gen.next(at)
		if j == lghtModulus+1 {
			last = p
		}
	}
	tr.receive(t0.Add(time.Hour), "msg_1", forwarded(t, t0, last), nil)
	gw := tr.gws[0]
	if gw.msgs[lghtModulus+1].n != 1 || gw.msgs[1].n != 0 {
		t.Errorf("matched the wrong publish: %d, %d", gw.msgs[lghtModulus+1].n, gw.msgs[1].n)
	}
}

// TestWebhookReceiver posts signed and unsigned batches over HTTPS.
func TestWebhookReceiver(t *testing.T) {
	rc, err := StartWebhookReceiver("")
	if err != nil {
		t.Fatal(err)
	}
	defer rc.Close()
	secret, _ := webhook.GenerateSecret()
	key, _ := receiver.ParseSecret(secret)
	tr := NewForwardTrace(1, 1)
	if err := rc.Route("/hook/x", tr, secret); err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM([]byte(rc.CAPEM))
	hc := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}}}
	now := time.Now()
	tr.Published(0, 0, now)
	tr.Answered(0, 0, true)
	body := forwarded(t, now, newPayloadGen(PayloadTypical, 0, "TSGW06BNC00000000").next(now))
	post := func(path string, sign bool) int {
		req, _ := http.NewRequestWithContext(context.Background(), http.MethodPost, rc.URL(path), bytes.NewReader(body))
		req.Header.Set("webhook-id", "msg_1")
		req.Header.Set("webhook-timestamp", strconv.FormatInt(now.Unix(), 10))
		if sign {
			req.Header.Set("webhook-signature", webhook.Sign([][]byte{key}, "msg_1", now, body))
		} else {
			req.Header.Set("webhook-signature", "v1,bm9wZQ==")
		}
		res, err := hc.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		res.Body.Close()
		return res.StatusCode
	}
	if c := post("/hook/x", true); c != 200 {
		t.Fatalf("HTTP %d", c)
	}
	if c := post("/hook/x", false); c != 200 {
		t.Fatalf("HTTP %d", c)
	}
	if c := post("/elsewhere", true); c != 404 {
		t.Errorf("stray path: HTTP %d", c)
	}
	r := tr.Result(now.Add(-time.Second), now.Add(time.Second))
	if r.Arrived != 1 || r.Duplicates != 1 || r.SignatureFailures != 1 || r.Batches != 2 || r.RetriedBatches != 1 || rc.Stray() != 1 {
		t.Errorf("%+v, stray %d", r, rc.Stray())
	}
}

// TestMeasureForwardConcurrency: the forward benchmark's integration
// delivers through the lanes ForwardConcurrency asks for (the server's
// default without it), and everything published arrives.
func TestMeasureForwardConcurrency(t *testing.T) {
	for _, tc := range []struct {
		name        string
		concurrency int
		want        int
	}{
		{name: "set", concurrency: 2, want: 2},
		{name: "server default", concurrency: 0, want: forward.DefaultConcurrency},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
			defer cancel()
			o := Options{
				Gateways: 3, Fsync: "default", TmpDir: t.TempDir(), Log: slog.DiscardHandler,
				Forward: "webhook", ForwardBatch: 20, ForwardWait: 10 * time.Millisecond, ForwardConcurrency: tc.concurrency,
			}
			cfg := Config{Warmup: 200 * time.Millisecond, Duration: 500 * time.Millisecond, Rate: 100, Payload: PayloadTypical, Window: 1, MaxInflight: 10}
			rep := NewReport("test", nil)
			failures, err := Measure(ctx, rep, o, cfg)
			if err != nil || len(failures) > 0 {
				t.Fatalf("measure: %v %v", err, failures)
			}
			if len(rep.Results) != 2 {
				t.Fatalf("%d results, want the steady and the throughput phase", len(rep.Results))
			}
			for _, r := range rep.Results {
				f := r.Forward
				if f == nil || f.Concurrency != tc.want || f.Published == 0 || f.Arrived != f.Published || f.Missing != 0 {
					t.Errorf("phase %+v, want %d lanes and every message arrived", f, tc.want)
				}
			}
		})
	}
}

// TestForwardTraceOrder: a device's message arriving after a later one
// is out of order when the later one was published after the earlier one
// was acknowledged (the server then stored them in that order); not when
// both were in flight at once, and not for a redelivery.
func TestForwardTraceOrder(t *testing.T) {
	for _, tc := range []struct {
		name string
		// inFlight publishes message 1 before message 0 is acknowledged.
		inFlight bool
		arrivals []int
		want     int64
	}{
		{"in order", false, []int{0, 1}, 0},
		{"acknowledged, then overtaken", false, []int{1, 0}, 1},
		{"in flight together", true, []int{1, 0}, 0},
		{"a redelivery after a later one", false, []int{0, 1, 0}, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tr := NewForwardTrace(1, 1)
			gen := newPayloadGen(PayloadTypical, 0, "TSGW06BNC00000000")
			t0 := time.Now().Add(-time.Second)
			var payloads [][]byte
			at := []time.Time{t0, t0.Add(time.Millisecond)}
			if !tc.inFlight {
				at[1] = time.Now().Add(time.Millisecond) // after the answer to 0
			}
			tr.Published(0, 0, at[0])
			payloads = append(payloads, gen.next(at[0]))
			if !tc.inFlight {
				tr.Answered(0, 0, true)
			}
			tr.Published(0, 1, at[1])
			payloads = append(payloads, gen.next(at[1]))
			if tc.inFlight {
				tr.Answered(0, 0, true)
			}
			tr.Answered(0, 1, true)
			for k, j := range tc.arrivals {
				tr.receive(time.Now(), fmt.Sprintf("msg_%d", k), forwarded(t, time.Now(), payloads[j]), nil)
			}
			r := tr.Result(t0, time.Now())
			if r.OrderViolations != tc.want || r.DevicesOutOfOrder != int(tc.want) || r.Unknown != 0 || r.Missing != 0 {
				t.Errorf("order violations %d of %d devices, unknown %d, missing %d: want %d", r.OrderViolations, r.DevicesOutOfOrder, r.Unknown, r.Missing, tc.want)
			}
			if tc.want > 0 && len(r.Samples) == 0 {
				t.Error("no sample says what was out of order")
			}
		})
	}
}

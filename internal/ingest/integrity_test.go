package ingest_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/iotransit/iotransit/internal/backbone"
	"github.com/iotransit/iotransit/internal/backbone/names"
	"github.com/iotransit/iotransit/internal/gateway"
	"github.com/iotransit/iotransit/internal/ingest"
	"github.com/iotransit/iotransit/internal/node"
	"github.com/iotransit/iotransit/internal/store"
	tu "github.com/iotransit/iotransit/internal/testutil"
	"github.com/iotransit/iotransit/internal/testutil/nodetest"
	"github.com/iotransit/iotransit/internal/testutil/storetest"
)

// TestIngestCoreConcurrentUploadsStoredIntact is the check of the accept
// path's pooled buffers (the upload's messages, records and bodies, the
// store's sealing buffer and messages, the shared deadline contexts):
// many goroutines, each keeping several uploads in flight as the MQTT
// pipeline does (Begin, then Wait in order) and scribbling over each
// payload as soon as Begin returned, upload distinct messages, some with a
// rejected one among them, per record and under group commit (--fsync
// always). Every stored message is then read back and compared with what
// was sent (subject, headers, body), every stored rejection's raw bytes
// with the element sent, and every report with the rejection it names. A
// buffer reused while something still referred to it stores or reports
// another upload's bytes.
func TestIngestCoreConcurrentUploadsStoredIntact(t *testing.T) {
	modes := []struct {
		name string
		bb   backbone.Config
		st   store.Config
	}{
		{name: "per record", bb: backbone.Config{Replicas: 1}},
		{name: "group commit", bb: backbone.Config{Replicas: 1, SyncAlways: true}, st: store.Config{GroupCommit: true}},
	}
	for _, mode := range modes {
		t.Run(mode.name, func(t *testing.T) {
			mode.bb.DataDir = t.TempDir()
			e := newCoreOn(t, ingest.Config{MsgRate: 1e9, MsgBurst: 1e6}, false, mode.bb, mode.st)
			c, cancel := context.WithTimeout(context.Background(), 60*time.Second*tu.Slowdown())
			defer cancel()
			const (
				uploaders = 8
				uploads   = 30
				inFlight  = 4
			)
			l := newLedger()
			failf := l.failf
			var wg sync.WaitGroup
			for g := range uploaders {
				wg.Go(func() {
					serial := []string{gwA, gwB}[g%2]
					id := ingest.Identity{Tenant: tenant, Serial: serial}
					type inflight struct {
						p       *ingest.Pending
						valid   int
						badTuid string // "" when every message is valid
						badAt   int
					}
					var queue []inflight
					settle := func() {
						f := queue[0]
						queue = queue[1:]
						out := f.p.Wait()
						switch {
						case out.Status == ingest.PersistFailed:
							failf("uploader %d: %v", g, out.Err)
						case out.Accepted != f.valid || out.Stored != f.valid:
							failf("uploader %d: %+v, want %d stored", g, out, f.valid)
						case f.badTuid == "" && out.Report != nil:
							failf("uploader %d: a report %+v of no rejection", g, out.Report)
						case f.badTuid != "" && (out.Report == nil || len(out.Report.Rejected) != 1):
							failf("uploader %d: report %+v, want one rejection", g, out.Report)
						case f.badTuid != "":
							r := out.Report.Rejected[0]
							if r.Tuid != f.badTuid || r.Index != f.badAt || r.Field != "temp" || r.TsmID != 12100 ||
								!strings.Contains(r.Reason, "temp") || r.Code != "thingsee.field_range" {
								failf("uploader %d: reported %+v, want tsmTuid %s at %d", g, r, f.badTuid, f.badAt)
							}
						}
					}
					var payload []byte // reused for every upload
					for u := range uploads {
						n := 1 + (g+u)%4
						bad := -1
						if u%3 == 0 {
							bad = (g + u) % n
						}
						payload = append(payload[:0], '[')
						f := inflight{valid: n, badAt: bad}
						for i := range n {
							if i > 0 {
								payload = append(payload, ',')
							}
							tuid, msg := l.message(serial, g, u, i, i == bad)
							if i == bad {
								f.valid--
								f.badTuid = tuid
							}
							payload = append(payload, msg...)
						}
						payload = append(payload, ']')
						f.p = e.core.Begin(context.Background(), id, payload)
						for i := range payload {
							payload[i] = '#'
						}
						queue = append(queue, f)
						if len(queue) == inFlight {
							settle()
						}
					}
					for len(queue) > 0 {
						settle()
					}
				})
			}
			wg.Wait()
			for _, f := range l.failures {
				t.Error(f)
			}
			sent, sentRej := l.valid, l.rejected

			stored := storetest.Messages(t, e.bb, e.st, tenant)
			for _, sm := range stored {
				raw, m, seq := sm.Raw, sm.Msg, sm.Raw.Sequence
				var body struct {
					TsmID   int     `json:"tsmId"`
					TsmTs   int64   `json:"tsmTs"`
					TsmTuid string  `json:"tsmTuid"`
					TsmGw   string  `json:"tsmGw"`
					Temp    float64 `json:"temp"`
					Humd    float64 `json:"humd"`
					CloudTs float64 `json:"tsmCloudTs"`
				}
				if err := json.Unmarshal(m.Message, &body); err != nil {
					t.Errorf("message %d: body %s: %v", seq, m.Message, err)
					continue
				}
				w, ok := sent[body.TsmTuid]
				if !ok {
					t.Errorf("message %d: tsmTuid %q was never sent valid: %s", seq, body.TsmTuid, m.Message)
					continue
				}
				delete(sent, body.TsmTuid) // stored once
				checks := []struct{ what, got, want string }{
					{"subject", raw.Subject, names.Message(tenant, w.serial, body.TsmTuid, 12100)},
					{"body", fmt.Sprint(body.TsmID, body.TsmTs, body.TsmGw, body.Temp, body.Humd, body.CloudTs > 0),
						fmt.Sprint(12100, w.ts, w.serial, w.temp, 41.5, true)},
					{"Iot-Gateway", raw.Header.Get("Iot-Gateway"), w.serial},
					{"Iot-Tuid", raw.Header.Get("Iot-Tuid"), body.TsmTuid},
					{"Iot-Tsm-Id", raw.Header.Get("Iot-Tsm-Id"), "12100"},
					{"gateway", m.Gateway, w.serial},
					{"content id", raw.Header.Get(jetstream.MsgIDHeader), m.ID},
				}
				for _, ch := range checks {
					if ch.got != ch.want {
						t.Errorf("message %d (%s): %s %q, sent %q", seq, body.TsmTuid, ch.what, ch.got, ch.want)
					}
				}
				if _, err := strconv.ParseInt(raw.Header.Get("Iot-Received"), 10, 64); err != nil || m.ReceivedAt.IsZero() {
					t.Errorf("message %d: Iot-Received %q", seq, raw.Header.Get("Iot-Received"))
				}
			}
			for tuid := range sent {
				t.Errorf("%s sent valid, acknowledged, not stored", tuid)
			}
			if len(stored) == 0 {
				t.Fatal("nothing stored")
			}

			rej, err := e.st.RejectedMessages(c, tenant, store.MaxLimit)
			if err != nil {
				t.Fatal(err)
			}
			if len(rej) != len(sentRej) {
				t.Errorf("%d rejections stored, %d sent", len(rej), len(sentRej))
			}
			for _, r := range rej {
				if w, ok := sentRej[r.Tuid]; !ok || string(r.Raw) != w || r.Field != "temp" {
					t.Errorf("rejection of %q stored as %s (field %q), sent %s", r.Tuid, r.Raw, r.Field, w)
				}
			}
		})
	}
}

// TestIngestFsyncAlwaysUploadsStoredIntact is
// TestIngestCoreConcurrentUploadsStoredIntact through the MQTT front end
// of a node with --fsync always (group commit): several gateways, each
// keeping publishes in flight, upload distinct messages, some with a
// rejected one among them. Every publish is acknowledged; every stored
// message has the body and gateway it was sent with, every stored
// rejection the element sent, and every report on down/errors names
// exactly the rejections of its gateway.
func TestIngestFsyncAlwaysUploadsStoredIntact(t *testing.T) {
	n := nodetest.Start(t, func(c *node.Config) {
		nodetest.NoLimits(c)
		c.Fsync = node.FsyncAlways
		c.Ingest.MsgRate, c.Ingest.MsgBurst = 1e6, 1e6
	})
	const (
		gateways = 6
		uploads  = 40
	)
	l := newLedger()
	failf, mu := l.failf, &l.mu
	reported := map[string]string{} // tsmTuid -> serial whose report named it (under mu)
	ups := make([]*gateway.Uplink, gateways)
	for g := range ups {
		serial := fmt.Sprintf("TSGW06INT%08d", g)
		up, err := nodetest.Dial(t, n, nodetest.Gateway(t, n, tenant, serial), serial, func(c *gateway.UplinkConfig) {
			c.OnReport = func(b []byte) {
				var rep ingest.Report
				if err := json.Unmarshal(b, &rep); err != nil {
					failf("%s: report %s: %v", serial, b, err)
					return
				}
				mu.Lock()
				defer mu.Unlock()
				for _, r := range rep.Rejected {
					if prev, ok := reported[r.Tuid]; ok {
						l.failures = append(l.failures, fmt.Sprintf("%s: %s reported again (first by %s)", serial, r.Tuid, prev))
					}
					reported[r.Tuid] = serial
				}
			}
		})
		if err != nil {
			t.Fatal(err)
		}
		ups[g] = up
	}
	c, cancel := context.WithTimeout(context.Background(), 60*time.Second*tu.Slowdown())
	defer cancel()
	var wg sync.WaitGroup
	for g, up := range ups {
		wg.Go(func() {
			serial := fmt.Sprintf("TSGW06INT%08d", g)
			pending := make([]*gateway.Pending, 0, uploads)
			var codes []byte // the PUBACK reason code each upload is due
			for u := range uploads {
				k := 1 + (g+u)%3
				bad := -1
				if u%4 == 0 {
					bad = (g + u) % k
				}
				var parts []string
				for i := range k {
					_, msg := l.message(serial, g, u, i, i == bad)
					parts = append(parts, msg)
				}
				p, err := up.Send(c, []byte("["+strings.Join(parts, ",")+"]"))
				if err != nil {
					failf("%s: publish %d: %v", serial, u, err)
					return
				}
				pending = append(pending, p)
				code := byte(0)
				if k == 1 && bad == 0 {
					code = 0x99 // nothing valid: payload format invalid
				}
				codes = append(codes, code)
			}
			for i, p := range pending {
				if res, err := p.Wait(c); err != nil || res.ReasonCode != codes[i] {
					failf("%s: publish %d: %v, reason 0x%02x %s", serial, i, err, res.ReasonCode, res.Reason)
				}
			}
		})
	}
	wg.Wait()
	mu.Lock()
	for _, f := range l.failures {
		t.Error(f)
	}
	l.failures = nil
	mu.Unlock()
	if t.Failed() {
		t.FailNow()
	}
	sent, sentRej := l.valid, l.rejected

	api := nodetest.NewAPI(t, n)
	msgs := api.Messages(tenant, 1000)
	if len(msgs) != len(sent) {
		t.Errorf("%d messages stored, %d sent valid", len(msgs), len(sent))
	}
	for _, m := range msgs {
		var body struct {
			TsmTs   int64   `json:"tsmTs"`
			TsmTuid string  `json:"tsmTuid"`
			TsmGw   string  `json:"tsmGw"`
			Temp    float64 `json:"temp"`
			Humd    float64 `json:"humd"`
		}
		if err := json.Unmarshal(m.Message, &body); err != nil {
			t.Errorf("message %d: %s: %v", m.Seq, m.Message, err)
			continue
		}
		w, ok := sent[body.TsmTuid]
		if got, want := fmt.Sprint(m.Gateway, body.TsmGw, body.TsmTs, body.Temp, body.Humd), fmt.Sprint(w.serial, w.serial, w.ts, w.temp, 41.5); !ok || got != want {
			t.Errorf("message %d (%s) stored as %s, sent %s", m.Seq, body.TsmTuid, got, want)
		}
		delete(sent, body.TsmTuid)
	}
	rej := api.Rejected(tenant, 1000)
	if len(rej) != len(sentRej) {
		t.Errorf("%d rejections stored, %d sent", len(rej), len(sentRej))
	}
	for _, r := range rej {
		var got, want bytes.Buffer
		_ = json.Compact(&got, r.Message)
		_ = json.Compact(&want, []byte(sentRej[r.Tuid]))
		if got.Len() == 0 || got.String() != want.String() || r.Field != "temp" {
			t.Errorf("rejection of %q stored as %s (field %q), sent %s", r.Tuid, r.Message, r.Field, sentRej[r.Tuid])
		}
	}
	tu.Eventually(t, 10*time.Second*tu.Slowdown(), 20*time.Millisecond, func() error {
		mu.Lock()
		defer mu.Unlock()
		if len(reported) < len(sentRej) {
			return fmt.Errorf("%d rejections reported, %d sent", len(reported), len(sentRej))
		}
		return nil
	})
	mu.Lock()
	defer mu.Unlock()
	for _, f := range l.failures {
		t.Error(f)
	}
	for tuid, serial := range reported {
		if _, ok := sentRej[tuid]; !ok || !strings.HasPrefix(tuid, "TSEN"+serial[len(serial)-2:]) {
			t.Errorf("%s reported to %s, which did not send it rejected", tuid, serial)
		}
	}
}

// sentMsg is a valid message as an uploader sent it.
type sentMsg struct {
	serial string
	ts     int64
	temp   float64
}

// ledger is what concurrent uploaders sent, and the failures they met
// (t.Fatal is not for their goroutines).
type ledger struct {
	mu       sync.Mutex
	valid    map[string]sentMsg // by tsmTuid
	rejected map[string]string  // the element sent, by tsmTuid
	failures []string
}

func newLedger() *ledger {
	return &ledger{valid: map[string]sentMsg{}, rejected: map[string]string{}}
}

func (l *ledger) failf(format string, args ...any) {
	l.mu.Lock()
	l.failures = append(l.failures, fmt.Sprintf(format, args...))
	l.mu.Unlock()
}

// message returns the i-th message of uploader g's upload u, with a
// tsmTuid of its own, and notes it as sent by serial: valid, or rejected
// (its temp out of range) when bad.
func (l *ledger) message(serial string, g, u, i int, bad bool) (tuid, msg string) {
	tuid = fmt.Sprintf("TSEN%02d%011d", g, u*10+i)
	ts := int64(1_700_000_000 + u*10 + i)
	temp := float64(g) + float64(u*10+i)/1000
	if bad {
		temp = 120
	}
	msg = tu.Thingsee(tuid, ts, temp)
	l.mu.Lock()
	defer l.mu.Unlock()
	if bad {
		l.rejected[tuid] = msg
	} else {
		l.valid[tuid] = sentMsg{serial: serial, ts: ts, temp: temp}
	}
	return tuid, msg
}

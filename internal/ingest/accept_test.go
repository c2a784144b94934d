package ingest_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"go/parser"
	"go/token"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/iotransit/iotransit/internal/backbone"
	"github.com/iotransit/iotransit/internal/backbone/names"
	"github.com/iotransit/iotransit/internal/fault"
	"github.com/iotransit/iotransit/internal/ingest"
	"github.com/iotransit/iotransit/internal/registry"
	"github.com/iotransit/iotransit/internal/store"
	tu "github.com/iotransit/iotransit/internal/testutil"
	"github.com/iotransit/iotransit/internal/testutil/storetest"
	"github.com/iotransit/iotransit/internal/thingsee"
)

// coreEnv is an accept core over a real embedded JetStream, registry and
// store, with tenant acme and its gateways gwA and gwB registered; no
// broker is involved.
type coreEnv struct {
	core    *ingest.Core
	bb      *backbone.Backbone
	reg     *registry.Registry
	st      *store.Store
	metrics *prometheus.Registry
}

// strictTenants makes every tenant refuse unknown tsmIds (the registry has
// no setter for that policy yet).
type strictTenants struct{ ingest.Lookup }

func (s strictTenants) Tenant(id string) (registry.Tenant, bool) {
	t, ok := s.Lookup.Tenant(id)
	t.RejectUnknownIDs = true
	return t, ok
}

func newCore(t testing.TB, cfg ingest.Config, strict bool) *coreEnv {
	t.Helper()
	return newCoreOn(t, cfg, strict, backbone.Config{DataDir: t.TempDir(), Replicas: 1}, store.Config{})
}

// newCoreOn is newCore over a backbone and a store of the given
// configurations (for one, SyncAlways and GroupCommit: --fsync always).
func newCoreOn(t testing.TB, cfg ingest.Config, strict bool, bbCfg backbone.Config, stCfg store.Config) *coreEnv {
	t.Helper()
	c, cancel := context.WithTimeout(context.Background(), 20*time.Second*tu.Slowdown())
	t.Cleanup(cancel)
	bb, keys := storetest.BackboneWith(t, bbCfg)
	reg, err := registry.Open(c, bb, keys, tu.Logger(t))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(reg.Close)
	if _, err := reg.CreateTenant(c, tenant); err != nil {
		t.Fatal(err)
	}
	st := store.New(stCfg, bb, bb.JS, keys)
	t.Cleanup(st.Close)
	if err := st.EnsureTenant(c, tenant); err != nil {
		t.Fatal(err)
	}
	for _, gw := range []string{gwA, gwB} {
		if _, err := reg.RegisterGateway(c, tenant, gw); err != nil {
			t.Fatal(err)
		}
	}
	var dir ingest.Lookup = reg
	if strict {
		dir = strictTenants{reg}
	}
	m := prometheus.NewRegistry()
	core, err := ingest.NewCore(cfg, dir, st, m, tu.Logger(t))
	if err != nil {
		t.Fatal(err)
	}
	return &coreEnv{core: core, bb: bb, reg: reg, st: st, metrics: m}
}

func (e *coreEnv) accept(t *testing.T, serial, payload string) ingest.Outcome {
	t.Helper()
	return e.core.Accept(ctx(t), ingest.Identity{Tenant: tenant, Serial: serial}, []byte(payload))
}

func (e *coreEnv) messages(t *testing.T) []store.Message {
	t.Helper()
	msgs, err := e.st.Messages(ctx(t), tenant, 100)
	if err != nil {
		t.Fatal(err)
	}
	return msgs
}

func (e *coreEnv) rejected(t *testing.T) []store.StoredRejected {
	t.Helper()
	rej, err := e.st.RejectedMessages(ctx(t), tenant, 100)
	if err != nil {
		t.Fatal(err)
	}
	return rej
}

func (e *coreEnv) counter(t *testing.T, name, label, value string) float64 {
	t.Helper()
	return tu.Counter(t, e.metrics, name, map[string]string{label: value})
}

// catalogued reports whether a rejection code is in the fault catalogue.
func catalogued(code string) bool {
	for _, d := range fault.Definitions() {
		if d.Code() == code {
			return true
		}
	}
	return false
}

func TestIngestCoreAllStored(t *testing.T) {
	e := newCore(t, ingest.Config{}, false)
	if _, err := e.reg.SetDeploymentGroup(ctx(t), tenant, gwA, "prfi00acme"); err != nil {
		t.Fatal(err)
	}
	payload := "[" + tu.Thingsee(sensor, 1700000000, 21.5) + "," + tu.Thingsee(sensor, 1700000060, 22) + "]"
	out := e.accept(t, gwA, payload)
	if out.Status != ingest.AllStored || out.Accepted != 2 || out.Stored != 2 || out.Duplicates != 0 || out.Rejected != 0 || out.Report != nil || out.Err != nil {
		t.Fatalf("outcome %+v, want all_stored with 2 stored", out)
	}
	// Stored before Accept returned: readable at once, with cloud fields.
	msgs := e.messages(t)
	if len(msgs) != 2 {
		t.Fatalf("stored %d messages, want 2", len(msgs))
	}
	var body map[string]any
	if err := json.Unmarshal(msgs[0].Message, &body); err != nil {
		t.Fatal(err)
	}
	if body["tsmGw"] != gwA || body["deploymentGroupId"] != "prfi00acme" || body["tsmCloudTs"] == nil {
		t.Errorf("stored message %s lacks its cloud fields", msgs[0].Message)
	}
	// A resend (MQTT DUP, a replay after reconnect) is stored once.
	out = e.accept(t, gwA, payload)
	if out.Status != ingest.AllStored || out.Accepted != 2 || out.Stored != 0 || out.Duplicates != 2 {
		t.Errorf("resend outcome %+v, want 2 duplicates", out)
	}
	if n := len(e.messages(t)); n != 2 {
		t.Errorf("after the resend %d messages, want 2", n)
	}
	if c := e.counter(t, "iotransit_ingest_messages_total", "outcome", "duplicate"); c != 2 {
		t.Errorf("duplicate counter %v, want 2", c)
	}
}

func TestIngestCoreSomeRejected(t *testing.T) {
	e := newCore(t, ingest.Config{}, false)
	payload := "[" + tu.Thingsee(sensor, 1700000000, 21.5) + "," +
		tu.Thingsee(sensor, 1700000060, 120) + "," + // out of range
		tu.Thingsee(sensor, 1700000120, 22) + "]"
	out := e.accept(t, gwA, payload)
	if out.Status != ingest.SomeRejected || out.Accepted != 2 || out.Stored != 2 || out.Rejected != 1 {
		t.Fatalf("outcome %+v, want some_rejected: 2 stored, 1 rejected", out)
	}
	rep := out.Report
	if rep == nil || rep.Accepted != 2 || len(rep.Rejected) != 1 || rep.More != 0 || rep.Total() != 1 || rep.PacketID != 0 {
		t.Fatalf("report %+v", rep)
	}
	if r := rep.Rejected[0]; r.Index != 1 || r.Code != thingsee.CodeFieldRange || r.Field != "temp" ||
		!strings.Contains(r.Reason, "120") || r.TsmID != 12100 || r.Tuid != sensor {
		t.Errorf("reported rejection %+v", r)
	}
	if d := time.Since(rep.ReceivedAt); d < 0 || d > time.Minute || rep.ReceivedAt.Location() != time.UTC {
		t.Errorf("report received at %v", rep.ReceivedAt)
	}
	if n := len(e.messages(t)); n != 2 {
		t.Errorf("stored %d messages, want 2", n)
	}
	rej := e.rejected(t)
	if len(rej) != 1 || rej[0].Code != thingsee.CodeFieldRange || rej[0].Gateway != gwA || !bytes.Contains(rej[0].Raw, []byte(`"temp":120`)) {
		t.Errorf("rejected stream %+v", rej)
	}
}

func TestIngestCoreAllRejected(t *testing.T) {
	tests := []struct {
		name    string
		strict  bool
		payload string
		code    string
		index   int
	}{
		{name: "out of range", payload: tu.Thingsee(sensor, 1700000000, 99), code: thingsee.CodeFieldRange},
		{name: "not JSON", payload: "temp=21", code: thingsee.CodePayloadInvalid, index: -1},
		{name: "empty payload", payload: "", code: thingsee.CodePayloadInvalid, index: -1},
		{name: "bad TUID", payload: tu.Thingsee("TSPOD6789", 1700000000, 20), code: thingsee.CodeTuidFormat},
		{name: "another gateway's tsmGw", payload: `{"tsmId":13100,"tsmEv":10,"tsmTs":1700000000,"tsmTuid":"` + sensor + `","tsmGw":"` + gwB + `","moveCount":1}`, code: thingsee.CodeGatewayMismatch},
		{name: "far future", payload: tu.Thingsee(sensor, time.Now().Add(24*time.Hour).Unix(), 20), code: thingsee.CodeTsFuture},
		{name: "unknown tsmId at a strict tenant", strict: true, payload: `{"tsmId":99100,"tsmEv":10,"tsmTs":1700000000,"tsmTuid":"` + sensor + `"}`, code: thingsee.CodeUnknownID},
	}
	lenient := newCore(t, ingest.Config{}, false)
	strict := newCore(t, ingest.Config{}, true)
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			e := lenient
			if tc.strict {
				e = strict
			}
			out := e.accept(t, gwA, tc.payload)
			if out.Status != ingest.AllRejected || out.Accepted != 0 || out.Rejected != 1 || out.Report == nil {
				t.Fatalf("outcome %+v, want all_rejected", out)
			}
			r := out.Report.Rejected[0]
			if r.Code != tc.code || r.Index != tc.index || r.Reason == "" {
				t.Errorf("reported %+v, want code %s at index %d", r, tc.code, tc.index)
			}
			if !catalogued(r.Code) {
				t.Errorf("code %s is not in the fault catalogue", r.Code)
			}
		})
	}
	if n := len(lenient.messages(t)); n != 0 {
		t.Errorf("stored %d invalid messages", n)
	}
	if n := len(lenient.rejected(t)) + len(strict.rejected(t)); n != len(tests) {
		t.Errorf("rejected streams hold %d, want %d", n, len(tests))
	}
	// The same unknown tsmId is stored at a lenient tenant.
	if out := lenient.accept(t, gwA, tests[len(tests)-1].payload); out.Status != ingest.AllStored {
		t.Errorf("unknown tsmId at a lenient tenant: %+v", out)
	}
}

func TestIngestCoreReportIsBounded(t *testing.T) {
	e := newCore(t, ingest.Config{}, false)
	bad := make([]string, 60)
	for i := range bad {
		bad[i] = tu.Thingsee(sensor, 1700000000+int64(i), 200)
	}
	out := e.accept(t, gwA, "["+strings.Join(bad, ",")+"]")
	if out.Status != ingest.AllRejected || out.Rejected != 60 {
		t.Fatalf("outcome %+v, want 60 rejected", out)
	}
	if rep := out.Report; len(rep.Rejected) != 50 || rep.More != 10 || rep.Total() != 60 || rep.Rejected[49].Index != 49 {
		t.Errorf("report names %d, more %d: want the first 50 and 10 more", len(rep.Rejected), rep.More)
	}
	if n := len(e.rejected(t)); n != 60 {
		t.Errorf("rejected stream holds %d, want all 60", n)
	}
}

func TestIngestCoreTooLarge(t *testing.T) {
	e := newCore(t, ingest.Config{MaxPayload: 1024}, false)
	big := `[` + strings.Repeat(tu.Thingsee(sensor, 1700000000, 20)+",", 20) + tu.Thingsee(sensor, 1700000000, 20) + `]`
	out := e.accept(t, gwA, big)
	if out.Status != ingest.TooLarge || out.Accepted != 0 || out.Rejected != 1 || out.Report == nil {
		t.Fatalf("outcome %+v, want too_large", out)
	}
	if r := out.Report.Rejected[0]; r.Code != "ingest.payload_too_large" || r.Index != -1 || r.Reason != "payload larger than 1024 bytes" {
		t.Errorf("reported %+v", r)
	}
	if !catalogued("ingest.payload_too_large") {
		t.Error("ingest.payload_too_large is not in the fault catalogue")
	}
	rej := e.rejected(t)
	if len(rej) != 1 || rej[0].Code != "ingest.payload_too_large" || len(rej[0].Raw) != 1024 || !bytes.HasPrefix([]byte(big), rej[0].Raw) {
		t.Errorf("rejected stream %+v", rej)
	}
	if n := len(e.messages(t)); n != 0 {
		t.Errorf("stored %d messages of a too-large payload", n)
	}
	// At the limit it is validated as usual.
	if out := e.accept(t, gwA, tu.Thingsee(sensor, 1700000000, 20)); out.Status != ingest.AllStored {
		t.Errorf("small payload: %+v", out)
	}
}

func TestIngestCoreRateLimited(t *testing.T) {
	e := newCore(t, ingest.Config{MsgRate: 0.01, MsgBurst: 3}, false)
	// An array counts each of its messages.
	if out := e.accept(t, gwA, "["+tu.Thingsee(sensor, 1700000000, 20)+","+tu.Thingsee(sensor, 1700000001, 20)+"]"); out.Status != ingest.AllStored {
		t.Fatalf("first publish: %+v", out)
	}
	// An invalid message counts as well: it is stored as rejected.
	if out := e.accept(t, gwA, tu.Thingsee(sensor, 1700000002, 200)); out.Status != ingest.AllRejected {
		t.Fatalf("second publish: %+v", out)
	}
	out := e.accept(t, gwA, tu.Thingsee(sensor, 1700000003, 20))
	if out.Status != ingest.RateLimited || out.Accepted != 0 || out.Stored != 0 || out.Rejected != 0 || out.Report != nil {
		t.Fatalf("over the burst: %+v, want rate_limited with nothing stored", out)
	}
	if n, r := len(e.messages(t)), len(e.rejected(t)); n != 2 || r != 1 {
		t.Errorf("stored %d and rejected %d, want 2 and 1", n, r)
	}
	if c := e.counter(t, "iotransit_ingest_publishes_refused_total", "reason", "rate"); c != 1 {
		t.Errorf("rate refusals counted %v, want 1", c)
	}
	// The limit is per gateway.
	if out := e.accept(t, gwB, tu.Thingsee(sensor, 1700000004, 20)); out.Status != ingest.AllStored {
		t.Errorf("another gateway: %+v", out)
	}
}

func TestIngestCorePersistFailed(t *testing.T) {
	tests := []struct {
		name    string
		stream  string
		payload string
	}{
		{name: "message stream", stream: names.MessageStream(tenant), payload: tu.Thingsee(sensor, 1700000000, 20)},
		{name: "rejected stream", stream: names.RejectedStream(tenant), payload: tu.Thingsee(sensor, 1700000000, 200)},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			e := newCore(t, ingest.Config{PersistTimeout: 2 * time.Second}, false)
			if err := e.bb.JS.DeleteStream(ctx(t), tc.stream); err != nil {
				t.Fatal(err)
			}
			out := e.accept(t, gwA, tc.payload)
			if out.Status != ingest.PersistFailed || out.Err == nil || out.Report != nil {
				t.Fatalf("outcome %+v, want persist_failed with its cause and no report", out)
			}
			if c := e.counter(t, "iotransit_ingest_publishes_refused_total", "reason", "persist"); c != 1 {
				t.Errorf("persist failures counted %v, want 1", c)
			}
		})
	}
}

// stall makes the tenant's message stream answer no write: it is deleted
// and a plain subscriber that never replies takes its subject, so that
// every write waits for an acknowledgement that never comes.
func stall(t *testing.T, e *coreEnv) {
	t.Helper()
	if err := e.bb.JS.DeleteStream(ctx(t), names.MessageStream(tenant)); err != nil {
		t.Fatal(err)
	}
	sub, err := e.bb.NC.Subscribe(names.Messages(tenant), func(*nats.Msg) {})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = sub.Unsubscribe() })
	if err := e.bb.NC.Flush(); err != nil {
		t.Fatal(err)
	}
}

// within returns f's Outcome and how long it took, and fails the test
// when f has not returned after 5 s (a persist timeout that does not fire
// would block it for ever, or until the store's own 10 s).
func within(t *testing.T, f func() ingest.Outcome) (ingest.Outcome, time.Duration) {
	t.Helper()
	start := time.Now()
	done := make(chan ingest.Outcome, 1)
	go func() { done <- f() }()
	select {
	case out := <-done:
		return out, time.Since(start)
	case <-time.After(5 * time.Second * tu.Slowdown()):
		t.Fatal("no outcome after 5 s: the persist timeout did not end the wait")
		return ingest.Outcome{}, 0
	}
}

// TestIngestCorePersistTimeout: an upload whose writes JetStream never
// acknowledges is PersistFailed once Config.PersistTimeout passed, by the
// core's own deadline (the store's publish timeout, 10 s, is longer),
// whether the caller's context may end or not (the MQTT front end's never
// does: the core then bounds the wait without a context per upload).
func TestIngestCorePersistTimeout(t *testing.T) {
	timeout := 300 * time.Millisecond * tu.Slowdown()
	for _, tc := range []struct {
		name string
		ctx  func(t *testing.T) context.Context
	}{
		{name: "context that never ends", ctx: func(*testing.T) context.Context { return context.Background() }},
		{name: "context of the caller", ctx: ctx},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := newCore(t, ingest.Config{PersistTimeout: timeout}, false)
			stall(t, e)
			c := tc.ctx(t)
			out, took := within(t, func() ingest.Outcome {
				return e.core.Accept(c, ingest.Identity{Tenant: tenant, Serial: gwA}, []byte(tu.Thingsee(sensor, 1700000000, 20)))
			})
			if out.Status != ingest.PersistFailed || !errors.Is(out.Err, context.DeadlineExceeded) {
				t.Fatalf("outcome %+v, want persist_failed at the persist timeout", out)
			}
			if took < timeout {
				t.Errorf("failed after %v, before the persist timeout %v", took, timeout)
			}
		})
	}
}

// TestIngestCoreInFlightWaitsAtMostPersistTimeout: an upload that finds
// Config.MaxInFlight writes in flight waits for room at most
// Config.PersistTimeout, then is PersistFailed; the stalled upload that
// held the room is PersistFailed too.
func TestIngestCoreInFlightWaitsAtMostPersistTimeout(t *testing.T) {
	timeout := 300 * time.Millisecond * tu.Slowdown()
	e := newCore(t, ingest.Config{PersistTimeout: timeout, MaxInFlight: 1}, false)
	stall(t, e)
	id := ingest.Identity{Tenant: tenant, Serial: gwA}
	first := e.core.Begin(context.Background(), id, []byte(tu.Thingsee(sensor, 1700000000, 20)))
	out, took := within(t, func() ingest.Outcome {
		return e.core.Accept(context.Background(), id, []byte(tu.Thingsee(sensor, 1700000001, 20)))
	})
	if out.Status != ingest.PersistFailed || !errors.Is(out.Err, context.DeadlineExceeded) || !strings.Contains(out.Err.Error(), "in flight") {
		t.Fatalf("outcome %+v, want persist_failed waiting for room in flight", out)
	}
	if took < timeout {
		t.Errorf("failed after %v, before the persist timeout %v", took, timeout)
	}
	if out, _ := within(t, first.Wait); out.Status != ingest.PersistFailed || !errors.Is(out.Err, context.DeadlineExceeded) {
		t.Errorf("stalled upload: %+v, want persist_failed at the persist timeout", out)
	}
}

// TestIngestCoreKnowsNoBroker keeps the accept core free of mochi-mqtt, so
// that another front end can use it.
func TestIngestCoreKnowsNoBroker(t *testing.T) {
	files, err := filepath.Glob("accept*.go")
	if err != nil {
		t.Fatal(err)
	}
	checked := 0
	for _, name := range files {
		if strings.HasSuffix(name, "_test.go") {
			continue
		}
		src, err := os.ReadFile(name)
		if err != nil {
			t.Fatal(err)
		}
		f, err := parser.ParseFile(token.NewFileSet(), name, src, parser.ImportsOnly)
		if err != nil {
			t.Fatal(err)
		}
		for _, imp := range f.Imports {
			if p, _ := strconv.Unquote(imp.Path.Value); strings.Contains(p, "mochi-mqtt") || strings.Contains(p, "paho") {
				t.Errorf("%s imports %s: the accept core must not know the broker", name, p)
			}
		}
		checked++
	}
	if checked == 0 {
		t.Fatal("no accept*.go file found")
	}
}

// TestIngestCoreStatusNames pins the names used in logs.
func TestIngestCoreStatusNames(t *testing.T) {
	want := map[ingest.Status]string{
		ingest.AllStored: "all_stored", ingest.SomeRejected: "some_rejected", ingest.AllRejected: "all_rejected",
		ingest.TooLarge: "too_large", ingest.RateLimited: "rate_limited", ingest.PersistFailed: "persist_failed",
		ingest.Status(0): "status(0)",
	}
	for s, name := range want {
		if got := s.String(); got != name {
			t.Errorf("Status(%d) = %q, want %q", int(s), got, name)
		}
	}
}

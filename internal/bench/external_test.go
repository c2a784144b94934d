package bench

import (
	"context"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/iotransit/iotransit/client"
	"github.com/iotransit/iotransit/internal/mosquitto"
	"github.com/iotransit/iotransit/internal/node"
	"github.com/iotransit/iotransit/internal/pki"
	"github.com/iotransit/iotransit/internal/registry"
	"github.com/iotransit/iotransit/internal/testutil"
	"github.com/iotransit/iotransit/internal/testutil/nodetest"
)

// externalNode starts a node and returns the options that measure it from
// outside: through its API and MQTT listener only.
func externalNode(t *testing.T, gateways int) ExternalOptions {
	t.Helper()
	n := nodetest.Start(t, func(c *node.Config) { c.Ingest.MsgRate, c.Ingest.MsgBurst = 1e9, 1e6 })
	return ExternalOptions{MQTTAddr: n.MQTTAddr(), APIURL: "https://" + n.APIAddr(), CAPEM: n.ServerCAPEM(),
		OperatorKey: n.OperatorKey(), Tenant: "bench-ext", Gateways: gateways, ServerPID: os.Getpid(),
		CacheDir: t.TempDir()}
}

var tinyLoad = Config{Warmup: 100 * time.Millisecond, Duration: 500 * time.Millisecond}

// TestMeasureExternal measures a node through its API and MQTT listener:
// the report has the figures, the stored check holds, and a second run
// reuses the cached certificates instead of enrolling again.
func TestMeasureExternal(t *testing.T) {
	o := externalNode(t, 3)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	h := NewHeader(ModeExternal, "test", map[string]string{})
	rep, failures, err := MeasureExternal(ctx, h, o, tinyLoad)
	if err != nil || len(failures) > 0 {
		t.Fatalf("err %v, failures %v", err, failures)
	}
	if rep.Mode != ModeExternal || rep.System != "iotransit" || rep.Throughput <= 0 || rep.Errors.Total != 0 {
		t.Fatalf("report %+v", rep.ExternalSystem)
	}
	if l := rep.Latency; l.P50 <= 0 || l.P90 < l.P50 || l.P99 < l.P90 || l.P999 < l.P99 {
		t.Errorf("latency %+v", l)
	}
	if rep.ServerRSSBytes <= 0 || rep.ServerCPUPerMessageUs == nil || *rep.ServerCPUPerMessageUs <= 0 || rep.BenchCPUCores == nil {
		t.Errorf("server RSS %d, CPU per message %v, bench CPU %v", rep.ServerRSSBytes, rep.ServerCPUPerMessageUs, rep.BenchCPUCores)
	}
	st := rep.Stored
	if st == nil || !st.OK || st.Acked == 0 || st.Delta != uint64(st.Acked) || st.After != st.Before+st.Delta {
		t.Fatalf("stored %+v", st)
	}
	if p := rep.Provision; p.Enrolled != 3 || p.Reused != 0 {
		t.Errorf("first run provisioned %+v", p)
	}
	first := TenantSerials(o.Tenant, 2)
	for _, f := range []string{first[0] + ".key", first[0] + ".crt"} {
		fi, err := os.Stat(filepath.Join(rep.Provision.CacheDir, f))
		if err != nil {
			t.Fatal(err)
		}
		if strings.HasSuffix(f, ".key") && fi.Mode().Perm() != 0o600 {
			t.Errorf("%s has mode %v, want 0600", f, fi.Mode().Perm())
		}
	}

	// Again: every certificate comes from the cache; the gateways still
	// have one certificate each; the check counts only this run.
	rep2, failures, err := MeasureExternal(ctx, h, o, tinyLoad)
	if err != nil || len(failures) > 0 {
		t.Fatalf("second run: err %v, failures %v", err, failures)
	}
	if p := rep2.Provision; p.Enrolled != 0 || p.Reused != 3 {
		t.Errorf("second run provisioned %+v", p)
	}
	if st2 := rep2.Stored; !st2.OK || st2.Before != st.After || st2.Delta != uint64(st2.Acked) {
		t.Errorf("second run stored %+v after %+v", st2, st)
	}
	api, _, err := NewAPIClient(o.APIURL, o.CAPEM, o.OperatorKey)
	if err != nil {
		t.Fatal(err)
	}
	certs, err := api.ListCertificates(ctx, o.Tenant, first[1])
	if err != nil || len(certs) != 1 {
		t.Errorf("certificates %d, %v: want the one enrolled by the first run", len(certs), err)
	}

	// Another tenant on the same server gets gateways of its own (a serial
	// belongs to one tenant: the same series would be refused).
	o2 := o
	o2.Tenant = "bench2"
	rep3, failures, err := MeasureExternal(ctx, h, o2, tinyLoad)
	if err != nil || len(failures) > 0 {
		t.Fatalf("another tenant: err %v, failures %v", err, failures)
	}
	if p := rep3.Provision; p.Enrolled != 3 || !rep3.Stored.OK {
		t.Errorf("another tenant provisioned %+v, stored %+v", p, rep3.Stored)
	}
}

// TestTenantSerials: every tenant has a series of valid serials of its own;
// the tenant "bench" keeps the series its cached certificates name.
func TestTenantSerials(t *testing.T) {
	seen := map[string]string{}
	for _, tenant := range []string{"bench", "bench2", "benchprof", "benchprof1k", "acme"} {
		s := TenantSerials(tenant, 3)
		for _, serial := range s {
			if !registry.ValidSerial(serial) {
				t.Errorf("%s: serial %q is not valid", tenant, serial)
			}
			if other, ok := seen[serial]; ok {
				t.Errorf("serial %s of %s is also %s's", serial, tenant, other)
			}
			seen[serial] = tenant
		}
	}
	if got := TenantSerials("bench", 1)[0]; got != "TSGW06BNC00000000" {
		t.Errorf("bench's first serial %s", got)
	}
}

// TestMeasureExternalStoredCheckFails: when the stream does not show what
// was acknowledged, the run fails with DURABILITY.
func TestMeasureExternalStoredCheckFails(t *testing.T) {
	for _, tc := range []struct {
		name string
		hook func(before, after uint64) (uint64, uint64)
	}{
		{"nothing stored", func(before, _ uint64) (uint64, uint64) { return before, before }},
		{"one message missing", func(before, after uint64) (uint64, uint64) { return before + 1, after }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			o := externalNode(t, 2)
			o.storedHook = tc.hook
			ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
			defer cancel()
			rep, failures, err := MeasureExternal(ctx, NewHeader(ModeExternal, "test", nil), o, tinyLoad)
			if err != nil {
				t.Fatal(err)
			}
			if rep.Stored == nil || rep.Stored.OK || rep.Stored.Acked == 0 {
				t.Fatalf("stored %+v", rep.Stored)
			}
			if len(failures) != 1 || !strings.Contains(failures[0].Error(), "DURABILITY") {
				t.Errorf("failures %v", failures)
			}
		})
	}
}

// TestMeasureExternalCatchesAnAckerThatDoesNotStore: a broker that
// acknowledges every publish and stores nothing (mosquitto, in place of the
// node's MQTT listener, while the API is the node's) fails the stored
// check, with no test hook: the check is independent of the acknowledgements.
func TestMeasureExternalCatchesAnAckerThatDoesNotStore(t *testing.T) {
	testutil.RequireMosquitto(t)
	o := externalNode(t, 2)
	ca, err := pki.NewCA("not iotransit", time.Hour, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	b := testutil.Mosquitto(t, mosquitto.Config{CA: ca, Validity: time.Hour, DirPrefix: "bench-liar-"})
	o.MQTTAddr = b.Addr()
	o.CAPEM = append(append([]byte{}, o.CAPEM...), pki.EncodeCertPEM(ca.Cert.Raw)...) // verifies both servers
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	rep, failures, err := MeasureExternal(ctx, NewHeader(ModeExternal, "test", nil), o, tinyLoad)
	if err != nil {
		t.Fatal(err)
	}
	if rep.Run.TotalAcked == 0 || rep.Stored == nil || rep.Stored.OK || rep.Stored.Delta != 0 {
		t.Fatalf("acked %d, stored %+v", rep.Run.TotalAcked, rep.Stored)
	}
	if len(failures) != 1 || !strings.Contains(failures[0].Error(), "DURABILITY") {
		t.Errorf("failures %v", failures)
	}
}

func TestSourceAddrsFor(t *testing.T) {
	for _, tc := range []struct {
		name string
		addr string
		n    int
		want []string
	}{
		{"few", "127.0.0.1:8883", 1000, nil},
		{"one address's worth", "127.0.0.1:8883", PortsPerSource, nil},
		{"two", "127.0.0.1:8883", PortsPerSource + 1, []string{"127.0.0.1", "127.0.0.2"}},
		{"localhost", "localhost:8883", 50000, []string{"127.0.0.1", "127.0.0.2", "127.0.0.3"}},
		{"remote", "192.0.2.1:8883", 50000, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := SourceAddrsFor(tc.addr, tc.n); strings.Join(got, ",") != strings.Join(tc.want, ",") {
				t.Errorf("SourceAddrsFor(%s, %d) = %v, want %v", tc.addr, tc.n, got, tc.want)
			}
		})
	}
	gws := make([]Gateway, 3)
	if err := SpreadSources(gws, []string{"127.0.0.1", "127.0.0.2"}); err != nil {
		t.Fatal(err)
	}
	if gws[0].LocalAddr.String() != "127.0.0.1:0" || gws[1].LocalAddr.String() != "127.0.0.2:0" || gws[2].LocalAddr.String() != "127.0.0.1:0" {
		t.Errorf("spread: %v %v %v", gws[0].LocalAddr, gws[1].LocalAddr, gws[2].LocalAddr)
	}
	if err := SpreadSources(gws, []string{"nope"}); err == nil {
		t.Error("a source address that is no IP was taken")
	}
}

// TestRetryTransportWaitsOut429: a 429 is retried after its Retry-After,
// with the same body; another status is returned as it is.
func TestRetryTransportWaitsOut429(t *testing.T) {
	var calls atomic.Int32
	srv := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body := make([]byte, 64)
		k, _ := r.Body.Read(body)
		if string(body[:k]) != `{"id":"x1"}` {
			w.WriteHeader(http.StatusBadRequest)
			return
		}
		if calls.Add(1) <= 2 {
			w.Header().Set("Retry-After", "0")
			w.WriteHeader(http.StatusTooManyRequests)
			return
		}
		w.WriteHeader(http.StatusCreated)
		_, _ = w.Write([]byte(`{"id":"x1"}`))
	}))
	defer srv.Close()
	rt := &RetryTransport{Base: srv.Client().Transport, MaxRetries: 5}
	c, err := client.New(client.Config{Server: srv.URL, HTTPClient: &http.Client{Transport: rt}})
	if err != nil {
		t.Fatal(err)
	}
	ten, err := c.CreateTenant(context.Background(), "x1")
	if err != nil || ten.ID != "x1" {
		t.Fatalf("create: %+v, %v", ten, err)
	}
	if calls.Load() != 3 || rt.Waits.Load() != 2 {
		t.Errorf("%d calls, %d waits", calls.Load(), rt.Waits.Load())
	}
	for _, tc := range []struct {
		name string
		h    string
		want time.Duration
	}{
		{"seconds", "3", 3 * time.Second},
		{"absent", "", time.Second},
		{"capped", "3600", time.Minute},
		{"date", time.Unix(1000, 0).Add(5 * time.Second).UTC().Format(http.TimeFormat), 5 * time.Second},
	} {
		if got := retryAfter(tc.h, time.Unix(1000, 0)); got != tc.want {
			t.Errorf("%s: retryAfter(%q) = %s, want %s", tc.name, tc.h, got, tc.want)
		}
	}
}

// inflightTracker records the most publishes of one gateway in flight at
// once.
type inflightTracker struct {
	now, peak [8]atomic.Int32
}

func (tr *inflightTracker) Published(g int, _ int64, _ time.Time) {
	n := tr.now[g].Add(1)
	for p := tr.peak[g].Load(); n > p && !tr.peak[g].CompareAndSwap(p, n); p = tr.peak[g].Load() {
	}
}
func (tr *inflightTracker) Answered(g int, _ int64, _ bool) { tr.now[g].Add(-1) }

// TestClosedLoopWindow: with a window of 4 each gateway keeps up to 4
// publishes in flight, never more, and everything acknowledged is stored.
func TestClosedLoopWindow(t *testing.T) {
	o := externalNode(t, 2)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	tr := &inflightTracker{}
	cfg := tinyLoad
	cfg.Window, cfg.Tracker = 4, tr
	rep, failures, err := MeasureExternal(ctx, NewHeader(ModeExternal, "test", nil), o, cfg)
	if err != nil || len(failures) > 0 {
		t.Fatalf("err %v, failures %v", err, failures)
	}
	if rep.Run.Window != 4 || rep.Run.Mode != "closed-loop" || rep.Errors.Total != 0 || !rep.Stored.OK {
		t.Fatalf("window %d, mode %s, errors %+v, stored %+v", rep.Run.Window, rep.Run.Mode, rep.Errors, rep.Stored)
	}
	for g := range 2 {
		if p := tr.peak[g].Load(); p < 2 || p > 4 {
			t.Errorf("gateway %d had at most %d publishes in flight, want 2 to 4", g, p)
		}
	}
}

package audit_test

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"fmt"
	"io"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/iotransit/iotransit/internal/audit"
	"github.com/iotransit/iotransit/internal/backbone"
	"github.com/iotransit/iotransit/internal/backbone/names"
	"github.com/iotransit/iotransit/internal/fault"
	tu "github.com/iotransit/iotransit/internal/testutil"
)

func startBackbone(t testing.TB) *backbone.Backbone {
	t.Helper()
	bb, err := backbone.Start(context.Background(), backbone.Config{DataDir: t.TempDir(), Replicas: 1},
		slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(bb.Close)
	return bb
}

func newKey(t testing.TB) ed25519.PrivateKey {
	t.Helper()
	_, key, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return key
}

func openLog(t testing.TB, bb *backbone.Backbone, cfg audit.Config, key ed25519.PrivateKey) *audit.Log {
	t.Helper()
	l, err := audit.Open(context.Background(), cfg, bb, bb.JS, key, tu.Logger(t))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(l.Close)
	return l
}

func ensure(t testing.TB, l *audit.Log, tenant string) {
	t.Helper()
	if err := l.EnsureTenant(context.Background(), tenant); err != nil {
		t.Fatal(err)
	}
}

func event(i int) audit.Event {
	return audit.Event{
		Actor:   "operator",
		Action:  "registry.gateway.register",
		Target:  fmt.Sprintf("gateway:TSGW06DEV%08d", i),
		Source:  "192.0.2.7:51234",
		Outcome: "ok",
		Detail:  map[string]string{"n": fmt.Sprint(i)},
	}
}

func appendN(t testing.TB, l *audit.Log, tenant string, n int) []audit.Entry {
	t.Helper()
	out := make([]audit.Entry, 0, n)
	for i := range n {
		e, err := l.Append(context.Background(), tenant, event(i+1))
		if err != nil {
			t.Fatalf("append %d: %v", i+1, err)
		}
		out = append(out, e)
	}
	return out
}

func seqs(entries []audit.Entry) []uint64 {
	out := make([]uint64, len(entries))
	for i, e := range entries {
		out[i] = e.Seq
	}
	return out
}

func verify(t *testing.T, l *audit.Log, tenant string) audit.Report {
	t.Helper()
	r, err := l.Verify(context.Background(), tenant)
	if err != nil {
		t.Fatalf("verify %s: %v", tenant, err)
	}
	return r
}

func TestAuditAppendsListsAndVerifies(t *testing.T) {
	bb := startBackbone(t)
	l := openLog(t, bb, audit.Config{}, newKey(t))
	ctx := context.Background()
	ensure(t, l, "acme")
	events := []audit.Event{
		{Actor: "operator", Action: "registry.gateway.register", Target: "gateway:TSGW06DEV00000001", Source: "192.0.2.1:4000", Outcome: "ok"},
		{Actor: "apikey:k1", Action: "pki.cert.issue", Target: "gateway:TSGW06DEV00000001", Outcome: "ok", Detail: map[string]string{"serial": "01"}},
		{Actor: "gateway:TSGW06DEV00000002", Action: "ingest.connect.refused", Target: "gateway:TSGW06DEV00000002", Source: "198.51.100.9:1883", Outcome: "unknown_ca"},
	}
	var stored []audit.Entry
	for i, ev := range events {
		e, err := l.Append(ctx, "acme", ev)
		if err != nil {
			t.Fatal(err)
		}
		if e.Seq != uint64(i+1) || e.Tenant != "acme" || e.Time.Location() != time.UTC || e.Time.IsZero() {
			t.Fatalf("entry %d: %+v", i+1, e)
		}
		want := strings.Repeat("0", 64)
		if i > 0 {
			want = stored[i-1].Hash
		}
		if e.Prev != want || len(e.Hash) != 64 || e.Hash != audit.HashEntry(&e) {
			t.Fatalf("entry %d is not chained: prev %s hash %s", e.Seq, e.Prev, e.Hash)
		}
		stored = append(stored, e)
	}
	if !stored[0].Time.Before(stored[1].Time) || !stored[1].Time.Before(stored[2].Time) {
		t.Fatalf("times are not increasing: %v", seqs(stored))
	}

	t.Run("oldest first", func(t *testing.T) {
		got, next, err := l.List(ctx, "acme", audit.Filter{})
		if err != nil || next != 0 || fmt.Sprint(seqs(got)) != "[1 2 3]" {
			t.Fatalf("got %v next %d err %v", seqs(got), next, err)
		}
		for i := range got {
			if !got[i].Time.Equal(stored[i].Time) || got[i].Hash != stored[i].Hash || got[i].Outcome != stored[i].Outcome {
				t.Fatalf("listed %+v, stored %+v", got[i], stored[i])
			}
		}
	})
	t.Run("newest first", func(t *testing.T) {
		got, next, err := l.List(ctx, "acme", audit.Filter{Newest: true})
		if err != nil || next != 0 || fmt.Sprint(seqs(got)) != "[3 2 1]" {
			t.Fatalf("got %v next %d err %v", seqs(got), next, err)
		}
	})

	filters := []struct {
		name string
		f    audit.Filter
		want string
	}{
		{"by action", audit.Filter{Action: "pki.cert.issue"}, "[2]"},
		{"by actor", audit.Filter{Actor: "operator"}, "[1]"},
		{"by target", audit.Filter{Target: "gateway:TSGW06DEV00000001"}, "[1 2]"},
		{"by outcome", audit.Filter{Outcome: "unknown_ca"}, "[3]"},
		{"from a time on", audit.Filter{From: stored[1].Time}, "[2 3]"},
		{"before a time", audit.Filter{To: stored[1].Time}, "[1]"},
		{"in a time range", audit.Filter{From: stored[1].Time, To: stored[2].Time}, "[2]"},
		{"newest first by target", audit.Filter{Target: "gateway:TSGW06DEV00000001", Newest: true}, "[2 1]"},
		{"after a cursor", audit.Filter{After: 1}, "[2 3]"},
		{"before a cursor, newest first", audit.Filter{Before: 3, Newest: true}, "[2 1]"},
		{"nothing matches", audit.Filter{Action: "pki.cert.revoke"}, "[]"},
	}
	for _, tc := range filters {
		t.Run(tc.name, func(t *testing.T) {
			got, _, err := l.List(ctx, "acme", tc.f)
			if err != nil || fmt.Sprint(seqs(got)) != tc.want {
				t.Fatalf("got %v, %v; want %s", seqs(got), err, tc.want)
			}
		})
	}

	t.Run("verifies", func(t *testing.T) {
		r := verify(t, l, "acme")
		if !r.OK || r.Entries != 3 || r.Tenant != "acme" || r.FirstBroken != 0 {
			t.Fatalf("report %+v", r)
		}
		// Three entries are below the default of 64 per checkpoint.
		if r.Unsigned != 3 || r.LastSignedSeq != 0 || r.Problem != "entries after the last checkpoint (seq 1..3) are not yet signed" {
			t.Fatalf("report %+v", r)
		}
		c, err := l.Checkpoint(ctx, "acme")
		if err != nil || c == nil || c.Seq != 3 || c.Hash != stored[2].Hash || c.KeyID != audit.KeyID(l.PublicKey()) {
			t.Fatalf("checkpoint %+v, %v", c, err)
		}
		r = verify(t, l, "acme")
		if !r.OK || r.Unsigned != 0 || r.LastSignedSeq != 3 || r.Checkpoints != 1 || r.Problem != "" {
			t.Fatalf("report after checkpoint %+v", r)
		}
	})
}

func TestAuditPagesWithoutGapsOrDuplicates(t *testing.T) {
	bb := startBackbone(t)
	l := openLog(t, bb, audit.Config{CheckpointEvery: 16}, newKey(t))
	ctx := context.Background()
	ensure(t, l, "acme")
	for i := 1; i <= 250; i++ {
		ev := event(i)
		if i%2 == 0 {
			ev.Outcome = "registry.gateway_exists"
		}
		if _, err := l.Append(ctx, "acme", ev); err != nil {
			t.Fatal(err)
		}
	}
	cases := []struct {
		name  string
		f     audit.Filter
		pages []int
		want  func(i int) uint64 // the i-th listed seq
	}{
		{"oldest first", audit.Filter{Limit: 100}, []int{100, 100, 50}, func(i int) uint64 { return uint64(i + 1) }},
		{"newest first", audit.Filter{Limit: 100, Newest: true}, []int{100, 100, 50}, func(i int) uint64 { return uint64(250 - i) }},
		{"oldest first, filtered", audit.Filter{Limit: 50, Outcome: "ok"}, []int{50, 50, 25}, func(i int) uint64 { return uint64(2*i + 1) }},
		{"newest first, filtered", audit.Filter{Limit: 50, Outcome: "ok", Newest: true}, []int{50, 50, 25}, func(i int) uint64 { return uint64(249 - 2*i) }},
		{"exact pages", audit.Filter{Limit: 125}, []int{125, 125}, func(i int) uint64 { return uint64(i + 1) }},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			f := tc.f
			var all []audit.Entry
			var sizes []int
			for range 10 {
				page, next, err := l.List(ctx, "acme", f)
				if err != nil {
					t.Fatal(err)
				}
				sizes = append(sizes, len(page))
				all = append(all, page...)
				if next == 0 {
					break
				}
				if next != page[len(page)-1].Seq {
					t.Fatalf("cursor %d, last of page %d", next, page[len(page)-1].Seq)
				}
				if f.Newest {
					f.Before = next
				} else {
					f.After = next
				}
			}
			if fmt.Sprint(sizes) != fmt.Sprint(tc.pages) {
				t.Fatalf("page sizes %v, want %v", sizes, tc.pages)
			}
			for i, e := range all {
				if e.Seq != tc.want(i) {
					t.Fatalf("item %d has seq %d, want %d", i, e.Seq, tc.want(i))
				}
			}
		})
	}
	if r := verify(t, l, "acme"); !r.OK || r.Entries != 250 || r.LastSignedSeq != 240 || r.Unsigned != 10 {
		t.Fatalf("report %+v", r)
	}
}

func TestAuditRefusesInvalidInput(t *testing.T) {
	bb := startBackbone(t)
	l := openLog(t, bb, audit.Config{}, newKey(t))
	ctx := context.Background()
	tenants := []struct {
		name   string
		tenant string
		ok     bool
	}{
		{"plain", "acme", true},
		{"one character", "a", true},
		{"digits and dashes", "acme-2-x", true},
		{"the system tenant", audit.SystemTenant, true},
		{"32 characters", strings.Repeat("a", 32), true},
		{"empty", "", false},
		{"upper case", "Acme", false},
		{"a subject separator", "acme.other", false},
		{"a wildcard", "acme*", false},
		{"a full wildcard", ">", false},
		{"a space", "ac me", false},
		{"33 characters", strings.Repeat("a", 33), false},
		{"only an underscore", "_", false},
		{"two underscores", "__system", false},
		{"a leading dash", "-acme", false},
		{"a trailing newline", "acme\n", false},
	}
	for _, tc := range tenants {
		t.Run(tc.name, func(t *testing.T) {
			err := l.EnsureTenant(ctx, tc.tenant)
			if tc.ok != (err == nil) {
				t.Fatalf("EnsureTenant(%q) = %v", tc.tenant, err)
			}
			if tc.ok {
				return
			}
			if !audit.ErrTenantInvalid.Is(err) {
				t.Fatalf("EnsureTenant(%q) = %v, want %s", tc.tenant, err, audit.ErrTenantInvalid.Code())
			}
			_, err = l.Append(ctx, tc.tenant, event(1))
			_, _, lerr := l.List(ctx, tc.tenant, audit.Filter{})
			_, verr := l.Verify(ctx, tc.tenant)
			_, cerr := l.Checkpoint(ctx, tc.tenant)
			for _, err := range []error{err, lerr, verr, cerr} {
				if !audit.ErrTenantInvalid.Is(err) {
					t.Fatalf("got %v, want %s", err, audit.ErrTenantInvalid.Code())
				}
			}
		})
	}

	events := []struct {
		name string
		ev   audit.Event
	}{
		{"no actor", audit.Event{Action: "pki.cert.issue", Outcome: "ok"}},
		{"no action", audit.Event{Actor: "operator", Outcome: "ok"}},
		{"no outcome", audit.Event{Actor: "operator", Action: "pki.cert.issue"}},
	}
	for _, tc := range events {
		t.Run(tc.name, func(t *testing.T) {
			if _, err := l.Append(ctx, "acme", tc.ev); !audit.ErrEventInvalid.Is(err) {
				t.Fatalf("got %v, want %s", err, audit.ErrEventInvalid.Code())
			}
		})
	}

	t.Run("a tenant without a log", func(t *testing.T) {
		_, err := l.Append(ctx, "nobody", event(1))
		_, _, lerr := l.List(ctx, "nobody", audit.Filter{})
		_, verr := l.Verify(ctx, "nobody")
		for _, err := range []error{err, lerr, verr} {
			if !audit.ErrNotFound.Is(err) {
				t.Fatalf("got %v, want %s", err, audit.ErrNotFound.Code())
			}
		}
		if f, ok := fault.As(err); !ok || f.Kind() != fault.NotFound {
			t.Fatalf("not a fault: %v", err)
		}
	})
}

func TestAuditKeepsDetailSmallAndValid(t *testing.T) {
	bb := startBackbone(t)
	l := openLog(t, bb, audit.Config{}, newKey(t))
	ctx := context.Background()
	detail := map[string]string{
		"bad-utf8":              "a\xffb",
		"long":                  strings.Repeat("é", 200), // 400 bytes
		strings.Repeat("k", 80): "long key",
		"":                      "empty key",
	}
	for i := range 20 {
		detail[fmt.Sprintf("z%02d", i)] = "v"
	}
	e, err := l.Append(ctx, audit.SystemTenant, audit.Event{
		Actor: "system", Action: "registry.tenant.create", Target: "tenant:\xfe", Outcome: "ok", Detail: detail,
	})
	if err != nil {
		t.Fatal(err)
	}
	if len(e.Detail) != 16 {
		t.Fatalf("%d detail keys, want 16", len(e.Detail))
	}
	if e.Detail["bad-utf8"] != "a\uFFFDb" || e.Target != "tenant:\uFFFD" {
		t.Fatalf("invalid UTF-8 kept: %q %q", e.Detail["bad-utf8"], e.Target)
	}
	if v := e.Detail["long"]; len(v) != 256 || v != strings.Repeat("é", 128) {
		t.Fatalf("long value cut to %d bytes", len(v))
	}
	if e.Detail[strings.Repeat("k", 64)] != "long key" {
		t.Fatalf("long key not cut to 64 bytes: %v", e.Detail)
	}
	if _, ok := e.Detail[""]; ok {
		t.Fatal("empty key kept")
	}
	// What is stored is what was hashed.
	got, _, err := l.List(ctx, audit.SystemTenant, audit.Filter{})
	if err != nil || len(got) != 1 || got[0].Hash != audit.HashEntry(&got[0]) || fmt.Sprint(got[0].Detail) != fmt.Sprint(e.Detail) {
		t.Fatalf("stored %+v, %v", got, err)
	}
	if r := verify(t, l, audit.SystemTenant); !r.OK {
		t.Fatalf("report %+v", r)
	}
}

func TestAuditStreamRefusesDeleteAndPurge(t *testing.T) {
	bb := startBackbone(t)
	key := newKey(t)
	l := openLog(t, bb, audit.Config{}, key)
	ctx := context.Background()
	ensure(t, l, "acme")
	appendN(t, l, "acme", 3)
	st, err := bb.JS.Stream(ctx, names.AuditStream("acme"))
	if err != nil {
		t.Fatal(err)
	}
	if err := st.DeleteMsg(ctx, 2); err == nil {
		t.Fatal("an audit entry was deleted")
	}
	if err := st.Purge(ctx); err == nil {
		t.Fatal("the audit stream was purged")
	}
	// EnsureTenant again (as after a restart) keeps the protection.
	ensure(t, openLog(t, bb, audit.Config{}, key), "acme")
	info, err := st.Info(ctx)
	if err != nil || !info.Config.DenyDelete || !info.Config.DenyPurge || info.Config.MaxAge != 0 || info.Config.Storage != jetstream.FileStorage {
		t.Fatalf("stream config %+v, %v", info.Config, err)
	}
	if r := verify(t, l, "acme"); !r.OK || r.Entries != 3 {
		t.Fatalf("report %+v", r)
	}
}

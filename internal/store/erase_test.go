package store_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/iotransit/iotransit/internal/backbone"
	"github.com/iotransit/iotransit/internal/backbone/names"
	"github.com/iotransit/iotransit/internal/fault"
	"github.com/iotransit/iotransit/internal/kms"
	"github.com/iotransit/iotransit/internal/store"
	"github.com/iotransit/iotransit/internal/testutil/storetest"
)

const (
	eraseA  = "TSEN01ERASE000001" // the sensor erased
	eraseB  = "TSEN01ERASE000002" // a sensor kept
	eraseG1 = "TSGW06ACM00000001"
	eraseG2 = "TSGW06ACM00000002"
)

// erasureFixture is a store holding, for tenants acme and beta, messages
// of sensors A and B, their re-driven copies, dead letters in two
// integrations' streams and rejected messages (see seed).
type erasureFixture struct {
	s    *store.Store
	bb   *backbone.Backbone
	keys *kms.Keyring
	dir  string
}

func newErasureFixture(t *testing.T) *erasureFixture {
	t.Helper()
	dir := t.TempDir()
	bb, keys := storetest.BackboneWith(t, backbone.Config{DataDir: dir, Replicas: 1}, "acme", "beta")
	s := storetest.StoreOn(t, bb, keys, store.Config{}, "acme", "beta")
	f := &erasureFixture{s: s, bb: bb, keys: keys, dir: dir}
	f.seed(t, "acme")
	f.seed(t, "beta")
	return f
}

// seed stores, for tenant: 5 messages of A and 4 of B over two gateways
// and two tsmIds; copies re-driven to i1 (one of A, one of B) and to i2
// (one of A); dead letters in i1 (two of A, one of B) and i2 (one of A,
// one of B); and rejected messages: A's parsed one, A's named only in its
// raw JSON, a whole payload (array) holding one of A's, a payload that is
// not JSON naming A, one that is not JSON naming nobody, and B's.
func (f *erasureFixture) seed(t *testing.T, tenant string) {
	t.Helper()
	ctx := context.Background()
	var recs []store.Record
	now := time.Now()
	for i, p := range []struct {
		gw, tuid string
		tsmID    int
	}{
		{eraseG1, eraseA, 12100}, {eraseG1, eraseB, 12100}, {eraseG2, eraseA, 1110},
		{eraseG2, eraseB, 1110}, {eraseG1, eraseA, 1110}, {eraseG1, eraseB, 12100},
		{eraseG2, eraseA, 12100}, {eraseG2, eraseB, 12100}, {eraseG1, eraseA, 12100},
	} {
		recs = append(recs, store.Record{
			ID: tenant + "-m" + string(rune('a'+i)), Gateway: p.gw, Tuid: p.tuid, TsmID: p.tsmID,
			ReceivedAt: now, Body: []byte(`{"tsmTuid":"` + p.tuid + `","n":` + string(rune('0'+i)) + `}`),
		})
	}
	if res, err := f.s.Append(ctx, tenant, recs); err != nil || res.Stored != len(recs) {
		t.Fatalf("append: %+v, %v", res, err)
	}
	msgs, err := f.bb.JS.Stream(ctx, names.MessageStream(tenant))
	if err != nil {
		t.Fatal(err)
	}
	stored := func(seq uint64) *jetstream.RawStreamMsg {
		t.Helper()
		m, err := msgs.GetMsg(ctx, seq)
		if err != nil {
			t.Fatal(err)
		}
		return m
	}
	// Sequences 1 (A), 2 (B), 3 (A), 4 (B).
	for _, r := range []struct {
		integration string
		seq         uint64
	}{{"i1", 1}, {"i1", 2}, {"i2", 3}} {
		m := stored(r.seq)
		if err := f.s.Redrive(ctx, tenant, r.integration, m.Header, m.Data); err != nil {
			t.Fatal(err)
		}
	}
	for _, d := range []struct {
		integration string
		seqs        []uint64
	}{{"i1", []uint64{1, 2, 3}}, {"i2", []uint64{4, 5}}} {
		if _, err := f.bb.Stream(ctx, jetstream.StreamConfig{
			Name: names.DeadLetterStream(tenant, d.integration), Subjects: []string{names.DeadLetter(tenant, d.integration)},
		}); err != nil {
			t.Fatal(err)
		}
		for _, seq := range d.seqs {
			// As the forwarding worker writes a dead letter.
			src := stored(seq)
			m := nats.NewMsg(names.DeadLetter(tenant, d.integration))
			m.Data = src.Data
			for k, v := range src.Header {
				if k != jetstream.MsgIDHeader {
					m.Header[k] = v
				}
			}
			m.Header.Set("Iot-Content-Id", store.ContentID(src.Header))
			m.Header.Set("Iot-Dead-Reason", "test")
			if _, err := f.bb.JS.PublishMsg(ctx, m, jetstream.WithExpectStream(names.DeadLetterStream(tenant, d.integration))); err != nil {
				t.Fatal(err)
			}
		}
	}
	rej := func(gw, tuid, reason, raw string) store.Rejected {
		return store.Rejected{Gateway: gw, ReceivedAt: now, Code: "thingsee.schema", Reason: reason, Tuid: tuid, Raw: []byte(raw)}
	}
	if err := f.s.AppendRejected(ctx, tenant, []store.Rejected{
		rej(eraseG1, eraseA, "A-parsed", `{"tsmTuid":"`+eraseA+`","tsmId":1}`),
		rej(eraseG1, "", "garbage-plain", `{{{ not json`),
		rej(eraseG2, eraseB, "B-parsed", `{"tsmTuid":"`+eraseB+`","tsmId":1,"note":"`+eraseA+`"}`),
		rej(eraseG2, "", "A-raw", `{"tsmTuid":"`+eraseA+`","tsmId":"x"}`),
		rej(eraseG1, "", "A-array", `[{"tsmTuid":"`+eraseB+`"},{"tsmTuid":"`+eraseA+`"}]`),
		rej(eraseG1, "", "garbage-A", `tsmTuid=`+eraseA+` cut`),
	}); err != nil {
		t.Fatal(err)
	}
}

// inventory is what a direct scan of a tenant's streams finds, by part:
// each sensor's messages and re-driven copies (by subject), dead letters
// (by header, over every dead-letter stream) and rejected messages (the
// reasons of those stored); any trace of A is in "A-trace".
func (f *erasureFixture) inventory(t *testing.T, tenant string) map[string]int {
	t.Helper()
	ctx := context.Background()
	out := map[string]int{}
	each := func(stream string, fn func(*jetstream.RawStreamMsg)) {
		t.Helper()
		storetest.Walk(t, f.bb.JS, stream, fn)
	}
	trace := func(m *jetstream.RawStreamMsg, opened []byte) {
		if strings.Contains(m.Subject, eraseA) || bytes.Contains(opened, []byte(eraseA)) || m.Header.Get("Iot-Tuid") == eraseA {
			out["A-trace"]++
		}
	}
	each(names.MessageStream(tenant), func(m *jetstream.RawStreamMsg) {
		dm, err := f.s.Decode(ctx, tenant, m.Sequence, m.Time, m.Header, m.Data)
		if err != nil {
			t.Fatal(err)
		}
		part := "msg"
		if strings.Contains(m.Subject, ".redrive.") {
			part = "redrive"
		}
		out[part+":"+m.Header.Get("Iot-Tuid")]++
		trace(m, dm.Message)
	})
	for _, i := range []string{"i1", "i2"} {
		each(names.DeadLetterStream(tenant, i), func(m *jetstream.RawStreamMsg) {
			dm, err := f.s.Decode(ctx, tenant, m.Sequence, m.Time, m.Header, m.Data)
			if err != nil {
				t.Fatal(err)
			}
			out["dlq:"+i+":"+m.Header.Get("Iot-Tuid")]++
			trace(m, dm.Message)
		})
	}
	each(names.RejectedStream(tenant), func(m *jetstream.RawStreamMsg) {
		body, err := f.keys.Open(ctx, tenant, m.Data, []byte("store/rejected"))
		if err != nil {
			t.Fatal(err)
		}
		var r store.Rejected
		if err := json.Unmarshal(body, &r); err != nil {
			t.Fatal(err)
		}
		out["rej:"+r.Reason]++
		if r.Reason != "B-parsed" { // B's message mentions A: it is B's
			trace(m, append([]byte(r.Tuid), r.Raw...))
		}
	})
	return out
}

func wantInventory(aGone bool) map[string]int {
	want := map[string]int{
		"msg:" + eraseB: 4, "redrive:" + eraseB: 1,
		"dlq:i1:" + eraseB: 1, "dlq:i2:" + eraseB: 1,
		"rej:garbage-plain": 1, "rej:B-parsed": 1,
	}
	if !aGone {
		for k, v := range map[string]int{
			"msg:" + eraseA: 5, "redrive:" + eraseA: 2, "dlq:i1:" + eraseA: 2, "dlq:i2:" + eraseA: 1,
			"rej:A-parsed": 1, "rej:A-raw": 1, "rej:A-array": 1, "rej:garbage-A": 1, "A-trace": 14,
		} {
			want[k] = v
		}
	}
	return want
}

func sameCounts(t *testing.T, what string, got, want map[string]int) {
	t.Helper()
	for k, v := range want {
		if got[k] != v {
			t.Errorf("%s: %s = %d, want %d (all: %v)", what, k, got[k], v, got)
		}
	}
	for k, v := range got {
		if _, ok := want[k]; !ok {
			t.Errorf("%s: unexpected %s = %d", what, k, v)
		}
	}
}

// TestStoreEraseDeviceRemovesEverySensorRecord: an erasure removes the
// sensor's messages, re-driven copies, dead letters and rejected messages
// (matched by opening them), keeps every record of the other sensor and of
// the other tenant exactly, overwrites in place the parts of at most
// SecureEraseMax records, and a second erasure finds nothing.
func TestStoreEraseDeviceRemovesEverySensorRecord(t *testing.T) {
	defer store.SetEraseBounds(2, 256)()
	f := newErasureFixture(t)
	ctx := context.Background()
	sameCounts(t, "acme before", f.inventory(t, "acme"), wantInventory(false))

	got, err := f.s.EraseDevice(ctx, "acme", eraseA, store.EraseOptions{})
	if err != nil {
		t.Fatal(err)
	}
	// 5 messages and 4 rejected exceed the bound of 2: deleted plainly;
	// 2 re-driven copies and the dead letters (2 and 1) are overwritten.
	want := store.Erasure{Messages: 5, Redriven: 2, DeadLetters: 3, Rejected: 4, Overwritten: 5, Complete: true}
	if got != want {
		t.Fatalf("erasure %+v, want %+v", got, want)
	}
	sameCounts(t, "acme after", f.inventory(t, "acme"), wantInventory(true))
	sameCounts(t, "beta", f.inventory(t, "beta"), wantInventory(false))

	again, err := f.s.EraseDevice(ctx, "acme", eraseA, store.EraseOptions{})
	if err != nil || again != (store.Erasure{Complete: true}) {
		t.Fatalf("second erasure %+v, %v; want nothing erased", again, err)
	}

	// The overwritten dead letters are gone from the files of their
	// stream: A's TUID (a header in plaintext) is nowhere in them, B's is.
	dlqFiles := readStreamFiles(t, f.dir, names.DeadLetterStream("acme", "i1"))
	if bytes.Contains(dlqFiles, []byte(eraseA)) {
		t.Error("an overwritten dead letter's TUID is still in its stream's files")
	}
	if !bytes.Contains(dlqFiles, []byte(eraseB)) {
		t.Error("the files hold no trace of the kept dead letter: the check above proves nothing")
	}
}

// readStreamFiles returns the contents of every file of a stream's
// directory under the JetStream store of dataDir.
func readStreamFiles(t *testing.T, dataDir, stream string) []byte {
	t.Helper()
	var all []byte
	found := false
	err := filepath.WalkDir(filepath.Join(dataDir, "jetstream"), func(path string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() || !strings.Contains(path, string(filepath.Separator)+stream+string(filepath.Separator)) {
			return err
		}
		b, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		found = true
		all = append(all, b...)
		return nil
	})
	if err != nil || !found {
		t.Fatalf("files of %s: found %v, %v", stream, found, err)
	}
	return all
}

// TestStoreEraseDeviceContinuesAfterItsDeadline: an erasure stopped by its
// deadline returns what it did and a continuation; calls that go on from
// each continuation erase, together, exactly what one call does.
func TestStoreEraseDeviceContinuesAfterItsDeadline(t *testing.T) {
	defer store.SetEraseBounds(store.SecureEraseMax, 1)()
	// Each look at the clock is a second later: a deadline 3 s ahead
	// stops a call after a few records.
	now := time.Unix(1_800_000_000, 0)
	defer store.SetEraseClock(func() time.Time { now = now.Add(time.Second); return now })()
	f := newErasureFixture(t)
	ctx := context.Background()

	var sum store.Erasure
	next, calls := "", 0
	for ; calls < 100; calls++ {
		got, err := f.s.EraseDevice(ctx, "acme", eraseA, store.EraseOptions{Next: next, Deadline: now.Add(3 * time.Second)})
		if err != nil {
			t.Fatal(err)
		}
		sum.Messages += got.Messages
		sum.Redriven += got.Redriven
		sum.DeadLetters += got.DeadLetters
		sum.Rejected += got.Rejected
		sum.Overwritten += got.Overwritten
		if got.Complete {
			if got.Next != "" {
				t.Errorf("a complete erasure returned a continuation %q", got.Next)
			}
			break
		}
		next = got.Next
	}
	if calls < 3 {
		t.Errorf("the erasure took %d calls: the deadline did not stop it", calls+1)
	}
	want := store.Erasure{Messages: 5, Redriven: 2, DeadLetters: 3, Rejected: 4, Overwritten: 14}
	if sum != want {
		t.Fatalf("the calls erased %+v together, want %+v", sum, want)
	}
	sameCounts(t, "acme after", f.inventory(t, "acme"), wantInventory(true))
}

// TestStoreEraseDeviceRefusesBadInput: a TUID that is not one, or a
// continuation that is not one an erasure returned, is refused with the
// client's error; an erasure whose ctx ended stops with that error.
func TestStoreEraseDeviceRefusesBadInput(t *testing.T) {
	s, _ := newStore(t)
	cancelled, cancel := context.WithCancel(context.Background())
	cancel()
	for _, tc := range []struct {
		name string
		ctx  context.Context
		tuid string
		next string
		want *fault.Definition // nil: wantErr
		// wantErr is the error wanted when want is nil.
		wantErr error
	}{
		{name: "lowercase tuid", tuid: "tsen01erase000001", want: store.ErrQueryInvalid},
		{name: "subject wildcard", tuid: "*", want: store.ErrQueryInvalid},
		{name: "too long", tuid: eraseA + "X", want: store.ErrQueryInvalid},
		{name: "cursor not base64", tuid: eraseA, next: "!!", want: store.ErrEraseCursor},
		{name: "cursor of a query", tuid: eraseA, next: "AQEAAAAAAAAAAQ", want: store.ErrEraseCursor},
		{name: "cursor with a dotted stream", tuid: eraseA, next: "ZXJhc2UxOmQ6YS5iOjE", want: store.ErrEraseCursor},
		{name: "ctx ended", ctx: cancelled, tuid: eraseA, wantErr: context.Canceled},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ctx := tc.ctx
			if ctx == nil {
				ctx = context.Background()
			}
			_, err := s.EraseDevice(ctx, "acme", tc.tuid, store.EraseOptions{Next: tc.next})
			if tc.want != nil {
				if !tc.want.Is(err) {
					t.Fatalf("error %v, want %s", err, tc.want.Code())
				}
				return
			}
			if !errors.Is(err, tc.wantErr) {
				t.Fatalf("error %v, want %v", err, tc.wantErr)
			}
		})
	}
}

package kms_test

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/iotransit/iotransit/internal/backbone"
	"github.com/iotransit/iotransit/internal/kms"
	"github.com/iotransit/iotransit/internal/testutil/storetest"
)

// streamStoreIn returns the kms stream store of a fresh embedded JetStream
// whose data directory is dir, and the backbone.
func streamStoreIn(t *testing.T, dir string) (kms.StreamStore, *backbone.Backbone) {
	t.Helper()
	bb, _ := storetest.BackboneWith(t, backbone.Config{DataDir: dir, Replicas: 1})
	store, err := bb.KMSStore(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	return store, bb
}

// streamStore returns the kms stream store of a fresh embedded JetStream.
func streamStore(t *testing.T) kms.StreamStore {
	t.Helper()
	store, _ := streamStoreIn(t, t.TempDir())
	return store
}

// messagesOf returns how many messages the stream holds for key: one for
// a key, none for a destroyed one (every earlier value erased).
func messagesOf(t *testing.T, s kms.StreamStore, key string) uint64 {
	t.Helper()
	info, err := s.Stream.Info(context.Background(), jetstream.WithSubjectFilter(s.Prefix+key))
	if err != nil {
		t.Fatal(err)
	}
	return info.State.Subjects[s.Prefix+key]
}

// TestKMSStreamStoreKeepsTheKVContract: the stream store answers as the KV
// store did (Create refuses an existing key, Update is compare-and-set on
// the revision, Get gives the last value), and holds one message per key:
// a replaced value is erased, a destroyed key leaves none.
func TestKMSStreamStoreKeepsTheKVContract(t *testing.T) {
	ctx := context.Background()
	s := streamStore(t)
	if _, err := s.Get(ctx, "acme.v1"); !errors.Is(err, kms.ErrKeyNotFound) {
		t.Fatalf("get of a missing key: %v", err)
	}
	if err := s.Create(ctx, "acme.v1", []byte("one")); err != nil {
		t.Fatal(err)
	}
	if err := s.Create(ctx, "acme.v1", []byte("again")); !errors.Is(err, kms.ErrKeyExists) {
		t.Fatalf("second create: %v, want ErrKeyExists", err)
	}
	v, rev, err := s.GetEntry(ctx, "acme.v1")
	if err != nil || string(v) != "one" {
		t.Fatalf("get: %q, %v", v, err)
	}
	if err := s.Update(ctx, "acme.v1", []byte("stale"), rev+100); !errors.Is(err, kms.ErrKeyExists) {
		t.Fatalf("update at a wrong revision: %v, want ErrKeyExists", err)
	}
	if err := s.Update(ctx, "acme.v1", []byte("two"), rev); err != nil {
		t.Fatal(err)
	}
	if err := s.Update(ctx, "acme.v1", []byte("stale"), rev); !errors.Is(err, kms.ErrKeyExists) {
		t.Fatalf("update at the replaced revision: %v, want ErrKeyExists", err)
	}
	if v, err := s.Get(ctx, "acme.v1"); err != nil || string(v) != "two" {
		t.Fatalf("get after update: %q, %v", v, err)
	}
	if n := messagesOf(t, s, "acme.v1"); n != 1 {
		t.Fatalf("the stream holds %d messages of acme.v1 after an update, want 1 (the replaced one erased)", n)
	}
	for _, k := range []string{"acme.shredded", "_root.check", "_system.v1", "beta-2.v3"} {
		if err := s.Create(ctx, k, []byte(k)); err != nil {
			t.Fatalf("create %s: %v", k, err)
		}
	}
	entries, err := s.Entries(ctx)
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, e := range entries {
		got = append(got, e.Key+"="+string(e.Value))
	}
	if want := "[_root.check=_root.check _system.v1=_system.v1 acme.shredded=acme.shredded acme.v1=two beta-2.v3=beta-2.v3]"; fmt.Sprint(got) != want {
		t.Fatalf("entries %v, want %s", got, want)
	}
	if err := s.Destroy(ctx, "acme.v1"); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Get(ctx, "acme.v1"); !errors.Is(err, kms.ErrKeyNotFound) {
		t.Fatalf("get of a destroyed key: %v", err)
	}
	if n := messagesOf(t, s, "acme.v1"); n != 0 {
		t.Fatalf("the stream holds %d messages of a destroyed key", n)
	}
	if err := s.Update(ctx, "acme.v1", []byte("stale"), rev); !errors.Is(err, kms.ErrKeyExists) {
		t.Fatalf("update of a destroyed key: %v, want ErrKeyExists", err)
	}
	if err := s.Destroy(ctx, "nobody.v1"); err != nil {
		t.Fatalf("destroy of a missing key: %v", err)
	}
	for _, name := range []string{"", "acme.*", "acme.>", "acme..v1", "acme v1", ".v1", "acme.v1.", "ACME\x00.v1"} {
		t.Run(fmt.Sprintf("%q refused", name), func(t *testing.T) {
			if err := s.Create(ctx, name, []byte("x")); err == nil || errors.Is(err, kms.ErrKeyExists) {
				t.Fatalf("create %q: %v, want a refusal", name, err)
			}
			if _, err := s.Get(ctx, name); err == nil || errors.Is(err, kms.ErrKeyNotFound) {
				t.Fatalf("get %q: %v, want a refusal", name, err)
			}
		})
	}
}

// TestKMSStreamStoreRaces: of nodes creating one key at once one wins and
// the others get ErrKeyExists; of nodes updating one revision at once one
// wins, and the key is left with its value alone.
func TestKMSStreamStoreRaces(t *testing.T) {
	ctx := context.Background()
	s := streamStore(t)
	const n = 6
	race := func(op func(i int) error) (won int, lost int) {
		errs := make([]error, n)
		var wg sync.WaitGroup
		start := make(chan struct{})
		for i := range n {
			wg.Go(func() {
				<-start
				errs[i] = op(i)
			})
		}
		close(start)
		wg.Wait()
		for i, err := range errs {
			switch {
			case err == nil:
				won++
			case errors.Is(err, kms.ErrKeyExists):
				lost++
			default:
				t.Errorf("node %d: %v", i, err)
			}
		}
		return won, lost
	}
	if won, lost := race(func(i int) error { return s.Create(ctx, "acme.v1", fmt.Appendf(nil, "node %d", i)) }); won != 1 || lost != n-1 {
		t.Fatalf("create race: %d won, %d lost; want 1 and %d", won, lost, n-1)
	}
	_, rev, err := s.GetEntry(ctx, "acme.v1")
	if err != nil {
		t.Fatal(err)
	}
	if won, lost := race(func(i int) error { return s.Update(ctx, "acme.v1", fmt.Appendf(nil, "update %d", i), rev) }); won != 1 || lost != n-1 {
		t.Fatalf("update race: %d won, %d lost; want 1 and %d", won, lost, n-1)
	}
	if m := messagesOf(t, s, "acme.v1"); m != 1 {
		t.Fatalf("%d messages of acme.v1 after the update race, want 1", m)
	}
}

// TestKMSStreamStoreEntriesErasesWhatAnUpdateLeft: an Update interrupted
// between storing the new value and erasing the old one (here: the old
// value published straight to the stream, as such an Update leaves it)
// is finished by the next Entries, which erases the earlier value.
func TestKMSStreamStoreEntriesErasesWhatAnUpdateLeft(t *testing.T) {
	ctx := context.Background()
	s := streamStore(t)
	if err := s.Create(ctx, "acme.v1", []byte("old")); err != nil {
		t.Fatal(err)
	}
	if _, err := s.JS.Publish(ctx, s.Prefix+"acme.v1", []byte("new")); err != nil {
		t.Fatal(err)
	}
	if m := messagesOf(t, s, "acme.v1"); m != 2 {
		t.Fatalf("%d messages before Entries, want 2", m)
	}
	entries, err := s.Entries(ctx)
	if err != nil || len(entries) != 1 || string(entries[0].Value) != "new" {
		t.Fatalf("entries %+v, %v", entries, err)
	}
	if m := messagesOf(t, s, "acme.v1"); m != 1 {
		t.Fatalf("%d messages after Entries, want 1", m)
	}
}

// TestKMSStreamStoreStreamCanErase pins what the erasure stands on: the
// stream allows deletes, keeps every message of a key (no per-subject
// limit, which would drop old values unerased), denies purges (which
// remove without erasing), is not compressed, and is read at its leader
// (a lagging replica would hide a message from an erase).
func TestKMSStreamStoreStreamCanErase(t *testing.T) {
	cfg := streamStore(t).Stream.CachedInfo().Config
	for _, tc := range []struct {
		name string
		ok   bool
	}{
		{name: "deletes allowed", ok: !cfg.DenyDelete},
		{name: "purges denied", ok: cfg.DenyPurge},
		{name: "no per-subject limit", ok: cfg.MaxMsgsPerSubject <= 0},
		{name: "no age or size limit", ok: cfg.MaxAge == 0 && cfg.MaxBytes <= 0 && cfg.MaxMsgs <= 0},
		{name: "not compressed", ok: cfg.Compression == jetstream.NoCompression},
		{name: "no direct get", ok: !cfg.AllowDirect},
	} {
		if !tc.ok {
			t.Errorf("%s: not so in %+v", tc.name, cfg)
		}
	}
}

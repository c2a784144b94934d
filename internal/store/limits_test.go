package store_test

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/iotransit/iotransit/internal/backbone/names"
	"github.com/iotransit/iotransit/internal/store"
	tu "github.com/iotransit/iotransit/internal/testutil"
	"github.com/iotransit/iotransit/internal/testutil/storetest"
)

// fill appends 1 KiB messages of tenant until the store refuses one, and
// returns how many were stored and the refusal (nil when max were stored).
func fill(t *testing.T, s *store.Store, tenant string, max int) (int, error) {
	t.Helper()
	body := `{"pad":"` + strings.Repeat("x", 1024) + `"}`
	for i := 0; i < max; i++ {
		if _, err := s.Append(context.Background(), tenant, []store.Record{rec(fmt.Sprintf("%s-%d", tenant, i), body)}); err != nil {
			return i, err
		}
	}
	return max, nil
}

// A tenant's stored-bytes quota refuses new writes once its message
// stream is full (store.Full), keeps every message it acknowledged, and
// binds neither another tenant nor, by the node's default, one whose
// policy lifts it; the rejected stream is bound the same way.
func TestStoreQuotaRefusesNewWrites(t *testing.T) {
	bb, keys := storetest.Backbone(t, "acme", "beta")
	s := storetest.StoreOn(t, bb, keys, store.Config{}, "acme", "beta")
	quota := int64(1 << 20)
	s.SetTenantLimits(func(tenant string) store.TenantLimits {
		if tenant == "acme" {
			return store.TenantLimits{StoredBytes: quota}
		}
		return store.TenantLimits{}
	})
	for _, tn := range []string{"acme", "beta"} {
		if err := s.EnsureTenant(context.Background(), tn); err != nil {
			t.Fatal(err)
		}
	}
	stored, err := fill(t, s, "acme", 5000)
	if !store.Full(err) {
		t.Fatalf("after %d messages: %v, want the quota's refusal", stored, err)
	}
	if stored < 500 {
		t.Fatalf("refused after only %d KiB of a 1 MiB quota", stored)
	}
	if got := len(storetest.Messages(t, bb, s, "acme")); got != stored {
		t.Fatalf("%d messages kept, %d acknowledged", got, stored)
	}
	u, err := s.Usage(context.Background(), "acme")
	if err != nil || u.MessagesBytes > quota || u.MessagesBytes < quota-4096 {
		t.Fatalf("usage %+v, %v; want just under %d", u, err, quota)
	}
	if n, err := fill(t, s, "beta", stored+100); err != nil {
		t.Fatalf("beta after %d: %v", n, err)
	}
	for i := 0; ; i++ {
		err := s.AppendRejected(context.Background(), "acme", []store.Rejected{{Gateway: "TSGW06ACM00000001", Index: i, Code: "x", Raw: make([]byte, 32<<10)}})
		if store.Full(err) {
			break
		}
		if err != nil || i > 40 {
			t.Fatalf("rejection %d (32 KiB each) of a 1 MiB quota: %v", i, err)
		}
	}
	for name, l := range map[string]store.StreamLimits{"messages": s.Limits("acme").Messages, "rejected": s.Limits("acme").Rejected} {
		if !l.Quota || l.MaxBytes != quota {
			t.Errorf("acme's %s limits %+v", name, l)
		}
	}
}

// A quota lowered below what a stream holds, or put in place of a
// retention bound of bytes, discards nothing (JetStream applies a byte
// limit to what is stored only under DiscardOld); new writes are refused.
func TestStoreQuotaLoweredKeepsMessages(t *testing.T) {
	bb, keys := storetest.Backbone(t, "acme")
	s := storetest.StoreOn(t, bb, keys, store.Config{MaxBytes: 8 << 20}, "acme")
	stored, err := fill(t, s, "acme", 2000) // ~2.2 MiB
	if err != nil {
		t.Fatal(err)
	}
	s.SetTenantLimits(func(string) store.TenantLimits { return store.TenantLimits{StoredBytes: 1 << 20} })
	if err := s.EnsureTenant(context.Background(), "acme"); err != nil {
		t.Fatal(err)
	}
	info, err := mustStream(t, bb.JS, names.MessageStream("acme")).Info(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if info.Config.Discard != jetstream.DiscardNew || info.Config.MaxBytes != 1<<20 {
		t.Fatalf("stream limits %d %v, want the quota", info.Config.MaxBytes, info.Config.Discard)
	}
	if info.State.Msgs != uint64(stored) {
		t.Fatalf("%d messages after lowering the quota below them, %d stored", info.State.Msgs, stored)
	}
	if _, err := s.Append(context.Background(), "acme", []store.Record{rec("over", `{}`)}); !store.Full(err) {
		t.Fatalf("a write over the lowered quota: %v", err)
	}
}

func mustStream(t *testing.T, js jetstream.JetStream, name string) jetstream.Stream {
	t.Helper()
	st, err := js.Stream(context.Background(), name)
	if err != nil {
		t.Fatal(err)
	}
	return st
}

// Retention still ages messages out of a stream full at its quota: once
// they are gone, new writes are taken again.
func TestStoreQuotaFreedByRetention(t *testing.T) {
	bb, keys := storetest.Backbone(t, "acme")
	s := storetest.StoreOn(t, bb, keys, store.Config{Retention: time.Second, DedupeWindow: 500 * time.Millisecond, StoredBytes: 1 << 20}, "acme")
	if _, err := fill(t, s, "acme", 5000); !store.Full(err) {
		t.Fatalf("filling the quota: %v", err)
	}
	tu.Eventually(t, 10*time.Second, 50*time.Millisecond, func() error {
		_, err := s.Append(context.Background(), "acme", []store.Record{rec(fmt.Sprintf("late-%d", time.Now().UnixNano()), `{}`)})
		return err
	})
}

package store_test

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/iotransit/iotransit/internal/backbone/names"
	"github.com/iotransit/iotransit/internal/store"
	tu "github.com/iotransit/iotransit/internal/testutil"
)

// TestStoreRedrivenCopiesStayOutOfHistory (issue 10, bug 2): a copy
// re-driven to one integration is for that integration only: queries,
// newest or oldest first, filtered or not, and Follow see the message once.
func TestStoreRedrivenCopiesStayOutOfHistory(t *testing.T) {
	s, bb := newStore(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var (
		mu       sync.Mutex
		followed []string
	)
	done := make(chan error, 1)
	go func() {
		done <- s.Follow(ctx, "acme", func(m store.Message) {
			mu.Lock()
			followed = append(followed, m.ID)
			mu.Unlock()
		})
	}()
	followedSince := func(i int) []string {
		mu.Lock()
		defer mu.Unlock()
		return slices.Clone(followed[i:])
	}
	appendRec := func(id string) {
		t.Helper()
		if _, err := s.Append(ctx, "acme", []store.Record{rec(id, `{"id":"`+id+`"}`)}); err != nil {
			t.Fatal(err)
		}
	}
	// Follow starts with new messages: probes until one arrives tell it runs.
	var stored []string
	tu.Eventually(t, 10*time.Second, 20*time.Millisecond, func() error {
		id := fmt.Sprintf("probe%d", len(stored))
		appendRec(id)
		stored = append(stored, id)
		if len(followedSince(0)) == 0 {
			return fmt.Errorf("nothing followed yet")
		}
		return nil
	})
	start := len(followedSince(0))
	waitFollowed := func(id string) {
		t.Helper()
		appendRec(id)
		stored = append(stored, id)
		tu.Eventually(t, 10*time.Second, 20*time.Millisecond, func() error {
			if got := followedSince(start); !slices.Contains(got, id) {
				return fmt.Errorf("%s not followed yet: %v", id, got)
			}
			return nil
		})
	}
	waitFollowed("m1")
	st, err := bb.JS.Stream(ctx, names.MessageStream("acme"))
	if err != nil {
		t.Fatal(err)
	}
	m, err := st.GetLastMsgForSubject(ctx, names.Message("acme", "TSGW06ACM00000001", "TSEN01ABC12345678", 12100))
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Redrive(ctx, "acme", "integration1", m.Header, m.Data); err != nil {
		t.Fatal(err)
	}
	waitFollowed("m2")

	// (A probe may arrive late: not what this checks.)
	got := slices.DeleteFunc(followedSince(start), func(id string) bool { return strings.HasPrefix(id, "probe") })
	if want := []string{"m1", "m2"}; !slices.Equal(got, want) {
		t.Errorf("followed %v, want %v", got, want)
	}
	slices.Sort(stored)
	tests := []struct {
		name string
		q    store.Query
	}{
		{"newest first", store.Query{Limit: 100}},
		{"oldest first", store.Query{Limit: 100, Oldest: true}},
		{"by gateway", store.Query{Limit: 100, Gateway: "TSGW06ACM00000001"}},
		{"by sensor", store.Query{Limit: 100, Tuid: "TSEN01ABC12345678", Oldest: true}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			p, err := s.QueryMessages(ctx, "acme", tc.q)
			if err != nil {
				t.Fatal(err)
			}
			var ids []string
			for _, m := range p.Items {
				ids = append(ids, m.ID)
			}
			slices.Sort(ids)
			if !slices.Equal(ids, stored) {
				t.Errorf("listed %v, want %v", ids, stored)
			}
		})
	}
	cancel()
	if err := <-done; err != nil {
		t.Errorf("follow: %v", err)
	}
}

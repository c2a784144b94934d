package kms_test

import (
	"context"
	"fmt"
	"testing"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/iotransit/iotransit/internal/kms"
)

// cutListing is a bucket whose key listing ends, as nats.go's does when
// the caller's context ends before the listing is complete: its channel
// closes early, without an error.
type cutListing struct {
	jetstream.KeyValue
	cancel context.CancelFunc
}

func (c cutListing) ListKeys(ctx context.Context, opts ...jetstream.WatchOpt) (jetstream.KeyLister, error) {
	l, err := c.KeyValue.ListKeys(ctx, opts...)
	if err != nil {
		return nil, err
	}
	c.cancel()
	return closedLister{l}, nil
}

type closedLister struct{ jetstream.KeyLister }

func (closedLister) Keys() <-chan string {
	ch := make(chan string)
	close(ch)
	return ch
}

// TestKMSEntriesReportsACutListing: a listing cut short by its context is
// an error, never a short list taken for the whole bucket (a short list
// would let a start take the bucket for empty and make a new root, a
// rewrap move the root check before every key, a shred miss a key).
func TestKMSEntriesReportsACutListing(t *testing.T) {
	kv := kvBucket(t)
	for i := range 5 {
		if _, err := kv.Create(context.Background(), fmt.Sprintf("acme.v%d", i+1), []byte("x")); err != nil {
			t.Fatal(err)
		}
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	store := kms.KVStore{KV: cutListing{KeyValue: kv, cancel: cancel}}
	entries, err := store.Entries(ctx)
	if err == nil {
		t.Fatalf("Entries cut by its context: %d entries and no error", len(entries))
	}
}

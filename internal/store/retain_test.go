package store_test

import (
	"context"
	"runtime"
	"testing"
	"time"
	"unsafe"
	"weak"

	"github.com/iotransit/iotransit/internal/store"
)

// TestStoreAppendRetainsNothingOfTheCaller: once Append returned, nothing
// of the store's keeps the bytes that a record's strings point into. The
// ingest's validator hands the store a record whose tsmTuid is a string
// over the upload's own copy of its payload (thingsee's walker, without a
// copy), so a header value kept by a pooled message once it was published
// would pin a whole upload (up to the largest payload), and plaintext, in
// every message of the pool until two collections passed. One collection
// after Append, the bytes must be gone.
func TestStoreAppendRetainsNothingOfTheCaller(t *testing.T) {
	s, _ := newStore(t)
	ctx := context.Background()
	// Warm up the publisher (its subscription), so that what stays
	// reachable after the Append below is only what the write kept.
	if _, err := s.Append(ctx, "acme", []store.Record{rec("warm", `{}`)}); err != nil {
		t.Fatal(err)
	}
	payload, tuid := func() (weak.Pointer[byte], string) {
		upload := make([]byte, 256<<10)
		copy(upload, "TSEN01ABC12345678")
		return weak.Make(&upload[0]), unsafe.String(&upload[0], 17)
	}()
	r := store.Record{ID: "retained", Gateway: "TSGW06ACM00000001", Tuid: tuid, TsmID: 12100,
		ReceivedAt: time.Now(), Body: []byte(`{"n":1}`)}
	if _, err := s.Append(ctx, "acme", []store.Record{r}); err != nil {
		t.Fatal(err)
	}
	r, tuid = store.Record{}, ""
	runtime.GC()
	if payload.Value() != nil {
		t.Error("the bytes of a record's tsmTuid are still reachable after Append returned and a collection")
	}
}

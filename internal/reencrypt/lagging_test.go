package reencrypt_test

import (
	"bytes"
	"context"
	"encoding/json"
	"testing"
	"time"

	"github.com/iotransit/iotransit/client"
	"github.com/iotransit/iotransit/internal/backbone"
	"github.com/iotransit/iotransit/internal/backbone/names"
	"github.com/iotransit/iotransit/internal/kms"
	"github.com/iotransit/iotransit/internal/reencrypt"
	tu "github.com/iotransit/iotransit/internal/testutil"
)

// TestReencryptWaitsForLaggingWritersBeforeRecords: another node's keyring
// seals under the older version for a moment after a rotation (until it
// reads it); a record it writes in that moment, at a key the job already
// went through, must not be left under the older version by a job that
// then says it is done: the job lets the version settle (Config.Settle)
// before it goes through the records, as it does before the streams.
func TestReencryptWaitsForLaggingWritersBeforeRecords(t *testing.T) {
	ctx := context.Background()
	f := newFixture(t, 2, 0)
	kv, err := f.bb.KV(ctx, names.KMSBucket, 1)
	if err != nil {
		t.Fatal(err)
	}
	lagging, err := kms.New(bytes.Repeat([]byte{7}, 32), backbone.KeyStore{KV: kv}) // storetest's root
	if err != nil {
		t.Fatal(err)
	}
	if _, err := lagging.Seal(ctx, tenant, []byte("warm"), []byte("x")); err != nil { // its sealing key: v1
		t.Fatal(err)
	}
	if _, err := f.keys.Rotate(ctx, tenant); err != nil {
		t.Fatal(err)
	}
	s := reencrypt.New(reencrypt.Config{NodeID: "n1", RecordRate: 1000, Settle: 1500 * time.Millisecond}, f.keys, f.bb, f.bb.JS, f.sources, tu.Logger(t))
	t.Cleanup(s.Close)
	if _, err := s.Start(ctx, tenant); err != nil {
		t.Fatal(err)
	}
	// The lagging node writes within the settle time (the wait places the
	// write, it decides nothing).
	time.Sleep(300 * time.Millisecond)
	sealed, err := lagging.Seal(ctx, tenant, []byte("late"), []byte("k000"))
	if err != nil {
		t.Fatal(err)
	}
	if v, _ := kms.SealedVersion(sealed); v != 1 {
		t.Skipf("the lagging keyring already sealed under version %d", v)
	}
	b, _ := json.Marshal(stored{Sealed: sealed})
	if _, err := f.kv.Put(ctx, "k000", b); err != nil {
		t.Fatal(err)
	}
	if j := wait(t, s); j.State != client.ReencryptDone {
		t.Fatalf("job ended %+v", j)
	}
	f.check(t, 2, map[string]string{"k000": "late"})
}

package kms_test

import (
	"bytes"
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/iotransit/iotransit/internal/backbone/names"
	"github.com/iotransit/iotransit/internal/kms"
	"github.com/iotransit/iotransit/internal/store"
	"github.com/iotransit/iotransit/internal/testutil"
	"github.com/iotransit/iotransit/internal/testutil/storetest"
)

// TestKMSRotationKeepsStoredMessagesReadable: messages stored through the
// store before and after two rotations all read back, each sealed under
// the version that was newest when it was stored; a node started afterwards
// (a cold keyring on the same bucket) reads them all too.
func TestKMSRotationKeepsStoredMessagesReadable(t *testing.T) {
	ctx := context.Background()
	st, bb, keys := storetest.Store(t, "acme")
	base := time.Now().Add(-time.Hour).Unix()
	var want []string
	for round := range 3 {
		for i := range 2 {
			body := testutil.Thingsee(fmt.Sprintf("TSPR04ROT%08d", round), base+int64(10*round+i), 20+float64(round))
			rec := store.Record{ID: fmt.Sprintf("id-%d-%d", round, i), Gateway: "TSGW06ROT00000001", Tuid: fmt.Sprintf("TSPR04ROT%08d", round), TsmID: 12100, ReceivedAt: time.Now(), Body: []byte(body)}
			if _, err := st.Append(ctx, "acme", []store.Record{rec}); err != nil {
				t.Fatal(err)
			}
			want = append(want, body)
		}
		if round < 2 {
			if _, err := keys.Rotate(ctx, "acme"); err != nil {
				t.Fatal(err)
			}
		}
	}
	kv, err := bb.KV(ctx, names.KMSBucket, 1)
	if err != nil {
		t.Fatal(err)
	}
	cold, err := kms.New(bytes.Repeat([]byte{7}, 32), kms.KVStore{KV: kv}) // storetest's root
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name string
		st   *store.Store
	}{
		{name: "same keyring", st: st},
		{name: "cold keyring", st: storetest.StoreOn(t, bb, cold, store.Config{}, "acme")},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := storetest.Messages(t, bb, tc.st, "acme")
			if len(got) != len(want) {
				t.Fatalf("%d messages read back, want %d", len(got), len(want))
			}
			for i, m := range got {
				if string(m.Msg.Message) != want[i] {
					t.Errorf("message %d: %s, want %s", i, m.Msg.Message, want[i])
				}
				if v, wantV := sealedVersion(m.Raw.Data), uint32(i/2+1); v != wantV {
					t.Errorf("message %d sealed under version %d, want %d", i, v, wantV)
				}
			}
		})
	}
}

package audit_test

import (
	"context"
	"crypto/ed25519"
	"strings"
	"testing"

	"github.com/iotransit/iotransit/internal/audit"
)

// TestAuditVerifiesAcrossKeyRotation signs checkpoints under one key,
// rotates to another, signs more, and verifies the whole log: ok while the
// retired key is known, and failing at the first checkpoint of a key the
// system does not know, naming it.
func TestAuditVerifiesAcrossKeyRotation(t *testing.T) {
	ctx := context.Background()
	bb := startBackbone(t)
	oldKey, newKey2 := newKey(t), newKey(t)
	l := openLog(t, bb, audit.DefaultConfig(), oldKey)
	ensure(t, l, "acme")
	appendN(t, l, "acme", 3)
	c1, err := l.Checkpoint(ctx, "acme")
	if err != nil || c1 == nil || c1.KeyID != audit.KeyID(oldKey.Public().(ed25519.PublicKey)) {
		t.Fatalf("checkpoint before rotation: %+v, %v", c1, err)
	}
	if err := l.UseKeys(newKey2, oldKey.Public().(ed25519.PublicKey)); err != nil {
		t.Fatal(err)
	}
	appendN(t, l, "acme", 3)
	c2, err := l.Checkpoint(ctx, "acme")
	if err != nil || c2 == nil || c2.KeyID != audit.KeyID(newKey2.Public().(ed25519.PublicKey)) {
		t.Fatalf("checkpoint after rotation: %+v, %v", c2, err)
	}
	if r := verify(t, l, "acme"); !r.OK || r.LastSignedSeq != 6 || r.Checkpoints != 2 {
		t.Fatalf("verify across the rotation: %+v", r)
	}

	cases := []struct {
		name    string
		retired []ed25519.PublicKey
		ok      bool
		problem string
	}{
		{name: "the retired key is known", retired: []ed25519.PublicKey{oldKey.Public().(ed25519.PublicKey)}, ok: true},
		{name: "the retired key is forgotten", ok: false,
			problem: "checkpoint at 3 was signed by an unknown key (key id \"" + c1.KeyID + "\")"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			if err := l.UseKeys(newKey2, tc.retired...); err != nil {
				t.Fatal(err)
			}
			r := verify(t, l, "acme")
			if r.OK != tc.ok || !strings.Contains(r.Problem, tc.problem) {
				t.Fatalf("report %+v, want ok %v with %q", r, tc.ok, tc.problem)
			}
		})
	}
}

package audit_test

import (
	"context"
	"crypto/ed25519"
	"testing"

	"github.com/iotransit/iotransit/internal/audit"
)

// TestAuditVerifyReadsKeysBeforeCallingAKeyUnknown: a node that has not
// yet read an audit-key rotation made on another node verifies a
// checkpoint that key signed: it reads the keys once (OnUnknownKey) before
// it reports the key unknown, so a rotation is not taken for tampering.
// A key still unknown after that read fails as before.
func TestAuditVerifyReadsKeysBeforeCallingAKeyUnknown(t *testing.T) {
	ctx := context.Background()
	bb := startBackbone(t)
	oldKey, rotated := newKey(t), newKey(t)
	writer := openLog(t, bb, audit.DefaultConfig(), oldKey) // the node that rotated
	reader := openLog(t, bb, audit.DefaultConfig(), oldKey) // a node that has not read it yet
	ensure(t, writer, "acme")
	appendN(t, writer, "acme", 2)
	if err := writer.UseKeys(rotated, oldKey.Public().(ed25519.PublicKey)); err != nil {
		t.Fatal(err)
	}
	appendN(t, writer, "acme", 2)
	if c, err := writer.Checkpoint(ctx, "acme"); err != nil || c == nil {
		t.Fatalf("checkpoint: %+v %v", c, err)
	}
	reads := 0
	reader.OnUnknownKey(func() {
		reads++
		if err := reader.UseKeys(rotated, oldKey.Public().(ed25519.PublicKey)); err != nil {
			t.Error(err)
		}
	})
	if r := verify(t, reader, "acme"); !r.OK || reads != 1 {
		t.Fatalf("verify on the node behind: %+v after %d key reads", r, reads)
	}
	// A key the system does not know, even after reading: still refused.
	stranger := openLog(t, bb, audit.DefaultConfig(), newKey(t))
	ensure(t, stranger, "beta")
	appendN(t, stranger, "beta", 1)
	if c, err := stranger.Checkpoint(ctx, "beta"); err != nil || c == nil {
		t.Fatalf("checkpoint: %+v %v", c, err)
	}
	if r := verify(t, reader, "beta"); r.OK {
		t.Fatalf("a checkpoint of an unknown key verified: %+v", r)
	}
}

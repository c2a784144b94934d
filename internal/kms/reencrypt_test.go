package kms_test

import (
	"bytes"
	"context"
	"errors"
	"testing"
	"time"

	"github.com/iotransit/iotransit/internal/kms"
)

// TestKMSResealMovesAValueToTheNewestVersion seals under v1, rotates, and
// re-seals: the value names v2 in its header, opens with the same aad to
// the same plaintext, and a second Reseal changes nothing.
func TestKMSResealMovesAValueToTheNewestVersion(t *testing.T) {
	ctx := context.Background()
	k := newKeyring(t, rootKey(t), newMemStore(), "acme")
	aad := []byte("record/1")
	sealed, err := k.Seal(ctx, "acme", []byte("secret"), aad)
	if err != nil {
		t.Fatal(err)
	}
	if v, err := kms.SealedVersion(sealed); err != nil || v != 1 {
		t.Fatalf("SealedVersion = %d, %v; want 1", v, err)
	}
	if out, changed, err := k.Reseal(ctx, "acme", sealed, aad); err != nil || changed || !bytes.Equal(out, sealed) {
		t.Fatalf("Reseal before a rotation: changed %v, err %v; want the value unchanged", changed, err)
	}
	if _, err := k.Rotate(ctx, "acme"); err != nil {
		t.Fatal(err)
	}
	out, changed, err := k.Reseal(ctx, "acme", sealed, aad)
	if err != nil || !changed {
		t.Fatalf("Reseal after a rotation: changed %v, err %v", changed, err)
	}
	if v, _ := kms.SealedVersion(out); v != 2 {
		t.Fatalf("re-sealed value names version %d, want 2", v)
	}
	plain, err := k.Open(ctx, "acme", out, aad)
	if err != nil || string(plain) != "secret" {
		t.Fatalf("Open(re-sealed) = %q, %v", plain, err)
	}
	if _, err := k.Open(ctx, "acme", out, []byte("record/2")); !errors.Is(err, kms.ErrOpen) {
		t.Fatalf("re-sealed value opened with another aad: %v", err)
	}
	if again, changed, err := k.Reseal(ctx, "acme", out, aad); err != nil || changed || !bytes.Equal(again, out) {
		t.Fatalf("second Reseal: changed %v, err %v; want nothing changed", changed, err)
	}
}

// TestKMSResealRefusesWhatDoesNotOpen: a value with another aad, another
// tenant's value and bytes that are no sealed value are errors, never
// re-sealed.
func TestKMSResealRefusesWhatDoesNotOpen(t *testing.T) {
	ctx := context.Background()
	k := newKeyring(t, rootKey(t), newMemStore(), "acme", "other")
	sealed, err := k.Seal(ctx, "acme", []byte("secret"), []byte("a"))
	if err != nil {
		t.Fatal(err)
	}
	for _, tn := range []string{"acme", "other"} {
		if _, err := k.Rotate(ctx, tn); err != nil {
			t.Fatal(err)
		}
	}
	tests := []struct {
		name   string
		tenant string
		sealed []byte
		aad    string
	}{
		{name: "another aad", tenant: "acme", sealed: sealed, aad: "b"},
		{name: "another tenant", tenant: "other", sealed: sealed, aad: "a"},
		{name: "not sealed", tenant: "acme", sealed: []byte("plain text, long enough to pass a header"), aad: "a"},
		{name: "short", tenant: "acme", sealed: []byte("K"), aad: "a"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if out, _, err := k.Reseal(ctx, tc.tenant, tc.sealed, []byte(tc.aad)); err == nil {
				t.Fatalf("Reseal = %x, want an error", out)
			}
		})
	}
}

// TestKMSCurrentVersionFollowsAnotherKeyringsRotation: a keyring that
// cached v1 seals under v2 at once after CurrentVersion, although its
// refresh has not passed.
func TestKMSCurrentVersionFollowsAnotherKeyringsRotation(t *testing.T) {
	defer kms.SetRefresh(time.Hour)()
	ctx := context.Background()
	store, root := newMemStore(), rootKey(t)
	a := newKeyring(t, root, store, "acme")
	b := newKeyring(t, root, store)
	sealed, err := b.Seal(ctx, "acme", []byte("x"), nil) // b caches v1
	if err != nil {
		t.Fatal(err)
	}
	if _, err := a.Rotate(ctx, "acme"); err != nil {
		t.Fatal(err)
	}
	if _, changed, err := b.Reseal(ctx, "acme", sealed, nil); err != nil || changed {
		t.Fatalf("Reseal on a keyring that has not seen the rotation: changed %v, err %v; want unchanged", changed, err)
	}
	if v, err := b.CurrentVersion(ctx, "acme"); err != nil || v != 2 {
		t.Fatalf("CurrentVersion = %d, %v; want 2", v, err)
	}
	out, changed, err := b.Reseal(ctx, "acme", sealed, nil)
	if v, _ := kms.SealedVersion(out); err != nil || !changed || v != 2 {
		t.Fatalf("Reseal after CurrentVersion: version %d, changed %v, err %v; want 2", v, changed, err)
	}
	if _, err := b.CurrentVersion(ctx, "nobody"); !errors.Is(err, kms.ErrNoKey) {
		t.Fatalf("CurrentVersion of a tenant without keys: %v, want ErrNoKey", err)
	}
}

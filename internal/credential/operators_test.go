package credential

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/iotransit/iotransit/internal/testutil"
)

func TestOperatorLifecycle(t *testing.T) {
	s := newStore(t)
	o := NewOperators(s)
	ctx := context.Background()
	op, token, err := o.Create(ctx, "alice", RoleReadonly, time.Hour, "operator")
	if err != nil {
		t.Fatal(err)
	}
	if op.Hash != nil || op.ExpiresAt == nil || !IsOperatorToken(token) || IsAPIKeyToken(token) || strings.HasPrefix(token, "itop_") {
		t.Fatalf("created %+v with token %.8s…", op, token)
	}
	// The stored record holds a hash, never the secret.
	kv, _ := s.bucket(ctx, operatorTenant)
	e, err := kv.Get(ctx, operatorKeyPrefix+op.ID)
	if err != nil {
		t.Fatal(err)
	}
	_, secret, _ := ParseToken(operatorPrefix, token)
	if strings.Contains(string(e.Value()), secret) {
		t.Fatal("the secret is stored")
	}
	if got, err := o.Verify(ctx, token); err != nil || got.Name != "alice" || got.Role != RoleReadonly || got.Hash != nil {
		t.Fatalf("verify: %+v %v", got, err)
	}
	for name, bad := range map[string]string{
		"wrong secret":   token[:len(token)-1] + "x",
		"unknown id":     operatorPrefix + "ffffffffffffffff_" + secret,
		"api key prefix": "itk_" + op.ID + "_" + secret,
		"bootstrap form": "itop_" + secret,
		"truncated":      token[:len(token)-3],
		"empty":          "",
	} {
		if _, err := o.Verify(ctx, bad); !ErrInvalid.Is(err) {
			t.Errorf("%s: %v, want credential.invalid", name, err)
		}
	}
	// Rotation: the old secret stops, the new one works.
	rot, token2, err := o.Rotate(ctx, op.ID)
	if err != nil || rot.RotatedAt == nil || token2 == token {
		t.Fatalf("rotate: %+v %v", rot, err)
	}
	if _, err := o.Verify(ctx, token); !ErrInvalid.Is(err) {
		t.Errorf("the old token after rotation: %v", err)
	}
	if _, err := o.Verify(ctx, token2); err != nil {
		t.Errorf("the new token: %v", err)
	}
	// Expiry.
	s.now = func() time.Time { return time.Now().Add(2 * time.Hour) }
	if _, err := o.Verify(ctx, token2); !ErrInvalid.Is(err) {
		t.Errorf("expired: %v", err)
	}
	s.now = time.Now
	if _, err := o.Revoke(ctx, op.ID); err != nil {
		t.Fatal(err)
	}
	if _, err := o.Verify(ctx, token2); !ErrInvalid.Is(err) {
		t.Errorf("revoked: %v", err)
	}
	if _, _, err := o.Rotate(ctx, op.ID); !ErrOperatorRevoked.Is(err) {
		t.Errorf("rotate a revoked operator: %v", err)
	}
	// Names are never reused, and are checked.
	if _, _, err := o.Create(ctx, "alice", RoleAdmin, 0, "operator"); !ErrOperatorNameTaken.Is(err) {
		t.Errorf("a second alice: %v", err)
	}
	for _, tc := range []struct{ name, opName, role string }{
		{"upper case", "Alice", RoleAdmin},
		{"space", "a b", RoleAdmin},
		{"leading dash", "-a", RoleAdmin},
		{"dot", "a.b", RoleAdmin},
		{"empty", "", RoleAdmin},
		{"too long", strings.Repeat("a", 65), RoleAdmin},
	} {
		if _, _, err := o.Create(ctx, tc.opName, tc.role, 0, "operator"); !ErrOperatorName.Is(err) {
			t.Errorf("%s: %v", tc.name, err)
		}
	}
	if _, _, err := o.Create(ctx, "bob", "operator:root", 0, "operator"); !ErrRoleInvalid.Is(err) {
		t.Errorf("unknown role: %v", err)
	}
	list, err := o.List(ctx)
	if err != nil || len(list) != 1 || list[0].Hash != nil {
		t.Errorf("list: %+v %v", list, err)
	}
}

func TestOperatorBootstrapRetireGuard(t *testing.T) {
	s := newStore(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	o, watcher := NewOperators(s), NewOperators(s)
	if err := watcher.WatchBootstrap(ctx); err != nil {
		t.Fatal(err)
	}
	if _, err := o.RetireBootstrap(ctx, "operator"); !ErrOperatorLockout.Is(err) {
		t.Fatalf("no admin: %v", err)
	}
	adm, _, err := o.Create(ctx, "root", RoleAdmin, time.Hour, "operator")
	if err != nil {
		t.Fatal(err)
	}
	// An admin that has expired does not count.
	s.now = func() time.Time { return time.Now().Add(2 * time.Hour) }
	if _, err := o.RetireBootstrap(ctx, "operator"); !ErrOperatorLockout.Is(err) {
		t.Fatalf("only an expired admin: %v", err)
	}
	s.now = time.Now
	b, err := o.RetireBootstrap(ctx, "operator:root")
	if err != nil || !b.Retired || b.RetiredBy != "operator:root" || !o.BootstrapRetired() {
		t.Fatalf("retire: %+v %v", b, err)
	}
	testutil.Eventually(t, 5*time.Second, 5*time.Millisecond, func() error {
		if !watcher.BootstrapRetired() {
			return errors.New("the watcher does not see the retirement")
		}
		return nil
	})
	if _, err := o.Revoke(ctx, adm.ID); !ErrOperatorLockout.Is(err) {
		t.Errorf("revoke the last admin: %v", err)
	}
	if err := o.ResetBootstrap(ctx); err != nil {
		t.Fatal(err)
	}
	testutil.Eventually(t, 5*time.Second, 5*time.Millisecond, func() error {
		if watcher.BootstrapRetired() {
			return errors.New("the watcher does not see the reset")
		}
		return nil
	})
	if _, err := o.Revoke(ctx, adm.ID); err != nil {
		t.Errorf("revoke an admin with the bootstrap key back: %v", err)
	}
}

package credential

import (
	"context"
	"fmt"
	"sync"
	"testing"
)

// TestOperatorConcurrentRevocationsKeepAnAdmin: with the bootstrap key
// retired, two admins revoking each other at once must not both succeed
// (each counted the other as the admin left): one is refused
// credential.operator_lockout and an active admin remains. Likewise a
// retirement racing the revocation of the last admin.
func TestOperatorConcurrentRevocationsKeepAnAdmin(t *testing.T) {
	s := newStore(t)
	o := NewOperators(s)
	ctx := context.Background()
	admin := func(name string) string {
		t.Helper()
		op, _, err := o.Create(ctx, name, RoleAdmin, 0, "test")
		if err != nil {
			t.Fatal(err)
		}
		return op.ID
	}
	tests := []struct {
		name string
		run  func(i int) (a, b error)
	}{
		{"two revocations", func(i int) (error, error) {
			if i == 0 {
				admin("first")
				if _, err := o.RetireBootstrap(ctx, "test"); err != nil {
					t.Fatal(err)
				}
			}
			// Exactly two active admins: the one left by the round before and a new one.
			active, err := o.List(ctx)
			if err != nil {
				t.Fatal(err)
			}
			var left string
			for _, op := range active {
				if op.Role == RoleAdmin && op.Active(s.now()) {
					left = op.ID
				}
			}
			fresh := admin(fmt.Sprintf("pair-%d", i))
			return both(func() error { _, err := o.Revoke(ctx, left); return err }, func() error { _, err := o.Revoke(ctx, fresh); return err })
		}},
		{"a retirement and the last admin's revocation", func(i int) (error, error) {
			// The bootstrap key works and one admin is active.
			if err := o.ResetBootstrap(ctx); err != nil {
				t.Fatal(err)
			}
			ops, err := o.List(ctx)
			if err != nil {
				t.Fatal(err)
			}
			for _, op := range ops {
				if op.Active(s.now()) {
					if _, err := o.Revoke(ctx, op.ID); err != nil {
						t.Fatal(err)
					}
				}
			}
			last := admin(fmt.Sprintf("last-%d", i))
			return both(func() error { _, err := o.RetireBootstrap(ctx, "test"); return err }, func() error { _, err := o.Revoke(ctx, last); return err })
		}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			for i := range 30 {
				a, b := tc.run(i)
				n, err := o.activeAdmins(ctx, "")
				if err != nil {
					t.Fatal(err)
				}
				b0, err := o.Bootstrap(ctx)
				if err != nil {
					t.Fatal(err)
				}
				if n == 0 && b0.Retired {
					t.Fatalf("round %d: the bootstrap key is retired and no active admin is left (changes: %v, %v)", i, a, b)
				}
				if (a == nil) == (b == nil) {
					t.Fatalf("round %d: changes %v, %v; want one refused", i, a, b)
				}
				for _, err := range []error{a, b} {
					if err != nil && !ErrOperatorLockout.Is(err) {
						t.Fatalf("round %d: refused with %v, want credential.operator_lockout", i, err)
					}
				}
			}
		})
	}
}

// both runs f and g at once and returns their errors.
func both(f, g func() error) (error, error) {
	var wg sync.WaitGroup
	var a, b error
	wg.Add(2)
	go func() { defer wg.Done(); a = f() }()
	go func() { defer wg.Done(); b = g() }()
	wg.Wait()
	return a, b
}

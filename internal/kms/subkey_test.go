package kms

import (
	"bytes"
	"context"
	"testing"
)

type mapStore map[string][]byte

func (m mapStore) Get(_ context.Context, k string) ([]byte, error) {
	if v, ok := m[k]; ok {
		return v, nil
	}
	return nil, ErrKeyNotFound
}

func (m mapStore) Create(_ context.Context, k string, v []byte) error {
	if _, ok := m[k]; ok {
		return ErrKeyExists
	}
	m[k] = v
	return nil
}

// TestKMSRotatesSubkeyAfterMaxUses checks that no subkey seals more than
// maxSubkeyUses values, and that values of every subkey still open.
func TestKMSRotatesSubkeyAfterMaxUses(t *testing.T) {
	defer func(v int64) { maxSubkeyUses = v }(maxSubkeyUses)
	maxSubkeyUses = 3
	ctx := context.Background()
	k, err := New(bytes.Repeat([]byte{7}, 32), mapStore{})
	if err != nil {
		t.Fatal(err)
	}
	if err := k.EnsureTenant(ctx, "acme"); err != nil {
		t.Fatal(err)
	}
	uses := map[string]int{}
	var sealed [][]byte
	for i := 0; i < 10; i++ {
		s, err := k.Seal(ctx, "acme", []byte{byte(i)}, nil)
		if err != nil {
			t.Fatal(err)
		}
		uses[string(s[headerLen:sealHeaderLen])]++
		sealed = append(sealed, s)
	}
	if len(uses) != 4 {
		t.Errorf("10 seals used %d subkeys, want 4", len(uses))
	}
	for id, n := range uses {
		if n > 3 {
			t.Errorf("subkey %x sealed %d values", id, n)
		}
	}
	for i, s := range sealed {
		if got, err := k.Open(ctx, "acme", s, nil); err != nil || !bytes.Equal(got, []byte{byte(i)}) {
			t.Errorf("open %d: %v %v", i, got, err)
		}
	}
}

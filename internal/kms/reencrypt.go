// Re-encryption after a rotation: reading the key version a sealed value
// names without opening it, and re-sealing a value under the newest version.

package kms

import (
	"context"
	"encoding/binary"
	"encoding/json"
	"fmt"
)

// SealedVersion returns the data key version recorded in a sealed value,
// without opening it (the header is authenticated only when it is opened).
// A value that is not one Seal made is ErrOpen.
func SealedVersion(sealed []byte) (uint32, error) {
	if len(sealed) < sealHeaderLen+nonceLen || sealed[0] != sealMagic {
		return 0, ErrOpen
	}
	v := binary.BigEndian.Uint32(sealed[1:])
	if v == 0 {
		return 0, fmt.Errorf("%w: key version 0", ErrOpen)
	}
	return v, nil
}

// CurrentVersion reads the newest version of the tenant's data key from the
// store (not from what this keyring cached) and makes this keyring seal
// under it from now on: a re-encryption that starts after a rotation on
// another node seals under the rotated key at once, not a refresh later.
func (k *Keyring) CurrentVersion(ctx context.Context, tenant string) (uint32, error) {
	if err := k.checkKept(ctx, tenant); err != nil {
		return 0, err
	}
	v, err := k.probe(ctx, tenant, 0)
	if err != nil {
		return 0, err
	}
	if v == 0 {
		return 0, fmt.Errorf("%w for tenant %s", ErrNoKey, tenant)
	}
	k.keep(tenant, v, nil, v)
	k.mu.Lock()
	if sk := k.sealing[tenant]; sk != nil && sk.version < v {
		delete(k.sealing, tenant) // the next seal takes the newest version
	}
	k.mu.Unlock()
	return v, nil
}

// Reseal returns sealed sealed again under the tenant's newest data key
// version, bound to the same tenant and aad, and changed true; a value
// already under the newest version this keyring knows (CurrentVersion
// updates it) comes back as it is, with changed false. The value is opened
// first, so a value that does not open with aad is an error, never
// re-sealed.
func (k *Keyring) Reseal(ctx context.Context, tenant string, sealed, aad []byte) (out []byte, changed bool, err error) {
	from, err := SealedVersion(sealed)
	if err != nil {
		return nil, false, err
	}
	cur, _, err := k.newest(ctx, tenant, false)
	if err != nil {
		return nil, false, err
	}
	if from >= cur {
		return sealed, false, nil
	}
	plain, err := k.Open(ctx, tenant, sealed, aad)
	if err != nil {
		return nil, false, err
	}
	if out, err = k.Seal(ctx, tenant, plain, aad); err != nil {
		return nil, false, err
	}
	clear(plain)
	if to, _ := SealedVersion(out); to <= from {
		// The sealing subkey was still an older one (made before this
		// keyring learnt of the newest version): nothing gained.
		return sealed, false, nil
	}
	return out, true, nil
}

// ResealFunc re-seals one sealed value bound to aad (Keyring.Reseal for one
// tenant): out and true when it changed.
type ResealFunc func(sealed, aad []byte) (out []byte, changed bool, err error)

// ResealJSON re-seals the sealed field of a JSON record of type T stored as
// stored: field returns where the record keeps its sealed value and the aad
// it is bound to. It returns the record to store and true when the value
// changed; a record without a sealed value is left as it is.
func ResealJSON[T any](stored []byte, reseal ResealFunc, field func(*T) (sealed *[]byte, aad []byte)) ([]byte, bool, error) {
	var rec T
	if err := json.Unmarshal(stored, &rec); err != nil {
		return nil, false, fmt.Errorf("kms: decode a sealed record: %w", err)
	}
	sealed, aad := field(&rec)
	if len(*sealed) == 0 {
		return nil, false, nil
	}
	out, changed, err := reseal(*sealed, aad)
	if err != nil || !changed {
		return nil, false, err
	}
	*sealed = out
	b, err := json.Marshal(rec)
	if err != nil {
		return nil, false, fmt.Errorf("kms: encode a sealed record: %w", err)
	}
	return b, true, nil
}

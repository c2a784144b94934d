package kms

import (
	"context"
	"errors"
	"fmt"
)

// Record is a platform secret kept in a KeyStore: a secret part sealed
// under the data key of Owner (bound to AAD), and optionally a public part
// stored beside it as is.
type Record struct {
	// Store holds the record under Name.
	Store KeyStore
	Name  string
	// Owner is the kms tenant whose data key seals the secret part.
	Owner string
	// AAD is the associated data the secret part is sealed with.
	AAD []byte
	// Encode lays the stored value out from the public part and the sealed
	// secret, and Decode reads them back. When both are nil, the stored
	// value is the sealed secret alone.
	Encode func(public, sealed []byte) ([]byte, error)
	Decode func(stored []byte) (public, sealed []byte, err error)
}

// GetOrCreate returns the public and secret parts of the record, creating
// the record from what fresh returns when it does not exist yet. Nodes that
// start at once agree on one record: the first Create wins, and every node
// returns what it reads back.
func (k *Keyring) GetOrCreate(ctx context.Context, r Record, fresh func() (public, secret []byte, err error)) (public, secret []byte, err error) {
	if err := k.EnsureTenant(ctx, r.Owner); err != nil {
		return nil, nil, err
	}
	for {
		stored, err := r.Store.Get(ctx, r.Name)
		if err == nil {
			return k.openRecord(ctx, r, stored)
		}
		if !errors.Is(err, ErrKeyNotFound) {
			return nil, nil, fmt.Errorf("kms: read %s: %w", r.Name, err)
		}
		public, secret, err := fresh()
		if err != nil {
			return nil, nil, fmt.Errorf("kms: make %s: %w", r.Name, err)
		}
		if stored, err = k.Seal(ctx, r.Owner, secret, r.AAD); err != nil {
			return nil, nil, err
		}
		if r.Encode != nil {
			if stored, err = r.Encode(public, stored); err != nil {
				return nil, nil, fmt.Errorf("kms: encode %s: %w", r.Name, err)
			}
		}
		if err := r.Store.Create(ctx, r.Name, stored); err != nil && !errors.Is(err, ErrKeyExists) {
			return nil, nil, fmt.Errorf("kms: store %s: %w", r.Name, err)
		}
		// Loop: read back whichever node's record won.
	}
}

// openRecord splits a stored record and opens its secret part.
func (k *Keyring) openRecord(ctx context.Context, r Record, stored []byte) (public, secret []byte, err error) {
	sealed := stored
	if r.Decode != nil {
		if public, sealed, err = r.Decode(stored); err != nil {
			return nil, nil, fmt.Errorf("kms: decode %s: %w", r.Name, err)
		}
	}
	if secret, err = k.Open(ctx, r.Owner, sealed, r.AAD); err != nil {
		return nil, nil, fmt.Errorf("kms: open %s: %w", r.Name, err)
	}
	return public, secret, nil
}

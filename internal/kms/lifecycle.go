package kms

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"
)

// Version is one version of a tenant's data key, as Status shows it: never
// the key itself.
type Version struct {
	Version uint32    `json:"version"`
	Created time.Time `json:"created,omitzero"`
	// RootKeyID names the root key that wraps this version.
	RootKeyID string `json:"rootKeyId"`
}

// Status is the state of a tenant's data keys.
type Status struct {
	Current  uint32    `json:"currentVersion"`
	Versions []Version `json:"versions"`
	// RootKeyID names the root key that wraps new data keys.
	RootKeyID string `json:"rootKeyId"`
}

// Status reads the tenant's data key versions from the store; a tenant
// without keys gives ErrNoKey.
func (k *Keyring) Status(ctx context.Context, tenant string) (Status, error) {
	st := Status{RootKeyID: k.root.ID()}
	for v := uint32(1); ; v++ {
		stored, err := k.store.Get(ctx, dekName(tenant, v))
		if errors.Is(err, ErrKeyNotFound) {
			break
		}
		if err != nil {
			return Status{}, fmt.Errorf("kms: data key %s: %w", dekName(tenant, v), err)
		}
		w := parseWrapped(stored)
		st.Versions = append(st.Versions, Version{Version: v, Created: w.Created, RootKeyID: w.Root})
		st.Current = v
	}
	if st.Current == 0 {
		return Status{}, fmt.Errorf("%w for tenant %s", ErrNoKey, tenant)
	}
	return st, nil
}

// shreddedName marks a tenant whose keys were shredded: no new key is made
// for it.
func shreddedName(tenant string) string { return tenant + ".shredded" }

// Shred destroys every version of the tenant's data keys in the store
// (a StreamStore erases every message of them from its files) and forgets
// the keys and subkeys this keyring cached. The tenant is marked (its
// shreddedName holds the time of the shred, no key material), so that no
// new key is ever made for it and its id stays reserved: afterwards Seal,
// Open and EnsureTenant fail with ErrNoKey. Other keyrings forget their cached keys when they restart
// (tenant deletion evicts them through Evict).
func (k *Keyring) Shred(ctx context.Context, tenant string) error {
	ms, ok := k.store.(ManagedKeyStore)
	if !ok {
		return errors.New("kms: shred needs a store that destroys keys")
	}
	mark := []byte(time.Now().UTC().Format(time.RFC3339Nano))
	if err := ms.Create(ctx, shreddedName(tenant), mark); err != nil && !errors.Is(err, ErrKeyExists) {
		return fmt.Errorf("kms: mark %s shredded: %w", tenant, err)
	}
	entries, err := ms.Entries(ctx)
	if err != nil {
		return fmt.Errorf("kms: list wrapped keys: %w", err)
	}
	k.Evict(tenant)
	for _, e := range entries {
		if t, _, ok := parseDEKName(e.Key); ok && t == tenant {
			if err := ms.Destroy(ctx, e.Key); err != nil {
				return fmt.Errorf("kms: destroy %s: %w", e.Key, err)
			}
		}
	}
	k.Evict(tenant) // again: a Seal or Open may have cached a key meanwhile
	return nil
}

// Evict forgets the tenant's cached data keys and subkeys.
func (k *Keyring) Evict(tenant string) {
	k.mu.Lock()
	defer k.mu.Unlock()
	delete(k.tenants, tenant)
	delete(k.sealing, tenant)
	prefix := tenant + "\x00"
	for ck := range k.opening {
		if strings.HasPrefix(ck, prefix) {
			delete(k.opening, ck)
		}
	}
}

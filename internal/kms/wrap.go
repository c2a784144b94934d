package kms

import (
	"bytes"
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"
)

// wrappedKey is how a wrapped data key is stored: JSON naming the root key
// that wrapped it, so that a keyring with several roots (a change of root)
// knows which one opens it. A value that is not such JSON is a key stored
// before roots had ids: nonce | AES-GCM under a file root.
type wrappedKey struct {
	Root    string    `json:"root"`
	Key     []byte    `json:"key"`
	Created time.Time `json:"created,omitzero"`
}

// wrapKey wraps raw under the keyring's root and lays it out for the store.
func (k *Keyring) wrapKey(ctx context.Context, raw, aad []byte, created time.Time) ([]byte, error) {
	return wrapUnder(ctx, k.root, raw, aad, created)
}

// wrapUnder wraps raw under root and lays it out for the store.
func wrapUnder(ctx context.Context, root RootKey, raw, aad []byte, created time.Time) ([]byte, error) {
	w, err := root.Wrap(ctx, raw, aad)
	if err != nil {
		return nil, fmt.Errorf("kms: wrap under root key %s: %w", root.ID(), err)
	}
	return json.Marshal(wrappedKey{Root: root.ID(), Key: w, Created: created.UTC()})
}

// parseWrapped reads a stored wrapped key; an old value has no root id.
func parseWrapped(stored []byte) wrappedKey {
	var w wrappedKey
	if len(stored) > 0 && stored[0] == '{' && json.Unmarshal(stored, &w) == nil && w.Root != "" {
		return w
	}
	return wrappedKey{Key: stored}
}

// NoRootID is how RootIDs names the root of a key wrapped by a file root
// before root keys had ids.
const NoRootID = "file (no id)"

// RootIDs names the root keys that wrap the wrapped keys among entries
// (of a ManagedKeyStore), for errors; a key wrapped by a file root before
// root keys had ids is named NoRootID.
func RootIDs(entries []Entry) []string {
	var ids []string
	for _, e := range entries {
		if _, _, ok := parseDEKName(e.Key); !ok && e.Key != rootCheckName {
			continue
		}
		id := parseWrapped(e.Value).Root
		if id == "" {
			id = NoRootID
		}
		if !slices.Contains(ids, id) {
			ids = append(ids, id)
		}
	}
	return ids
}

// roots returns the keyring's root keys, the current one first.
func (k *Keyring) roots() []RootKey { return append([]RootKey{k.root}, k.prev...) }

// rootIDs names the keyring's root keys for errors.
func (k *Keyring) rootIDs() string {
	ids := make([]string, 0, 1+len(k.prev))
	for _, r := range k.roots() {
		ids = append(ids, r.ID())
	}
	return strings.Join(ids, ", ")
}

// unwrapKey opens the wrapped key stored under name with the root it
// names (any root for an old value without a name).
func (k *Keyring) unwrapKey(ctx context.Context, name string, stored, aad []byte) ([]byte, wrappedKey, error) {
	raw, w, _, err := k.unwrapKeyRoot(ctx, name, stored, aad)
	return raw, w, err
}

// unwrapKeyRoot is unwrapKey that also returns the root that opened the key.
func (k *Keyring) unwrapKeyRoot(ctx context.Context, name string, stored, aad []byte) ([]byte, wrappedKey, RootKey, error) {
	w := parseWrapped(stored)
	for _, r := range k.roots() {
		if w.Root != "" && r.ID() != w.Root {
			continue
		}
		raw, err := r.Unwrap(ctx, w.Key, aad)
		if err == nil {
			return raw, w, r, nil
		}
		if w.Root != "" {
			return nil, w, nil, fmt.Errorf("kms: unwrap %s with root key %s: %w", name, r.ID(), err)
		}
	}
	if w.Root == "" {
		return nil, w, nil, fmt.Errorf("%w: root key %s does not open %s (%w)", ErrWrongRoot, k.rootIDs(), name, ErrOpen)
	}
	return nil, w, nil, fmt.Errorf("%w: %s is wrapped under root key %s, this node has %s (%w)", ErrWrongRoot, name, w.Root, k.rootIDs(), ErrOpen)
}

// The root check is a known value wrapped under the root key, made at the
// first start: each start unwraps it, so that a node given the wrong root
// key stops before it writes anything.
const rootCheckName = "_root.check"

var rootCheckValue = []byte("iotransit kms root check v1")

func rootCheckAAD() []byte { return []byte("iotransit/kms/root-check") }

// CheckRoot verifies that the keyring's roots open the store's keys: it
// unwraps the root check, or, in a store made before root checks were
// kept, an existing data key, and then records the check. A store without
// keys gets the check under the current root. A wrong root changes nothing
// and gives an error naming the root key ids, wrapping ErrWrongRoot.
func (k *Keyring) CheckRoot(ctx context.Context) error {
	for {
		stored, err := k.store.Get(ctx, rootCheckName)
		if err == nil {
			plain, w, err := k.unwrapKey(ctx, rootCheckName, stored, rootCheckAAD())
			if errors.Is(err, ErrWrongRoot) && w.Root != "" {
				return fmt.Errorf("%w: the keys of this data are wrapped under root key %s and this node has root key %s: start it with the root key that made the data (--root-key-file, or --kms-provider pkcs11 with that token), or name that one with the --previous-* flags to move the keys to this one (kms rewrap)", ErrWrongRoot, w.Root, k.rootIDs())
			}
			if err != nil {
				return fmt.Errorf("kms: root key check: %w", err)
			}
			if !bytes.Equal(plain, rootCheckValue) {
				return fmt.Errorf("%w: the root check opens to another value under %s", ErrWrongRoot, k.rootIDs())
			}
			return nil
		}
		if !errors.Is(err, ErrKeyNotFound) {
			return fmt.Errorf("kms: read the root check: %w", err)
		}
		// The check goes under the root of the store's keys (a previous
		// one during a change of root: Rewrap moves it last).
		root, err := k.checkOldKey(ctx)
		if err != nil {
			return err
		}
		stored, err = wrapUnder(ctx, root, rootCheckValue, rootCheckAAD(), time.Now())
		if err != nil {
			return err
		}
		if err := k.store.Create(ctx, rootCheckName, stored); err != nil && !errors.Is(err, ErrKeyExists) {
			return fmt.Errorf("kms: store the root check: %w", err)
		}
		// Loop: verify what is stored, this node's or another's.
	}
}

// checkOldKey unwraps one data key of a store that has no root check yet
// and returns the root that opened it (the current root for a store
// without keys).
func (k *Keyring) checkOldKey(ctx context.Context) (RootKey, error) {
	ms, ok := k.store.(ManagedKeyStore)
	if !ok {
		return k.root, nil
	}
	entries, err := ms.Entries(ctx)
	if err != nil {
		return nil, fmt.Errorf("kms: list wrapped keys: %w", err)
	}
	for _, e := range entries {
		tenant, v, ok := parseDEKName(e.Key)
		if !ok {
			continue
		}
		_, _, root, err := k.unwrapKeyRoot(ctx, e.Key, e.Value, dekAAD(tenant, v))
		if err != nil {
			return nil, fmt.Errorf("kms: root key check: %w", err)
		}
		return root, nil
	}
	return k.root, nil
}

// parseDEKName splits the name of a wrapped data key into tenant and
// version.
func parseDEKName(name string) (string, uint32, bool) {
	i := strings.LastIndex(name, ".v")
	if i <= 0 {
		return "", 0, false
	}
	var v uint32
	if _, err := fmt.Sscanf(name[i+2:], "%d", &v); err != nil || v == 0 || dekName(name[:i], v) != name {
		return "", 0, false
	}
	return name[:i], v, true
}

// Rewrap moves every wrapped key of the store (data keys and the root
// check) to the keyring's current root: each is unwrapped with the root it
// names (one of the previous roots) and replaced, compare-and-set, by the
// same key wrapped under the current root. Keys already there are left as
// they are, so Rewrap may run again after an interruption and several
// nodes may run it at once. It returns how many keys it moved.
func (k *Keyring) Rewrap(ctx context.Context) (int, error) {
	ms, ok := k.store.(ManagedKeyStore)
	if !ok {
		return 0, errors.New("kms: rewrap needs a store that lists and updates keys")
	}
	entries, err := ms.Entries(ctx)
	if err != nil {
		return 0, fmt.Errorf("kms: list wrapped keys: %w", err)
	}
	// The root check moves last: until every data key has moved, a node
	// without the previous root stops at its start rather than at its
	// first use of a key that did not move.
	slices.SortStableFunc(entries, func(a, b Entry) int {
		return cmp.Compare(boolInt(a.Key == rootCheckName), boolInt(b.Key == rootCheckName))
	})
	moved := 0
	for _, e := range entries {
		var aad []byte
		if e.Key == rootCheckName {
			aad = rootCheckAAD()
		} else if tenant, v, ok := parseDEKName(e.Key); ok {
			aad = dekAAD(tenant, v)
		} else {
			continue // a shredded tenant's mark, or another record
		}
		for e := e; ; {
			if parseWrapped(e.Value).Root == k.root.ID() {
				break
			}
			raw, w, err := k.unwrapKey(ctx, e.Key, e.Value, aad)
			if err != nil {
				return moved, err
			}
			created := w.Created
			if created.IsZero() {
				created = time.Now()
			}
			stored, err := k.wrapKey(ctx, raw, aad, created)
			if err != nil {
				return moved, err
			}
			err = ms.Update(ctx, e.Key, stored, e.Revision)
			if err == nil {
				moved++
				break
			}
			if !errors.Is(err, ErrKeyExists) {
				return moved, fmt.Errorf("kms: replace %s: %w", e.Key, err)
			}
			// Changed meanwhile (another node rewrapped it, or it was
			// shredded): look again.
			if e.Value, e.Revision, err = ms.GetEntry(ctx, e.Key); errors.Is(err, ErrKeyNotFound) {
				break
			} else if err != nil {
				return moved, fmt.Errorf("kms: read %s: %w", e.Key, err)
			}
		}
	}
	return moved, nil
}

func boolInt(b bool) int {
	if b {
		return 1
	}
	return 0
}

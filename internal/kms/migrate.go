package kms

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
)

// CopyKeys copies every key of from into to, where it is missing, and
// returns how many it copied. A key to holds already is left as it is (a
// copy made before, or the key replaced since, by a rewrap); a data key of
// a tenant that to marks shredded is not copied (a node that finished the
// move may have shredded it meanwhile), and one copied while a shred
// marked its tenant is destroyed again. So CopyKeys may run again after an
// interruption, and on several nodes at once. It then checks that to holds
// every key of from, or its tenant's shred mark: only then may from be
// deleted.
func CopyKeys(ctx context.Context, from, to ManagedKeyStore) (int, error) {
	entries, err := from.Entries(ctx)
	if err != nil {
		return 0, fmt.Errorf("kms: list the keys to copy: %w", err)
	}
	// The shred marks first: no key of a shredded tenant is copied after
	// its mark.
	slices.SortStableFunc(entries, func(a, b Entry) int {
		return cmp.Compare(boolInt(!isShredMark(a.Key)), boolInt(!isShredMark(b.Key)))
	})
	copied := 0
	for _, e := range entries {
		tenant, _, dek := parseDEKName(e.Key)
		if dek {
			marked, err := hasKey(ctx, to, shreddedName(tenant))
			if err != nil {
				return copied, err
			}
			if marked {
				continue
			}
		}
		switch err := to.Create(ctx, e.Key, e.Value); {
		case errors.Is(err, ErrKeyExists):
			continue
		case err != nil:
			return copied, fmt.Errorf("kms: copy %s: %w", e.Key, err)
		}
		copied++
		if dek {
			// As createVersion: a shred that marked the tenant after the
			// check above may have listed the keys before this one.
			if marked, err := hasKey(ctx, to, shreddedName(tenant)); err != nil {
				return copied, err
			} else if marked {
				if err := to.Destroy(ctx, e.Key); err != nil {
					return copied, fmt.Errorf("kms: destroy %s, copied during its tenant's shred: %w", e.Key, err)
				}
			}
		}
	}
	for _, e := range entries {
		held, err := hasKey(ctx, to, e.Key)
		if err != nil {
			return copied, err
		}
		if tenant, _, dek := parseDEKName(e.Key); !held && dek {
			if held, err = hasKey(ctx, to, shreddedName(tenant)); err != nil {
				return copied, err
			}
		}
		if !held {
			return copied, fmt.Errorf("kms: %s was copied and is missing", e.Key)
		}
	}
	return copied, nil
}

// isShredMark reports whether key is a tenant's shred mark.
func isShredMark(key string) bool { return strings.HasSuffix(key, shreddedName("")) }

// hasKey reports whether store holds key.
func hasKey(ctx context.Context, store KeyStore, key string) (bool, error) {
	_, err := store.Get(ctx, key)
	if errors.Is(err, ErrKeyNotFound) {
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("kms: read %s: %w", key, err)
	}
	return true, nil
}

package node

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"path/filepath"
	"slices"
	"strings"

	"github.com/iotransit/iotransit/internal/backbone"
	"github.com/iotransit/iotransit/internal/backbone/names"
	"github.com/iotransit/iotransit/internal/kms"
)

// Root key providers (--kms-provider).
const (
	KMSFile   = "file"   // a 0600 key file (--root-key-file)
	KMSPKCS11 = "pkcs11" // an AES key generated in a PKCS#11 token
)

// RootKeyFile is the default root key file, in the data directory.
const RootKeyFile = "root.key"

// KMSConfig selects the root key: where it is held and, during a change of
// root key, the previous one.
type KMSConfig struct {
	// Provider is KMSFile (default) or KMSPKCS11.
	Provider string
	// RootKeyFile is the file provider's key file (default
	// <data-dir>/root.key). Outside the data directory, several nodes
	// share one root and a backup of the data directory alone opens
	// nothing.
	RootKeyFile string
	// PKCS11 reaches the token of the pkcs11 provider.
	PKCS11 kms.PKCS11Config
	// Previous, when set, is the root key being replaced: keys wrapped
	// under it are read, and the node re-wraps every key under the current
	// root at start (kms rewrap).
	Previous *KMSConfig
}

// Validate reports every problem of the root key settings at once.
func (c *KMSConfig) Validate() error {
	var errs []error
	switch c.Provider {
	case "", KMSFile:
	case KMSPKCS11:
		if err := c.PKCS11.Validate(); err != nil {
			errs = append(errs, err)
		}
	default:
		errs = append(errs, fmt.Errorf("--kms-provider %q: want %q or %q", c.Provider, KMSFile, KMSPKCS11))
	}
	if p := c.Previous; p != nil {
		if p.Previous != nil {
			errs = append(errs, errors.New("kms: one previous root key at most"))
		}
		if err := p.Validate(); err != nil {
			errs = append(errs, fmt.Errorf("previous root key: %w", err))
		}
		if (p.Provider == "" || p.Provider == KMSFile) && p.RootKeyFile == "" {
			errs = append(errs, errors.New("the previous file root key needs --previous-root-key-file"))
		}
	}
	return errors.Join(errs...)
}

// rootKeyFile is the file provider's key file.
func (c *KMSConfig) rootKeyFile(dataDir string) string {
	if c.RootKeyFile != "" {
		return c.RootKeyFile
	}
	return filepath.Join(dataDir, RootKeyFile)
}

// openRoot opens the root key c names; a missing key is made only when
// create is true (kms.ErrNoRootKey otherwise). closeFn releases a token.
func (c *KMSConfig) openRoot(dataDir string, create bool) (root kms.RootKey, closeFn func(), err error) {
	if c.Provider == KMSPKCS11 {
		r, err := kms.OpenPKCS11Root(c.PKCS11, create)
		if err != nil {
			return nil, nil, err
		}
		return r, func() { _ = r.Close() }, nil
	}
	r, err := kms.OpenFileRoot(c.rootKeyFile(dataDir), create)
	return r, func() {}, err
}

// check opens the root keys c names without making one, for
// --check-config: a missing current root is fine (the first start makes
// it), an unsafe key file, a token that refuses the node or a missing
// previous root is not.
func (c *KMSConfig) check(dataDir string) error {
	if c.Validate() != nil {
		return nil // Validate said so
	}
	var errs []error
	for _, k := range []*KMSConfig{c, c.Previous} {
		if k == nil {
			continue
		}
		_, closeFn, err := k.openRoot(dataDir, false)
		switch {
		case errors.Is(err, kms.ErrNoRootKey) && k == c:
		case err != nil:
			errs = append(errs, err)
		default:
			closeFn()
		}
	}
	return errors.Join(errs...)
}

// openKeys opens the node's keyring: the root key (a new one only when the
// kms stream holds no key yet, or as the target of a change of root), the
// root check, and, with a previous root, the rewrap of every key.
func (n *Node) openKeys(ctx context.Context) error {
	keys, closeFn, moved, err := openBackboneKeyring(ctx, n.bb, n.cfg.KMS, n.cfg.DataDir, n.log)
	if err != nil {
		return err
	}
	n.onClose(closeFn)
	n.keys = keys
	if moved > 0 {
		n.log.Info("kms keys rewrapped", "moved", moved, "root_key_id", keys.RootID())
	}
	return nil
}

// openBackboneKeyring opens the keyring of cfg over bb's kms stream. Keys
// still in the kms bucket of an older node are copied into the stream
// first (kms.CopyKeys: again after an interruption, on several nodes at
// once); once the keyring passed its root check over the stream, the
// bucket is deleted, and with it the files holding its wrapped keys and
// every value they had (a KV bucket cannot erase them).
func openBackboneKeyring(ctx context.Context, bb *backbone.Backbone, cfg KMSConfig, dataDir string, log *slog.Logger) (*kms.Keyring, func(), int, error) {
	store, err := bb.KMSStore(ctx)
	if err != nil {
		return nil, nil, 0, err
	}
	legacy, err := bb.LegacyKMS(ctx)
	if err != nil {
		return nil, nil, 0, err
	}
	if legacy != nil {
		copied, err := kms.CopyKeys(ctx, kms.KVStore{KV: legacy}, store)
		if err != nil {
			// Another node may have moved the keys and deleted the bucket
			// meanwhile (it deletes it only then).
			if still, gerr := bb.LegacyKMS(ctx); gerr != nil || still != nil {
				return nil, nil, 0, fmt.Errorf("kms: move the keys of bucket %s to stream %s: %w", names.KMSBucket, names.KMSStream, err)
			}
			legacy = nil
		}
		if copied > 0 {
			log.Info("kms keys copied to the kms stream", "copied", copied, "bucket", names.KMSBucket, "stream", names.KMSStream)
		}
	}
	keys, closeFn, moved, err := openKeyring(ctx, cfg, dataDir, store)
	if err != nil {
		return nil, nil, 0, err
	}
	if legacy != nil {
		if err := bb.DropLegacyKMS(ctx); err != nil {
			closeFn()
			return nil, nil, 0, err
		}
		log.Info("kms bucket deleted: its keys are in the kms stream", "bucket", names.KMSBucket, "stream", names.KMSStream)
	}
	return keys, closeFn, moved, nil
}

// openKeyring opens the keyring of cfg over store, checks its root, and
// re-wraps every key under the current root when cfg names a previous one.
// It returns how many keys moved.
func openKeyring(ctx context.Context, cfg KMSConfig, dataDir string, store kms.ManagedKeyStore) (_ *kms.Keyring, _ func(), moved int, err error) {
	var closers []func()
	closeAll := func() {
		for _, c := range closers {
			c()
		}
	}
	defer func() {
		if err != nil {
			closeAll()
		}
	}()
	entries, err := store.Entries(ctx)
	if err != nil {
		return nil, nil, 0, fmt.Errorf("kms: list wrapped keys: %w", err)
	}
	var prev []kms.RootKey
	if cfg.Previous != nil {
		r, c, err := cfg.Previous.openRoot(dataDir, false)
		if err != nil {
			return nil, nil, 0, fmt.Errorf("previous root key: %w", err)
		}
		closers = append(closers, c)
		prev = append(prev, r)
	}
	// A new root is made only for a store without keys, or as the target
	// of a change of root (the previous root reads the keys meanwhile).
	root, c, err := cfg.openRoot(dataDir, len(entries) == 0 || len(prev) > 0)
	if errors.Is(err, kms.ErrNoRootKey) {
		return nil, nil, 0, fmt.Errorf("%w; the kms stream holds %d wrapped keys (root key %s): restore the root key, or point the node at it (--root-key-file, --pkcs11-*); a new root key would open none of the data", err, len(entries), strings.Join(kms.RootIDs(entries), ", "))
	}
	if err != nil {
		return nil, nil, 0, err
	}
	closers = append(closers, c)
	keys := kms.NewKeyring(store, root, prev...)
	if err := keys.CheckRoot(ctx); err != nil {
		return nil, nil, 0, err
	}
	if err := checkStrays(entries, keys.Root(), prev); err != nil {
		return nil, nil, 0, err
	}
	if len(prev) > 0 {
		if moved, err = keys.Rewrap(ctx); err != nil {
			return nil, nil, 0, fmt.Errorf("kms rewrap: %w", err)
		}
	}
	return keys, closeAll, moved, nil
}

// checkStrays refuses a store holding keys wrapped under a root other than
// root and prev: the root check alone does not show them (a node still on
// the old root makes keys under it after the others re-wrapped every key,
// the root check included). Started so, the node could not open them, and
// the old root might be deleted with them still under it. A key wrapped
// before root keys had ids is checked by CheckRoot's unwrap only.
func checkStrays(entries []kms.Entry, root kms.RootKey, prev []kms.RootKey) error {
	known := []string{root.ID()}
	for _, r := range prev {
		known = append(known, r.ID())
	}
	var strays []string
	for _, id := range kms.RootIDs(entries) {
		if !slices.Contains(known, id) && id != kms.NoRootID {
			strays = append(strays, id)
		}
	}
	if len(strays) == 0 {
		return nil
	}
	return fmt.Errorf("%w: the kms stream holds keys wrapped under root key %s and this node has root key %s: start it with that root named by the --previous-* flags to move them (kms rewrap), then without", kms.ErrWrongRoot, strings.Join(strays, ", "), strings.Join(known, ", "))
}

// RewrapConfig is what "iotransit kms rewrap" needs: where the data is
// (the data directory's embedded JetStream, or an external cluster) and
// the current and previous root keys.
type RewrapConfig struct {
	DataDir   string
	NATSURLs  []string
	NATSCreds string
	// Replicas of the kms stream (as the nodes' --replicas; default 1).
	Replicas int
	KMS      KMSConfig
}

// Rewrap moves every wrapped key to cfg's current root key, reading keys
// wrapped under cfg.KMS.Previous, on a stopped node's data directory (its
// lock is taken) or on an external cluster. It returns how many keys moved
// and the current root key's id.
func Rewrap(ctx context.Context, cfg RewrapConfig, log *slog.Logger) (moved int, rootID string, err error) {
	if cfg.KMS.Previous == nil {
		return 0, "", errors.New("kms rewrap needs the previous root key (--previous-root-key-file or --previous-kms-provider)")
	}
	if err := cfg.KMS.Validate(); err != nil {
		return 0, "", err
	}
	if cfg.DataDir == "" {
		return 0, "", errors.New("a data directory is required (--data-dir)")
	}
	if len(cfg.NATSURLs) == 0 {
		release, err := lockDataDir(cfg.DataDir)
		if err != nil {
			return 0, "", err
		}
		defer release()
	}
	bb, err := backbone.Start(ctx, backbone.Config{DataDir: cfg.DataDir, URLs: cfg.NATSURLs, CredsFile: cfg.NATSCreds, Replicas: max(cfg.Replicas, 1)}, log)
	if err != nil {
		return 0, "", err
	}
	defer bb.Close()
	keys, closeFn, moved, err := openBackboneKeyring(ctx, bb, cfg.KMS, cfg.DataDir, log)
	if err != nil {
		return 0, "", err
	}
	closeFn()
	return moved, keys.RootID(), nil
}

// DefaultPKCS11KeyLabel is the label of the root key in its token unless
// --pkcs11-key-label names another.
const DefaultPKCS11KeyLabel = kms.DefaultPKCS11KeyLabel

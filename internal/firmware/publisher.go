// The publisher's side, run where the offline keys are (the CLI): key
// files, the first root and targets, and each next targets metadata.

package firmware

import (
	"crypto/ed25519"
	"crypto/rand"
	"crypto/x509"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/sigstore/sigstore/pkg/signature"
	"github.com/theupdateframework/go-tuf/v2/metadata"

	"github.com/iotransit/iotransit/client"
	"github.com/iotransit/iotransit/internal/gwproto"
	"github.com/iotransit/iotransit/internal/securefile"
)

// LoadOrCreateKey returns the Ed25519 key in the private PEM file (PKCS#8,
// 0600) at path, creating it when it does not exist.
func LoadOrCreateKey(path string) (ed25519.PrivateKey, error) {
	b, err := securefile.LoadOrCreate(path, func() ([]byte, error) {
		_, k, err := ed25519.GenerateKey(rand.Reader)
		if err != nil {
			return nil, err
		}
		der, err := x509.MarshalPKCS8PrivateKey(k)
		if err != nil {
			return nil, err
		}
		return pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}), nil
	})
	if err != nil {
		return nil, err
	}
	return ParseKey(b)
}

// ParseKey parses an Ed25519 private key in PEM (PKCS#8).
func ParseKey(pemBytes []byte) (ed25519.PrivateKey, error) {
	blk, _ := pem.Decode(pemBytes)
	if blk == nil || blk.Type != "PRIVATE KEY" {
		return nil, errors.New("not a PEM PRIVATE KEY")
	}
	k, err := x509.ParsePKCS8PrivateKey(blk.Bytes)
	if err != nil {
		return nil, err
	}
	ek, ok := k.(ed25519.PrivateKey)
	if !ok {
		return nil, errors.New("not an Ed25519 key")
	}
	return ek, nil
}

// tufKey converts a public key listed by the server.
func tufKey(k client.TUFKey) (*metadata.Key, error) {
	pub, err := hex.DecodeString(k.KeyVal.Public)
	if err != nil || len(pub) != ed25519.PublicKeySize || k.KeyType != metadata.KeyTypeEd25519 {
		return nil, fmt.Errorf("online key %s is not an Ed25519 key", k.KeyID)
	}
	key, err := metadata.KeyFromPublicKey(ed25519.PublicKey(pub))
	if err != nil {
		return nil, err
	}
	if id, _ := key.ID(); id != k.KeyID {
		return nil, fmt.Errorf("online key %s: its id does not match its value", k.KeyID)
	}
	return key, nil
}

// signWith signs m with an offline key.
func signWith[T metadata.Roles](m *metadata.Metadata[T], k ed25519.PrivateKey) ([]byte, error) {
	s, err := signature.LoadED25519Signer(k)
	if err != nil {
		return nil, err
	}
	if _, err := m.Sign(s); err != nil {
		return nil, err
	}
	return m.ToBytes(false)
}

// NewRepository makes the first root (version 1, consistent snapshots,
// rootKey for the root role, targetsKey for targets, the server's online
// keys for snapshot and timestamp, each threshold 1) signed by rootKey,
// and the first, empty, targets signed by targetsKey.
func NewRepository(rootKey, targetsKey ed25519.PrivateKey, online client.FirmwareOnlineKeys, rootExpires, targetsExpires time.Time) (root, targets []byte, err error) {
	r := metadata.Root(rootExpires.UTC().Truncate(time.Second))
	r.Signed.ConsistentSnapshot = true
	add := func(pub any, role string) error {
		k, err := metadata.KeyFromPublicKey(pub)
		if err != nil {
			return err
		}
		return r.Signed.AddKey(k, role)
	}
	if err := add(rootKey.Public(), metadata.ROOT); err != nil {
		return nil, nil, err
	}
	if err := add(targetsKey.Public(), metadata.TARGETS); err != nil {
		return nil, nil, err
	}
	for role, k := range map[string]client.TUFKey{metadata.SNAPSHOT: online.Snapshot, metadata.TIMESTAMP: online.Timestamp} {
		key, err := tufKey(k)
		if err != nil {
			return nil, nil, err
		}
		if err := r.Signed.AddKey(key, role); err != nil {
			return nil, nil, err
		}
	}
	if root, err = signWith(r, rootKey); err != nil {
		return nil, nil, err
	}
	t := metadata.Targets(targetsExpires.UTC().Truncate(time.Second))
	if targets, err = signWith(t, targetsKey); err != nil {
		return nil, nil, err
	}
	return root, targets, nil
}

// AddTarget returns the targets metadata that follows current: image added
// as the target of model and version (SHA-256 and length, custom
// {"version","model"}), the version one more, expiring at expires, signed
// by key alone.
func AddTarget(current, image []byte, model, version string, expires time.Time, key ed25519.PrivateKey) ([]byte, error) {
	if !gwproto.ValidModel(model) {
		return nil, errors.New("the model must be 1 to 32 letters, digits or underscores")
	}
	if !gwproto.ValidVersion(version) {
		return nil, errors.New("the version must be numbers separated by dots, such as 1.2.3")
	}
	name := gwproto.FirmwareTarget(model, version)
	tf, err := metadata.TargetFile().FromBytes(name, image, "sha256")
	if err != nil {
		return nil, err
	}
	custom, _ := json.Marshal(gwproto.FirmwareCustom{Version: version, Model: model})
	raw := json.RawMessage(custom)
	tf.Custom = &raw
	return nextTargets(current, key.Public().(ed25519.PublicKey), expires, key, func(t *metadata.TargetsType) { t.Targets[name] = tf })
}

// Resign returns the targets metadata that follows current with the same
// targets: the version one more, expiring at expires, signed by key alone
// (before current expires).
func Resign(current []byte, expires time.Time, key ed25519.PrivateKey) ([]byte, error) {
	return nextTargets(current, key.Public().(ed25519.PublicKey), expires, key, func(*metadata.TargetsType) {})
}

// Rekey is Resign with a new targets key after a rotation: current must be
// signed by the previous targets key, signedBy.
func Rekey(current []byte, signedBy ed25519.PublicKey, expires time.Time, key ed25519.PrivateKey) ([]byte, error) {
	return nextTargets(current, signedBy, expires, key, func(*metadata.TargetsType) {})
}

// nextTargets changes and signs current, which must carry a good signature
// of signedBy: the current targets come from the server, and a server that
// was broken into must not get targets of its own signed with the offline
// key.
func nextTargets(current []byte, signedBy ed25519.PublicKey, expires time.Time, key ed25519.PrivateKey, change func(*metadata.TargetsType)) ([]byte, error) {
	t, err := metadata.Targets().FromBytes(current)
	if err != nil {
		return nil, fmt.Errorf("current targets: %w", err)
	}
	if err := signedByKey(t, metadata.TARGETS, signedBy); err != nil {
		return nil, err
	}
	change(&t.Signed)
	t.Signed.Version++
	t.Signed.Expires = expires.UTC().Truncate(time.Second)
	t.ClearSignatures()
	return signWith(t, key)
}

// signedByKey checks that t, metadata of role, carries a good signature of
// pub.
func signedByKey[T metadata.Roles](t *metadata.Metadata[T], role string, pub ed25519.PublicKey) error {
	k, err := metadata.KeyFromPublicKey(pub)
	if err != nil {
		return err
	}
	id, err := k.ID()
	if err != nil {
		return err
	}
	r := metadata.Root()
	if err := r.Signed.AddKey(k, role); err != nil {
		return err
	}
	r.Signed.Roles[role].Threshold = 1
	if err := r.VerifyDelegate(role, t); err != nil {
		return fmt.Errorf("the current %s metadata is not signed by the %s key %s: %w", role, role, id, err)
	}
	return nil
}

// NextRoot returns the root that follows current: the root role's key
// newRootKey, the targets role's newTargetsKey (each threshold 1), the
// online keys kept, the version one more, expiring at expires, signed by
// oldRootKey and newRootKey (once when they are the same key).
func NextRoot(current []byte, oldRootKey, newRootKey ed25519.PrivateKey, newTargetsKey ed25519.PublicKey, expires time.Time) ([]byte, error) {
	r, err := metadata.Root().FromBytes(current)
	if err != nil {
		return nil, fmt.Errorf("current root: %w", err)
	}
	// The current root comes from the server: follow only one signed by
	// the current root key (its targets key is trusted from it).
	if err := signedByKey(r, metadata.ROOT, oldRootKey.Public().(ed25519.PublicKey)); err != nil {
		return nil, err
	}
	for role, pub := range map[string]any{metadata.ROOT: newRootKey.Public(), metadata.TARGETS: newTargetsKey} {
		for _, id := range slices.Clone(r.Signed.Roles[role].KeyIDs) {
			if err := r.Signed.RevokeKey(id, role); err != nil {
				return nil, err
			}
		}
		k, err := metadata.KeyFromPublicKey(pub)
		if err != nil {
			return nil, err
		}
		if err := r.Signed.AddKey(k, role); err != nil {
			return nil, err
		}
		r.Signed.Roles[role].Threshold = 1
	}
	r.Signed.Version++
	r.Signed.Expires = expires.UTC().Truncate(time.Second)
	r.ClearSignatures()
	if !oldRootKey.Equal(newRootKey) {
		s, err := signature.LoadED25519Signer(oldRootKey)
		if err != nil {
			return nil, err
		}
		if _, err := r.Sign(s); err != nil {
			return nil, err
		}
	}
	return signWith(r, newRootKey)
}

// TargetsKey returns the targets role's key of a root that lists exactly
// one Ed25519 key for it (as NewRepository and NextRoot make).
func TargetsKey(root []byte) (ed25519.PublicKey, error) {
	r, err := metadata.Root().FromBytes(root)
	if err != nil {
		return nil, err
	}
	role := r.Signed.Roles[metadata.TARGETS]
	if role == nil || len(role.KeyIDs) != 1 {
		return nil, errors.New("the root's targets role does not have exactly one key")
	}
	pub, err := r.Signed.Keys[role.KeyIDs[0]].ToPublicKey()
	if err != nil {
		return nil, err
	}
	k, ok := pub.(ed25519.PublicKey)
	if !ok {
		return nil, errors.New("the targets key is not Ed25519")
	}
	return k, nil
}

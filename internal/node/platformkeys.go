// The rotatable platform signing keys (access tokens, audit checkpoints):
// versions in the system bucket, followed by every node.

package node

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"errors"
	"fmt"
	"strconv"
	"sync"
	"time"

	"github.com/iotransit/iotransit/client"
	"github.com/iotransit/iotransit/internal/audit"
	"github.com/iotransit/iotransit/internal/credential"
	"github.com/iotransit/iotransit/internal/kms"
)

// platformKeyPoll is how often a node looks for a platform key version made
// on another node (a variable for tests).
var platformKeyPoll = 250 * time.Millisecond

// keyVersion is one version of a platform signing key.
type keyVersion struct {
	version uint32
	id      string // audit.KeyID of the public key: a token's kid, a checkpoint's keyId
	key     ed25519.PrivateKey
	created time.Time // zero for version 1 (made before keys had versions)
	retired time.Time // when the next version was made (zero: current)
}

// platformKey is a rotatable platform Ed25519 key. Version 1 is the record
// name (the sealed seed alone, as it was before keys rotated); version v > 1
// is the record "name.v", its creation time beside its sealed seed. A
// version is made by a Create of the record after the newest, so that two
// nodes rotating at once make one version; every node reads the versions
// it does not know yet every platformKeyPoll, and applies them through use.
type platformKey struct {
	sec  secrets
	name string
	use  func([]keyVersion) // called with every version, oldest first, when they change

	mu       sync.Mutex
	versions []keyVersion

	// applyMu makes each apply hand over its snapshot before the next
	// takes one: an older snapshot handed over last would stay in use.
	applyMu sync.Mutex
	// refreshMu and refreshed bound the reads asked for by tokens that name
	// an unknown key (refresh).
	refreshMu sync.Mutex
	refreshed time.Time
}

// platformKeyRefreshEvery bounds how often tokens naming an unknown key
// make a node read the key versions (refresh): such tokens need no
// signature to ask.
const platformKeyRefreshEvery = 100 * time.Millisecond

// refresh reads and applies the versions made since the last read, at
// most once per platformKeyRefreshEvery (the other callers meanwhile wait
// for the read in progress, or return at once).
func (pk *platformKey) refresh(ctx context.Context) {
	pk.refreshMu.Lock()
	defer pk.refreshMu.Unlock()
	if time.Since(pk.refreshed) < platformKeyRefreshEvery {
		return
	}
	pk.refreshed = time.Now()
	ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	if found, err := pk.loadNew(ctx); err == nil && found {
		pk.apply()
	}
}

func (n *Node) platformKey(ctx context.Context, sec secrets, name string, use func([]keyVersion)) (*platformKey, error) {
	pk := &platformKey{sec: sec, name: name, use: use}
	first, err := sec.signingKey(ctx, name)
	if err != nil {
		return nil, err
	}
	pk.versions = []keyVersion{{version: 1, id: audit.KeyID(first.Public().(ed25519.PublicKey)), key: first}}
	if err := pk.load(ctx); err != nil {
		return nil, err
	}
	pk.apply()
	go pk.follow(n.ctx, n)
	return pk, nil
}

// record is how version v (> 1) is stored.
func (pk *platformKey) record(v uint32) kms.Record {
	name := pk.name + "." + strconv.FormatUint(uint64(v), 10)
	return kms.Record{
		Store: pk.sec.store, Name: name, Owner: systemKeys, AAD: []byte("node/system-key/" + name),
		Encode: func(created, sealed []byte) ([]byte, error) {
			return append(append(created, ' '), sealed...), nil
		},
		Decode: func(stored []byte) ([]byte, []byte, error) {
			for i, b := range stored {
				if b == ' ' {
					return stored[:i], stored[i+1:], nil
				}
			}
			return nil, nil, errors.New("no creation time")
		},
	}
}

// open reads version v, reporting kms.ErrKeyNotFound when it does not exist.
func (pk *platformKey) open(ctx context.Context, v uint32) (keyVersion, error) {
	rec := pk.record(v)
	stored, err := rec.Store.Get(ctx, rec.Name)
	if err != nil {
		return keyVersion{}, err
	}
	created, sealed, err := rec.Decode(stored)
	if err != nil {
		return keyVersion{}, fmt.Errorf("decode %s: %w", rec.Name, err)
	}
	seed, err := pk.sec.keys.Open(ctx, systemKeys, sealed, rec.AAD)
	if err != nil {
		return keyVersion{}, fmt.Errorf("open %s: %w", rec.Name, err)
	}
	return versionOf(v, created, seed)
}

func versionOf(v uint32, created, seed []byte) (keyVersion, error) {
	if len(seed) != ed25519.SeedSize {
		return keyVersion{}, fmt.Errorf("platform key version %d has a bad size", v)
	}
	at, err := time.Parse(time.RFC3339Nano, string(created))
	if err != nil {
		return keyVersion{}, fmt.Errorf("platform key version %d: creation time: %w", v, err)
	}
	key := ed25519.NewKeyFromSeed(seed)
	return keyVersion{version: v, id: audit.KeyID(key.Public().(ed25519.PublicKey)), key: key, created: at}, nil
}

// load reads the versions after the newest known, and reports whether it
// found any.
func (pk *platformKey) load(ctx context.Context) error {
	_, err := pk.loadNew(ctx)
	return err
}

func (pk *platformKey) loadNew(ctx context.Context) (bool, error) {
	pk.mu.Lock()
	defer pk.mu.Unlock()
	found := false
	for {
		next := pk.versions[len(pk.versions)-1].version + 1
		kv, err := pk.open(ctx, next)
		if errors.Is(err, kms.ErrKeyNotFound) {
			return found, nil
		}
		if err != nil {
			return found, err
		}
		pk.versions[len(pk.versions)-1].retired = kv.created
		pk.versions = append(pk.versions, kv)
		found = true
	}
}

// apply hands the versions to use.
func (pk *platformKey) apply() {
	pk.applyMu.Lock()
	defer pk.applyMu.Unlock()
	pk.mu.Lock()
	vs := append([]keyVersion(nil), pk.versions...)
	pk.mu.Unlock()
	pk.use(vs)
}

// follow applies versions made on other nodes until ctx ends.
func (pk *platformKey) follow(ctx context.Context, n *Node) {
	t := time.NewTicker(platformKeyPoll)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		found, err := pk.loadNew(ctx)
		if err != nil && ctx.Err() == nil {
			n.log.Error("read platform key versions", "key", pk.name, "error", err)
		}
		if found {
			pk.apply()
		}
	}
}

// rotate makes the version after the newest in the store (or takes the one
// another node made at the same moment) and applies it here at once.
func (pk *platformKey) rotate(ctx context.Context) error {
	if err := pk.load(ctx); err != nil {
		return err
	}
	pk.mu.Lock()
	next := pk.versions[len(pk.versions)-1].version + 1
	pk.mu.Unlock()
	_, _, err := pk.sec.keys.GetOrCreate(ctx, pk.record(next), func() ([]byte, []byte, error) {
		seed := make([]byte, ed25519.SeedSize)
		_, err := rand.Read(seed)
		return []byte(time.Now().UTC().Format(time.RFC3339Nano)), seed, err
	})
	if err != nil {
		return err
	}
	if err := pk.load(ctx); err != nil {
		return err
	}
	pk.apply()
	return nil
}

// public lists the versions' public parts, oldest first.
func (pk *platformKey) public() []client.PlatformKey {
	pk.mu.Lock()
	defer pk.mu.Unlock()
	out := make([]client.PlatformKey, 0, len(pk.versions))
	for _, v := range pk.versions {
		k := client.PlatformKey{ID: v.id, Version: v.version, Algorithm: "Ed25519",
			PublicKey: v.key.Public().(ed25519.PublicKey), State: client.KeyCurrent}
		if !v.created.IsZero() {
			k.CreatedAt = &v.created
		}
		if !v.retired.IsZero() {
			k.RetiredAt, k.State = &v.retired, client.KeyRetired
		}
		out = append(out, k)
	}
	return out
}

// platformKeys are the node's rotatable platform signing keys, served by
// the API (api.PlatformKeys).
type platformKeys struct {
	jwt, audit *platformKey
}

// RotateJWTKey makes a new access-token signing key.
func (p *platformKeys) RotateJWTKey(ctx context.Context) (client.PlatformKeys, error) {
	if err := p.jwt.rotate(ctx); err != nil {
		return client.PlatformKeys{}, err
	}
	return p.PlatformKeys(ctx)
}

// RotateAuditKey makes a new audit checkpoint signing key.
func (p *platformKeys) RotateAuditKey(ctx context.Context) (client.PlatformKeys, error) {
	if err := p.audit.rotate(ctx); err != nil {
		return client.PlatformKeys{}, err
	}
	return p.PlatformKeys(ctx)
}

// PlatformKeys lists the public parts of the keys.
func (p *platformKeys) PlatformKeys(context.Context) (client.PlatformKeys, error) {
	return client.PlatformKeys{JWT: p.jwt.public(), Audit: p.audit.public()}, nil
}

// startPlatformKeys follows the versions of the token and audit signing
// keys, handing them to tokens and to the audit log as they change.
func (n *Node) startPlatformKeys(ctx context.Context, sec secrets, tokens *credential.Issuer) (*platformKeys, error) {
	jwtKey, err := n.platformKey(ctx, sec, "jwt-ed25519", func(vs []keyVersion) {
		known := make([]credential.VerifyKey, len(vs))
		for i, v := range vs {
			known[i] = credential.VerifyKey{ID: v.id, Public: v.key.Public().(ed25519.PublicKey), RetiredAt: v.retired, NoKID: v.version == 1}
		}
		cur := vs[len(vs)-1]
		tokens.SetKeys(cur.id, cur.key, known...)
	})
	if err != nil {
		return nil, err
	}
	tokens.OnUnknownKey(func() { jwtKey.refresh(n.ctx) })
	auditKey, err := n.platformKey(ctx, sec, "audit-ed25519", func(vs []keyVersion) {
		retired := make([]ed25519.PublicKey, 0, len(vs)-1)
		for _, v := range vs[:len(vs)-1] {
			retired = append(retired, v.key.Public().(ed25519.PublicKey))
		}
		if err := n.audit.UseKeys(vs[len(vs)-1].key, retired...); err != nil {
			n.log.Error("use audit key", "error", err) // cannot happen: the keys are Ed25519
		}
	})
	if err != nil {
		return nil, err
	}
	// A checkpoint of an audit key rotated on another node a moment ago:
	// read the keys before calling it unknown (at most every 100 ms).
	n.audit.OnUnknownKey(func() { auditKey.refresh(n.ctx) })
	return &platformKeys{jwt: jwtKey, audit: auditKey}, nil
}

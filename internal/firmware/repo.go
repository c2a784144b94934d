package firmware

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"regexp"
	"slices"
	"strconv"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/theupdateframework/go-tuf/v2/metadata"

	"github.com/iotransit/iotransit/client"
	"github.com/iotransit/iotransit/internal/backbone"
	"github.com/iotransit/iotransit/internal/backbone/kverr"
	"github.com/iotransit/iotransit/internal/backbone/names"
	"github.com/iotransit/iotransit/internal/fault"
	"github.com/iotransit/iotransit/internal/gwproto"
	"github.com/iotransit/iotransit/internal/kms"
)

// Errors a client can see.
var (
	ErrNotInitialised = fault.Define("firmware.repository_not_found", fault.NotFound, "the tenant has no firmware repository; run iotransit firmware init")
	ErrInitialised    = fault.Define("firmware.repository_exists", fault.Conflict, "the tenant's firmware repository is already initialised")
	ErrMetadata       = fault.Define("firmware.metadata_invalid", fault.InvalidArgument, "the TUF metadata is not valid")
	ErrSignature      = fault.Define("firmware.signature_invalid", fault.PermissionDenied, "the TUF metadata is not signed by a threshold of the role's keys in the trusted root")
	ErrVersion        = fault.Define("firmware.version_not_newer", fault.Conflict, "the TUF metadata's version must be greater than the current one")
	ErrImage          = fault.Define("firmware.image_mismatch", fault.InvalidArgument, "a target does not match its uploaded image")
	ErrImageTooLarge  = fault.Define("firmware.image_too_large", fault.TooLarge, "the firmware image is larger than the server accepts")
	ErrNotFound       = fault.Define("firmware.not_found", fault.NotFound, "no such firmware metadata or image")
	ErrBusy           = fault.Define("firmware.concurrent_change", fault.Conflict, "the repository changed meanwhile; fetch the current targets and try again")
)

// Config configures the repositories.
type Config struct {
	// TimestampTTL is the lifetime of a timestamp; the server signs a new
	// one when less than half of it is left, so a gateway that sees none
	// newer for that long knows it is being frozen (default 24h).
	TimestampTTL time.Duration
	// SnapshotTTL is the lifetime of a snapshot; it is signed again with
	// the timestamp when less than a quarter is left (default 7 days).
	SnapshotTTL time.Duration
	// MaxImage is the largest firmware image in bytes (default 32 MiB).
	MaxImage int64
	// Now is the clock (default time.Now); tests drive it.
	Now func() time.Time
}

// DefaultConfig returns the defaults.
func DefaultConfig() Config {
	return Config{TimestampTTL: 24 * time.Hour, SnapshotTTL: 7 * 24 * time.Hour, MaxImage: client.MaxAnswer, Now: time.Now}
}

func (c *Config) defaults() {
	d := DefaultConfig()
	if c.TimestampTTL <= 0 {
		c.TimestampTTL = d.TimestampTTL
	}
	if c.SnapshotTTL <= 0 {
		c.SnapshotTTL = d.SnapshotTTL
	}
	if c.MaxImage <= 0 {
		c.MaxImage = d.MaxImage
	}
	if c.Now == nil {
		c.Now = d.Now
	}
}

// Repos are the tenants' firmware repositories.
type Repos struct {
	cfg  Config
	bb   *backbone.Backbone
	keys *kms.Keyring
}

// New returns the repositories over bb, with online keys sealed by keys.
func New(cfg Config, bb *backbone.Backbone, keys *kms.Keyring) *Repos {
	cfg.defaults()
	return &Repos{cfg: cfg, bb: bb, keys: keys}
}

func (r *Repos) now() time.Time { return r.cfg.Now().UTC() }

func (r *Repos) bucket(ctx context.Context, tenant string) (jetstream.KeyValue, error) {
	return r.bb.KV(ctx, names.FirmwareBucket(tenant), 1)
}

func (r *Repos) images(ctx context.Context, tenant string) (jetstream.ObjectStore, error) {
	return r.bb.JS.CreateOrUpdateObjectStore(ctx, jetstream.ObjectStoreConfig{
		Bucket: names.FirmwareImages(tenant), Replicas: r.bb.Replicas(), Storage: jetstream.FileStorage,
	})
}

// onlineKey returns the tenant's online key of role (snapshot or
// timestamp), making it on first use: an Ed25519 seed sealed by kms under
// the tenant's data key, its public key beside it.
func (r *Repos) onlineKey(ctx context.Context, tenant, role string) (ed25519.PrivateKey, error) {
	kv, err := r.bb.KV(ctx, names.FirmwareKeysBucket, 1)
	if err != nil {
		return nil, err
	}
	rec := kms.Record{Store: backbone.KeyStore{KV: kv}, Name: onlineKeyName(tenant, role), Owner: tenant,
		AAD: onlineKeyAAD(tenant, role)}
	_, seed, err := r.keys.GetOrCreate(ctx, rec, func() ([]byte, []byte, error) {
		seed := make([]byte, ed25519.SeedSize)
		_, err := rand.Read(seed)
		return nil, seed, err
	})
	if err != nil {
		return nil, err
	}
	if len(seed) != ed25519.SeedSize {
		return nil, fmt.Errorf("firmware: online %s key of %s has a bad size", role, tenant)
	}
	return ed25519.NewKeyFromSeed(seed), nil
}

// OnlineKeys returns the public online keys of the tenant's repository,
// made on first use: the publisher names them in the root it signs.
func (r *Repos) OnlineKeys(ctx context.Context, tenant string) (client.FirmwareOnlineKeys, error) {
	var out client.FirmwareOnlineKeys
	for role, dst := range map[string]*client.TUFKey{metadata.SNAPSHOT: &out.Snapshot, metadata.TIMESTAMP: &out.Timestamp} {
		k, err := r.onlineKey(ctx, tenant, role)
		if err != nil {
			return out, err
		}
		pub, err := metadata.KeyFromPublicKey(k.Public())
		if err != nil {
			return out, err
		}
		id, err := pub.ID()
		if err != nil {
			return out, err
		}
		*dst = client.TUFKey{KeyID: id, KeyType: pub.Type, Scheme: pub.Scheme, KeyVal: client.TUFKeyValue{Public: pub.Value.PublicKey}}
	}
	return out, nil
}

// state is a repository's current metadata, as stored.
type state struct {
	root      *metadata.Metadata[metadata.RootType]
	targets   *metadata.Metadata[metadata.TargetsType]
	snapshot  *metadata.Metadata[metadata.SnapshotType]
	timestamp *metadata.Metadata[metadata.TimestampType]
	// tsRev is the revision of timestamp.json, for compare-and-set.
	tsRev uint64
}

func get(ctx context.Context, kv jetstream.KeyValue, key string) ([]byte, uint64, error) {
	e, err := kv.Get(ctx, key)
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		return nil, 0, ErrNotFound.New()
	}
	if err != nil {
		return nil, 0, err
	}
	return e.Value(), e.Revision(), nil
}

// load reads the current state through the timestamp (the one pointer
// that moves): its snapshot, and the snapshot's targets.
func (r *Repos) load(ctx context.Context, kv jetstream.KeyValue) (*state, error) {
	var s state
	b, _, err := get(ctx, kv, "root.json")
	if ErrNotFound.Is(err) {
		return nil, ErrNotInitialised.New()
	}
	if err != nil {
		return nil, err
	}
	if s.root, err = metadata.Root().FromBytes(b); err != nil {
		return nil, fmt.Errorf("firmware: stored root: %w", err)
	}
	if b, s.tsRev, err = get(ctx, kv, "timestamp.json"); err != nil {
		return nil, err
	}
	if s.timestamp, err = metadata.Timestamp().FromBytes(b); err != nil {
		return nil, fmt.Errorf("firmware: stored timestamp: %w", err)
	}
	sv := s.timestamp.Signed.Meta[metadata.SNAPSHOT+".json"].Version
	if b, _, err = get(ctx, kv, versioned(sv, metadata.SNAPSHOT)); err != nil {
		return nil, err
	}
	if s.snapshot, err = metadata.Snapshot().FromBytes(b); err != nil {
		return nil, fmt.Errorf("firmware: stored snapshot: %w", err)
	}
	tv := s.snapshot.Signed.Meta[metadata.TARGETS+".json"].Version
	if b, _, err = get(ctx, kv, versioned(tv, metadata.TARGETS)); err != nil {
		return nil, err
	}
	if s.targets, err = metadata.Targets().FromBytes(b); err != nil {
		return nil, fmt.Errorf("firmware: stored targets: %w", err)
	}
	return &s, nil
}

func versioned(v int64, role string) string { return strconv.FormatInt(v, 10) + "." + role + ".json" }

// metaFile describes stored metadata bytes in a snapshot or timestamp.
func metaFile(version int64, b []byte) *metadata.MetaFiles {
	m := metadata.MetaFile(version)
	sum := sha256.Sum256(b)
	m.Length = int64(len(b))
	m.Hashes = metadata.Hashes{"sha256": sum[:]}
	return m
}

// sign signs m with the tenant's online key of role.
func sign[T metadata.Roles](ctx context.Context, r *Repos, tenant, role string, m *metadata.Metadata[T]) ([]byte, error) {
	k, err := r.onlineKey(ctx, tenant, role)
	if err != nil {
		return nil, err
	}
	return signWith(m, k)
}

// Init creates the tenant's repository from the publisher's first root
// (version 1, signed by a threshold of its own root keys, consistent
// snapshots, the tenant's online keys as its only snapshot and timestamp
// keys, threshold 1) and targets (version 1, signed by the root's targets
// keys), then signs the first snapshot and timestamp.
func (r *Repos) Init(ctx context.Context, tenant string, rootJSON, targetsJSON []byte) (client.FirmwareRepository, error) {
	var none client.FirmwareRepository
	kv, err := r.bucket(ctx, tenant)
	if err != nil {
		return none, err
	}
	if _, _, err := get(ctx, kv, "root.json"); err == nil {
		return none, ErrInitialised.New()
	} else if !ErrNotFound.Is(err) {
		return none, err
	}
	root, err := parse(metadata.Root(), rootJSON, "root")
	if err != nil {
		return none, err
	}
	if root.Signed.Version != 1 {
		return none, ErrMetadata.WithDetail("the first root must be version 1")
	}
	if err := root.VerifyDelegate(metadata.ROOT, root); err != nil {
		return none, ErrSignature.WithDetail("root: %s", short(err))
	}
	if err := r.checkRoot(ctx, tenant, root); err != nil {
		return none, err
	}
	targets, err := r.checkTargets(ctx, tenant, root, nil, targetsJSON)
	if err != nil {
		return none, err
	}
	// Versioned keys are created: a second Init racing this one fails here.
	if _, err := kv.Create(ctx, "1.root.json", rootJSON); err != nil {
		return none, conflict(err)
	}
	if _, err := kv.Put(ctx, versioned(targets.Signed.Version, metadata.TARGETS), targetsJSON); err != nil {
		return none, err
	}
	if err := r.advance(ctx, tenant, kv, nil, targets.Signed.Version, targetsJSON); err != nil {
		return none, err
	}
	if _, err := kv.Put(ctx, "root.json", rootJSON); err != nil {
		return none, err
	}
	return r.Repository(ctx, tenant)
}

// checkRoot checks what the server needs of a root: consistent snapshots,
// not expired, and the tenant's online keys (alone, threshold 1) for the
// snapshot and timestamp roles, which no offline role shares.
func (r *Repos) checkRoot(ctx context.Context, tenant string, root *metadata.Metadata[metadata.RootType]) error {
	if !root.Signed.ConsistentSnapshot {
		return ErrMetadata.WithDetail("root: consistent_snapshot must be true")
	}
	if root.Signed.IsExpired(r.now()) {
		return ErrMetadata.WithDetail("root: expired")
	}
	online, err := r.OnlineKeys(ctx, tenant)
	if err != nil {
		return err
	}
	want := map[string]string{metadata.SNAPSHOT: online.Snapshot.KeyID, metadata.TIMESTAMP: online.Timestamp.KeyID}
	for role, id := range want {
		rl := root.Signed.Roles[role]
		if rl == nil || rl.Threshold != 1 || !slices.Equal(rl.KeyIDs, []string{id}) {
			return ErrMetadata.WithDetail("root: the %s role must list the server's online %s key %s alone, threshold 1 (see firmware online-keys)", role, role, id)
		}
	}
	for _, role := range []string{metadata.ROOT, metadata.TARGETS} {
		rl := root.Signed.Roles[role]
		if rl == nil || rl.Threshold < 1 || len(rl.KeyIDs) < rl.Threshold {
			return ErrMetadata.WithDetail("root: the %s role needs keys and a threshold", role)
		}
		for _, id := range rl.KeyIDs {
			if id == online.Snapshot.KeyID || id == online.Timestamp.KeyID {
				return ErrMetadata.WithDetail("root: the %s role must not use an online key", role)
			}
		}
	}
	return nil
}

// checkTargets parses targets metadata, checks it against the root (the
// targets role's threshold), that it is newer than cur (when not nil),
// not expired, without delegations, and that each target is a firmware
// image: path model-version, custom {"version","model"} matching it, and
// an uploaded image of that length and SHA-256.
func (r *Repos) checkTargets(ctx context.Context, tenant string, root *metadata.Metadata[metadata.RootType], cur *metadata.Metadata[metadata.TargetsType], b []byte) (*metadata.Metadata[metadata.TargetsType], error) {
	t, err := parse(metadata.Targets(), b, "targets")
	if err != nil {
		return nil, err
	}
	if err := root.VerifyDelegate(metadata.TARGETS, t); err != nil {
		return nil, ErrSignature.WithDetail("targets: %s", short(err))
	}
	switch {
	case cur == nil && t.Signed.Version != 1:
		return nil, ErrVersion.WithDetail("the first targets must be version 1")
	case cur != nil && t.Signed.Version <= cur.Signed.Version:
		return nil, ErrVersion.WithDetail("targets version %d is not greater than the current %d", t.Signed.Version, cur.Signed.Version)
	}
	if t.Signed.IsExpired(r.now()) {
		return nil, ErrMetadata.WithDetail("targets: expired")
	}
	if t.Signed.Delegations != nil {
		return nil, ErrMetadata.WithDetail("targets: delegations are not supported")
	}
	var obs jetstream.ObjectStore
	for path, tf := range t.Signed.Targets {
		c, err := TargetCustom(tf)
		if err != nil {
			return nil, ErrMetadata.WithDetail("target %q: %s", trunc(path), err)
		}
		if path != gwproto.FirmwareTarget(c.Model, c.Version) {
			return nil, ErrMetadata.WithDetail("target %q must be named %q", trunc(path), gwproto.FirmwareTarget(c.Model, c.Version))
		}
		if cur != nil {
			if old, ok := cur.Signed.Targets[path]; ok {
				if !old.Equal(*tf) {
					return nil, ErrMetadata.WithDetail("target %q exists with other content: publish a new version", path)
				}
				continue // checked when it was published
			}
		}
		sum, ok := tf.Hashes["sha256"]
		if !ok || len(sum) != sha256.Size {
			return nil, ErrMetadata.WithDetail("target %q needs a sha256 hash", path)
		}
		if obs == nil {
			if obs, err = r.images(ctx, tenant); err != nil {
				return nil, err
			}
		}
		info, err := obs.GetInfo(ctx, hex.EncodeToString(sum))
		if errors.Is(err, jetstream.ErrObjectNotFound) {
			return nil, ErrImage.WithDetail("target %q: no uploaded image has its sha256", path)
		}
		if err != nil {
			return nil, err
		}
		if int64(info.Size) != tf.Length {
			return nil, ErrImage.WithDetail("target %q: length %d, the image has %d bytes", path, tf.Length, info.Size)
		}
	}
	return t, nil
}

// TargetCustom returns a firmware target's custom metadata, checked.
func TargetCustom(tf *metadata.TargetFiles) (gwproto.FirmwareCustom, error) {
	if tf.Custom == nil {
		return gwproto.ParseFirmwareCustom(nil)
	}
	return gwproto.ParseFirmwareCustom(*tf.Custom)
}

// advance signs and stores the snapshot that names targets version tv and
// the timestamp that names it, after cur (nil for the first).
func (r *Repos) advance(ctx context.Context, tenant string, kv jetstream.KeyValue, cur *state, tv int64, targetsJSON []byte) error {
	now := r.now()
	snap := metadata.Snapshot(now.Add(r.cfg.SnapshotTTL).Truncate(time.Second))
	snap.Signed.Version = 1
	if cur != nil {
		snap.Signed.Version = cur.snapshot.Signed.Version + 1
	}
	snap.Signed.Meta[metadata.TARGETS+".json"] = metaFile(tv, targetsJSON)
	sb, err := sign(ctx, r, tenant, metadata.SNAPSHOT, snap)
	if err != nil {
		return err
	}
	if _, err := kv.Create(ctx, versioned(snap.Signed.Version, metadata.SNAPSHOT), sb); err != nil {
		return conflict(err)
	}
	return r.stamp(ctx, tenant, kv, cur, snap.Signed.Version, sb)
}

// stamp signs and stores the timestamp naming snapshot version sv, after
// cur's (compare-and-set: the timestamp moves one way only).
func (r *Repos) stamp(ctx context.Context, tenant string, kv jetstream.KeyValue, cur *state, sv int64, snapshotJSON []byte) error {
	ts := metadata.Timestamp(r.now().Add(r.cfg.TimestampTTL).Truncate(time.Second))
	ts.Signed.Version = 1
	if cur != nil {
		ts.Signed.Version = cur.timestamp.Signed.Version + 1
	}
	ts.Signed.Meta[metadata.SNAPSHOT+".json"] = metaFile(sv, snapshotJSON)
	tb, err := sign(ctx, r, tenant, metadata.TIMESTAMP, ts)
	if err != nil {
		return err
	}
	if cur == nil {
		_, err = kv.Create(ctx, "timestamp.json", tb)
	} else {
		_, err = kv.Update(ctx, "timestamp.json", tb, cur.tsRev)
	}
	return conflict(err)
}

// Publish checks the publisher's next targets metadata (signed by the
// root's targets keys, a greater version, each target an uploaded image
// with its hash and length) and signs the snapshot and timestamp that
// name it.
func (r *Repos) Publish(ctx context.Context, tenant string, targetsJSON []byte) (client.FirmwareRepository, error) {
	var none client.FirmwareRepository
	kv, err := r.bucket(ctx, tenant)
	if err != nil {
		return none, err
	}
	cur, err := r.load(ctx, kv)
	if err != nil {
		return none, err
	}
	t, err := r.checkTargets(ctx, tenant, cur.root, cur.targets, targetsJSON)
	if err != nil {
		return none, err
	}
	if _, err := kv.Create(ctx, versioned(t.Signed.Version, metadata.TARGETS), targetsJSON); err != nil {
		return none, conflict(err)
	}
	if err := r.advance(ctx, tenant, kv, cur, t.Signed.Version, targetsJSON); err != nil {
		return none, err
	}
	return r.Repository(ctx, tenant)
}

// RotateRoot replaces the root with its next version: signed by a
// threshold of the current root's root keys and of its own (so the
// gateways can walk to it, TUF §5.3.4), with the same online keys. When
// the current targets do not verify under it (the targets key rotated),
// targetsJSON must be the next targets signed under the new root; it is
// published with it.
func (r *Repos) RotateRoot(ctx context.Context, tenant string, rootJSON, targetsJSON []byte) (client.FirmwareRepository, error) {
	var none client.FirmwareRepository
	kv, err := r.bucket(ctx, tenant)
	if err != nil {
		return none, err
	}
	cur, err := r.load(ctx, kv)
	if err != nil {
		return none, err
	}
	root, err := parse(metadata.Root(), rootJSON, "root")
	if err != nil {
		return none, err
	}
	if root.Signed.Version != cur.root.Signed.Version+1 {
		return none, ErrVersion.WithDetail("the next root must be version %d", cur.root.Signed.Version+1)
	}
	if err := cur.root.VerifyDelegate(metadata.ROOT, root); err != nil {
		return none, ErrSignature.WithDetail("root: not signed by the current root keys: %s", short(err))
	}
	if err := root.VerifyDelegate(metadata.ROOT, root); err != nil {
		return none, ErrSignature.WithDetail("root: not signed by its own root keys: %s", short(err))
	}
	if err := r.checkRoot(ctx, tenant, root); err != nil {
		return none, err
	}
	var targets *metadata.Metadata[metadata.TargetsType]
	switch {
	case len(targetsJSON) > 0:
		if targets, err = r.checkTargets(ctx, tenant, root, cur.targets, targetsJSON); err != nil {
			return none, err
		}
	case root.VerifyDelegate(metadata.TARGETS, cur.targets) != nil:
		return none, ErrSignature.WithDetail("the current targets do not verify under the new root: send the next targets, signed with the new targets key")
	}
	if _, err := kv.Create(ctx, versioned(root.Signed.Version, metadata.ROOT), rootJSON); err != nil {
		return none, conflict(err)
	}
	if targets != nil {
		if _, err := kv.Create(ctx, versioned(targets.Signed.Version, metadata.TARGETS), targetsJSON); err != nil {
			return none, conflict(err)
		}
		if err := r.advance(ctx, tenant, kv, cur, targets.Signed.Version, targetsJSON); err != nil {
			return none, err
		}
	}
	if _, err := kv.Put(ctx, "root.json", rootJSON); err != nil {
		return none, err
	}
	return r.Repository(ctx, tenant)
}

// refresh signs a new timestamp when less than half of the current one's
// life is left (and a new snapshot when less than a quarter of its own
// is), so the gateways see a fresh one while the repository is unchanged.
func (r *Repos) refresh(ctx context.Context, tenant string, kv jetstream.KeyValue) error {
	cur, err := r.load(ctx, kv)
	if err != nil {
		return err
	}
	now := r.now()
	snapStale := cur.snapshot.Signed.Expires.Sub(now) < r.cfg.SnapshotTTL/4
	if !snapStale && cur.timestamp.Signed.Expires.Sub(now) >= r.cfg.TimestampTTL/2 {
		return nil
	}
	if snapStale {
		tv := cur.snapshot.Signed.Meta[metadata.TARGETS+".json"].Version
		tb, _, err := get(ctx, kv, versioned(tv, metadata.TARGETS))
		if err != nil {
			return err
		}
		err = r.advance(ctx, tenant, kv, cur, tv, tb)
		if ErrBusy.Is(err) { // another node refreshed it
			return nil
		}
		return err
	}
	sv := cur.snapshot.Signed.Version
	sb, _, err := get(ctx, kv, versioned(sv, metadata.SNAPSHOT))
	if err != nil {
		return err
	}
	if err := r.stamp(ctx, tenant, kv, cur, sv, sb); err != nil && !ErrBusy.Is(err) {
		return err
	}
	return nil
}

// Repository returns the tenant's repository: its roles and targets.
func (r *Repos) Repository(ctx context.Context, tenant string) (client.FirmwareRepository, error) {
	out := client.FirmwareRepository{Tenant: tenant, Targets: []client.FirmwareTarget{}}
	kv, err := r.bucket(ctx, tenant)
	if err != nil {
		return out, err
	}
	s, err := r.load(ctx, kv)
	if err != nil {
		return out, err
	}
	out.Roles = client.FirmwareRoles{
		Root:      client.FirmwareRole{Version: s.root.Signed.Version, Expires: s.root.Signed.Expires},
		Targets:   client.FirmwareRole{Version: s.targets.Signed.Version, Expires: s.targets.Signed.Expires},
		Snapshot:  client.FirmwareRole{Version: s.snapshot.Signed.Version, Expires: s.snapshot.Signed.Expires},
		Timestamp: client.FirmwareRole{Version: s.timestamp.Signed.Version, Expires: s.timestamp.Signed.Expires},
	}
	for path, tf := range s.targets.Signed.Targets {
		c, _ := TargetCustom(tf)
		out.Targets = append(out.Targets, client.FirmwareTarget{Name: path, Model: c.Model, Version: c.Version,
			Length: tf.Length, SHA256: hex.EncodeToString(tf.Hashes["sha256"])})
	}
	slices.SortFunc(out.Targets, func(a, b client.FirmwareTarget) int {
		if a.Model != b.Model {
			if a.Model < b.Model {
				return -1
			}
			return 1
		}
		return gwproto.CompareVersions(a.Version, b.Version)
	})
	return out, nil
}

// currentTarget returns the current targets metadata's target of model and
// version.
func (r *Repos) currentTarget(ctx context.Context, tenant, model, version string) (string, *metadata.TargetFiles, error) {
	kv, err := r.bucket(ctx, tenant)
	if err != nil {
		return "", nil, err
	}
	s, err := r.load(ctx, kv)
	if err != nil {
		return "", nil, err
	}
	name := gwproto.FirmwareTarget(model, version)
	tf, ok := s.targets.Signed.Targets[name]
	if !ok {
		return "", nil, ErrNotFound.WithDetail("no target %s in the current targets metadata", name)
	}
	return name, tf, nil
}

// metadataFile matches the metadata files a TUF client asks for.
var metadataFile = regexp.MustCompile(`^(root|timestamp)\.json$|^[1-9][0-9]{0,17}\.(root|snapshot|targets)\.json$`)

// Metadata returns a metadata file of the tenant's repository as stored:
// "timestamp.json" (refreshed first when it is getting old), "root.json",
// or a version of a role ("2.root.json", "5.snapshot.json").
func (r *Repos) Metadata(ctx context.Context, tenant, file string) ([]byte, error) {
	if !metadataFile.MatchString(file) {
		return nil, ErrNotFound.New()
	}
	kv, err := r.bucket(ctx, tenant)
	if err != nil {
		return nil, err
	}
	if file == "timestamp.json" {
		if err := r.refresh(ctx, tenant, kv); err != nil {
			if ErrNotInitialised.Is(err) {
				return nil, ErrNotFound.New()
			}
			return nil, err
		}
	}
	b, _, err := get(ctx, kv, file)
	return b, err
}

// imageName matches a consistent-snapshot target name: the image's
// SHA-256, a dot, the target path.
var imageName = regexp.MustCompile(`^([0-9a-f]{64})\.([A-Za-z0-9_]{1,32})-([0-9.]{1,40})$`)

// Image returns an image of the tenant by its consistent-snapshot name
// ("{sha256}.{model}-{version}"), as stored, when the current targets
// metadata names it with that hash: an uploaded image that was never
// published is not served. The gateway checks it against its own TUF
// metadata.
func (r *Repos) Image(ctx context.Context, tenant, name string) ([]byte, error) {
	m := imageName.FindStringSubmatch(name)
	if m == nil {
		return nil, ErrNotFound.New()
	}
	_, tf, err := r.currentTarget(ctx, tenant, m[2], m[3])
	if ErrNotInitialised.Is(err) || ErrNotFound.Is(err) {
		return nil, ErrNotFound.New()
	}
	if err != nil {
		return nil, err
	}
	if hex.EncodeToString(tf.Hashes["sha256"]) != m[1] {
		return nil, ErrNotFound.New()
	}
	obs, err := r.images(ctx, tenant)
	if err != nil {
		return nil, err
	}
	b, err := obs.GetBytes(ctx, m[1])
	if errors.Is(err, jetstream.ErrObjectNotFound) {
		return nil, ErrNotFound.New()
	}
	return b, err
}

// PutImage stores an image under its SHA-256, which must be sum (hex); it
// reads at most MaxImage bytes.
func (r *Repos) PutImage(ctx context.Context, tenant, sum string, body io.Reader) (client.FirmwareImage, error) {
	b, err := io.ReadAll(io.LimitReader(body, r.cfg.MaxImage+1))
	if err != nil {
		return client.FirmwareImage{}, err
	}
	if int64(len(b)) > r.cfg.MaxImage {
		return client.FirmwareImage{}, ErrImageTooLarge.WithDetail("at most %d bytes", r.cfg.MaxImage)
	}
	got := sha256.Sum256(b)
	if hex.EncodeToString(got[:]) != sum {
		return client.FirmwareImage{}, ErrImage.WithDetail("the image's SHA-256 is not the one in the path")
	}
	obs, err := r.images(ctx, tenant)
	if err != nil {
		return client.FirmwareImage{}, err
	}
	if _, err := obs.PutBytes(ctx, sum, b); err != nil {
		return client.FirmwareImage{}, err
	}
	return client.FirmwareImage{SHA256: sum, Length: int64(len(b))}, nil
}

// parse decodes TUF metadata of one role type.
func parse[T metadata.Roles](m *metadata.Metadata[T], b []byte, role string) (*metadata.Metadata[T], error) {
	out, err := m.FromBytes(b)
	if err != nil {
		return nil, ErrMetadata.WithDetail("%s: %s", role, short(err))
	}
	return out, nil
}

// conflict maps a lost create or compare-and-set to ErrBusy.
func conflict(err error) error {
	if kverr.Conflict(err) {
		return ErrBusy.Wrap(err)
	}
	var apiErr *jetstream.APIError
	if errors.As(err, &apiErr) && (apiErr.ErrorCode == jetstream.JSErrCodeStreamWrongLastSequence ||
		apiErr.ErrorCode == jetstream.JSErrCodeStreamWrongLastSequenceConstant) {
		return ErrBusy.Wrap(err)
	}
	return err
}

// short is an error's text, bounded, for a public detail (go-tuf's
// messages name roles, versions and key ids, never a secret).
func short(err error) string { return trunc(err.Error()) }

func trunc(s string) string {
	if len(s) > 160 {
		return s[:160] + "…"
	}
	return s
}

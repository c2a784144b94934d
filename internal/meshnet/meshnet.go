// Package meshnet manages each tenant's secured sensor mesh in the cloud:
// its network (a random network id and an AES-128 key per epoch, the keys
// sealed by kms under the tenant's data key), the rotation of those keys
// with a grace period for the previous epoch, and the authorized node list.
// It delivers both to the tenant's gateways (Delivery): the key set sealed
// to each gateway's own key-delivery key, the node list as it is, retained
// on the gateway's down/ topics (internal/gwproto).
//
// Everything lives in one JetStream KV bucket (names.MeshBucket, keys
// names.MeshKey): every node of a cluster watches it, so a rotation made on
// one node reaches the gateways connected to any node.
package meshnet

import (
	"context"
	"crypto/rand"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/iotransit/iotransit/internal/backbone/kverr"
	"github.com/iotransit/iotransit/internal/backbone/names"
	"github.com/iotransit/iotransit/internal/fault"
	"github.com/iotransit/iotransit/internal/gwproto"
	"github.com/iotransit/iotransit/internal/mesh"
	"github.com/iotransit/iotransit/internal/retry"
)

// Faults a client can see.
var (
	ErrNoNetwork    = fault.Define("meshnet.network_not_found", fault.NotFound, "the tenant has no mesh network: create its first key")
	ErrNodeNotFound = fault.Define("meshnet.node_not_found", fault.NotFound, "no such node in the tenant's authorized node list")
	ErrGraceInvalid = fault.Define("meshnet.grace_invalid", fault.InvalidArgument, "the grace period is out of range")
	ErrNodeInvalid  = fault.Define("meshnet.node_invalid", fault.InvalidArgument, "a node id is a whole number from 1 to 4294967295")
	ErrTooManyNodes = fault.Define("meshnet.too_many_nodes", fault.InvalidArgument, "the authorized node list is full")
)

// Bounds.
const (
	// DefaultGrace is how long the previous epoch's key stays accepted
	// after a rotation when the request names no grace period.
	DefaultGrace = 24 * time.Hour
	// MaxGrace bounds a grace period.
	MaxGrace = 30 * 24 * time.Hour
	// MaxNodes bounds a tenant's authorized node list (its NodeList stays
	// well under the ingest's payload limit).
	MaxNodes = 10000
)

// Parts of a tenant's mesh in the bucket.
const (
	partNetwork = "network"
	partNodes   = "nodes"
)

// KVProvider creates or opens KV buckets (backbone.Backbone).
type KVProvider interface {
	KV(ctx context.Context, bucket string, history uint8) (jetstream.KeyValue, error)
}

// Sealer encrypts secrets under a tenant's data key (kms.Keyring).
type Sealer interface {
	Seal(ctx context.Context, tenant string, plaintext, aad []byte) ([]byte, error)
	Open(ctx context.Context, tenant string, sealed, aad []byte) ([]byte, error)
}

// Epoch is one key epoch as the API shows it: never the key.
type Epoch struct {
	Epoch     uint32    `json:"epoch"`
	CreatedAt time.Time `json:"createdAt"`
	// NotAfter ends the epoch's grace period; nil for the current epoch.
	NotAfter *time.Time `json:"notAfter,omitempty"`
}

// Network is a tenant's mesh network without its keys.
type Network struct {
	NetworkID uint32 `json:"networkId"`
	// Version rises with every change of the key set.
	Version uint64 `json:"version"`
	// Epochs are the keys kept, oldest first; the last is current.
	Epochs []Epoch `json:"epochs"`
}

// record is a network as stored: its keys sealed by kms.
type record struct {
	Network
	// Sealed is the kms-sealed JSON of the keys by epoch (sealedKeys).
	Sealed []byte `json:"sealed"`
}

// sealedKeys is the plaintext of record.Sealed.
type sealedKeys struct {
	Keys map[uint32][]byte `json:"keys"`
}

// nodesRecord is a tenant's authorized node list as stored.
type nodesRecord struct {
	Version uint64   `json:"version"`
	Nodes   []uint32 `json:"nodes"`
}

// keysAAD binds a network's sealed keys to their tenant and network.
func keysAAD(tenant string, network uint32) []byte {
	return fmt.Appendf(nil, "meshnet/keys/%s/%d", tenant, network)
}

// Service manages the tenants' mesh networks and node lists.
type Service struct {
	kv   jetstream.KeyValue
	keys Sealer
	now  func() time.Time
}

// Open opens (creating it if need be) the mesh bucket.
func Open(ctx context.Context, kvs KVProvider, keys Sealer) (*Service, error) {
	kv, err := kvs.KV(ctx, names.MeshBucket, 1)
	if err != nil {
		return nil, err
	}
	return &Service{kv: kv, keys: keys, now: time.Now}, nil
}

// Watch calls fn with the tenant of every change of a mesh network or node
// list, made on any node, until ctx ends. It returns once the watch is set.
func (s *Service) Watch(ctx context.Context, fn func(tenant string)) error {
	w, err := s.kv.WatchAll(ctx, jetstream.UpdatesOnly())
	if err != nil {
		return fmt.Errorf("meshnet: watch: %w", err)
	}
	go func() {
		defer func() { _ = w.Stop() }()
		for {
			select {
			case <-ctx.Done():
				return
			case e, ok := <-w.Updates():
				if !ok {
					return
				}
				if e == nil {
					continue
				}
				if tenant, _, ok := cutKey(e.Key()); ok {
					fn(tenant)
				}
			}
		}
	}()
	return nil
}

// cutKey splits a bucket key into tenant and part.
func cutKey(key string) (tenant, part string, ok bool) {
	i := len(key) - 1
	for i >= 0 && key[i] != '.' {
		i--
	}
	if i <= 0 {
		return "", "", false
	}
	return key[:i], key[i+1:], true
}

// get reads a part of the tenant's mesh into v; it reports the revision,
// 0 when the part does not exist.
func (s *Service) get(ctx context.Context, tenant, part string, v any) (uint64, error) {
	e, err := s.kv.Get(ctx, names.MeshKey(tenant, part))
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		return 0, nil
	}
	if err != nil {
		return 0, fmt.Errorf("meshnet: read %s of %s: %w", part, tenant, err)
	}
	if err := json.Unmarshal(e.Value(), v); err != nil {
		return 0, fmt.Errorf("meshnet: decode %s of %s: %w", part, tenant, err)
	}
	return e.Revision(), nil
}

// put writes v as a part of the tenant's mesh if it is still at rev (0:
// absent); it reports false when another writer came first.
func (s *Service) put(ctx context.Context, tenant, part string, v any, rev uint64) (bool, error) {
	b, err := json.Marshal(v)
	if err != nil {
		return false, err
	}
	key := names.MeshKey(tenant, part)
	if rev == 0 {
		_, err = s.kv.Create(ctx, key, b)
	} else {
		_, err = s.kv.Update(ctx, key, b, rev)
	}
	// A lost race: Create finds the key; Update finds another revision
	// (10071, or 10164 on a replicated bucket, both ErrKeyRevisionMismatch).
	if kverr.Conflict(err) {
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("meshnet: write %s of %s: %w", part, tenant, err)
	}
	return true, nil
}

// Concurrent changes of a part (several API requests, several nodes)
// conflict on its KV revision; each retries after a jittered wait, so that
// the writers spread out, and gives up only after updateAttempts.
const updateAttempts = 64

var updateBackoff = retry.Backoff{Base: time.Millisecond, Max: 100 * time.Millisecond}

// update applies change to a part of the tenant's mesh, read afresh and
// written back with optimistic concurrency, retrying when another writer
// came first.
func update[T any](ctx context.Context, s *Service, tenant, part string, change func(cur *T, exists bool) error) (T, error) {
	for attempt := 1; ; attempt++ {
		if attempt > 1 && !retry.Sleep(ctx, updateBackoff.Delay(attempt-1)) {
			var zero T
			return zero, ctx.Err()
		}
		var cur T
		rev, err := s.get(ctx, tenant, part, &cur)
		if err != nil {
			return cur, err
		}
		if err := change(&cur, rev != 0); err != nil {
			return cur, err
		}
		ok, err := s.put(ctx, tenant, part, cur, rev)
		if err != nil || ok {
			return cur, err
		}
		if attempt == updateAttempts {
			return cur, fmt.Errorf("meshnet: %s of %s: too many concurrent changes", part, tenant)
		}
	}
}

// CheckGrace checks a grace period.
func CheckGrace(grace time.Duration) error {
	if grace < 0 || grace > MaxGrace {
		return ErrGraceInvalid.WithDetail("graceSeconds must be from 0 to %d", int64(MaxGrace/time.Second))
	}
	return nil
}

// randomKey returns a fresh network key.
func randomKey() ([]byte, error) {
	k := make([]byte, mesh.KeySize)
	_, err := rand.Read(k)
	return k, err
}

// randomNetworkID returns a random network id other than 0.
func randomNetworkID() (uint32, error) {
	var b [4]byte
	for {
		if _, err := rand.Read(b[:]); err != nil {
			return 0, err
		}
		if id := binary.BigEndian.Uint32(b[:]); id != 0 {
			return id, nil
		}
	}
}

// Rotate creates the tenant's network with its first key (epoch 1), or,
// when it exists, makes a new epoch the current one: the previous current
// key stays accepted for grace (0: not at all), and any older key is
// dropped at once, its grace period cut short. It reports whether it
// created the network.
func (s *Service) Rotate(ctx context.Context, tenant string, grace time.Duration) (Network, bool, error) {
	if err := CheckGrace(grace); err != nil {
		return Network{}, false, err
	}
	var created bool
	r, err := update(ctx, s, tenant, partNetwork, func(r *record, exists bool) error {
		now := s.now().UTC().Truncate(time.Second)
		created = !exists
		keys := sealedKeys{Keys: map[uint32][]byte{}}
		if exists {
			var err error
			if keys, err = s.open(ctx, tenant, *r); err != nil {
				return err
			}
		} else {
			id, err := randomNetworkID()
			if err != nil {
				return err
			}
			r.Network = Network{NetworkID: id}
		}
		key, err := randomKey()
		if err != nil {
			return err
		}
		// The previous current key stays for the grace period; older
		// ones, still in an earlier grace period, end now: a network
		// accepts its current epoch and the one before (docs/mesh.md).
		next := uint32(1)
		var kept []Epoch
		if n := len(r.Epochs); n > 0 {
			prev := r.Epochs[n-1]
			next = prev.Epoch + 1
			if grace > 0 {
				end := now.Add(grace)
				prev.NotAfter = &end
				kept = append(kept, prev)
			}
		}
		r.Epochs = append(kept, Epoch{Epoch: next, CreatedAt: now})
		keys.Keys[next] = key
		for epoch := range keys.Keys {
			if !slices.ContainsFunc(r.Epochs, func(e Epoch) bool { return e.Epoch == epoch }) {
				delete(keys.Keys, epoch)
			}
		}
		r.Version++
		plain, err := json.Marshal(keys)
		if err != nil {
			return err
		}
		r.Sealed, err = s.keys.Seal(ctx, tenant, plain, keysAAD(tenant, r.NetworkID))
		return err
	})
	if err != nil {
		return Network{}, false, err
	}
	return r.Network, created, nil
}

// open opens a record's keys.
func (s *Service) open(ctx context.Context, tenant string, r record) (sealedKeys, error) {
	var k sealedKeys
	plain, err := s.keys.Open(ctx, tenant, r.Sealed, keysAAD(tenant, r.NetworkID))
	if err != nil {
		return k, fmt.Errorf("meshnet: open the keys of %s: %w", tenant, err)
	}
	if err := json.Unmarshal(plain, &k); err != nil {
		return k, fmt.Errorf("meshnet: decode the keys of %s: %w", tenant, err)
	}
	return k, nil
}

// Network returns the tenant's network (without keys), ErrNoNetwork when it
// has none.
func (s *Service) Network(ctx context.Context, tenant string) (Network, error) {
	var r record
	rev, err := s.get(ctx, tenant, partNetwork, &r)
	if err != nil {
		return Network{}, err
	}
	if rev == 0 {
		return Network{}, ErrNoNetwork.New()
	}
	return r.Network, nil
}

// KeySet returns the tenant's keys as a gateway or a key file gets them:
// the current epoch and those still in their grace period at now, each
// with its NotAfter. ErrNoNetwork when the tenant has none.
func (s *Service) KeySet(ctx context.Context, tenant string) (mesh.KeySet, error) {
	var r record
	rev, err := s.get(ctx, tenant, partNetwork, &r)
	if err != nil {
		return mesh.KeySet{}, err
	}
	if rev == 0 {
		return mesh.KeySet{}, ErrNoNetwork.New()
	}
	keys, err := s.open(ctx, tenant, r)
	if err != nil {
		return mesh.KeySet{}, err
	}
	now := s.now()
	ks := mesh.KeySet{NetworkID: r.NetworkID, Version: r.Version}
	for _, e := range r.Epochs {
		if e.NotAfter != nil && !now.Before(*e.NotAfter) {
			continue
		}
		ks.Keys = append(ks.Keys, mesh.EpochKey{Epoch: e.Epoch, Key: keys.Keys[e.Epoch], NotAfter: e.NotAfter})
	}
	if err := ks.Validate(); err != nil {
		return mesh.KeySet{}, fmt.Errorf("meshnet: key set of %s: %w", tenant, err)
	}
	return ks, nil
}

// CheckNode checks a node id.
func CheckNode(id uint64) error {
	if id == 0 || id > 0xFFFFFFFF {
		return ErrNodeInvalid.New()
	}
	return nil
}

// Nodes returns the tenant's authorized node ids, ascending, and the
// list's version (0: never changed).
func (s *Service) Nodes(ctx context.Context, tenant string) ([]uint32, uint64, error) {
	var nr nodesRecord
	if _, err := s.get(ctx, tenant, partNodes, &nr); err != nil {
		return nil, 0, err
	}
	if nr.Nodes == nil {
		nr.Nodes = []uint32{}
	}
	return nr.Nodes, nr.Version, nil
}

// HasNode reports whether the node is authorized.
func (s *Service) HasNode(ctx context.Context, tenant string, id uint32) (bool, error) {
	nodes, _, err := s.Nodes(ctx, tenant)
	if err != nil {
		return false, err
	}
	_, found := slices.BinarySearch(nodes, id)
	return found, nil
}

// AddNodes authorizes nodes (already authorized ones are kept once); it
// returns the ids that were new.
func (s *Service) AddNodes(ctx context.Context, tenant string, ids []uint32) ([]uint32, error) {
	var added []uint32
	_, err := update(ctx, s, tenant, partNodes, func(nr *nodesRecord, _ bool) error {
		added = added[:0]
		for _, id := range ids {
			if id == 0 {
				return ErrNodeInvalid.New()
			}
			i, found := slices.BinarySearch(nr.Nodes, id)
			if !found {
				nr.Nodes = slices.Insert(nr.Nodes, i, id)
				added = append(added, id)
			}
		}
		if len(nr.Nodes) > MaxNodes {
			return ErrTooManyNodes.WithDetail("at most %d nodes", MaxNodes)
		}
		if len(added) > 0 {
			nr.Version++
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	return added, nil
}

// RemoveNode takes a node off the list; ErrNodeNotFound when it is not on it.
func (s *Service) RemoveNode(ctx context.Context, tenant string, id uint32) error {
	_, err := update(ctx, s, tenant, partNodes, func(nr *nodesRecord, _ bool) error {
		i, found := slices.BinarySearch(nr.Nodes, id)
		if !found {
			return ErrNodeNotFound.New()
		}
		nr.Nodes = slices.Delete(nr.Nodes, i, i+1)
		nr.Version++
		return nil
	})
	return err
}

// NodeList returns the tenant's node list as gateways get it, ErrNoNetwork
// when the tenant has no network yet.
func (s *Service) NodeList(ctx context.Context, tenant string) (gwproto.NodeList, error) {
	n, err := s.Network(ctx, tenant)
	if err != nil {
		return gwproto.NodeList{}, err
	}
	nodes, version, err := s.Nodes(ctx, tenant)
	if err != nil {
		return gwproto.NodeList{}, err
	}
	return gwproto.NodeList{NetworkID: n.NetworkID, Version: version, Nodes: nodes}, nil
}

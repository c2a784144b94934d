package mesh

import (
	"errors"
	"fmt"
	"sync/atomic"
	"time"
)

// Reason is what became of a frame: Accepted, or why it was dropped.
type Reason uint8

// The reasons, in the order Receive checks them after parsing: network,
// node, epoch, replay (a pre-check), authentication, replay (again, as the
// window is updated).
const (
	// Accepted is a frame that authenticated and was not seen before.
	Accepted Reason = iota
	// Replay is a frame whose (boot, counter) the node's window has seen,
	// or lies below it, or belongs to an older boot.
	Replay
	// Forged is a frame whose tag does not verify: altered, or sealed with
	// another key.
	Forged
	// Truncated is a prefix of a frame.
	Truncated
	// Malformed is anything else that is not a frame (ErrMalformed).
	Malformed
	// UnknownNode is a node that is not in the authorized node list.
	UnknownNode
	// StaleEpoch is a key epoch the receiver does not accept now: older
	// than the current one and past its grace period, or one it holds no
	// key for.
	StaleEpoch
	// UnknownNetwork is a frame of another network than the receiver's
	// keys, or any frame before the receiver has keys.
	UnknownNetwork
	numReasons
)

// reasonNames are the reasons' names: the keys of Stats.Dropped and of the
// gateway status's mesh counters.
var reasonNames = [numReasons]string{"accepted", "replay", "forged", "truncated", "malformed", "unknown_node", "stale_epoch", "unknown_network"}

// String is the reason's name, e.g. "unknown_node".
func (r Reason) String() string {
	if r < numReasons {
		return reasonNames[r]
	}
	return fmt.Sprintf("reason(%d)", uint8(r))
}

// DropReasons lists the reasons a frame is dropped for.
func DropReasons() []Reason {
	return []Reason{Replay, Forged, Truncated, Malformed, UnknownNode, StaleEpoch, UnknownNetwork}
}

// ErrOlderVersion is a key set or node list older than the one the
// Receiver holds: a delivery replayed or overtaken.
var ErrOlderVersion = errors.New("mesh: older version than the one held")

// Receiver checks the frames a gateway receives from its mesh: that they
// belong to its network, come from an authorized node, are sealed under a
// key epoch it accepts now, authenticate, and were not seen before (a
// 64-frame window per node). It is safe for concurrent use: the agent may
// call Receive from one goroutine per socket while the cloud's deliveries
// call SetKeys and SetNodes. The hot path takes no allocation and one
// node's lock twice (before and after the cipher, as IPsec and DTLS
// update their windows only after authentication).
type Receiver struct {
	now   func() time.Time
	keys  atomic.Pointer[keyring]
	nodes atomic.Pointer[nodeSet]
	replay
	counts [numReasons]atomic.Uint64
}

// keyring is an immutable KeySet, ready to open frames.
type keyring struct {
	network uint32
	version uint64
	keys    []ringKey
}

// ringKey is one epoch's key; notAfter is zero for the current key.
type ringKey struct {
	epoch    uint32
	key      *Key
	notAfter time.Time
}

// nodeSet is an immutable authorized node list.
type nodeSet struct {
	network uint32
	version uint64
	ids     map[uint32]struct{}
}

// NewReceiver returns a Receiver without keys or nodes: it drops every
// frame (unknown_network) until SetKeys and SetNodes. now tells the time
// for grace periods; nil means time.Now.
func NewReceiver(now func() time.Time) *Receiver {
	if now == nil {
		now = time.Now
	}
	r := &Receiver{now: now}
	r.replay.init()
	return r
}

// SetKeys replaces the receiver's keys with ks, atomically: a frame is
// checked against the old set or the new one, never a mix. It refuses an
// invalid set, and a set of the same network with a lower version
// (ErrOlderVersion). Keys of earlier epochs are accepted until their
// NotAfter.
func (r *Receiver) SetKeys(ks KeySet) error {
	if err := ks.Validate(); err != nil {
		return err
	}
	kr := &keyring{network: ks.NetworkID, version: ks.Version}
	for _, k := range ks.Keys {
		key, err := NewKey(k.Key)
		if err != nil {
			return err
		}
		rk := ringKey{epoch: k.Epoch, key: key}
		if k.NotAfter != nil {
			rk.notAfter = *k.NotAfter
		}
		kr.keys = append(kr.keys, rk)
	}
	for {
		old := r.keys.Load()
		if old != nil && old.network == kr.network && kr.version < old.version {
			return fmt.Errorf("%w: key set version %d, holding %d", ErrOlderVersion, kr.version, old.version)
		}
		if r.keys.CompareAndSwap(old, kr) {
			return nil
		}
	}
}

// SetNodes replaces the authorized node list of network with nodes,
// atomically. It refuses a list of the same network with a lower version
// (ErrOlderVersion). A node taken off the list keeps its replay window, so
// that adding it back does not reopen it.
func (r *Receiver) SetNodes(network uint32, version uint64, nodes []uint32) error {
	ns := &nodeSet{network: network, version: version, ids: make(map[uint32]struct{}, len(nodes))}
	for _, n := range nodes {
		ns.ids[n] = struct{}{}
	}
	for {
		old := r.nodes.Load()
		if old != nil && old.network == network && version < old.version {
			return fmt.Errorf("%w: node list version %d, holding %d", ErrOlderVersion, version, old.version)
		}
		if r.nodes.CompareAndSwap(old, ns) {
			return nil
		}
	}
}

// Versions returns the versions of the key set and the node list held (0
// when none).
func (r *Receiver) Versions() (keys, nodes uint64) {
	if kr := r.keys.Load(); kr != nil {
		keys = kr.version
	}
	if ns := r.nodes.Load(); ns != nil {
		nodes = ns.version
	}
	return keys, nodes
}

// key returns the key of epoch if the receiver accepts it now, else nil.
func (kr *keyring) key(epoch uint32, now func() time.Time) *Key {
	for i := range kr.keys {
		k := &kr.keys[i]
		if k.epoch != epoch {
			continue
		}
		if !k.notAfter.IsZero() && now().After(k.notAfter) {
			return nil
		}
		return k.key
	}
	return nil
}

// Receive checks one frame and returns its message and node with Accepted,
// or nil and the reason it is dropped (node is the claimed node id when the
// frame parsed, else 0). Every outcome is counted (Stats). Receive decrypts
// in place: the message aliases frame, whose bytes it overwrites, whatever
// the outcome. A frame is accepted only after it authenticated, and its
// window is updated only then.
func (r *Receiver) Receive(frame []byte) (msg []byte, node uint32, reason Reason) {
	h, reason, _ := parse(frame)
	if reason != Accepted {
		return r.drop(0, reason)
	}
	kr := r.keys.Load()
	if kr == nil || kr.network != h.NetworkID {
		return r.drop(h.Node, UnknownNetwork)
	}
	ns := r.nodes.Load()
	if ns == nil || ns.network != h.NetworkID {
		return r.drop(h.Node, UnknownNode)
	}
	if _, ok := ns.ids[h.Node]; !ok {
		return r.drop(h.Node, UnknownNode)
	}
	key := kr.key(h.Epoch, r.now)
	if key == nil {
		return r.drop(h.Node, StaleEpoch)
	}
	if !r.replay.check(h) {
		return r.drop(h.Node, Replay)
	}
	msg, ok := openInPlace(key, frame)
	if !ok {
		return r.drop(h.Node, Forged)
	}
	if !r.replay.accept(h) {
		// Another goroutine accepted the same frame meanwhile.
		return r.drop(h.Node, Replay)
	}
	r.counts[Accepted].Add(1)
	return msg, h.Node, Accepted
}

// drop counts reason and returns it.
func (r *Receiver) drop(node uint32, reason Reason) ([]byte, uint32, Reason) {
	r.counts[reason].Add(1)
	return nil, node, reason
}

// Stats are a Receiver's counters since it was made: the shape of the
// gateway status's mesh field.
type Stats struct {
	// Accepted counts the frames accepted.
	Accepted uint64 `json:"accepted"`
	// Dropped counts the frames dropped, by reason name (every reason of
	// DropReasons, zeros included).
	Dropped map[string]uint64 `json:"dropped"`
}

// Stats returns the counters.
func (r *Receiver) Stats() Stats {
	s := Stats{Accepted: r.counts[Accepted].Load(), Dropped: make(map[string]uint64, numReasons-1)}
	for _, reason := range DropReasons() {
		s.Dropped[reason.String()] = r.counts[reason].Load()
	}
	return s
}

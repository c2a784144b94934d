package mesh

import (
	"cmp"
	"encoding/binary"
	"errors"
	"fmt"
	"slices"
	"sync"
	"sync/atomic"
)

// WindowSize is the anti-replay window: the frames of a node's current
// boot accepted out of order, counted down from the highest counter
// accepted (IPsec ESP's default, RFC 4303 §3.4.3).
const WindowSize = 64

// The replay rule per node (docs/mesh.md): order frames by (boot,
// counter). A frame of a newer boot than the node's window starts a new
// window at its counter; a frame of an older boot is a replay; within the
// window's boot, a counter above the highest accepted moves the window up,
// one within the WindowSize below it is accepted once (a bit per counter),
// one further below is a replay.

// window is one node's replay window.
type window struct {
	boot uint32
	top  uint32 // the highest counter accepted in boot
	seen uint64 // bit i: counter top-i was accepted; bit 0 is always set
	// stamp is the receiver's change sequence at this window's last change
	// (Receiver.Changes).
	stamp uint64
}

// allows reports whether a frame of (boot, counter) may be accepted.
func (w *window) allows(boot, counter uint32) bool {
	switch {
	case boot != w.boot:
		return boot > w.boot
	case counter > w.top:
		return true
	}
	d := w.top - counter
	return d < WindowSize && w.seen&(1<<d) == 0
}

// add records (boot, counter), which allows permits.
func (w *window) add(boot, counter uint32) {
	switch {
	case boot != w.boot:
		w.boot, w.top, w.seen = boot, counter, 1
	case counter > w.top:
		if d := counter - w.top; d < WindowSize {
			w.seen = w.seen<<d | 1
		} else {
			w.seen = 1
		}
		w.top = counter
	default:
		w.seen |= 1 << (w.top - counter)
	}
}

// merge folds s, the state of the same node, into w: the newer (boot, top)
// wins, and the bits of the other, when of the same boot, are kept where
// they fall inside the window.
func (w *window) merge(s NodeState) {
	newer := s.Boot > w.boot || (s.Boot == w.boot && s.Top > w.top)
	lower, upper := NodeState{Boot: w.boot, Top: w.top, Seen: w.seen}, s
	if !newer {
		lower, upper = upper, lower
	}
	w.boot, w.top, w.seen = upper.Boot, upper.Top, upper.Seen
	if lower.Boot == upper.Boot {
		if d := upper.Top - lower.Top; d < WindowSize {
			w.seen |= lower.Seen << d
		}
	}
}

// NodeState is one node's replay window, as the agent persists it. Export
// it with Receiver.Changes or Snapshot, import it with Restore.
type NodeState struct {
	// Network and Node name the node.
	Network uint32 `json:"network"`
	Node    uint32 `json:"node"`
	// Boot is the newest boot accepted from the node.
	Boot uint32 `json:"boot"`
	// Top is the highest counter accepted in Boot.
	Top uint32 `json:"top"`
	// Seen has bit i set when counter Top-i was accepted; bit 0 is always
	// set.
	Seen uint64 `json:"seen"`
}

// NodeStateSize is the size of a NodeState's binary form: network, node,
// boot, top (4 bytes each) and seen (8), big-endian.
const NodeStateSize = 24

// AppendBinary appends the binary form of s to b.
func (s NodeState) AppendBinary(b []byte) ([]byte, error) {
	b = binary.BigEndian.AppendUint32(b, s.Network)
	b = binary.BigEndian.AppendUint32(b, s.Node)
	b = binary.BigEndian.AppendUint32(b, s.Boot)
	b = binary.BigEndian.AppendUint32(b, s.Top)
	return binary.BigEndian.AppendUint64(b, s.Seen), nil
}

// MarshalBinary returns the binary form of s.
func (s NodeState) MarshalBinary() ([]byte, error) {
	return s.AppendBinary(make([]byte, 0, NodeStateSize))
}

// UnmarshalBinary decodes the binary form of a NodeState.
func (s *NodeState) UnmarshalBinary(b []byte) error {
	if len(b) != NodeStateSize {
		return fmt.Errorf("mesh: node state is %d bytes, got %d", NodeStateSize, len(b))
	}
	*s = NodeState{
		Network: binary.BigEndian.Uint32(b[0:]),
		Node:    binary.BigEndian.Uint32(b[4:]),
		Boot:    binary.BigEndian.Uint32(b[8:]),
		Top:     binary.BigEndian.Uint32(b[12:]),
		Seen:    binary.BigEndian.Uint64(b[16:]),
	}
	return nil
}

// nShards spreads the windows over locks, so that sockets served by
// different goroutines rarely wait for one another.
const nShards = 16

// replay holds every node's window, in shards.
type replay struct {
	shards [nShards]shard
	// seq numbers the changes of windows; a window's stamp is the seq of
	// its last change.
	seq atomic.Uint64
}

// shard is a lock and its windows, padded to a cache line of its own.
type shard struct {
	mu      sync.Mutex
	windows map[uint64]*window // by windowID
	stamp   uint64             // the highest stamp of its windows
	_       [40]byte
}

func (rp *replay) init() {
	for i := range rp.shards {
		rp.shards[i].windows = map[uint64]*window{}
	}
}

// windowID keys a node's window.
func windowID(network, node uint32) uint64 { return uint64(network)<<32 | uint64(node) }

// shard returns the shard of a node.
func (rp *replay) shard(node uint32) *shard {
	return &rp.shards[(node*0x9E3779B1)>>28%nShards]
}

// check is the pre-check before authentication: may h's frame be accepted?
func (rp *replay) check(h Header) bool {
	sh := rp.shard(h.Node)
	sh.mu.Lock()
	w := sh.windows[windowID(h.NetworkID, h.Node)]
	ok := w == nil || w.allows(h.Boot, h.Counter)
	sh.mu.Unlock()
	return ok
}

// accept records h's authenticated frame, unless its window took the
// frame meanwhile; it reports whether it recorded it.
func (rp *replay) accept(h Header) bool {
	sh := rp.shard(h.Node)
	sh.mu.Lock()
	defer sh.mu.Unlock()
	id := windowID(h.NetworkID, h.Node)
	w := sh.windows[id]
	switch {
	case w == nil:
		w = &window{boot: h.Boot, top: h.Counter, seen: 1}
		sh.windows[id] = w
	case !w.allows(h.Boot, h.Counter):
		return false
	default:
		w.add(h.Boot, h.Counter)
	}
	rp.stamp(sh, w)
	return true
}

// stamp marks w, of sh, changed; sh.mu is held.
func (rp *replay) stamp(sh *shard, w *window) {
	w.stamp = rp.seq.Add(1)
	sh.stamp = w.stamp
}

// Changes appends to dst the state of every node whose window changed
// after mark since (0: every node), sorted by network and node, and
// returns the mark to pass next time. It is cheap when little changed:
// shards without a change are skipped under their lock.
//
// The agent persists the states with the messages it queued, in one
// transaction, calling Changes after those messages were handed over:
// every accepted message's window change is then in the same or an earlier
// transaction. Keep the mark of the last transaction that committed; a
// state may come twice (its later value supersedes).
func (r *Receiver) Changes(dst []NodeState, since uint64) ([]NodeState, uint64) {
	// Read the mark first: a change stamped at or below it was made under
	// its shard's lock before this, so the scan below sees it.
	mark := r.seq.Load()
	start := len(dst)
	for i := range r.shards {
		sh := &r.shards[i]
		sh.mu.Lock()
		if sh.stamp > since {
			for id, w := range sh.windows {
				if w.stamp > since {
					dst = append(dst, NodeState{Network: uint32(id >> 32), Node: uint32(id), Boot: w.boot, Top: w.top, Seen: w.seen})
				}
			}
		}
		sh.mu.Unlock()
	}
	slices.SortFunc(dst[start:], func(a, b NodeState) int {
		return cmp.Or(cmp.Compare(a.Network, b.Network), cmp.Compare(a.Node, b.Node))
	})
	return dst, mark
}

// Snapshot returns every node's state and the mark of Changes.
func (r *Receiver) Snapshot() ([]NodeState, uint64) { return r.Changes(nil, 0) }

// Restore imports persisted states (after a restart, before Receive is
// called; calling it later is safe too). A state merges with the window
// already held, the newer one winning, so a window never moves back. A
// state with bit 0 of Seen clear was never exported: it is refused, and
// nothing is restored.
func (r *Receiver) Restore(states []NodeState) error {
	for _, s := range states {
		if s.Seen&1 == 0 {
			return errors.New("mesh: node state without its top counter seen; not restored")
		}
	}
	for _, s := range states {
		sh := r.shard(s.Node)
		sh.mu.Lock()
		id := windowID(s.Network, s.Node)
		w := sh.windows[id]
		if w == nil {
			w = &window{boot: s.Boot, top: s.Top, seen: s.Seen}
			sh.windows[id] = w
		} else {
			w.merge(s)
		}
		r.stamp(sh, w)
		sh.mu.Unlock()
	}
	return nil
}

// Package gwstate keeps the cloud's view of each gateway's live state: when
// it was last seen (connect, status, uploads) and the last status it sent
// (gwproto.Status: agent and firmware version, queue, mesh counters). The
// state lives in a JetStream KV bucket per tenant (names.GatewayStateBucket),
// apart from the registry's gateway records, and is written at a bounded
// rate: a gateway's status or connection at most once per StatusInterval, a
// mere upload at most once per SeenInterval, never once per message. The
// node where the gateway is connected holds the exact state in memory and
// answers from it; other nodes read the bucket, at most that much older.
//
// It also holds, in memory only and for the session's lifetime, the
// key-delivery key a gateway's status named: the key its mesh keys are
// sealed to (internal/meshnet).
package gwstate

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/iotransit/iotransit/internal/backbone/names"
	"github.com/iotransit/iotransit/internal/gwproto"
)

// Config bounds the writes.
type Config struct {
	// StatusInterval is the least time between two writes of a gateway's
	// state after a status or connect (default 2s).
	StatusInterval time.Duration
	// SeenInterval is the least time between two writes that only move
	// lastSeen (default 30s).
	SeenInterval time.Duration
}

func (c *Config) defaults() {
	if c.StatusInterval <= 0 {
		c.StatusInterval = 2 * time.Second
	}
	if c.SeenInterval <= 0 {
		c.SeenInterval = 30 * time.Second
	}
}

// State is a gateway's live state.
type State struct {
	// LastSeen is when the gateway last connected, sent its status or
	// uploaded.
	LastSeen time.Time `json:"lastSeen"`
	// Status is the last status it sent, nil before the first. Its
	// KeyDeliveryKey is not kept.
	Status *gwproto.Status `json:"status,omitempty"`
	// StatusAt is when that status arrived.
	StatusAt time.Time `json:"statusAt,omitzero"`
}

// KVProvider creates or opens KV buckets (backbone.Backbone).
type KVProvider interface {
	KV(ctx context.Context, bucket string, history uint8) (jetstream.KeyValue, error)
}

// entry is a gateway's state in memory.
type entry struct {
	tenant, serial string
	state          State
	dirty, urgent  bool
	written        time.Time
	gone           bool   // disconnected: forgotten once written
	key            []byte // the session's key-delivery key
}

// Tracker follows the gateways connected to this node and writes their
// state. Its methods do not block on the backbone.
type Tracker struct {
	cfg Config
	kvs KVProvider
	log *slog.Logger
	now func() time.Time

	mu sync.RWMutex
	m  map[gwKey]*entry

	stop context.CancelFunc
	done chan struct{}
}

// New starts a Tracker; Close writes what is pending and stops it.
func New(cfg Config, kvs KVProvider, log *slog.Logger) *Tracker {
	cfg.defaults()
	ctx, cancel := context.WithCancel(context.Background())
	t := &Tracker{cfg: cfg, kvs: kvs, log: log.With("component", "gwstate"), now: time.Now, m: map[gwKey]*entry{}, stop: cancel, done: make(chan struct{})}
	go t.run(ctx)
	return t
}

// gwKey names a gateway in the Tracker's map; a struct, so a lookup joins
// no strings.
type gwKey struct{ tenant, serial string }

func key(tenant, serial string) gwKey { return gwKey{tenant, serial} }

// seenEvery is how often an upload moves a gateway's lastSeen at most: the
// state is written far less often (SeenInterval), and Seen runs for every
// publish.
const seenEvery = time.Second

// touch returns the gateway's entry, made if need be, under t.mu.
func (t *Tracker) touch(tenant, serial string) *entry {
	e, ok := t.m[key(tenant, serial)]
	if !ok {
		e = &entry{tenant: tenant, serial: serial}
		t.m[key(tenant, serial)] = e
	}
	e.state.LastSeen = t.now().UTC()
	e.dirty = true
	e.gone = false
	return e
}

// Connected records a new session.
func (t *Tracker) Connected(tenant, serial string) {
	t.mu.Lock()
	defer t.mu.Unlock()
	e := t.touch(tenant, serial)
	e.urgent = true
	e.key = nil // a new session names its key again
}

// Seen records an upload. Within seenEvery of the gateway's lastSeen it
// only reads, under the read lock: lastSeen is then up to that much older
// than the last upload.
func (t *Tracker) Seen(tenant, serial string) {
	now := t.now()
	t.mu.RLock()
	e := t.m[key(tenant, serial)]
	// A clock set back takes the write path, which sets lastSeen to now.
	age := time.Duration(-1)
	if e != nil && !e.gone {
		age = now.Sub(e.state.LastSeen)
	}
	recent := age >= 0 && age < seenEvery
	t.mu.RUnlock()
	if recent {
		return
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	t.touch(tenant, serial)
}

// Status records a status; it reports whether the status named a
// key-delivery key (kept for the session, DeliveryKey).
func (t *Tracker) Status(tenant, serial string, st gwproto.Status) bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	e := t.touch(tenant, serial)
	e.urgent = true
	if st.KeyDeliveryKey != nil {
		e.key = st.KeyDeliveryKey
	}
	st.KeyDeliveryKey = nil
	e.state.Status = &st
	e.state.StatusAt = e.state.LastSeen
	return e.key != nil
}

// Disconnected records the end of a session: its state is written and
// forgotten here, its key-delivery key dropped.
func (t *Tracker) Disconnected(tenant, serial string) {
	t.mu.Lock()
	defer t.mu.Unlock()
	e := t.touch(tenant, serial)
	e.urgent, e.gone, e.key = true, true, nil
}

// DeliveryKey returns the key-delivery key the gateway's current session
// named in its status.
func (t *Tracker) DeliveryKey(tenant, serial string) ([]byte, bool) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if e, ok := t.m[key(tenant, serial)]; ok && e.key != nil {
		return e.key, true
	}
	return nil, false
}

// Get returns the gateway's state: this node's when it follows the
// gateway, else the bucket's. It reports false when the gateway was never
// seen.
func (t *Tracker) Get(ctx context.Context, tenant, serial string) (State, bool, error) {
	t.mu.Lock()
	if e, ok := t.m[key(tenant, serial)]; ok {
		st := e.state
		t.mu.Unlock()
		return st, true, nil
	}
	t.mu.Unlock()
	kv, err := t.kvs.KV(ctx, names.GatewayStateBucket(tenant), 1)
	if err != nil {
		return State{}, false, err
	}
	kve, err := kv.Get(ctx, serial)
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		return State{}, false, nil
	}
	if err != nil {
		return State{}, false, fmt.Errorf("gwstate: read %s/%s: %w", tenant, serial, err)
	}
	var st State
	if err := json.Unmarshal(kve.Value(), &st); err != nil {
		return State{}, false, fmt.Errorf("gwstate: decode %s/%s: %w", tenant, serial, err)
	}
	return st, true, nil
}

// Forget deletes a gateway's state (when the gateway is deleted).
func (t *Tracker) Forget(ctx context.Context, tenant, serial string) error {
	t.mu.Lock()
	delete(t.m, key(tenant, serial))
	t.mu.Unlock()
	kv, err := t.kvs.KV(ctx, names.GatewayStateBucket(tenant), 1)
	if err != nil {
		return err
	}
	return kv.Purge(ctx, serial)
}

// Close writes the pending state and stops.
func (t *Tracker) Close() {
	t.stop()
	<-t.done
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	t.flush(ctx, true)
}

func (t *Tracker) run(ctx context.Context) {
	defer close(t.done)
	tick := time.NewTicker(250 * time.Millisecond)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
			t.flush(ctx, false)
		}
	}
}

// write is one state to write.
type write struct {
	e     *entry
	state State
}

// flush writes the entries that are due (all dirty ones when all is set).
func (t *Tracker) flush(ctx context.Context, all bool) {
	now := t.now()
	var due []write
	t.mu.Lock()
	for _, e := range t.m {
		if !e.dirty {
			continue
		}
		wait := t.cfg.SeenInterval
		if e.urgent {
			wait = t.cfg.StatusInterval
		}
		if all || now.Sub(e.written) >= wait {
			due = append(due, write{e: e, state: e.state})
			e.dirty, e.urgent, e.written = false, false, now
		}
	}
	t.mu.Unlock()
	for _, w := range due {
		err := t.put(ctx, w.e.tenant, w.e.serial, w.state)
		t.mu.Lock()
		switch {
		case err != nil:
			w.e.dirty = true // again at the next tick past the interval
			t.log.Warn("gateway state not written; retrying", "tenant_id", w.e.tenant, "gateway_id", w.e.serial, "error", err)
		case w.e.gone && !w.e.dirty && t.m[key(w.e.tenant, w.e.serial)] == w.e:
			delete(t.m, key(w.e.tenant, w.e.serial))
		}
		t.mu.Unlock()
	}
}

func (t *Tracker) put(ctx context.Context, tenant, serial string, st State) error {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	kv, err := t.kvs.KV(ctx, names.GatewayStateBucket(tenant), 1)
	if err != nil {
		return err
	}
	b, err := json.Marshal(st)
	if err != nil {
		return err
	}
	_, err = kv.Put(ctx, serial, b)
	return err
}

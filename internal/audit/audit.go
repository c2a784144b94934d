package audit

import (
	"context"
	"crypto/ed25519"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"regexp"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/iotransit/iotransit/client"
	"github.com/iotransit/iotransit/internal/backbone/names"
	"github.com/iotransit/iotransit/internal/fault"
)

// Failures the audit log returns. Tampering is never an error: Verify
// reports it.
var (
	// ErrTenantInvalid is returned for a tenant id that could not be part
	// of a stream name or subject.
	ErrTenantInvalid = fault.Define("audit.tenant_invalid", fault.InvalidArgument,
		"an audit tenant id is 1 to 32 characters of a-z, 0-9 and '-', starting with a letter or digit, optionally after one '_'")
	// ErrEventInvalid is returned by Append for an event without an actor,
	// an action or an outcome.
	ErrEventInvalid = fault.Define("audit.event_invalid", fault.InvalidArgument,
		"an audit event needs an actor, an action and an outcome")
	// ErrNotFound is returned when the tenant has no audit log (EnsureTenant
	// was never called for it).
	ErrNotFound = fault.Define("audit.log_not_found", fault.NotFound, "the tenant has no audit log")

	// ErrUnavailable is returned when the log cannot be written or read
	// (JetStream down, the stream full or refusing writes). The API
	// answers it, 503, for a change it refused because the change's audit
	// entry could not be written (fail closed).
	ErrUnavailable = fault.Define("audit.unavailable", fault.Unavailable, "the audit log cannot be written or read right now")

	errClosed      = fault.Define("audit.closed", fault.Unavailable, "the audit log is closed")
	errChainBroken = fault.Define("audit.chain_broken", fault.Internal,
		"the last audit entry cannot be read, so no entry can be chained to it; run an audit verification")
)

// SystemTenant is the reserved tenant of platform-level events, such as
// tenant creation and refusals that cannot be attributed to a tenant. Open
// creates its log.
const SystemTenant = "_system"

var tenantPattern = regexp.MustCompile(`^_?[a-z0-9][a-z0-9-]{0,31}$`)

func checkTenant(tenant string) error {
	if !tenantPattern.MatchString(tenant) {
		return ErrTenantInvalid.New()
	}
	return nil
}

// Event is what a caller records. Every field is text for people: callers
// must never put secrets in it. Append makes every field valid UTF-8 and
// cuts it to 256 bytes.
type Event struct {
	// Actor is who acted: "operator", "apikey:<id>", "oauth2:<clientId>",
	// "gateway:<serial>" or "system".
	Actor string
	// Action is what was done, named component.entity.verb, e.g.
	// "registry.gateway.register", "pki.cert.issue" or
	// "ingest.connect.refused".
	Action string
	// Target is what was acted on, e.g. "gateway:TSGW06DEV00000001" or
	// "apikey:<id>"; it may be empty.
	Target string
	// Source is the client address "ip:port", or "" for internal actions.
	Source string
	// Outcome is "ok" or the stable error code of the failure
	// ("registry.gateway_exists", "unknown_ca", ...).
	Outcome string
	// Detail is optional small context, never secrets. Append keeps at most
	// 16 keys (the first in byte order) of at most 64 bytes, with values of
	// at most 256 bytes.
	Detail map[string]string
}

// Entry is a stored, chained event. Its JSON form is what the stream holds
// and what the API shows; the shape is declared once, in the client
// package. Hash covers every other field (see the package documentation).
type Entry = client.AuditEntry

// Checkpoint is a signed statement "the chain of tenant Tenant up to entry
// Seq has hash Hash", made every CheckpointEvery entries, by the background
// loop and by Log.Checkpoint.
type Checkpoint struct {
	// Tenant is the tenant whose chain is vouched for.
	Tenant string `json:"tenant"`
	// Seq is the last entry covered.
	Seq uint64 `json:"seq"`
	// Hash is the Hash of entry Seq.
	Hash string `json:"hash"`
	// Time is when the checkpoint was signed, in UTC.
	Time time.Time `json:"time"`
	// KeyID identifies the signing key (see KeyID).
	KeyID string `json:"keyId"`
	// Signature is the Ed25519 signature over the canonical encoding of the
	// other fields.
	Signature []byte `json:"signature"`
}

// Config sets how often checkpoints are signed and how long entries are
// kept. The zero value is the default.
type Config struct {
	// CheckpointEvery is how many entries a process appends to a tenant
	// before it signs a checkpoint (default 64).
	CheckpointEvery int
	// CheckpointInterval is how often a background loop signs a checkpoint
	// for every tenant with entries this process appended since its last
	// checkpoint (default 10s). It bounds how long an entry stays unsigned.
	CheckpointInterval time.Duration
	// Retention is how long entries are kept (default 0: forever; the audit
	// log is not trimmed unless asked to). With a retention, verification
	// accepts a log whose first entries have expired.
	Retention time.Duration
}

// Validate reports every problem of the configuration.
func (c Config) Validate() error {
	var errs []error
	if c.CheckpointEvery < 0 {
		errs = append(errs, fmt.Errorf("audit: checkpoint every %d entries: must not be negative", c.CheckpointEvery))
	}
	if c.CheckpointInterval < 0 {
		errs = append(errs, fmt.Errorf("audit: checkpoint interval %s: must not be negative", c.CheckpointInterval))
	}
	if c.Retention < 0 {
		errs = append(errs, fmt.Errorf("audit: retention %s: must not be negative", c.Retention))
	}
	return errors.Join(errs...)
}

// DefaultConfig returns the configuration that a zero Config means.
func DefaultConfig() Config {
	var c Config
	c.defaults()
	return c
}

func (c *Config) defaults() {
	if c.CheckpointEvery == 0 {
		c.CheckpointEvery = 64
	}
	if c.CheckpointInterval == 0 {
		c.CheckpointInterval = 10 * time.Second
	}
}

// StreamProvider creates or updates streams (backbone.Backbone).
type StreamProvider interface {
	Stream(ctx context.Context, cfg jetstream.StreamConfig) (jetstream.Stream, error)
}

// Log writes, lists and verifies tenants' audit logs. It is safe for
// concurrent use, and several Logs (in one or many processes) may write the
// same tenant.
type Log struct {
	cfg     Config
	streams StreamProvider
	js      jetstream.JetStream
	keys    atomic.Pointer[keySet] // the checkpoint keys (UseKeys)
	// unknown, when set, reads the platform's keys again (OnUnknownKey).
	unknown atomic.Pointer[func()]
	log     *slog.Logger

	mu      sync.Mutex
	tenants map[string]*tenantState
	closed  bool

	idx indexes // the tenants' indexes of List (index.go)

	stop     chan struct{}
	loopDone chan struct{}
	once     sync.Once

	// tenantRetention, when set, gives a tenant's own retention
	// (retention.go).
	tenantRetention atomic.Pointer[func(tenant string) time.Duration]
}

// tenantState is what a Log knows of one tenant. mu serializes appends and
// checkpoints of the tenant within the process.
type tenantState struct {
	mu      sync.Mutex
	ensured bool
	st      jetstream.Stream // nil until first needed

	// The head: the last entry this process appended or read, and the
	// stream sequence of its message. known is false until it was read.
	known     bool
	seq       uint64
	hash      string
	streamSeq uint64

	signedSeq uint64 // the last seq this process signed (or found signed)
	dirty     bool   // appended since this process last signed
}

// appendAttempts bounds the optimistic-concurrency retries of one Append.
const appendAttempts = 32

// Open returns a Log that signs checkpoints with signer, creates the log of
// the reserved tenant "_system", and starts the checkpoint loop. Close stops
// it.
func Open(ctx context.Context, cfg Config, streams StreamProvider, js jetstream.JetStream, signer ed25519.PrivateKey, log *slog.Logger) (*Log, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	cfg.defaults()
	if len(signer) != ed25519.PrivateKeySize {
		return nil, errors.New("audit: the checkpoint signer is not an Ed25519 private key")
	}
	if streams == nil || js == nil {
		return nil, errors.New("audit: a stream provider and a JetStream are required")
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	l := &Log{
		cfg:      cfg,
		streams:  streams,
		js:       js,
		log:      log.With("component", "audit"),
		tenants:  map[string]*tenantState{},
		stop:     make(chan struct{}),
		loopDone: make(chan struct{}),
	}
	if err := l.UseKeys(signer); err != nil {
		return nil, err
	}
	if err := l.EnsureTenant(ctx, SystemTenant); err != nil {
		return nil, err
	}
	go l.loop()
	return l, nil
}

// Close stops the checkpoint loop and signs a final checkpoint for every
// tenant with unsigned entries of this process. Append fails afterwards.
func (l *Log) Close() {
	l.once.Do(func() {
		l.mu.Lock()
		l.closed = true
		l.mu.Unlock()
		close(l.stop)
		<-l.loopDone
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		l.checkpointDirty(ctx)
	})
}

// keySet is the key a Log signs checkpoints with and every key whose
// checkpoints it verifies, by key id.
type keySet struct {
	signer ed25519.PrivateKey
	pub    ed25519.PublicKey
	known  map[string]ed25519.PublicKey
}

// UseKeys makes signer the key of the checkpoints this Log signs from now
// on, and signer's public key with the retired ones the keys its
// verification accepts (a checkpoint is checked against the key its keyId
// names; any other key id fails). Retired keys stay known so that the
// checkpoints they signed still verify after a rotation.
func (l *Log) UseKeys(signer ed25519.PrivateKey, retired ...ed25519.PublicKey) error {
	if len(signer) != ed25519.PrivateKeySize {
		return errors.New("audit: the checkpoint signer is not an Ed25519 private key")
	}
	pub := signer.Public().(ed25519.PublicKey)
	l.keys.Store(&keySet{signer: signer, pub: pub, known: keyMap(append([]ed25519.PublicKey{pub}, retired...))})
	return nil
}

// OnUnknownKey makes a verification that meets a checkpoint naming a key
// this Log does not know call fn (which reads the platform's keys and calls
// UseKeys) and verify once more before it reports the key unknown: a key
// rotated on another node a moment ago is not tampering.
func (l *Log) OnUnknownKey(fn func()) { l.unknown.Store(&fn) }

// PublicKey returns the key that verifies the checkpoints this Log signs now.
func (l *Log) PublicKey() ed25519.PublicKey { return l.keys.Load().pub }

// state returns the tenant's state, creating it on first use.
func (l *Log) state(tenant string) (*tenantState, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.closed {
		return nil, errClosed.New()
	}
	ts := l.tenants[tenant]
	if ts == nil {
		ts = &tenantState{}
		l.tenants[tenant] = ts
	}
	return ts, nil
}

// forget drops the state of a tenant that has no log.
func (l *Log) forget(tenant string, ts *tenantState) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.tenants[tenant] == ts {
		delete(l.tenants, tenant)
	}
}

// EnsureTenant creates (or updates) the tenant's audit stream AUD_{tenant}
// with the subjects audit.{tenant}.entry and audit.{tenant}.checkpoint. It is
// idempotent; a process updates the stream once.
func (l *Log) EnsureTenant(ctx context.Context, tenant string) error {
	if err := checkTenant(tenant); err != nil {
		return err
	}
	ts, err := l.state(tenant)
	if err != nil {
		return err
	}
	ts.mu.Lock()
	defer ts.mu.Unlock()
	if ts.ensured {
		return nil
	}
	st, err := l.streams.Stream(ctx, jetstream.StreamConfig{
		Name:        names.AuditStream(tenant),
		Description: "audit log of tenant " + tenant + ": hash-chained entries and signed checkpoints",
		Subjects:    []string{names.AuditEntry(tenant), names.AuditCheckpoint(tenant)},
		Retention:   jetstream.LimitsPolicy,
		MaxAge:      l.Retention(tenant),
		MaxMsgs:     -1,
		MaxBytes:    -1,
		Discard:     jetstream.DiscardOld,
		Storage:     jetstream.FileStorage,
		// Entries are removed only by retention: JetStream refuses to delete
		// or purge messages, and no update can switch this off again.
		DenyDelete: true,
		DenyPurge:  true,
	})
	if err != nil {
		return ErrUnavailable.Wrap(fmt.Errorf("audit: ensure stream of %s: %w", tenant, err))
	}
	ts.st = st
	ts.ensured = true
	return nil
}

// stream returns the tenant's stream handle (ts.mu held).
func (l *Log) stream(ctx context.Context, tenant string, ts *tenantState) (jetstream.Stream, error) {
	if ts.st != nil {
		return ts.st, nil
	}
	st, err := l.js.Stream(ctx, names.AuditStream(tenant))
	if errors.Is(err, jetstream.ErrStreamNotFound) {
		return nil, ErrNotFound.New()
	}
	if err != nil {
		return nil, ErrUnavailable.Wrap(fmt.Errorf("audit: stream of %s: %w", tenant, err))
	}
	ts.st = st
	return st, nil
}

// Append records an event as the tenant's next entry and returns it once
// JetStream has stored it. The tenant's log must exist (EnsureTenant).
func (l *Log) Append(ctx context.Context, tenant string, ev Event) (Entry, error) {
	if err := checkTenant(tenant); err != nil {
		return Entry{}, err
	}
	e := Entry{
		Tenant:  tenant,
		Actor:   clean(ev.Actor, maxFieldLength),
		Action:  clean(ev.Action, maxFieldLength),
		Target:  clean(ev.Target, maxFieldLength),
		Source:  clean(ev.Source, maxFieldLength),
		Outcome: clean(ev.Outcome, maxFieldLength),
	}
	if e.Actor == "" || e.Action == "" || e.Outcome == "" {
		return Entry{}, ErrEventInvalid.New()
	}
	detail, dropped := cleanDetail(ev.Detail)
	e.Detail = detail
	if dropped {
		l.log.Warn("audit detail cut to its limits", "tenant_id", tenant)
	}
	ts, err := l.state(tenant)
	if err != nil {
		return Entry{}, err
	}
	ts.mu.Lock()
	defer ts.mu.Unlock()
	if err := l.appendLocked(ctx, tenant, ts, &e); err != nil {
		if ErrNotFound.Is(err) && !ts.ensured {
			l.forget(tenant, ts) // remember no state for tenants without a log
		}
		return Entry{}, err
	}
	ts.dirty = true
	if e.Seq >= ts.signedSeq+uint64(l.cfg.CheckpointEvery) {
		// The entry is stored: a failed checkpoint is logged, and the loop
		// tries again.
		if _, err := l.checkpointLocked(ctx, tenant, ts); err != nil {
			l.log.Error("audit checkpoint failed", "tenant_id", tenant, "error", err)
		}
	}
	return e, nil
}

// appendLocked chains e to the head and publishes it, re-reading the head
// when another writer got there first (ts.mu held).
func (l *Log) appendLocked(ctx context.Context, tenant string, ts *tenantState, e *Entry) error {
	st, err := l.stream(ctx, tenant, ts)
	if err != nil {
		return err
	}
	if !ts.known {
		if err := l.loadHead(ctx, tenant, ts, st); err != nil {
			return err
		}
	}
	subject := names.AuditEntry(tenant)
	for attempt := 1; ; attempt++ {
		e.Seq = ts.seq + 1
		e.Prev = ts.hash
		e.Time = time.Now().UTC().Round(0)
		e.Hash = hashEntry(e)
		msg := &nats.Msg{Subject: subject, Data: appendEntryJSON(nil, e)}
		ack, err := l.js.PublishMsg(ctx, msg,
			jetstream.WithExpectStream(names.AuditStream(tenant)),
			jetstream.WithExpectLastSequencePerSubject(ts.streamSeq))
		if err == nil {
			ts.seq, ts.hash, ts.streamSeq = e.Seq, e.Hash, ack.Sequence
			l.log.Debug("audit entry appended", "tenant_id", tenant, "seq", e.Seq)
			return nil
		}
		if errors.Is(err, jetstream.ErrNoStreamResponse) || errors.Is(err, nats.ErrNoResponders) {
			ts.st, ts.known, ts.ensured = nil, false, false
			return ErrNotFound.Wrap(err)
		}
		// Another writer appended first, or the outcome is unknown (a
		// timeout): read the head again. If it is this very entry, the
		// publish did land.
		conflict := wrongLastSequence(err)
		if herr := l.loadHead(ctx, tenant, ts, st); herr != nil {
			ts.known = false
			if errChainBroken.Is(herr) {
				return herr
			}
			return ErrUnavailable.Wrap(fmt.Errorf("audit: append to %s: %w (then: %w)", tenant, err, herr))
		}
		if ts.hash == e.Hash && ts.seq == e.Seq {
			return nil
		}
		if !conflict {
			return ErrUnavailable.Wrap(fmt.Errorf("audit: append to %s: %w", tenant, err))
		}
		if attempt == appendAttempts {
			return ErrUnavailable.Wrap(fmt.Errorf("audit: append to %s: still contended after %d attempts", tenant, attempt))
		}
		if attempt > 2 {
			wait := time.Duration(rand.Int64N(int64(attempt) * int64(time.Millisecond)))
			select {
			case <-time.After(wait):
			case <-ctx.Done():
				return ErrUnavailable.Wrap(ctx.Err())
			}
		}
	}
}

// wrongLastSequence reports whether a publish lost an optimistic-concurrency
// race (10164 is how replicated streams report it).
func wrongLastSequence(err error) bool {
	var apiErr *jetstream.APIError
	if !errors.As(err, &apiErr) {
		return false
	}
	return apiErr.ErrorCode == jetstream.JSErrCodeStreamWrongLastSequence ||
		apiErr.ErrorCode == jetstream.JSErrCodeStreamWrongLastSequenceConstant
}

// loadHead reads the tenant's last entry and its last checkpoint into ts
// (ts.mu held). A head whose hash does not match its content is still
// chained to (verification names it); a head that cannot be read at all
// stops appends.
func (l *Log) loadHead(ctx context.Context, tenant string, ts *tenantState, st jetstream.Stream) error {
	m, err := st.GetLastMsgForSubject(ctx, names.AuditEntry(tenant))
	switch {
	case errors.Is(err, jetstream.ErrMsgNotFound):
		ts.seq, ts.hash, ts.streamSeq = 0, zeroHash, 0
	case err != nil:
		return ErrUnavailable.Wrap(fmt.Errorf("audit: read head of %s: %w", tenant, err))
	default:
		var e Entry
		if err := decodeJSON(m.Data, &e); err != nil || e.Seq == 0 || len(e.Hash) != 64 {
			l.log.Error("audit head entry cannot be read", "tenant_id", tenant, "stream_seq", m.Sequence)
			return errChainBroken.New()
		}
		if e.Tenant != tenant || hashEntry(&e) != e.Hash {
			l.log.Error("audit head entry does not match its hash", "tenant_id", tenant, "seq", e.Seq)
		}
		ts.seq, ts.hash, ts.streamSeq = e.Seq, e.Hash, m.Sequence
	}
	if !ts.known {
		c, err := lastCheckpoint(ctx, st, tenant)
		if err != nil {
			return err
		}
		if c != nil && c.Seq <= ts.seq && checkSignature(c, l.keys.Load().known) == "" {
			ts.signedSeq = c.Seq
		}
	}
	ts.known = true
	return nil
}

// lastCheckpoint returns the last stored checkpoint, nil if none.
func lastCheckpoint(ctx context.Context, st jetstream.Stream, tenant string) (*Checkpoint, error) {
	m, err := st.GetLastMsgForSubject(ctx, names.AuditCheckpoint(tenant))
	if errors.Is(err, jetstream.ErrMsgNotFound) {
		return nil, nil
	}
	if err != nil {
		return nil, ErrUnavailable.Wrap(fmt.Errorf("audit: read last checkpoint of %s: %w", tenant, err))
	}
	var c Checkpoint
	if err := decodeJSON(m.Data, &c); err != nil {
		return nil, nil // not ours to trust; verification reports it
	}
	return &c, nil
}

// Checkpoint signs the tenant's chain now if it has entries this Log has
// not seen signed, and returns the stored checkpoint; it returns nil and no
// error when there is nothing to sign.
//
// A Log signs the head it appended itself (or, when it has appended nothing
// to the tenant since it opened, the head it reads): since the head's hash
// commits to every earlier entry, a later rewrite of any of them, even with
// recomputed hashes, no longer matches the checkpoint.
func (l *Log) Checkpoint(ctx context.Context, tenant string) (*Checkpoint, error) {
	if err := checkTenant(tenant); err != nil {
		return nil, err
	}
	ts, err := l.state(tenant)
	if err != nil {
		return nil, err
	}
	ts.mu.Lock()
	defer ts.mu.Unlock()
	return l.checkpointLocked(ctx, tenant, ts)
}

// checkpointLocked signs and stores a checkpoint over the head (ts.mu held).
func (l *Log) checkpointLocked(ctx context.Context, tenant string, ts *tenantState) (*Checkpoint, error) {
	st, err := l.stream(ctx, tenant, ts)
	if err != nil {
		return nil, err
	}
	if !ts.known {
		if err := l.loadHead(ctx, tenant, ts, st); err != nil {
			return nil, err
		}
	}
	if ts.seq == 0 || ts.seq <= ts.signedSeq {
		ts.dirty = false
		return nil, nil
	}
	c := &Checkpoint{Tenant: tenant, Seq: ts.seq, Hash: ts.hash, Time: time.Now().UTC().Round(0)}
	signCheckpoint(c, l.keys.Load().signer)
	if _, err := l.js.PublishMsg(ctx, &nats.Msg{Subject: names.AuditCheckpoint(tenant), Data: appendCheckpointJSON(nil, c)},
		jetstream.WithExpectStream(names.AuditStream(tenant))); err != nil {
		return nil, ErrUnavailable.Wrap(fmt.Errorf("audit: store checkpoint of %s: %w", tenant, err))
	}
	ts.signedSeq = c.Seq
	ts.dirty = false
	l.log.Debug("audit checkpoint signed", "tenant_id", tenant, "seq", c.Seq)
	return c, nil
}

// loop signs a checkpoint every CheckpointInterval for each tenant with
// unsigned entries of this process.
func (l *Log) loop() {
	defer close(l.loopDone)
	t := time.NewTicker(l.cfg.CheckpointInterval)
	defer t.Stop()
	for {
		select {
		case <-l.stop:
			return
		case <-t.C:
			ctx, cancel := context.WithTimeout(context.Background(), max(l.cfg.CheckpointInterval, 10*time.Second))
			l.checkpointDirty(ctx)
			cancel()
		}
	}
}

// checkpointDirty checkpoints every tenant this process appended to since
// it last signed it.
func (l *Log) checkpointDirty(ctx context.Context) {
	l.mu.Lock()
	all := make(map[string]*tenantState, len(l.tenants))
	for tenant, ts := range l.tenants {
		all[tenant] = ts
	}
	l.mu.Unlock()
	for tenant, ts := range all {
		ts.mu.Lock()
		if ts.dirty {
			if _, err := l.checkpointLocked(ctx, tenant, ts); err != nil {
				l.log.Error("audit checkpoint failed", "tenant_id", tenant, "error", err)
			}
		}
		ts.mu.Unlock()
	}
}

// Package store keeps each tenant's messages and rejected messages in its
// own JetStream streams, sealed under the tenant's data key. A message is
// stored once per content-derived id (the stream's de-duplication window
// catches MQTT redeliveries and replays), and Append returns only after
// JetStream acknowledged every write: the ingest acknowledges a gateway only
// then. AppendAsync hands the writes to JetStream and returns a Waiter, so
// that a caller can have several uploads in flight and still acknowledge
// each only once its Waiter says it is stored.
package store

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/iotransit/iotransit/internal/backbone/names"
	"github.com/iotransit/iotransit/internal/kms"
)

// Sealer encrypts payloads under a tenant's data key (kms.Keyring).
type Sealer interface {
	Seal(ctx context.Context, tenant string, plaintext, aad []byte) ([]byte, error)
	// AppendSeal is Seal appending to dst, with aad as a string.
	AppendSeal(ctx context.Context, dst []byte, tenant string, plaintext []byte, aad string) ([]byte, error)
	Open(ctx context.Context, tenant string, sealed, aad []byte) ([]byte, error)
}

// StreamProvider creates or updates streams (backbone.Backbone).
type StreamProvider interface {
	Stream(ctx context.Context, cfg jetstream.StreamConfig) (jetstream.Stream, error)
}

// Config sets retention and de-duplication.
type Config struct {
	// Retention is how long messages are kept (default 7 days).
	Retention time.Duration
	// RejectedRetention is how long rejected messages are kept (default 30 days).
	RejectedRetention time.Duration
	// MaxBytes bounds each tenant's message stream; the oldest go first (0: unlimited).
	MaxBytes int64
	// StoredBytes is each tenant's stored-bytes quota, unless its policy
	// sets one: its message stream, and its rejected stream, each hold at
	// most this many bytes, and when one is full new writes to it are
	// refused (Full) while what it holds stays until retention ages it
	// out (0: none). It wins over MaxBytes.
	StoredBytes int64
	// DedupeWindow is how long a content id is remembered (default 2
	// minutes, as JetStream's own). JetStream keeps every id of the window
	// in memory, about 130 bytes of heap each, so the window bounds memory
	// by rate × window: at 20,000 messages/s one hour would hold 72 million
	// ids (9 GB), two minutes 2.4 million (310 MB). A resend comes after a
	// lost PUBACK, when the gateway reconnects (the agent's backoff tops at
	// one minute).
	DedupeWindow time.Duration
	// GroupCommit gathers the concurrent appends to a stream into JetStream
	// atomic batches, each stored with a fixed number of fsyncs whatever
	// its size, for a server that fsyncs every write (backbone's
	// SyncAlways, --fsync always). Without it every record is its own
	// publish, which is cheaper when the server does not fsync each write.
	// It needs nats-server 2.12 or later (atomic batch publish), and 2.15
	// for the batch's writes to share their fsyncs.
	GroupCommit bool
}

// DefaultConfig returns the configuration that a zero Config means.
func DefaultConfig() Config {
	var c Config
	c.defaults()
	return c
}

func (c *Config) defaults() {
	if c.Retention == 0 {
		c.Retention = 7 * 24 * time.Hour
	}
	if c.RejectedRetention == 0 {
		c.RejectedRetention = 30 * 24 * time.Hour
	}
	if c.DedupeWindow == 0 {
		c.DedupeWindow = 2 * time.Minute
	}
}

// Store reads and writes tenants' message streams.
type Store struct {
	cfg     Config
	streams StreamProvider
	js      jetstream.JetStream
	keys    Sealer
	pub     *publisher

	// committers are the group committers by stream (Config.GroupCommit).
	commitMu   sync.Mutex
	committers map[string]*committer
	closed     bool
	batchSize  prometheus.Histogram
	fallbacks  prometheus.Counter

	// tenantLimits, when set, gives a tenant's own bounds of its streams
	// (SetTenantLimits).
	tenantLimits atomic.Pointer[func(tenant string) TenantLimits]

	// streamNames holds the tenants' message stream names (messageStream),
	// replaced whole under namesMu when a tenant is added.
	streamNames atomic.Pointer[map[string]string]
	namesMu     sync.Mutex
}

// New returns a store.
func New(cfg Config, streams StreamProvider, js jetstream.JetStream, keys Sealer) *Store {
	cfg.defaults()
	s := &Store{cfg: cfg, streams: streams, js: js, keys: keys, pub: newPublisher(js.Conn()),
		batchSize: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "iotransit_store_commit_batch_messages",
			Help:    "Under group commit (--fsync always): messages and rejections stored per commit: an atomic batch of concurrent appends (a fixed number of fsyncs whatever its size), or 1 for a message published on its own (one fsync).",
			Buckets: prometheus.ExponentialBuckets(1, 2, 11),
		}),
		fallbacks: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "iotransit_store_commit_fallbacks_total",
			Help: "Under group commit (--fsync always): atomic batches the server refused: one holding a resent message already stored is split in halves (committed, or published one by one when small), one refused for another reason (a timeout) is published one by one.",
		}),
	}
	s.streamNames.Store(&map[string]string{})
	return s
}

// Collectors returns the store's metrics, for a Prometheus registry.
func (s *Store) Collectors() []prometheus.Collector {
	return []prometheus.Collector{s.batchSize, s.fallbacks}
}

// Close fails the appends still queued for a group commit and those in
// flight, whether group-committed or published one by one (their Waiters
// report the failure, although some of their writes may be stored), and
// waits until the committers stopped; later appends fail with ErrClosed.
// It ends the store's subscription to JetStream's acknowledgements. Reads
// still work.
func (s *Store) Close() {
	s.commitMu.Lock()
	s.closed = true
	cs := make([]*committer, 0, len(s.committers))
	for _, c := range s.committers {
		cs = append(cs, c)
	}
	s.commitMu.Unlock()
	for _, c := range cs {
		c.close()
	}
	s.pub.close()
}

// EnsureTenant creates or updates the tenant's streams with their limits
// (Limits). It is idempotent.
func (s *Store) EnsureTenant(ctx context.Context, tenant string) error {
	l := s.Limits(tenant)
	if _, err := s.streams.Stream(ctx, jetstream.StreamConfig{
		Name:        names.MessageStream(tenant),
		Description: "accepted Thingsee messages of tenant " + tenant,
		Subjects:    []string{names.Messages(tenant), names.Redriven(tenant)},
		MaxAge:      l.Messages.MaxAge,
		MaxBytes:    orUnlimited(l.Messages.MaxBytes),
		Discard:     l.Messages.discard(),
		Duplicates:  s.cfg.DedupeWindow,
		AllowDirect: true,
		// Group commit publishes atomic batches.
		AllowAtomicPublish: s.cfg.GroupCommit,
	}); err != nil {
		return err
	}
	_, err := s.streams.Stream(ctx, jetstream.StreamConfig{
		Name:               names.RejectedStream(tenant),
		Description:        "rejected messages of tenant " + tenant + ", with reasons",
		Subjects:           []string{names.RejectedMessages(tenant)},
		MaxAge:             l.Rejected.MaxAge,
		MaxBytes:           orUnlimited(l.Rejected.MaxBytes),
		Discard:            l.Rejected.discard(),
		Duplicates:         s.cfg.DedupeWindow,
		AllowDirect:        true,
		AllowAtomicPublish: s.cfg.GroupCommit,
	})
	return err
}

// Headers of a stored message (metadata only; the body is sealed).
const (
	// hdrContentID carries the content id of a re-driven message, whose
	// Nats-Msg-Id must differ from the original's (de-duplication).
	hdrContentID = "Iot-Content-Id"
	// hdrRedriven is when a dead letter was re-driven (its age for the
	// integration's max age starts again then).
	hdrRedriven = "Iot-Redriven"
	hdrGateway  = "Iot-Gateway"
	hdrReceived = "Iot-Received"
	hdrTuid     = "Iot-Tuid"
	hdrTsmID    = "Iot-Tsm-Id"
)

// Record is an accepted message to store.
type Record struct {
	// ID is the content-derived id (de-duplication key).
	ID         string
	Gateway    string
	Tuid       string
	TsmID      int
	ReceivedAt time.Time
	// Body is the Thingsee message as forwarded: as accepted plus the
	// cloud-added fields.
	Body []byte
}

// AppendResult tells what Append did.
type AppendResult struct {
	Stored     int // newly stored
	Duplicates int // already stored (same content id within the window)
}

// Append stores records and returns once JetStream acknowledged every one.
// Any error means some may not be stored: the caller must not acknowledge,
// and a resend is stored once. It is AppendAsync and Wait.
func (s *Store) Append(ctx context.Context, tenant string, recs []Record) (AppendResult, error) {
	w, err := s.AppendAsync(ctx, tenant, recs)
	if err != nil {
		return AppendResult{}, err
	}
	return w.Wait(ctx)
}

// Waiter is a write in flight (AppendAsync, AppendRejectedAsync): what
// JetStream has yet to acknowledge. A Waiter belongs to one goroutine at a
// time.
type Waiter interface {
	// Ready reports, without blocking, whether every write is acknowledged
	// or one failed: Wait would return at once.
	Ready() bool
	// Wait returns once JetStream acknowledged every write (the counts of
	// new and duplicate ones), or with the first failure, or when ctx
	// ends. Any error means some may not be stored.
	Wait(ctx context.Context) (AppendResult, error)
}

// AppendAsync seals the records and hands them to JetStream without waiting
// for its acknowledgements: the returned Waiter waits. An error means
// nothing may be counted on (some records may be written): the caller must
// not acknowledge. The publishes of one call, and of successive calls of
// one goroutine, reach the stream in order. Under Config.GroupCommit they
// join the stream's next atomic batch. It keeps neither recs nor their
// bodies once it returned (each body is sealed into a value of its own):
// the caller may reuse them.
func (s *Store) AppendAsync(ctx context.Context, tenant string, recs []Record) (Waiter, error) {
	stream := s.messageStream(tenant)
	w, err := s.writer(stream, len(recs))
	if err != nil {
		return nil, err
	}
	// Published one by one, each sealed value is copied to the
	// connection's buffer before the next is sealed: one buffer of the
	// pool holds them in turn, put back when the call returns. Under group
	// commit they wait for the commit: each has its own.
	var scratch *[]byte
	if w.c == nil {
		scratch = sealBufs.Get().(*[]byte)
		defer func() {
			if cap(*scratch) <= maxSealBuf {
				sealBufs.Put(scratch)
			}
		}()
	}
	var buf [128]byte
	for _, r := range recs {
		var dst []byte
		if scratch != nil {
			dst = (*scratch)[:0]
		}
		sealed, err := s.keys.AppendSeal(ctx, dst, tenant, r.Body, r.ID)
		if err != nil {
			return nil, fmt.Errorf("store: seal: %w", err)
		}
		if scratch != nil {
			*scratch = sealed[:0]
		}
		// The subject, the two header values it does not hold as they
		// are and the reply subject, made with one allocation: the tsmId
		// header is the subject's last token, the received time follows
		// the subject, the reply (when published at once) follows that.
		b := names.AppendMessage(buf[:0], tenant, r.Gateway, r.Tuid, r.TsmID)
		end := len(b)
		b = strconv.AppendInt(b, r.ReceivedAt.UnixNano(), 10)
		received := len(b)
		var id uint64
		if w.c == nil {
			b, id = s.pub.appendReply(b)
		}
		text := string(b)
		subject := text[:end]
		err = w.add(subject, text[received:], id, sealed,
			jetstream.MsgIDHeader, r.ID,
			jetstream.ExpectedStreamHeader, stream,
			hdrGateway, r.Gateway,
			hdrTuid, r.Tuid,
			hdrTsmID, subject[strings.LastIndexByte(subject, '.')+1:],
			hdrReceived, text[end:received])
		if err != nil {
			return nil, fmt.Errorf("store: publish: %w", err)
		}
	}
	return w.done(), nil
}

// sealBufs recycles the buffers that AppendAsync seals records into when
// it publishes them at once (see there); maxSealBuf bounds those put back.
var sealBufs = sync.Pool{New: func() any { return new([]byte) }}

const maxSealBuf = 64 << 10

// messageStream is names.MessageStream(tenant), made once per tenant.
func (s *Store) messageStream(tenant string) string {
	streams := s.streamNames.Load()
	if name, ok := (*streams)[tenant]; ok {
		return name
	}
	name := names.MessageStream(tenant)
	s.namesMu.Lock()
	defer s.namesMu.Unlock()
	streams = s.streamNames.Load()
	next := make(map[string]string, len(*streams)+1)
	maps.Copy(next, *streams)
	next[tenant] = name
	s.streamNames.Store(&next)
	return name
}

// Rejected is a message (or a whole payload) that failed validation, kept
// with its reason.
type Rejected struct {
	Gateway    string    `json:"gateway"`
	ReceivedAt time.Time `json:"receivedAt"`
	Index      int       `json:"index"`
	Code       string    `json:"code"`
	Field      string    `json:"field,omitempty"`
	Reason     string    `json:"reason"`
	TsmID      int       `json:"tsmId,omitempty"`
	Tuid       string    `json:"tsmTuid,omitempty"`
	Raw        []byte    `json:"raw"`
}

// AppendRejected stores rejected messages and returns once all are persisted.
func (s *Store) AppendRejected(ctx context.Context, tenant string, recs []Rejected) error {
	w, err := s.AppendRejectedAsync(ctx, tenant, recs)
	if err != nil {
		return err
	}
	_, err = w.Wait(ctx)
	return err
}

// AppendRejectedAsync is AppendRejected without the wait: the returned
// Waiter waits (its counts are those of the rejections).
func (s *Store) AppendRejectedAsync(ctx context.Context, tenant string, recs []Rejected) (Waiter, error) {
	stream := names.RejectedStream(tenant)
	w, err := s.writer(stream, len(recs))
	if err != nil {
		return nil, err
	}
	for _, r := range recs {
		body, err := json.Marshal(r)
		if err != nil {
			return nil, fmt.Errorf("store: encode rejected: %w", err)
		}
		sealed, err := s.keys.Seal(ctx, tenant, body, []byte(rejectedAAD))
		if err != nil {
			return nil, fmt.Errorf("store: seal: %w", err)
		}
		err = w.add(names.Rejected(tenant, r.Gateway), "", 0, sealed,
			jetstream.MsgIDHeader, r.contentID(),
			jetstream.ExpectedStreamHeader, stream,
			hdrGateway, r.Gateway,
			hdrReceived, strconv.FormatInt(r.ReceivedAt.UnixNano(), 10))
		if err != nil {
			return nil, fmt.Errorf("store: publish rejected: %w", err)
		}
	}
	return w.done(), nil
}

const rejectedAAD = "store/rejected"

// contentID identifies a rejection by what was rejected, so that a resent
// publish stores its rejections once.
func (r Rejected) contentID() string {
	h := sha256.New()
	fmt.Fprintf(h, "%s\x00%d\x00%s\x00", r.Gateway, r.Index, r.Code)
	h.Write(r.Raw)
	return "rej-" + hex.EncodeToString(h.Sum(nil)[:16])
}

// Message is a stored message as read back.
type Message struct {
	ID         string    `json:"id"`
	Seq        uint64    `json:"seq"`
	ReceivedAt time.Time `json:"receivedAt"`
	// StoredAt is when JetStream stored it (the clock of query time
	// ranges): ReceivedAt plus the persist latency.
	StoredAt time.Time       `json:"storedAt"`
	Gateway  string          `json:"gateway"`
	Message  json.RawMessage `json:"message"`
	// Tuid and TsmID come from the headers (for routing; the message has
	// them too).
	Tuid  string `json:"-"`
	TsmID int    `json:"-"`
	// RedrivenAt is when a dead letter was re-driven (zero otherwise).
	RedrivenAt time.Time `json:"-"`
}

// StoredRejected is a rejected message as read back.
type StoredRejected struct {
	Seq uint64 `json:"seq"`
	// StoredAt is when JetStream stored it (the clock of query time ranges).
	StoredAt time.Time `json:"storedAt"`
	Rejected
}

// Messages returns up to limit (at most MaxLimit) of the tenant's newest
// messages, newest first.
func (s *Store) Messages(ctx context.Context, tenant string, limit int) ([]Message, error) {
	if limit <= 0 {
		return nil, s.exists(ctx, names.MessageStream(tenant))
	}
	p, err := s.QueryMessages(ctx, tenant, Query{Limit: min(limit, MaxLimit)})
	return p.Items, err
}

// RejectedMessages returns up to limit (at most MaxLimit) of the tenant's
// newest rejected messages, newest first.
func (s *Store) RejectedMessages(ctx context.Context, tenant string, limit int) ([]StoredRejected, error) {
	if limit <= 0 {
		return nil, s.exists(ctx, names.RejectedStream(tenant))
	}
	p, err := s.QueryRejected(ctx, tenant, RejectedQuery{Limit: min(limit, MaxLimit)})
	return p.Items, err
}

func receivedAt(h nats.Header) time.Time {
	n, err := strconv.ParseInt(h.Get(hdrReceived), 10, 64)
	if err != nil {
		return time.Time{}
	}
	return time.Unix(0, n).UTC()
}

// ErrNoStream is returned when a tenant has no streams.
var ErrNoStream = errors.New("store: tenant has no stream")

func (s *Store) exists(ctx context.Context, stream string) error {
	_, err := s.js.Stream(ctx, stream)
	if errors.Is(err, jetstream.ErrStreamNotFound) {
		return ErrNoStream
	}
	if err != nil {
		return fmt.Errorf("store: stream %s: %w", stream, err)
	}
	return nil
}

// Follow calls fn with each message stored from now on, until ctx ends
// (accepted messages only, not the copies re-driven to an integration).
func (s *Store) Follow(ctx context.Context, tenant string, fn func(Message)) error {
	c, err := s.js.OrderedConsumer(ctx, names.MessageStream(tenant), jetstream.OrderedConsumerConfig{
		FilterSubjects: []string{names.Messages(tenant)},
		DeliverPolicy:  jetstream.DeliverNewPolicy,
	})
	if err != nil {
		return fmt.Errorf("store: follow %s: %w", tenant, err)
	}
	cc, err := c.Consume(func(m jetstream.Msg) {
		h := m.Headers()
		id := h.Get(jetstream.MsgIDHeader)
		body, err := s.keys.Open(ctx, tenant, m.Data(), []byte(id))
		if err != nil {
			return
		}
		var seq uint64
		var stored time.Time
		if md, err := m.Metadata(); err == nil {
			seq, stored = md.Sequence.Stream, md.Timestamp.UTC()
		}
		fn(Message{ID: id, Seq: seq, ReceivedAt: receivedAt(h), StoredAt: stored, Gateway: h.Get(hdrGateway), Message: body})
	})
	if err != nil {
		return fmt.Errorf("store: follow %s: %w", tenant, err)
	}
	<-ctx.Done()
	cc.Stop()
	return nil
}

// ContentID returns the content id of a stored message from its headers.
func ContentID(h nats.Header) string {
	if id := h.Get(hdrContentID); id != "" {
		return id
	}
	return h.Get(jetstream.MsgIDHeader)
}

// Decode opens a message of the tenant's message stream, as read by a
// consumer (sequence, store time, headers, sealed data).
func (s *Store) Decode(ctx context.Context, tenant string, seq uint64, stored time.Time, h nats.Header, data []byte) (Message, error) {
	id := ContentID(h)
	body, err := s.keys.Open(ctx, tenant, data, []byte(id))
	if errors.Is(err, kms.ErrOpen) {
		return Message{}, fmt.Errorf("store: open message %d: %w: %w", seq, ErrUnreadable, err)
	}
	if err != nil { // the data key could not be read: try again later
		return Message{}, fmt.Errorf("store: open message %d: %w", seq, err)
	}
	tsmID, _ := strconv.Atoi(h.Get(hdrTsmID))
	m := Message{
		ID: id, Seq: seq, ReceivedAt: receivedAt(h), StoredAt: stored.UTC(),
		Gateway: h.Get(hdrGateway), Tuid: h.Get(hdrTuid), TsmID: tsmID, Message: body,
	}
	if n, err := strconv.ParseInt(h.Get(hdrRedriven), 10, 64); err == nil {
		m.RedrivenAt = time.Unix(0, n).UTC()
	}
	return m, nil
}

// ErrUnreadable marks a stored message that can never be opened (damaged, or
// sealed under another key): unlike a failure to reach the key store, trying
// again does not help.
var ErrUnreadable = errors.New("store: message cannot be opened")

// Redrive puts a message (headers and sealed data as stored) back into the
// tenant's message stream for one integration only.
func (s *Store) Redrive(ctx context.Context, tenant, integration string, h nats.Header, data []byte) error {
	id := ContentID(h)
	tsmID, err := strconv.Atoi(h.Get(hdrTsmID))
	if err != nil {
		return fmt.Errorf("store: redrive: bad tsmId header")
	}
	gw, tuid := h.Get(hdrGateway), h.Get(hdrTuid)
	if !names.ValidToken(gw) || !names.ValidToken(tuid) {
		return fmt.Errorf("store: redrive: bad gateway or tsmTuid header")
	}
	// Only that integration's consumer reads re-driven messages.
	m := nats.NewMsg(names.RedriveSubject(tenant, integration, gw, tuid, tsmID))
	m.Data = data
	for _, k := range []string{hdrGateway, hdrTuid, hdrTsmID, hdrReceived} {
		m.Header.Set(k, h.Get(k))
	}
	m.Header.Set(hdrRedriven, strconv.FormatInt(time.Now().UnixNano(), 10))
	m.Header.Set(hdrContentID, id)
	m.Header.Set(jetstream.MsgIDHeader, "rd-"+integration+"-"+id+"-"+strconv.FormatInt(time.Now().UnixNano(), 36))
	if _, err := s.js.PublishMsg(ctx, m, jetstream.WithExpectStream(names.MessageStream(tenant))); err != nil {
		return fmt.Errorf("store: redrive: %w", err)
	}
	return nil
}

// Tail calls fn with batches of the tenant's messages on subjects (nil: all
// messages), starting at stream sequence start (0: only messages stored from
// now on), in stream order, until ctx ends or fn or size fails. Before each
// batch it asks size how many messages the batch may hold (size may wait:
// the API paces a stream by its read budget); a batch holds what arrived
// within maxWait, at most that many, each read and opened.
func (s *Store) Tail(ctx context.Context, tenant string, start uint64, subjects []string, size func(context.Context) (int, error), maxWait time.Duration, fn func([]Message) error) error {
	cfg := jetstream.OrderedConsumerConfig{FilterSubjects: subjects, DeliverPolicy: jetstream.DeliverNewPolicy}
	if len(subjects) == 0 {
		cfg.FilterSubjects = []string{names.Messages(tenant)}
	}
	if start > 0 {
		cfg.DeliverPolicy, cfg.OptStartSeq = jetstream.DeliverByStartSequencePolicy, start
	}
	c, err := s.js.OrderedConsumer(ctx, names.MessageStream(tenant), cfg)
	if err != nil {
		return fmt.Errorf("store: tail %s: %w", tenant, err)
	}
	for ctx.Err() == nil {
		n, err := size(ctx)
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			return err
		}
		fb, err := c.Fetch(max(n, 1), jetstream.FetchMaxWait(maxWait))
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			return fmt.Errorf("store: tail %s: %w", tenant, err)
		}
		var batch []Message
		for m := range fb.Messages() {
			md, err := m.Metadata()
			if err != nil {
				return err
			}
			msg, err := s.Decode(ctx, tenant, md.Sequence.Stream, md.Timestamp, m.Headers(), m.Data())
			if err != nil {
				return err
			}
			batch = append(batch, msg)
		}
		if len(batch) > 0 {
			if err := fn(batch); err != nil {
				return err
			}
		}
	}
	return nil
}

// FindByKey returns the stream sequence of the newest message of a sensor
// with tsmId and the exact tsmTs text (Thingsee's de-duplication key
// tsmTuid:tsmId:tsmTs), looking at most at the sensor's newest 1000
// messages of that tsmId, and within budget reads (0: no bound but that).
// ok is false when it is not there (or not within the budget); cost is
// what the search cost, in reads (Page.Cost).
func (s *Store) FindByKey(ctx context.Context, tenant, tuid string, tsmID int, tsmTs string, budget int) (seq uint64, ok bool, cost int, err error) {
	q := Query{Tuid: tuid, TsmID: tsmID, Limit: 100}
	for page := 0; page < 10; page++ {
		if budget > 0 {
			if q.Budget = budget - cost; q.Budget <= 0 {
				break
			}
		}
		pg, err := s.QueryMessages(ctx, tenant, q)
		cost += pg.Cost()
		if err != nil {
			return 0, false, cost, err
		}
		for _, m := range pg.Items {
			var v struct {
				TsmTs json.Number `json:"tsmTs"`
			}
			dec := json.NewDecoder(bytes.NewReader(m.Message))
			dec.UseNumber()
			if dec.Decode(&v) == nil && string(v.TsmTs) == tsmTs {
				return m.Seq, true, cost, nil
			}
		}
		if pg.Next == "" {
			break
		}
		q.Cursor = pg.Next
	}
	return 0, false, cost, nil
}

// Bounds returns the first and last sequence of the tenant's message stream
// (first > last when it is empty).
func (s *Store) Bounds(ctx context.Context, tenant string) (first, last uint64, err error) {
	st, err := s.js.Stream(ctx, names.MessageStream(tenant))
	if err != nil {
		return 0, 0, fmt.Errorf("store: stream: %w", err)
	}
	info, err := st.Info(ctx)
	if err != nil {
		return 0, 0, fmt.Errorf("store: stream info: %w", err)
	}
	return info.State.FirstSeq, info.State.LastSeq, nil
}

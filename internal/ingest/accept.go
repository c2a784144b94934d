package ingest

import (
	"context"
	"fmt"
	"log/slog"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"golang.org/x/sync/semaphore"
	"golang.org/x/time/rate"

	"github.com/iotransit/iotransit/internal/fault"
	"github.com/iotransit/iotransit/internal/gwproto"
	"github.com/iotransit/iotransit/internal/store"
	"github.com/iotransit/iotransit/internal/thingsee"
)

// This file is the accept core: what happens to a gateway's upload once a
// front end has authenticated the gateway and authorized the publish. It
// knows no MQTT broker (a test keeps it free of mochi's imports); hook.go
// translates between mochi and it.
//
// Persist-before-ack (DESIGN §3, §5, §13). Accept returns only after
// JetStream acknowledged every write of the payload: its valid messages to
// the tenant's message stream, its invalid ones (with code and reason) to
// the rejected stream. Only then may a front end acknowledge the publish.
// Accept is Begin and Wait: Begin validates, seals and hands the writes to
// JetStream without waiting, so that a front end may read the next upload
// of a connection while earlier ones are in flight (pipelining); it then
// acknowledges each upload once its Pending's Wait says so, in order.
// When any write failed, Accept says PersistFailed and the front end must
// not acknowledge: over MQTT it closes the connection (MQTT 3.1.1's PUBACK
// has no reason code, and mochi acknowledges a plain error, DESIGN §13), so
// the gateway resends, and the content-derived ids store the resend once.

// errPayloadTooLarge is the rejection of a payload over Config.MaxPayload:
// the whole payload is refused (stored as one rejected entry of its first
// KiB), before any validation.
var errPayloadTooLarge = fault.Define("ingest.payload_too_large", fault.TooLarge,
	"the publish payload is larger than the ingest accepts")

// tooLargeKept is how much of a too-large payload the rejected stream keeps.
const tooLargeKept = 1024

// Store is where accepted and rejected messages go (store.Store). Each call
// hands its writes to JetStream and returns at once; the Waiter waits for
// their acknowledgements. It keeps neither recs nor their bodies once it
// returned: the core reuses the bodies' buffer.
type Store interface {
	AppendAsync(ctx context.Context, tenant string, recs []store.Record) (store.Waiter, error)
	AppendRejectedAsync(ctx context.Context, tenant string, recs []store.Rejected) (store.Waiter, error)
}

// Status is what became of one upload, in terms no protocol owns; a front
// end maps each to its answer (hook.go has the MQTT table).
type Status int

// Statuses of an upload.
const (
	// AllStored means every message of the payload was valid and is stored.
	AllStored Status = iota + 1
	// SomeRejected means the valid messages are stored and the invalid ones
	// are stored as rejected; Outcome.Report names them.
	SomeRejected
	// AllRejected means nothing was valid: every message (or the payload)
	// is stored as rejected; Outcome.Report names them. Resending cannot
	// fix it.
	AllRejected
	// TooLarge means the payload is larger than Config.MaxPayload: it is
	// stored as one rejection (ingest.payload_too_large) and reported.
	TooLarge
	// RateLimited means the gateway is over its message rate: nothing is
	// stored or reported; the gateway may send it again later.
	RateLimited
	// PersistFailed means JetStream did not acknowledge every write: the
	// upload must not be acknowledged, so that the gateway resends it.
	PersistFailed
	// QuotaExceeded means a stream of the tenant holds its stored-bytes
	// quota (store.Full): the upload is not acknowledged (some of its
	// messages may be stored; a resend stores them once), and the gateway
	// may send it again once retention has made room.
	QuotaExceeded
)

var statusNames = map[Status]string{
	AllStored: "all_stored", SomeRejected: "some_rejected", AllRejected: "all_rejected",
	TooLarge: "too_large", RateLimited: "rate_limited", PersistFailed: "persist_failed",
	QuotaExceeded: "quota_exceeded",
}

// String returns the snake_case name of the status.
func (s Status) String() string {
	if n, ok := statusNames[s]; ok {
		return n
	}
	return fmt.Sprintf("status(%d)", int(s))
}

// Outcome is what Accept did with one upload.
type Outcome struct {
	// Status is what became of the upload.
	Status Status
	// Accepted is how many messages were valid; Stored of them are new and
	// Duplicates were stored before (a resend within the de-duplication
	// window). All three are 0 unless the status is AllStored or
	// SomeRejected.
	Accepted, Stored, Duplicates int
	// Rejected is how many rejections went to the rejected stream (0 for
	// RateLimited and PersistFailed).
	Rejected int
	// Report is what the gateway is told of its rejections, nil when there
	// are none.
	Report *Report
	// Err is why the upload was not persisted (PersistFailed only). It is
	// for logs, never for the gateway.
	Err error
	// MsgRate is the gateway's message rate, per second, that the upload
	// went over (RateLimited only): the node's, or its tenant's policy's.
	MsgRate float64
}

// Report is what a gateway learns of an upload's rejected messages (over
// MQTT, on v1/gw/{serial}/down/errors): the gateway contract's type.
type Report = gwproto.Report

// ReportedRejection is one rejected message of a Report.
type ReportedRejection = gwproto.ReportedRejection

// maxReported bounds a report's size: reports wait in the gateway's
// session until it acknowledges them.
const maxReported = 50

// Core is the ingest's broker-independent accept core: validation
// (internal/thingsee), the payload size and per-gateway message rate limits,
// persistence through the store and the rejection report. It is safe for
// concurrent use by many connections.
type Core struct {
	cfg     Config
	dir     Lookup
	st      Store
	m       *metrics
	log     *slog.Logger
	lenient *thingsee.Validator
	strict  *thingsee.Validator
	now     func() time.Time

	// inFlight bounds the writes in flight across every connection
	// (Config.MaxInFlight), below the JetStream client's bound on pending
	// async publishes, which fails publishes past it.
	inFlight *semaphore.Weighted
	// deadlines ends the uploads' persistence at Config.PersistTimeout
	// without a context of their own.
	deadlines deadlines

	// storedBytesRefused counts each tenant's uploads refused by its
	// stored-bytes quota (tenant -> *atomic.Uint64; policy.go).
	storedBytesRefused sync.Map

	mu       sync.Mutex
	limiters map[limiterKey]*limiterEntry
	swept    time.Time
}

// limiterKey names a gateway's rate limiter (a struct key: no string is
// built per upload to look it up).
type limiterKey struct{ tenant, serial string }

// limiterEntry is a gateway's message rate limiter, kept across its
// connections so that reconnecting does not grant a fresh burst.
type limiterEntry struct {
	l    *rate.Limiter
	seen time.Time
}

// NewCore returns the accept core. It registers the ingest's metrics with
// reg (nil: none); New builds one for its MQTT front end, and any other
// front end builds its own the same way.
func NewCore(cfg Config, dir Lookup, st Store, reg prometheus.Registerer, log *slog.Logger) (*Core, error) {
	cfg.defaults()
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	return &Core{
		cfg: cfg, dir: dir, st: st, m: newMetrics(reg), log: log.With("component", "ingest"),
		lenient:   thingsee.NewValidator(validatorOptions(cfg, false)),
		strict:    thingsee.NewValidator(validatorOptions(cfg, true)),
		now:       time.Now,
		inFlight:  semaphore.NewWeighted(int64(cfg.MaxInFlight)),
		deadlines: newDeadlines(cfg.PersistTimeout),
		limiters:  map[limiterKey]*limiterEntry{},
	}, nil
}

// Accept takes one upload of the authenticated gateway id: it checks the
// size, validates every message, applies the gateway's message rate, stores
// the valid messages and the rejections, and builds the report of the
// rejections. It returns only once every write is acknowledged (or has
// failed: PersistFailed), within Config.PersistTimeout. It is Begin and
// Wait.
func (c *Core) Accept(ctx context.Context, id Identity, payload []byte) Outcome {
	var p Pending
	c.begin(&p, ctx, id, payload)
	return p.Wait()
}

// Pending is an upload that Begin handed to the store: its writes are in
// flight until Wait returns. It belongs to one goroutine at a time.
type Pending struct {
	c        *Core
	id       Identity
	done     bool    // out is final (Begin settled it, or Wait ran)
	out      Outcome // counts and report; Status once done
	tooLarge bool
	msgs     store.Waiter // nil: no accepted message
	rej      store.Waiter // nil: no rejection
	// ctx ends at the persist deadline: a context shared by the uploads
	// begun about the same time (Core.deadlines), or, for a caller's ctx
	// that may end, one of the upload's own that cancel releases.
	ctx    context.Context
	cancel context.CancelFunc // nil: ctx is shared
	weight int64              // taken from Core.inFlight, given back by Wait
	start  time.Time
}

// Begin starts one upload of the authenticated gateway id: it checks the
// size, validates every message, applies the gateway's message rate, and
// hands the valid messages and the rejections to the store without waiting
// for JetStream; Wait then waits. It may block while the writes in flight
// across all connections are at Config.MaxInFlight (at most
// Config.PersistTimeout; then the upload is PersistFailed). The uploads a
// goroutine begins one after the other reach each stream in that order.
func (c *Core) Begin(ctx context.Context, id Identity, payload []byte) *Pending {
	p := new(Pending)
	c.begin(p, ctx, id, payload)
	return p
}

// begin is Begin into p, which the caller provides (the MQTT pipeline's
// ticket holds it, Accept's is on its stack): one allocation less per
// upload.
func (c *Core) begin(p *Pending, ctx context.Context, id Identity, payload []byte) {
	received := c.now()
	// The upload's messages, records and bodies are in buffers of the
	// pool until begin returns: nothing keeps them after (see upload).
	u := uploads.Get().(*upload)
	defer u.put()
	var res thingsee.Result
	// The tenant's policy (policy.go), as this node knows it now.
	t, _ := c.dir.Tenant(id.Tenant)
	msgRate, burst := c.cfg.msgRate(t)
	tooLarge := len(payload) > c.cfg.MaxPayload
	if tooLarge {
		res.Rejected = []thingsee.Rejection{{Index: -1, Code: errPayloadTooLarge.Code(),
			Reason: tooLargeReason(c.cfg.MaxPayload), Raw: payload[:min(len(payload), tooLargeKept)]}}
	} else {
		v := c.lenient
		if t.StrictValidation() {
			v = c.strict
		}
		res = v.ValidateAppend(u.msgs, payload, id.Serial)
		u.msgs = res.Accepted
	}
	n := len(res.Accepted) + len(res.Rejected)
	*p = Pending{c: c, id: id, tooLarge: tooLarge}
	lim := c.limiter(limiterKey{id.Tenant, id.Serial}, received, msgRate, burst)
	if !lim.AllowN(received, min(n, burst)) {
		c.m.publishRefused.WithLabelValues("rate").Inc()
		p.done, p.out = true, Outcome{Status: RateLimited, MsgRate: msgRate}
		return
	}
	// An upload larger than the burst is taken on a full bucket, and the
	// messages past the burst are owed (the bucket goes below zero, a
	// burst at a time), so that the gateway's next uploads wait for them:
	// paying only the burst let such uploads through at many times the
	// rate.
	for owed := n - burst; owed > 0; owed -= burst {
		lim.ReserveN(received, min(owed, burst))
	}
	p.start = time.Now()
	if ctx.Done() == nil { // the caller's ctx never ends (the MQTT front end's)
		p.ctx = c.deadlines.context(p.start)
	} else {
		p.ctx, p.cancel = context.WithTimeout(ctx, c.cfg.PersistTimeout)
	}
	p.weight = int64(min(max(n, 1), c.cfg.MaxInFlight))
	if err := c.inFlight.Acquire(p.ctx, p.weight); err != nil {
		p.weight = 0
		p.fail(fmt.Errorf("ingest: %d writes already in flight: %w", c.cfg.MaxInFlight, err))
		return
	}
	p.out = Outcome{Accepted: len(res.Accepted), Rejected: len(res.Rejected)}
	if len(res.Rejected) > 0 {
		p.out.Report = report(res, received)
	}
	if err := p.persist(u, res, received); err != nil {
		p.fail(err)
	}
}

// persist hands the accepted messages and the rejections to the store;
// the records and their bodies are made in u's buffers.
func (p *Pending) persist(u *upload, res thingsee.Result, received time.Time) error {
	c, id := p.c, p.id
	if len(res.Accepted) > 0 {
		dg, _ := c.dir.GatewayDeploymentGroup(id.Tenant, id.Serial) // "" for none
		cloud := thingsee.CloudFields{ReceivedAt: received, Gateway: id.Serial, DeploymentGroupID: dg}
		recs, b := slices.Grow(u.recs[:0], len(res.Accepted))[:len(res.Accepted)], u.bodies[:0]
		for i, m := range res.Accepted {
			start := len(b)
			b = m.AppendNormalized(b, cloud)
			recs[i] = store.Record{
				ID: m.ContentID(id.Serial), Gateway: id.Serial, Tuid: m.Tuid, TsmID: m.TsmID,
				ReceivedAt: received, Body: b[start:len(b):len(b)],
			}
		}
		var err error
		p.msgs, err = c.st.AppendAsync(p.ctx, id.Tenant, recs)
		u.recs, u.bodies = recs, b
		if err != nil {
			return err
		}
	}
	if len(res.Rejected) > 0 {
		recs := make([]store.Rejected, len(res.Rejected))
		for i, r := range res.Rejected {
			recs[i] = store.Rejected{
				Gateway: id.Serial, ReceivedAt: received, Index: r.Index, Code: r.Code,
				Field: r.Field, Reason: r.Reason, TsmID: r.TsmID, Tuid: r.Tuid, Raw: r.Raw,
			}
		}
		var err error
		if p.rej, err = c.st.AppendRejectedAsync(p.ctx, id.Tenant, recs); err != nil {
			return err
		}
	}
	return nil
}

// upload holds an upload's accepted messages (Validator.ValidateAppend),
// its records and their normalised bodies while begin hands them to the
// store, which seals the bodies and keeps none of them once AppendAsync
// returned (nor does anything else: the Outcome and report hold copies).
// begin takes one of uploads and puts it back when it returns.
type upload struct {
	msgs   []thingsee.Message
	recs   []store.Record
	bodies []byte
}

var uploads = sync.Pool{New: func() any { return new(upload) }}

// maxPooled bounds the buffers put back into uploads (bytes of bodies;
// messages and records, a hundredth of it): a rare large upload's are left
// to the collector.
const maxPooled = 64 << 10

// put clears u's messages and records (they refer to the upload's bytes
// and strings) and puts u back into the pool, unless its buffers are
// large.
func (u *upload) put() {
	if cap(u.bodies) > maxPooled || cap(u.recs) > maxPooled/100 || cap(u.msgs) > maxPooled/100 {
		return
	}
	clear(u.msgs[:cap(u.msgs)])
	clear(u.recs[:cap(u.recs)])
	u.msgs, u.recs, u.bodies = u.msgs[:0], u.recs[:0], u.bodies[:0]
	uploads.Put(u)
}

// fail settles the upload as PersistFailed, or QuotaExceeded when a
// stream of the tenant is full: counted, logged, never to be acknowledged.
func (p *Pending) fail(err error) {
	if store.Full(err) {
		p.c.quotaRefused(p.id.Tenant)
		p.done, p.out = true, Outcome{Status: QuotaExceeded, Err: err}
		p.release()
		return
	}
	p.c.m.publishRefused.WithLabelValues("persist").Inc()
	p.c.log.Error("publish not persisted", "tenant_id", p.id.Tenant, "gateway_id", p.id.Serial, "error", err)
	p.done, p.out = true, Outcome{Status: PersistFailed, Err: err}
	p.release()
}

// release gives back what Begin took: the in-flight weight and the
// persist timeout's timer (if the upload has one of its own).
func (p *Pending) release() {
	if p.weight > 0 {
		p.c.inFlight.Release(p.weight)
		p.weight = 0
	}
	if p.cancel != nil {
		p.cancel()
	}
}

// Ready reports, without blocking, whether Wait would return at once:
// every write is acknowledged or one failed.
func (p *Pending) Ready() bool {
	return p.done || (p.msgs == nil || p.msgs.Ready()) && (p.rej == nil || p.rej.Ready())
}

// Wait returns the upload's Outcome once JetStream acknowledged every write
// (or one failed, or Config.PersistTimeout passed: PersistFailed). It may
// be called again and returns the same Outcome.
func (p *Pending) Wait() Outcome {
	if p.done {
		return p.out
	}
	c := p.c
	if p.msgs != nil {
		stored, err := p.msgs.Wait(p.ctx)
		if err != nil {
			p.fail(err)
			return p.out
		}
		p.out.Stored, p.out.Duplicates = stored.Stored, stored.Duplicates
		c.m.messages.WithLabelValues("stored").Add(float64(stored.Stored))
		c.m.messages.WithLabelValues("duplicate").Add(float64(stored.Duplicates))
	}
	if p.rej != nil {
		if _, err := p.rej.Wait(p.ctx); err != nil {
			p.fail(err)
			return p.out
		}
		c.m.messages.WithLabelValues("rejected").Add(float64(p.out.Rejected))
	}
	c.m.persistDuration.Observe(time.Since(p.start).Seconds())
	p.release()
	switch {
	case p.tooLarge:
		p.out.Status = TooLarge
	case p.out.Rejected == 0:
		p.out.Status = AllStored
	case p.out.Accepted == 0:
		p.out.Status = AllRejected
	default:
		p.out.Status = SomeRejected
	}
	p.done = true
	return p.out
}

// tooLargeReason is the reason of a TooLarge rejection (and of MQTT 5's
// PUBACK 0x95).
func tooLargeReason(max int) string { return fmt.Sprintf("payload larger than %d bytes", max) }

// limiter returns the gateway's rate limiter, made at its first upload and
// shared by all its connections, set to msgRate and burst (its tenant's
// policy may have changed them since the last upload). It is forgotten
// after 10 minutes without an upload, once it has refilled: a new one is
// then no different.
func (c *Core) limiter(key limiterKey, now time.Time, msgRate float64, burst int) *rate.Limiter {
	c.mu.Lock()
	defer c.mu.Unlock()
	if now.Sub(c.swept) > time.Minute {
		c.swept = now
		for k, e := range c.limiters {
			if now.Sub(e.seen) > 10*time.Minute && e.l.TokensAt(now) >= float64(e.l.Burst()) {
				delete(c.limiters, k)
			}
		}
	}
	e, ok := c.limiters[key]
	if !ok {
		e = &limiterEntry{l: rate.NewLimiter(rate.Limit(msgRate), burst)}
		c.limiters[key] = e
	}
	if e.l.Limit() != rate.Limit(msgRate) {
		e.l.SetLimitAt(now, rate.Limit(msgRate))
	}
	if e.l.Burst() != burst {
		e.l.SetBurstAt(now, burst)
	}
	e.seen = now
	return e.l
}

// report names the rejections of one upload, the first maxReported of them.
func report(res thingsee.Result, received time.Time) *Report {
	rep := &Report{ReceivedAt: received.UTC(), Accepted: len(res.Accepted)}
	for _, r := range res.Rejected[:min(len(res.Rejected), maxReported)] {
		rep.Rejected = append(rep.Rejected, ReportedRejection{Index: r.Index, Code: r.Code, Field: r.Field, Reason: r.Reason, TsmID: r.TsmID, Tuid: r.Tuid})
	}
	rep.More = len(res.Rejected) - len(rep.Rejected)
	return rep
}

// Validator options of the ingest's Thingsee validation.
func validatorOptions(cfg Config, rejectUnknown bool) thingsee.Options {
	return thingsee.Options{MaxFutureSkew: cfg.MaxFutureSkew, RejectUnknownIDs: rejectUnknown}
}

// deadlines hands out the contexts that end the uploads' persistence at
// their deadline, Config.PersistTimeout after they began (up to a
// twentieth of it later), without a context and timer per upload: the
// uploads begun within one step share a context, which ends by itself at
// its deadline. A new one is made once per step, when an upload needs it.
type deadlines struct {
	timeout, step time.Duration
	cur           atomic.Pointer[deadline]
	mu            sync.Mutex // makes the next one
}

// deadline is a context shared by the uploads begun in one step.
type deadline struct {
	at  time.Time
	ctx context.Context
	// cancel is never called: the context ends at its deadline, and its
	// timer is released then.
	cancel context.CancelFunc
}

func newDeadlines(timeout time.Duration) deadlines {
	return deadlines{timeout: timeout, step: max(timeout/20, time.Millisecond)}
}

// context returns a context that ends between the timeout and the timeout
// plus a step after now, and that nothing else cancels.
func (d *deadlines) context(now time.Time) context.Context {
	want := now.Add(d.timeout)
	if cur := d.cur.Load(); cur != nil && !cur.at.Before(want) {
		return cur.ctx
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	if cur := d.cur.Load(); cur != nil && !cur.at.Before(want) {
		return cur.ctx
	}
	next := &deadline{at: want.Add(d.step)}
	next.ctx, next.cancel = context.WithDeadline(context.Background(), next.at)
	d.cur.Store(next)
	return next.ctx
}

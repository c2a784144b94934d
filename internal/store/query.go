package store

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"slices"
	"strconv"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/iotransit/iotransit/internal/backbone/names"
	"github.com/iotransit/iotransit/internal/fault"
	"github.com/iotransit/iotransit/internal/thingsee"
)

// Message queries
//
// A query walks one tenant stream in sequence order, oldest or newest first,
// and returns a page of at most Limit items plus an opaque cursor.
//
// Subject filters. Gateway, tsmTuid and tsmId are parts of the subject
// (iot.{tenant}.msg.{gateway}.{tuid}.{tsmId}), so the filters become one
// subject filter ("*" for a part not asked for; every part validated before
// it is put into a subject) and the server applies it: Stream.GetMsg with
// WithGetMsgSubject returns the next matching message at or after a
// sequence, stepping over deleted ones. The server's subject index lets it
// skip whole blocks that hold no matching subject and jump to a subject's
// first message in a block; between two hits inside a block it still reads
// every message (measured on the embedded server: 0.3 µs a message for a
// literal subject, 0.4 to 0.8 µs for a wildcard, against ~50 µs for a
// request round trip). So a page costs about Limit requests plus the
// server stepping over Limit/density messages: a sensor's page of 100 on
// 200,000 messages where it has 1 in 1,000 costs 40 to 50 ms, a gateway's
// (1 in 10) ~6 ms, an unfiltered one 4 to 6 ms (BenchmarkQuery, 2 CPUs).
// The cost follows the messages between hits, not the stream size.
// (Merging the literal subjects of a
// filter was measured too: every subject then steps over the same
// messages, so it was slower as soon as there were two.) When the filter
// names a gateway or a sensor, a stream info with that subject filter gives
// the number of matching messages (the density, for newest first) and, when
// a single subject matches, the literal subject to use.
//
// Oldest first: "next by subject" from the position, one request an item
// (the one after a full page tells whether there is more).
//
// Newest first: JetStream has no "previous by subject", so the walk goes
// down in windows of sequences: it collects the matches of [hi-span, hi)
// with forward "next by subject" requests, hands them out newest first,
// and moves the window down. The span is sized from the density so a
// window holds about the rest of the page (plus a quarter): a window that
// turns out empty grows 4x, one that overflows (more than twice what it
// aimed at) is dropped and re-sized from what it found, and after a second
// overflow the span is at most that many sequences, which cannot overflow.
// A page thus costs about Limit requests plus one per window, whatever the
// stream size. Scanning backwards sequence by sequence was rejected: with
// a selective filter it is a request per stored message (~50 ms per 1,000
// sequences, so ~5 s for a page of a 1-in-1,000 sensor) and, with a budget
// of 10,000 sequences, it would return ~10 items per request.
//
// Budgets. One page request makes at most ScanBudget requests and walks
// over at most SpanBudget sequences (after its first window, so a page
// always moves on); a query's Budget lowers both (to Budget requests and
// Budget*SeqsPerRead sequences), so that a caller can bound what one
// request may cost, and Page.Reads and Page.Stepped say what it did cost. A walk that runs out returns the items found so far and
// a cursor to go on: a page may hold fewer than Limit items (even none)
// while Next is non-empty. With subject filters only that happens when
// fewer than Limit matches lie within SpanBudget sequences (a filter
// sparser than 1 in 10,000); a rejected-message query filtered by code
// opens and checks every message of the gateway filter (the code is
// sealed), so a rare code over a long range pages in steps of ScanBudget.
//
// Time range. From and To (From inclusive, To exclusive) apply to the time
// JetStream stored the message (Message.StoredAt), not to Iot-Received.
// The store time is assigned by the stream in sequence order, so it is
// monotonic in the sequence and a bound maps to a sequence by binary search
// (O(log n) gets, deleted sequences skipped); the same clock drives
// retention (MaxAge). Iot-Received is set by the ingest before the write,
// by concurrent connections and nodes, so it is not ordered by sequence: a
// range on it would need a scan (or a slack margin that is only right if
// the persist latency stays under it). The two differ by the persist
// latency (milliseconds; bounded by the ingest's persist timeout). Each
// item is also checked against the range, so a clock step backwards on the
// server cannot leak an item outside it.
//
// Paging. The cursor holds a stream sequence: newest first continues below
// it, oldest first at it. Sequences never change, so appends during a walk
// cannot make it skip or repeat: newest first never sees them (its first
// page starts at the last sequence of that moment), oldest first reaches
// them at the end (each page reads the stream state afresh and goes no
// further than its last sequence). Deleted, purged and expired messages
// are skipped; a cursor below the first sequence continues at the first.

// Errors of message queries.
var (
	ErrQueryInvalid  = fault.Define("store.query_invalid", fault.InvalidArgument, "a message query parameter is not valid")
	ErrCursorInvalid = fault.Define("store.cursor_invalid", fault.InvalidArgument, "the cursor is not valid for this query")
)

// Query limits.
const (
	DefaultLimit = 100
	MaxLimit     = 1000
	// ScanBudget is the most messages one page request reads.
	ScanBudget = 10000
	// SeqsPerRead is how many sequences the server steps over for the CPU
	// time of one read (0.3 to 0.8 µs a sequence against about 100 µs for
	// a read that is opened and decoded): the exchange rate of Budget.
	SeqsPerRead = 200
	// SpanBudget is the most sequences one page request walks over: the
	// server steps over each (0.3 to 0.8 µs a message, measured).
	SpanBudget = 1_000_000
	// MinTsmID and MaxTsmID bound a Thingsee message id.
	MinTsmID = 1000
	MaxTsmID = 999999
)

// Query selects messages. Zero values mean "any".
type Query struct {
	// Gateway is a gateway serial: 4 uppercase letters, 2 digits, 11 of A-Z0-9.
	Gateway string
	// Tuid is a sensor's tsmTuid, in the same format.
	Tuid string
	// TsmID is a Thingsee message id (MinTsmID..MaxTsmID), 0 for any.
	TsmID int
	// From and To bound the time the message was stored: [From, To).
	From, To time.Time
	// Limit is 1..MaxLimit; 0 means DefaultLimit.
	Limit int
	// Cursor is a previous Page.Next; it binds the filters and the order.
	Cursor string
	// Oldest walks oldest first; the default is newest first.
	Oldest bool
	// Budget bounds what the page may cost, in reads (0: ScanBudget): at
	// most Budget messages read, and Budget*SeqsPerRead sequences walked
	// over. A page whose budget runs out is partial.
	Budget int
}

// RejectedQuery selects rejected messages. Zero values mean "any".
type RejectedQuery struct {
	Gateway string
	// Code is a rejection code (thingsee.* or ingest.*): 1 to 64 of a-z, '_' and '.'.
	Code     string
	From, To time.Time
	Limit    int
	Cursor   string
	Oldest   bool
	// Budget bounds what the page may cost, as Query.Budget.
	Budget int
}

// Page is one page of a query. Next is the cursor of the following page,
// "" when the walk reached the end. A page may hold fewer than the limit
// (even no item) while Next is non-empty: the scan budget ran out first.
type Page[T any] struct {
	Items []T    `json:"items"`
	Next  string `json:"next,omitempty"`
	// Partial reports that the budget ran out before the page was full
	// (Next continues the walk).
	Partial bool `json:"-"`
	// Reads is how many messages the walk read, and Stepped how many
	// sequences it walked over: what the page cost (in reads, Cost).
	Reads   int    `json:"-"`
	Stepped uint64 `json:"-"`
}

// Cost is what the page cost in reads: each read, plus one for every
// SeqsPerRead sequences walked over.
func (p Page[T]) Cost() int { return p.Reads + int(p.Stepped/SeqsPerRead) }

// QueryMessages returns a page of the tenant's accepted messages.
func (s *Store) QueryMessages(ctx context.Context, tenant string, q Query) (Page[Message], error) {
	var page Page[Message]
	if !names.ValidToken(tenant) {
		return page, ErrNoStream
	}
	limit, err := checkCommon(q.Limit, q.From, q.To)
	if err != nil {
		return page, err
	}
	if q.Gateway != "" && !thingsee.ValidTUID(q.Gateway) {
		return page, ErrQueryInvalid.WithDetail("gateway must be 17 characters: 4 uppercase letters, 2 digits, then 11 of A-Z and 0-9")
	}
	if q.Tuid != "" && !thingsee.ValidTUID(q.Tuid) {
		return page, ErrQueryInvalid.WithDetail("tsmTuid must be 17 characters: 4 uppercase letters, 2 digits, then 11 of A-Z and 0-9")
	}
	if q.TsmID != 0 && (q.TsmID < MinTsmID || q.TsmID > MaxTsmID) {
		return page, ErrQueryInvalid.WithDetail("tsmId must be an integer from %d to %d", MinTsmID, MaxTsmID)
	}
	sp := spec{
		// Accepted messages only: the stream also holds the copies re-driven
		// to one integration, which are not history.
		stream: names.MessageStream(tenant), filter: names.Messages(tenant), dense: true, from: q.From, to: q.To, oldest: q.Oldest, limit: limit, budget: q.Budget,
		hash: filterHash("msg", tenant, q.Gateway, q.Tuid, strconv.Itoa(q.TsmID), timeKey(q.From), timeKey(q.To)),
	}
	if q.Oldest {
		sp.flags |= flagOldest
	}
	if q.Gateway != "" || q.Tuid != "" || q.TsmID != 0 {
		// Validated parts only; "*" for the others.
		gw, tuid, id := "*", "*", "*"
		if q.Gateway != "" {
			gw = q.Gateway
		}
		if q.Tuid != "" {
			tuid = q.Tuid
		}
		if q.TsmID != 0 {
			id = strconv.Itoa(q.TsmID)
		}
		sp.filter, sp.dense = names.MessageFilter(tenant, gw, tuid, id), false
		// The match count comes with one entry per matching subject: a
		// gateway or a sensor bounds them, a tsmId alone (a subject per
		// sensor) does not, and is dense anyway.
		sp.count = q.Gateway != "" || q.Tuid != ""
	}
	if q.Cursor != "" {
		c, err := decodeCursor(q.Cursor, sp.flags, sp.hash)
		if err != nil {
			return page, err
		}
		sp.pos = c.seq
	}
	page.Next, page.Partial, page.Reads, page.Stepped, err = s.run(ctx, sp, func(m *jetstream.RawStreamMsg) (bool, error) {
		msg, err := s.openMessage(ctx, tenant, m)
		if err != nil {
			return false, err
		}
		page.Items = append(page.Items, msg)
		return true, nil
	})
	return page, err
}

// QueryRejected returns a page of the tenant's rejected messages. The code
// is inside the sealed record: each candidate is opened and checked, within
// the scan budget.
func (s *Store) QueryRejected(ctx context.Context, tenant string, q RejectedQuery) (Page[StoredRejected], error) {
	var page Page[StoredRejected]
	if !names.ValidToken(tenant) {
		return page, ErrNoStream
	}
	limit, err := checkCommon(q.Limit, q.From, q.To)
	if err != nil {
		return page, err
	}
	if q.Gateway != "" && !thingsee.ValidTUID(q.Gateway) {
		return page, ErrQueryInvalid.WithDetail("gateway must be 17 characters: 4 uppercase letters, 2 digits, then 11 of A-Z and 0-9")
	}
	if q.Code != "" && !validCode(q.Code) {
		return page, ErrQueryInvalid.WithDetail("code must be 1 to 64 characters of a-z, '_' and '.'")
	}
	sp := spec{
		stream: names.RejectedStream(tenant), filter: ">", dense: true, from: q.From, to: q.To, oldest: q.Oldest, limit: limit, budget: q.Budget,
		flags: flagRejected,
		hash:  filterHash("rej", tenant, q.Gateway, q.Code, timeKey(q.From), timeKey(q.To)),
	}
	if q.Oldest {
		sp.flags |= flagOldest
	}
	if q.Gateway != "" {
		sp.filter, sp.dense, sp.count = names.Rejected(tenant, q.Gateway), false, true
	}
	if q.Cursor != "" {
		c, err := decodeCursor(q.Cursor, sp.flags, sp.hash)
		if err != nil {
			return page, err
		}
		sp.pos = c.seq
	}
	page.Next, page.Partial, page.Reads, page.Stepped, err = s.run(ctx, sp, func(m *jetstream.RawStreamMsg) (bool, error) {
		r, err := s.openRejected(ctx, tenant, m)
		if err != nil {
			return false, err
		}
		if q.Code != "" && r.Code != q.Code {
			return false, nil
		}
		page.Items = append(page.Items, r)
		return true, nil
	})
	return page, err
}

func (s *Store) openMessage(ctx context.Context, tenant string, m *jetstream.RawStreamMsg) (Message, error) {
	return s.Decode(ctx, tenant, m.Sequence, m.Time, m.Header, m.Data)
}

func (s *Store) openRejected(ctx context.Context, tenant string, m *jetstream.RawStreamMsg) (StoredRejected, error) {
	body, err := s.keys.Open(ctx, tenant, m.Data, []byte(rejectedAAD))
	if err != nil {
		return StoredRejected{}, fmt.Errorf("store: open rejected %d: %w", m.Sequence, err)
	}
	var r StoredRejected
	if err := json.Unmarshal(body, &r.Rejected); err != nil {
		return StoredRejected{}, fmt.Errorf("store: decode rejected %d: %w", m.Sequence, err)
	}
	r.Seq, r.StoredAt = m.Sequence, m.Time.UTC()
	return r, nil
}

func checkCommon(limit int, from, to time.Time) (int, error) {
	switch {
	case limit == 0:
		limit = DefaultLimit
	case limit < 0 || limit > MaxLimit:
		return 0, ErrQueryInvalid.WithDetail("limit must be an integer from 1 to %d", MaxLimit)
	}
	if !from.IsZero() && !to.IsZero() && !from.Before(to) {
		return 0, ErrQueryInvalid.WithDetail("from must be before to")
	}
	return limit, nil
}

func validCode(s string) bool {
	if len(s) == 0 || len(s) > 64 {
		return false
	}
	for i := 0; i < len(s); i++ {
		if c := s[i]; (c < 'a' || c > 'z') && c != '_' && c != '.' {
			return false
		}
	}
	return true
}

// spec is a validated query.
type spec struct {
	stream string
	filter string // ">" (everything), or a subject filter built from validated parts
	dense  bool   // filter selects (nearly) every message: its density is the stream's
	count  bool   // ask the server how many messages match filter (bounded number of subjects)
	from   time.Time
	to     time.Time
	oldest bool
	limit  int
	budget int    // reads, 0 for scanBudget
	pos    uint64 // cursor position, 0 on the first page
	flags  byte
	hash   [8]byte
}

// maxWindowMatches bounds the matches one newest-first window aims at.
const maxWindowMatches = 1024

// The budgets in force (tests lower them).
var (
	scanBudget = ScanBudget
	spanBudget = uint64(SpanBudget)
)

var errBudget = errors.New("store: scan budget spent")

// run executes a validated query, calling take with each candidate in
// order (take reports whether the item went into the page). It returns
// the next cursor, whether the budget ran out before the page was full,
// and what the walk cost: the messages read and the sequences walked over.
func (s *Store) run(ctx context.Context, sp spec, take func(*jetstream.RawStreamMsg) (bool, error)) (next string, partial bool, reads int, stepped uint64, err error) {
	budget, span := scanBudget, spanBudget
	if sp.budget > 0 {
		budget = min(budget, sp.budget)
		span = min(span, uint64(sp.budget)*SeqsPerRead)
	}
	w := &walk{src: sp.filter, from: sp.from, to: sp.to, budget: budget, spanBudget: span, take: take}
	next, err = s.walkQuery(ctx, sp, w)
	return next, w.partial, budget - w.budget, w.stepped, err
}

// walkQuery sets the walk up from the stream's state and walks it.
func (s *Store) walkQuery(ctx context.Context, sp spec, w *walk) (string, error) {
	st, err := s.js.Stream(ctx, sp.stream)
	if errors.Is(err, jetstream.ErrStreamNotFound) {
		return "", ErrNoStream
	}
	if err != nil {
		return "", fmt.Errorf("store: stream %s: %w", sp.stream, err)
	}
	w.st = st
	info := st.CachedInfo()
	if sp.count {
		if info, err = st.Info(ctx, jetstream.WithSubjectFilter(sp.filter)); err != nil {
			return "", fmt.Errorf("store: stream %s info: %w", sp.stream, err)
		}
	}
	state := info.State
	if state.Msgs == 0 || state.LastSeq < state.FirstSeq {
		return "", nil
	}
	first, last := state.FirstSeq, state.LastSeq
	span := float64(last - first + 1)
	switch {
	case sp.dense:
		w.density = float64(state.Msgs) / span
	case sp.count:
		var n uint64
		for subj, c := range state.Subjects {
			n += c
			if len(state.Subjects) == 1 {
				// A literal subject: the server compares instead of
				// matching tokens (about a third cheaper per message).
				w.src = subj
			}
		}
		if n == 0 {
			return "", nil
		}
		w.density = float64(n) / span
	}

	var lo, hi uint64
	if sp.oldest {
		switch {
		case sp.pos > 0:
			lo = max(sp.pos, first)
		case !sp.from.IsZero():
			if lo, err = seqAtTime(ctx, st, first, last, sp.from); err != nil {
				return "", err
			}
		default:
			lo = first
		}
		hi = last + 1
		if !sp.to.IsZero() {
			if hi, err = seqAtTime(ctx, st, first, last, sp.to); err != nil {
				return "", err
			}
		}
	} else {
		switch {
		case sp.pos > 0:
			hi = min(sp.pos, last+1)
		case !sp.to.IsZero():
			if hi, err = seqAtTime(ctx, st, first, last, sp.to); err != nil {
				return "", err
			}
		default:
			hi = last + 1
		}
		lo = first
		if !sp.from.IsZero() {
			if lo, err = seqAtTime(ctx, st, first, last, sp.from); err != nil {
				return "", err
			}
		}
	}
	if lo >= hi {
		return "", nil
	}
	w.lo, w.hi = lo, hi
	var pos uint64
	var more bool
	if sp.oldest {
		pos, more, err = w.oldest(ctx, sp.limit)
		w.stepped = hi - lo
		if more {
			w.stepped = pos - lo
		}
	} else {
		pos, more, err = w.newest(ctx, sp.limit)
		w.stepped = hi - lo
		if more {
			w.stepped = hi - pos
		}
	}
	w.partial = w.partial && more
	if err != nil || !more {
		return "", err
	}
	return cursor{flags: sp.flags, seq: pos, hash: sp.hash}.encode(), nil
}

// seqAtTime returns the first sequence in [first, last+1] from which every
// stored message was stored at or after t (last+1 if none was), by binary
// search over sequences. A "next by subject >" read steps over deleted
// sequences.
func seqAtTime(ctx context.Context, st jetstream.Stream, first, last uint64, t time.Time) (uint64, error) {
	probe := func(seq uint64) (*jetstream.RawStreamMsg, error) {
		m, err := st.GetMsg(ctx, seq, jetstream.WithGetMsgSubject(">"))
		if errors.Is(err, jetstream.ErrMsgNotFound) {
			return nil, nil
		}
		if err != nil {
			return nil, fmt.Errorf("store: get %d: %w", seq, err)
		}
		return m, nil
	}
	// Invariant: every message below lo was stored before t; the first
	// message at or after hi (if any) was stored at or after t.
	lo, hi := first, last+1
	m, err := probe(lo)
	if err != nil || m == nil {
		return hi, err
	}
	if !m.Time.Before(t) {
		return lo, nil
	}
	lo = m.Sequence + 1
	// Ranges usually end near now: check the last message first.
	if lo <= last {
		m, err := st.GetMsg(ctx, last)
		switch {
		case errors.Is(err, jetstream.ErrMsgNotFound):
		case err != nil:
			return 0, fmt.Errorf("store: get %d: %w", last, err)
		case m.Time.Before(t):
			return last + 1, nil
		default:
			hi = last
		}
	}
	for lo < hi {
		mid := lo + (hi-lo)/2
		m, err := probe(mid)
		if err != nil {
			return 0, err
		}
		if m == nil || m.Sequence >= hi || !m.Time.Before(t) {
			hi = mid
		} else {
			lo = m.Sequence + 1
		}
	}
	return lo, nil
}

// walk is one page's walk over [lo, hi) of a stream.
type walk struct {
	st      jetstream.Stream
	src     string // subject filter
	lo, hi  uint64
	from    time.Time
	to      time.Time
	budget  int     // requests left
	density float64 // matching messages per sequence, 0 if unknown
	take    func(*jetstream.RawStreamMsg) (bool, error)

	spanBudget uint64 // sequences a page walks over at most

	examined, accepted int
	// partial is set when a budget stops the walk before the page is
	// full; stepped is how many sequences the walk went over.
	partial bool
	stepped uint64
}

// next returns the first message matching the filter at or after seq, nil
// if none.
func (w *walk) next(ctx context.Context, seq uint64) (*jetstream.RawStreamMsg, error) {
	if w.budget <= 0 {
		return nil, errBudget
	}
	w.budget--
	m, err := w.st.GetMsg(ctx, seq, jetstream.WithGetMsgSubject(w.src))
	if errors.Is(err, jetstream.ErrMsgNotFound) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("store: get next %d: %w", seq, err)
	}
	return m, nil
}

// examine hands a candidate to take if it is in the time range.
func (w *walk) examine(m *jetstream.RawStreamMsg) (bool, error) {
	w.examined++
	if (!w.from.IsZero() && m.Time.Before(w.from)) || (!w.to.IsZero() && !m.Time.Before(w.to)) {
		return false, nil
	}
	ok, err := w.take(m)
	if ok {
		w.accepted++
	}
	return ok, err
}

// oldest walks up from lo. It returns the position to continue at and
// whether more candidates remain.
func (w *walk) oldest(ctx context.Context, limit int) (uint64, bool, error) {
	pos, taken := w.lo, 0
	for pos < w.hi {
		m, err := w.next(ctx, pos)
		if err != nil {
			return w.budgetOr(pos, err)
		}
		if m == nil || m.Sequence >= w.hi {
			return pos, false, nil
		}
		if taken == limit {
			return pos, true, nil
		}
		if m.Sequence-w.lo >= w.spanBudget {
			// Continue at m: nothing matches between pos and m.
			w.partial = true
			return m.Sequence, true, nil
		}
		ok, err := w.examine(m)
		if err != nil {
			return 0, false, err
		}
		if ok {
			taken++
		}
		pos = m.Sequence + 1
	}
	return pos, false, nil
}

// newest walks down from hi in windows. It returns the position to
// continue below and whether more candidates may remain.
func (w *walk) newest(ctx context.Context, limit int) (uint64, bool, error) {
	lo, hi := w.lo, w.hi
	d := w.density
	if d <= 0 {
		d = 1.0 / 8 // unknown: a guess, corrected by the first window
	}
	taken, overflows := 0, 0
	spanLeft := w.spanBudget
	for hi > lo {
		if spanLeft == 0 {
			w.partial = true
			return hi, true, nil
		}
		need := limit - taken
		want := need + 1
		if w.examined > w.accepted {
			// Candidates are being dropped (code, time): aim for more.
			rate := float64(w.accepted+1) / float64(w.examined+1)
			want = int(math.Ceil(float64(need)/rate)) + 1
		}
		want = min(want, maxWindowMatches)
		maxFetch := 2*want + 16
		// Unless the budget can pay for an overflow and a retry, take a
		// window that cannot overflow: at most maxFetch sequences (which
		// the budget pays for), so a page always moves on.
		safe := overflows >= 2 || w.budget < 2*(maxFetch+1)
		if w.budget <= maxFetch {
			maxFetch = max(w.budget-1, 1)
		}
		span := uint64(min(math.Ceil(float64(want)/d*1.25)+1, float64(hi-lo)))
		if safe {
			span = min(span, uint64(maxFetch))
		}
		if hi < w.hi {
			// The budget binds once a window is done (so a page always
			// moves on).
			span = min(span, spanLeft)
		}
		wlo := lo
		if hi-lo > span {
			wlo = hi - span
		}
		cands, overflow, err := w.window(ctx, wlo, hi, maxFetch)
		if err != nil {
			return w.budgetOr(hi, err)
		}
		if overflow {
			// cands are the oldest of the window, in order: the matches
			// are at least this dense; aim at a quarter more than that.
			overflows++
			d = min(float64(len(cands))/float64(cands[len(cands)-1].Sequence-wlo+1)*1.25, 1)
			continue
		}
		overflows = 0
		for j, m := range cands {
			ok, err := w.examine(m)
			if err != nil {
				return 0, false, err
			}
			if ok {
				taken++
			}
			if taken == limit {
				if j+1 < len(cands) {
					return m.Sequence, true, nil
				}
				more, err := w.any(ctx, lo, wlo)
				if errors.Is(err, errBudget) {
					return m.Sequence, true, nil
				}
				return m.Sequence, more, err
			}
		}
		if len(cands) == 0 {
			d /= 4
		} else {
			d = float64(len(cands)) / float64(hi-wlo)
		}
		d = min(max(d, 1e-12), 1)
		spanLeft -= min(spanLeft, hi-wlo)
		hi = wlo
	}
	return lo, false, nil
}

// window returns the candidates in [wlo, hi), newest first; on overflow
// (more than maxFetch) it stops and returns the oldest ones, oldest first.
func (w *walk) window(ctx context.Context, wlo, hi uint64, maxFetch int) ([]*jetstream.RawStreamMsg, bool, error) {
	var cands []*jetstream.RawStreamMsg
	for seq := wlo; ; {
		m, err := w.next(ctx, seq)
		if err != nil {
			return nil, false, err
		}
		if m == nil || m.Sequence >= hi {
			break
		}
		cands = append(cands, m)
		if len(cands) > maxFetch {
			return cands, true, nil
		}
		seq = m.Sequence + 1
	}
	slices.Reverse(cands)
	return cands, false, nil
}

// any reports whether a candidate exists in [lo, hi).
func (w *walk) any(ctx context.Context, lo, hi uint64) (bool, error) {
	if lo >= hi {
		return false, nil
	}
	m, err := w.next(ctx, lo)
	return m != nil && m.Sequence < hi, err
}

// budgetOr turns a spent budget into "continue at pos" (a partial page);
// other errors fail.
func (w *walk) budgetOr(pos uint64, err error) (uint64, bool, error) {
	if errors.Is(err, errBudget) {
		w.partial = true
		return pos, true, nil
	}
	return 0, false, err
}

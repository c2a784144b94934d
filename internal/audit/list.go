package audit

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/iotransit/iotransit/internal/backbone/names"
	"github.com/nats-io/nats.go/jetstream"
)

// Page sizes of List.
const (
	defaultLimit = 100
	maxLimit     = 1000
)

// Filter selects and pages entries for List. Empty fields match everything.
type Filter struct {
	// Action, Actor, Target and Outcome match entries with exactly that
	// value. A filter by action, actor or target reads the index (see
	// index.go): its cost follows the matching entries, not the log.
	Action, Actor, Target, Outcome string
	// From and To select entries with From <= Time < To; a zero time is no
	// bound.
	From, To time.Time
	// After is the cursor of oldest-first paging: only entries with
	// Seq > After.
	After uint64
	// Before is the cursor of newest-first paging: only entries with
	// Seq < Before (0: no bound).
	Before uint64
	// Limit is the page size (default 100, at most 1000).
	Limit int
	// Newest lists the newest entries first.
	Newest bool
	// Budget bounds the entries and index entries a page reads (0: no
	// bound); placing the cursor costs a few reads besides (a binary
	// search, about log2 of the entries). A page whose budget runs out
	// before it is full is partial: its cursor goes on from the last entry
	// looked at.
	Budget int
}

func (f *Filter) match(e *Entry) bool {
	return (f.Action == "" || e.Action == f.Action) &&
		(f.Actor == "" || e.Actor == f.Actor) &&
		(f.Target == "" || e.Target == f.Target) &&
		(f.Outcome == "" || e.Outcome == f.Outcome) &&
		(f.From.IsZero() || !e.Time.Before(f.From)) &&
		(f.To.IsZero() || e.Time.Before(f.To)) &&
		e.Seq > f.After &&
		(f.Before == 0 || e.Seq < f.Before)
}

// Page is one page of List.
type Page struct {
	Entries []Entry
	// Next is the cursor of the next page (f.After oldest first, f.Before
	// newest first), 0 when there is no further match.
	Next uint64
	// Partial reports that the budget ran out before the page was full.
	Partial bool
	// Reads is what the page cost (Filter.Budget).
	Reads int
}

// List returns one page of the tenant's entries that match f, oldest first
// (or newest first with f.Newest), and the cursor of the next page: pass it
// as f.After (oldest first) or f.Before (newest first). The cursor is 0 when
// there is no further match. List does not verify the chain; stored
// messages that are not entries are skipped.
func (l *Log) List(ctx context.Context, tenant string, f Filter) ([]Entry, uint64, error) {
	p, err := l.ListPage(ctx, tenant, f)
	return p.Entries, p.Next, err
}

// ListPage is List, with what the page cost and whether its budget ran out.
func (l *Log) ListPage(ctx context.Context, tenant string, f Filter) (Page, error) {
	if err := checkTenant(tenant); err != nil {
		return Page{}, err
	}
	st, err := l.js.Stream(ctx, names.AuditStream(tenant))
	if errors.Is(err, jetstream.ErrStreamNotFound) {
		return Page{}, ErrNotFound.New()
	}
	if err != nil {
		return Page{}, ErrUnavailable.Wrap(fmt.Errorf("audit: list %s: %w", tenant, err))
	}
	info, err := st.Info(ctx)
	if err != nil {
		return Page{}, ErrUnavailable.Wrap(fmt.Errorf("audit: list %s: %w", tenant, err))
	}
	if info.State.Msgs == 0 {
		return Page{}, nil
	}
	p := &pager{f: f, limit: f.Limit}
	if p.limit <= 0 {
		p.limit = defaultLimit
	}
	p.limit = min(p.limit, maxLimit)
	if f.Action != "" || f.Actor != "" || f.Target != "" {
		var ix jetstream.Stream
		if ix, err = l.index(ctx, tenant, st); err == nil {
			err = l.listIndexed(ctx, tenant, st, ix, p)
		}
	} else {
		err = l.listScan(ctx, tenant, st, info.State.FirstSeq, info.State.LastSeq, p)
	}
	if err != nil {
		return Page{}, ErrUnavailable.Wrap(fmt.Errorf("audit: list %s: %w", tenant, err))
	}
	return p.page, nil
}

// pager collects one page.
type pager struct {
	f     Filter
	limit int
	page  Page
	seen  uint64 // the Seq of the last entry looked at
	setup int    // reads that placed the cursor (not in the budget)
}

// take adds a match and reports whether to go on. A match beyond the page
// only proves that there is a next page.
func (p *pager) take(e Entry) bool {
	if len(p.page.Entries) == p.limit {
		p.page.Next = p.page.Entries[len(p.page.Entries)-1].Seq
		return false
	}
	p.page.Entries = append(p.page.Entries, e)
	return true
}

// spent reports whether the budget is spent (once at least one entry was
// looked at, so that a page always moves on). A page that is not full then
// is partial and goes on after the last entry looked at; a full one goes on
// after its last entry (the next page may be empty).
func (p *pager) spent() bool {
	if p.f.Budget <= 0 || p.page.Reads-p.setup < p.f.Budget || p.seen == 0 {
		return false
	}
	if n := len(p.page.Entries); n == p.limit {
		p.page.Next = p.page.Entries[n-1].Seq
	} else {
		p.page.Partial, p.page.Next = true, p.seen
	}
	return true
}

// listIndexed pages the entries that the index lists for the filter's most
// selective field.
func (l *Log) listIndexed(ctx context.Context, tenant string, log, ix jetstream.Stream, p *pager) error {
	c := &indexCursor{ix: ix, stream: names.AuditIndexStream(tenant), prefix: apiPrefix(l.js), nc: l.js.Conn(), reads: &p.page.Reads}
	var best uint64
	var state jetstream.StreamState
	for _, f := range indexFields {
		v := fieldValue(&Entry{Actor: p.f.Actor, Action: p.f.Action, Target: p.f.Target}, f)
		if v == "" {
			continue
		}
		subject := names.AuditIndex(tenant, f, indexKey(v))
		p.page.Reads++
		info, err := ix.Info(ctx, jetstream.WithSubjectFilter(subject))
		if err != nil {
			return err
		}
		n := info.State.Subjects[subject]
		if n == 0 {
			return nil // nothing matches
		}
		state = info.State
		if c.subject == "" || n < best {
			c.subject, best = subject, n
		}
	}
	// Index entries are in entry order: place the cursor by binary search.
	at := func(seq uint64) (uint64, error) {
		return locate(ctx, ix, ">", state.FirstSeq, state.LastSeq, seq, &p.page.Reads, refSeq)
	}
	entry := func(m *jetstream.RawStreamMsg) (Entry, bool, error) {
		ref, ok := decodeRef(m.Data)
		if !ok {
			return Entry{}, false, nil
		}
		p.seen = ref.seq
		p.page.Reads++
		em, err := log.GetMsg(ctx, ref.streamSeq)
		if errors.Is(err, jetstream.ErrMsgNotFound) {
			return Entry{}, false, nil // expired
		}
		if err != nil {
			return Entry{}, false, err
		}
		var e Entry
		if decodeJSON(em.Data, &e) != nil || e.Seq != ref.seq {
			l.log.Warn("audit index names an entry that is not there", "tenant_id", tenant, "seq", ref.seq)
			return Entry{}, false, nil
		}
		return e, true, nil
	}
	if p.f.Newest {
		pos := state.LastSeq
		if p.f.Before > 0 {
			s, err := at(p.f.Before)
			if err != nil {
				return err
			}
			pos = s - 1
		}
		p.setup = p.page.Reads
		for !p.spent() {
			m, err := c.prev(ctx, pos)
			if err != nil || m == nil {
				return err
			}
			pos = m.Sequence - 1
			e, ok, err := entry(m)
			if err != nil {
				return err
			}
			if ok && p.f.After > 0 && e.Seq <= p.f.After {
				return nil
			}
			if ok && p.f.match(&e) && !p.take(e) {
				return nil
			}
		}
		return nil
	}
	pos := state.FirstSeq
	if p.f.After > 0 {
		s, err := at(p.f.After + 1)
		if err != nil {
			return err
		}
		pos = s
	}
	p.setup = p.page.Reads
	for !p.spent() {
		m, err := c.next(ctx, pos)
		if err != nil || m == nil {
			return err
		}
		pos = m.Sequence + 1
		e, ok, err := entry(m)
		if err != nil {
			return err
		}
		if ok && p.f.Before > 0 && e.Seq >= p.f.Before {
			return nil
		}
		if ok && p.f.match(&e) && !p.take(e) {
			return nil
		}
	}
	return nil
}

// listScan pages the log itself, for a filter the index does not serve
// (outcome, time range, or none).
func (l *Log) listScan(ctx context.Context, tenant string, st jetstream.Stream, first, last uint64, p *pager) error {
	f := &p.f
	subject := names.AuditEntry(tenant)
	decode := func(m rawMsg) (Entry, bool) {
		p.page.Reads++
		var e Entry
		if err := decodeJSON(m.data, &e); err != nil {
			l.log.Warn("audit list skips a message that is not an entry", "tenant_id", tenant, "stream_seq", m.seq)
			return e, false
		}
		return e, true
	}
	if !f.Newest {
		from := first
		if f.After > 0 {
			var err error
			if from, err = locate(ctx, st, subject, first, last, f.After+1, &p.page.Reads, entrySeq); err != nil {
				return err
			}
			p.setup = p.page.Reads
		}
		if from > last {
			return nil
		}
		return readRange(ctx, st, subject, from, last, func(m rawMsg) bool {
			if p.spent() {
				return false
			}
			e, ok := decode(m)
			switch {
			case !ok:
				return true
			case f.Before > 0 && e.Seq >= f.Before:
				return false
			}
			p.seen = e.Seq
			return !f.match(&e) || p.take(e)
		})
	}

	// Newest first: read windows of the stream backwards.
	hi := last
	if f.Before > 0 {
		s, err := locate(ctx, st, subject, first, last, f.Before, &p.page.Reads, entrySeq)
		if err != nil {
			return err
		}
		hi = s - 1
		p.setup = p.page.Reads
	}
	window := uint64(max(2*(p.limit+1), 64))
	for hi >= first && hi > 0 {
		if p.spent() {
			return nil
		}
		if f.Budget > 0 {
			window = min(window, uint64(max(f.Budget+p.setup-p.page.Reads, 1)))
		}
		lo := first
		if hi-first+1 > window {
			lo = hi - window + 1
		}
		var buf []Entry
		err := readRange(ctx, st, subject, lo, hi, func(m rawMsg) bool {
			if e, ok := decode(m); ok {
				buf = append(buf, e)
			}
			return true
		})
		if err != nil {
			return err
		}
		for i := len(buf) - 1; i >= 0; i-- {
			e := buf[i]
			if f.After > 0 && e.Seq <= f.After {
				return nil
			}
			p.seen = e.Seq
			if f.match(&e) && !p.take(e) {
				return nil
			}
		}
		if lo == first {
			break
		}
		hi = lo - 1
		window = min(window*2, 8192)
	}
	return nil
}

// locate returns the smallest stream sequence s in [first, last+1] such that
// the first message on subject stored at s or later names an entry with Seq
// >= target (last+1 if none), with a binary search of O(log n) reads, each
// counted in reads. seqOf reads the entry's Seq from a message (an entry's
// own, or an index entry's). Entries and index entries are stored in Seq
// order; in a tampered stream the answer may be off, which Verify reports.
func locate(ctx context.Context, st jetstream.Stream, subject string, first, last, target uint64, reads *int, seqOf func([]byte) (uint64, bool)) (uint64, error) {
	lo, hi := first, last+1
	for lo < hi {
		mid := lo + (hi-lo)/2
		*reads++
		m, err := st.GetMsg(ctx, mid, jetstream.WithGetMsgSubject(subject))
		if errors.Is(err, jetstream.ErrMsgNotFound) {
			hi = mid
			continue
		}
		if err != nil {
			return 0, err
		}
		if seq, ok := seqOf(m.Data); !ok || seq >= target {
			hi = mid
		} else {
			lo = m.Sequence + 1
		}
	}
	return lo, nil
}

// entrySeq reads the Seq of a stored entry.
func entrySeq(data []byte) (uint64, bool) {
	var head struct {
		Seq uint64 `json:"seq"`
	}
	return head.Seq, json.Unmarshal(data, &head) == nil
}

// refSeq reads the Seq of the entry an index entry names.
func refSeq(data []byte) (uint64, bool) {
	r, ok := decodeRef(data)
	return r.seq, ok
}

// rawMsg is a stored message as readRange delivers it.
type rawMsg struct {
	subject string
	seq     uint64
	data    []byte
}

// readBatch is how many messages one fetch asks for.
const readBatch = 512

// readRange calls fn, in stream order, with every message on subject (""
// for all) whose stream sequence is in [from, to], until fn returns false.
// It reads through a short-lived ephemeral consumer that needs no acks.
func readRange(ctx context.Context, st jetstream.Stream, subject string, from, to uint64, fn func(rawMsg) bool) error {
	cfg := jetstream.ConsumerConfig{
		AckPolicy:         jetstream.AckNonePolicy,
		MemoryStorage:     true,
		InactiveThreshold: time.Minute,
		FilterSubject:     subject,
		DeliverPolicy:     jetstream.DeliverAllPolicy,
	}
	if from > 1 {
		cfg.DeliverPolicy = jetstream.DeliverByStartSequencePolicy
		cfg.OptStartSeq = from
	}
	cons, err := st.CreateConsumer(ctx, cfg)
	if err != nil {
		return fmt.Errorf("read consumer: %w", err)
	}
	info := cons.CachedInfo()
	defer func() {
		dctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = st.DeleteConsumer(dctx, info.Name)
	}()
	pending := info.NumPending
	for pending > 0 {
		if err := ctx.Err(); err != nil {
			return err
		}
		batch, err := cons.FetchNoWait(int(min(pending, readBatch)))
		if err != nil {
			return fmt.Errorf("read: %w", err)
		}
		got := uint64(0)
		for m := range batch.Messages() {
			got++
			md, err := m.Metadata()
			if err != nil {
				return fmt.Errorf("read: %w", err)
			}
			if md.Sequence.Stream > to {
				return nil
			}
			if !fn(rawMsg{subject: m.Subject(), seq: md.Sequence.Stream, data: m.Data()}) {
				return nil
			}
		}
		if err := batch.Error(); err != nil {
			return fmt.Errorf("read: %w", err)
		}
		if got == 0 {
			return nil
		}
		pending -= min(got, pending)
	}
	return nil
}

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
	// value.
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

// List returns one page of the tenant's entries that match f, oldest first
// (or newest first with f.Newest), and the cursor of the next page: pass it
// as f.After (oldest first) or f.Before (newest first). The cursor is 0 when
// there is no further match. List does not verify the chain; stored
// messages that are not entries are skipped.
func (l *Log) List(ctx context.Context, tenant string, f Filter) ([]Entry, uint64, error) {
	if err := checkTenant(tenant); err != nil {
		return nil, 0, err
	}
	limit := f.Limit
	if limit <= 0 {
		limit = defaultLimit
	}
	limit = min(limit, maxLimit)
	st, err := l.js.Stream(ctx, names.AuditStream(tenant))
	if errors.Is(err, jetstream.ErrStreamNotFound) {
		return nil, 0, ErrNotFound.New()
	}
	if err != nil {
		return nil, 0, errUnavailable.Wrap(fmt.Errorf("audit: list %s: %w", tenant, err))
	}
	info, err := st.Info(ctx)
	if err != nil {
		return nil, 0, errUnavailable.Wrap(fmt.Errorf("audit: list %s: %w", tenant, err))
	}
	first, last := info.State.FirstSeq, info.State.LastSeq
	if info.State.Msgs == 0 {
		return nil, 0, nil
	}
	subject := names.AuditEntry(tenant)
	var out []Entry
	var next uint64
	// take adds a match and reports whether to go on. A match beyond the page
	// only proves that there is a next page.
	take := func(e Entry) bool {
		if len(out) == limit {
			next = out[len(out)-1].Seq
			return false
		}
		out = append(out, e)
		return true
	}
	decode := func(m rawMsg) (Entry, bool) {
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
			if from, err = locate(ctx, st, subject, first, last, f.After+1); err != nil {
				return nil, 0, errUnavailable.Wrap(fmt.Errorf("audit: list %s: %w", tenant, err))
			}
		}
		if from <= last {
			err = readRange(ctx, st, subject, from, last, func(m rawMsg) bool {
				e, ok := decode(m)
				switch {
				case !ok:
					return true
				case f.Before > 0 && e.Seq >= f.Before:
					return false
				case !f.match(&e):
					return true
				}
				return take(e)
			})
		}
		if err != nil {
			return nil, 0, errUnavailable.Wrap(fmt.Errorf("audit: list %s: %w", tenant, err))
		}
		return out, next, nil
	}

	// Newest first: read windows of the stream backwards.
	hi := last
	if f.Before > 0 {
		p, err := locate(ctx, st, subject, first, last, f.Before)
		if err != nil {
			return nil, 0, errUnavailable.Wrap(fmt.Errorf("audit: list %s: %w", tenant, err))
		}
		hi = p - 1
	}
	window := uint64(max(2*(limit+1), 64))
	for hi >= first && hi > 0 {
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
			return nil, 0, errUnavailable.Wrap(fmt.Errorf("audit: list %s: %w", tenant, err))
		}
		for i := len(buf) - 1; i >= 0; i-- {
			e := buf[i]
			if f.After > 0 && e.Seq <= f.After {
				return out, next, nil
			}
			if f.match(&e) && !take(e) {
				return out, next, nil
			}
		}
		if lo == first {
			break
		}
		hi = lo - 1
		window = min(window*2, 8192)
	}
	return out, next, nil
}

// locate returns the smallest stream sequence s in [first, last+1] such that
// the first entry stored at s or later has Seq >= target (last+1 if none),
// with a binary search of O(log n) reads. Entries are stored in Seq order;
// in a tampered stream the answer may be off, which Verify reports.
func locate(ctx context.Context, st jetstream.Stream, subject string, first, last, target uint64) (uint64, error) {
	lo, hi := first, last+1
	for lo < hi {
		mid := lo + (hi-lo)/2
		m, err := st.GetMsg(ctx, mid, jetstream.WithGetMsgSubject(subject))
		if errors.Is(err, jetstream.ErrMsgNotFound) {
			hi = mid
			continue
		}
		if err != nil {
			return 0, err
		}
		var head struct {
			Seq uint64 `json:"seq"`
		}
		if json.Unmarshal(m.Data, &head) != nil || head.Seq >= target {
			hi = mid
		} else {
			lo = m.Sequence + 1
		}
	}
	return lo, nil
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

package queue

import (
	"errors"
	"fmt"
	"runtime/debug"

	bolt "go.etcd.io/bbolt"
)

// request is one Append or Ack waiting for the committer.
type request struct {
	msgs [][]byte
	side map[string][]byte
	ack  bool
	upTo uint64

	res  Appended
	err  error
	done chan struct{}
}

// errNoChange ends a transaction that changed nothing, without a commit.
var errNoChange = errors.New("queue: nothing to commit")

// Append stores msgs in order, and the side values (a nil value deletes its
// key), in one transaction, and returns once it is durable. Concurrent
// calls share a commit. When the bound is reached, Options.Full decides;
// see Appended. A message larger than Options.MaxMessageBytes fails the
// call with ErrTooLarge and stores nothing.
func (q *Queue) Append(msgs [][]byte, side map[string][]byte) (Appended, error) {
	for _, m := range msgs {
		if len(m) > q.opts.MaxMessageBytes {
			return Appended{}, fmt.Errorf("%w: message of %d bytes (limit %d)", ErrTooLarge, len(m), q.opts.MaxMessageBytes)
		}
	}
	for k, v := range side {
		if k == "" || len(k) > maxSideKey || len(v) > maxSideValue {
			return Appended{}, fmt.Errorf("%w: side key of %d bytes (1..%d) or value of %d bytes (limit %d)", ErrTooLarge, len(k), maxSideKey, len(v), maxSideValue)
		}
	}
	if len(msgs) == 0 && len(side) == 0 {
		return Appended{}, nil
	}
	r := &request{msgs: msgs, side: side}
	err := q.submit(r)
	return r.res, err
}

// Ack removes every record with an id up to upTo, durably. Records already
// gone (acknowledged or dropped) are skipped; an id never appended is
// ErrUnknownID.
func (q *Queue) Ack(upTo uint64) error {
	return q.submit(&request{ack: true, upTo: upTo})
}

// submit hands r to the committer and waits for its result.
func (q *Queue) submit(r *request) error {
	r.done = make(chan struct{})
	select {
	case q.reqs <- r:
	case <-q.quit:
		return ErrClosed
	}
	<-r.done
	return r.err
}

// run is the committer: it takes every request that is waiting and commits
// them in one transaction, until Close.
func (q *Queue) run() {
	defer close(q.done)
	debug.SetPanicOnFault(true)
	batch := make([]*request, 0, maxGroup)
	for {
		select {
		case r := <-q.reqs:
			batch = append(batch[:0], r)
		case <-q.quit:
			return
		}
	more:
		for len(batch) < maxGroup {
			select {
			case r := <-q.reqs:
				batch = append(batch, r)
			default:
				break more
			}
		}
		q.commit(batch)
		for i, r := range batch {
			close(r.done)
			batch[i] = nil
		}
	}
}

// commit applies a group of requests in one transaction. A request's own
// refusal (an Ack too far) is its error alone; a storage error fails the
// whole group and changes nothing.
func (q *Queue) commit(batch []*request) {
	q.mu.RLock()
	work, broken := q.st, q.broken
	q.mu.RUnlock()
	if broken != nil {
		for _, r := range batch {
			r.err = broken
		}
		return
	}
	refusedBefore := work.refused
	dirty := false
	err := q.update(func(tx *bolt.Tx) error {
		w := &txn{q: q, st: &work, recs: tx.Bucket(bucketRecords), side: tx.Bucket(bucketSide)}
		w.recs.FillPercent = 1 // appends go to the end
		for _, r := range batch {
			r.res, r.err = Appended{}, nil
			if err := w.apply(r); err != nil {
				return err
			}
		}
		if !w.dirty {
			return errNoChange
		}
		dirty = true
		return tx.Bucket(bucketMeta).Put(metaState, work.encode())
	})
	if err != nil && !errors.Is(err, errNoChange) {
		for _, r := range batch {
			r.res, r.err = Appended{}, err
		}
		if errors.Is(err, ErrCorrupt) {
			q.mu.Lock()
			q.broken = err
			q.mu.Unlock()
		}
		return
	}
	q.mu.Lock()
	appended := work.next != q.st.next
	q.st = work
	if dirty {
		q.commits++
		q.unsaved = false
	} else if work.refused != refusedBefore {
		q.unsaved = true
	}
	q.mu.Unlock()
	if appended {
		select {
		case q.appended <- struct{}{}:
		default:
		}
	}
}

// txn is the state of one commit.
type txn struct {
	q          *Queue
	st         *state
	recs, side *bolt.Bucket
	dirty      bool
}

// apply applies one request.
func (w *txn) apply(r *request) error {
	if r.ack {
		if r.upTo >= w.st.next {
			r.err = fmt.Errorf("%w: %d (next id %d)", ErrUnknownID, r.upTo, w.st.next)
			return nil
		}
		for w.st.head <= r.upTo && w.st.head < w.st.next {
			if err := w.removeHead(); err != nil {
				return err
			}
			w.st.acked++
		}
		return nil
	}
	o := w.q.opts
	for i, m := range r.msgs {
		size := uint64(recordOverhead + len(m))
		if w.full(size) && o.Full == RefuseNewest {
			r.res.Refused = len(r.msgs) - i
			w.st.refused += uint64(r.res.Refused)
			break
		}
		for w.full(size) && w.st.head < w.st.next {
			if err := w.removeHead(); err != nil {
				return err
			}
			w.st.dropped++
			r.res.Dropped++
		}
		key := idKey(w.st.next)
		sealed, err := w.q.seal.seal(kindRecord, key, m)
		if err != nil {
			return err
		}
		if err := w.recs.Put(key, sealed); err != nil {
			return err
		}
		if r.res.Accepted == 0 {
			r.res.FirstID = w.st.next
		}
		r.res.Accepted++
		w.st.next++
		w.st.bytes += size
		w.st.appended++
		w.dirty = true
	}
	for k, v := range r.side {
		key := []byte(k)
		w.dirty = true
		if v == nil {
			if err := w.side.Delete(key); err != nil {
				return err
			}
			continue
		}
		sealed, err := w.q.seal.seal(kindSide, key, v)
		if err != nil {
			return err
		}
		if err := w.side.Put(key, sealed); err != nil {
			return err
		}
	}
	return nil
}

// full reports whether a record of size does not fit the bound.
func (w *txn) full(size uint64) bool {
	o := w.q.opts
	return w.st.bytes+size > uint64(o.MaxBytes) || (o.MaxMessages > 0 && w.st.next-w.st.head >= uint64(o.MaxMessages))
}

// removeHead deletes the oldest record.
func (w *txn) removeHead() error {
	key := idKey(w.st.head)
	v := w.recs.Get(key)
	if v == nil {
		return fmt.Errorf("%w: record %d is missing below the next id %d", ErrCorrupt, w.st.head, w.st.next)
	}
	size := uint64(8 + len(v))
	if err := w.recs.Delete(key); err != nil {
		return err
	}
	w.st.head++
	w.st.bytes -= min(size, w.st.bytes)
	w.dirty = true
	return nil
}

package store

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"strconv"
	"sync"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// Group commit (Config.GroupCommit): a server that fsyncs every write
// (SyncAlways) fsyncs each plain publish on its own, so concurrent uploads
// queue behind one fsync each. A committer per stream gathers what every
// caller has queued and publishes it as one JetStream atomic batch, which
// nats-server (2.15, R1 file store) stores with a fixed number of fsyncs
// (see minBatch), whatever its size, before its single acknowledgement.
// While one batch commits, the next one fills: there is no timer and no
// linger. Batching is an optimisation only: a batch refused because it
// holds a content id already stored is split until its parts commit or
// are published one by one, and a batch refused for any other reason (a
// timeout) is published one by one; so a resent message is stored once and
// counted as a duplicate, and the others are stored.

// Headers of JetStream's atomic batch publish (nats-server 2.12+).
const (
	hdrBatchID     = "Nats-Batch-Id"
	hdrBatchSeq    = "Nats-Batch-Sequence"
	hdrBatchCommit = "Nats-Batch-Commit"
)

// maxBatch is the most messages one atomic batch holds (the server's
// limit, streamDefaultMaxAtomicBatchSize).
const maxBatch = 1000

// minBatch is the fewest messages sent as an atomic batch. nats-server
// stages an R1 batch in a file store of its own (created, synced and
// removed for each batch), so that a batch of any size costs four fsyncs
// (three of the staging store, one of the stream; counted with strace on
// v2.15.2) where a message published on its own costs one: fewer messages
// than this are published one by one.
const minBatch = 5

// ErrClosed is the failure of an append to a closed store (Store.Close),
// and of the writes it left in flight.
var ErrClosed = errors.New("store: closed")

// committer publishes the queued messages of one stream in atomic batches,
// one batch in flight at a time (a stream's batches are committed one
// after the other by the server anyway; one at a time also keeps every
// caller's order through a fallback). Its goroutine runs only while
// something is queued.
type committer struct {
	s      *Store
	stream string
	prefix string // of the batch ids: random, so no two processes share one

	// ctx ends at close: what is in flight then fails at once.
	ctx    context.Context
	cancel context.CancelFunc

	mu      sync.Mutex
	idle    sync.Cond // signalled when the goroutine stops
	queue   []entry
	running bool
	closed  bool
	batches uint64 // batch ids made so far (by the goroutine only)
}

// entry is one queued message and the Waiter of the call it came with.
type entry struct {
	msg  *nats.Msg
	call *appending
}

func newCommitter(s *Store, stream string) *committer {
	var b [8]byte
	_, _ = rand.Read(b[:])
	c := &committer{s: s, stream: stream, prefix: hex.EncodeToString(b[:]) + "-"}
	c.ctx, c.cancel = context.WithCancel(context.Background())
	c.idle.L = &c.mu
	return c
}

// committer returns the stream's committer, made on first use, or
// ErrClosed.
func (s *Store) committer(stream string) (*committer, error) {
	s.commitMu.Lock()
	defer s.commitMu.Unlock()
	if s.closed {
		return nil, ErrClosed
	}
	c, ok := s.committers[stream]
	if !ok {
		if s.committers == nil {
			s.committers = map[string]*committer{}
		}
		c = newCommitter(s, stream)
		s.committers[stream] = c
	}
	return c, nil
}

// enqueue queues msgs, in order and together; w settles as they are
// stored.
func (c *committer) enqueue(w *appending, msgs []*nats.Msg) {
	if len(msgs) == 0 {
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		w.fail(fmt.Errorf("store: publish to %s: %w", c.stream, ErrClosed))
		return
	}
	for _, m := range msgs {
		c.queue = append(c.queue, entry{msg: m, call: w})
	}
	if !c.running {
		c.running = true
		go c.run()
	}
}

// run commits what is queued, a batch at a time, until nothing is.
func (c *committer) run() {
	var batch []entry
	for {
		c.mu.Lock()
		if len(c.queue) == 0 {
			c.running = false
			c.idle.Broadcast()
			c.mu.Unlock()
			return
		}
		n := min(len(c.queue), maxBatch)
		batch = append(batch[:0], c.queue[:n]...)
		rest := copy(c.queue, c.queue[n:])
		clear(c.queue[rest:])
		c.queue = c.queue[:rest]
		c.mu.Unlock()

		c.commit(batch)
		for _, e := range batch {
			c.s.pub.recycle(e.msg) // published (copied) or failed
		}
		clear(batch)
	}
}

// close fails what is queued and what is in flight, and waits until the
// goroutine stopped; enqueue fails from then on.
func (c *committer) close() {
	c.cancel()
	c.mu.Lock()
	defer c.mu.Unlock()
	c.closed = true
	for _, e := range c.queue {
		e.call.fail(fmt.Errorf("store: publish to %s: %w", c.stream, ErrClosed))
	}
	clear(c.queue)
	c.queue = c.queue[:0]
	for c.running {
		c.idle.Wait()
	}
}

// commit stores batch, in order: as one atomic batch, or each message on
// its own when there are fewer than minBatch or the batch failed. A batch
// refused for holding a content id already stored (a resend, of which the
// server does not say which) is split in two halves, each committed in
// turn the same way: a few resends among many cost a few more batches, not
// one fsync per message.
func (c *committer) commit(batch []entry) {
	if len(batch) < minBatch {
		c.publishEach(batch)
		return
	}
	c.batches++
	err := c.publishBatch(c.prefix+strconv.FormatUint(c.batches, 36), batch)
	if err == nil {
		c.s.batchSize.Observe(float64(len(batch)))
		for _, e := range batch {
			e.call.settle(false, nil)
		}
		return
	}
	c.s.fallbacks.Inc()
	for _, e := range batch {
		delete(e.msg.Header, hdrBatchID)
		delete(e.msg.Header, hdrBatchSeq)
		delete(e.msg.Header, hdrBatchCommit)
	}
	var apiErr *jetstream.APIError
	if errors.As(err, &apiErr) && apiErr.ErrorCode == errCodeBatchDuplicate {
		half := len(batch) / 2
		c.commit(batch[:half])
		c.commit(batch[half:])
		return
	}
	c.publishEach(batch)
}

// errCodeBatchDuplicate is JetStream's
// JSAtomicPublishContainsDuplicateMessageErr: a message of the batch has a
// content id the stream holds, or the batch holds one twice.
const errCodeBatchDuplicate jetstream.ErrorCode = 10201

// publishBatch publishes batch as one atomic batch and returns once the
// server acknowledged (stored and synced) all of it, or with why not.
func (c *committer) publishBatch(id string, batch []entry) error {
	nc := c.s.js.Conn()
	last := len(batch) - 1
	for i, e := range batch {
		m := e.msg
		setHeader(m, hdrBatchID, id)
		setHeader(m, hdrBatchSeq, strconv.Itoa(i+1))
		if i < last {
			if err := nc.PublishMsg(m); err != nil {
				return err
			}
		}
	}
	setHeader(batch[last].msg, hdrBatchCommit, "1")
	resp, _, err := c.request(batch[last].msg)
	if err != nil {
		return err
	}
	// The commit's acknowledgement ends with ,"batch":"<id>","count":<n>}.
	if want := fmt.Sprintf(`"batch":%q,"count":%d}`, id, len(batch)); !bytes.HasSuffix(resp.Data, []byte(want)) {
		return fmt.Errorf("store: batch acknowledgement %q, want one ending in %s", resp.Data, want)
	}
	return nil
}

// setHeader sets a header of m to v, reusing what a pooled message had.
func setHeader(m *nats.Msg, k, v string) { m.Header[k] = append(m.Header[k][:0], v) }

// publishEach publishes every message of batch on its own (each stored and
// synced before its acknowledgement), one after the other, and settles
// each.
func (c *committer) publishEach(batch []entry) {
	for _, e := range batch {
		_, dup, err := c.request(e.msg)
		if err == nil && !dup {
			c.s.batchSize.Observe(1)
		}
		e.call.settle(dup, err)
	}
}

// request publishes m and waits for its acknowledgement (a request, unlike
// the publisher's writes, fails as soon as the connection closes), which
// it returns with whether it reports a duplicate.
func (c *committer) request(m *nats.Msg) (*nats.Msg, bool, error) {
	ctx, cancel := context.WithTimeout(c.ctx, publishTimeout)
	defer cancel()
	resp, err := c.s.js.Conn().RequestMsgWithContext(ctx, m)
	switch {
	case err != nil && c.ctx.Err() != nil:
		return nil, false, ErrClosed
	case errors.Is(err, nats.ErrNoResponders):
		return nil, false, jetstream.ErrNoStreamResponse
	case err != nil:
		return nil, false, err
	}
	dup, err := parseAck(resp)
	return resp, dup, err
}

// writer takes the writes of one AppendAsync call: each published at once
// (the publisher), or gathered and queued together for the stream's
// committer (GroupCommit).
type writer struct {
	s    *Store
	w    *appending
	c    *committer // nil: publish at once
	msgs []*nats.Msg
}

// writer returns the writer of a call with n writes to stream.
func (s *Store) writer(stream string, n int) (writer, error) {
	wr := writer{s: s, w: newAppending(n)}
	if s.cfg.GroupCommit {
		c, err := s.committer(stream)
		if err != nil {
			return writer{}, err
		}
		wr.c, wr.msgs = c, make([]*nats.Msg, 0, n)
	}
	return wr, nil
}

// add publishes (or gathers) one write to subject with the given header
// values (pairs of key, value) and data. Published at once, its reply
// subject is reply, made with the write number id by the publisher's
// appendReply (id 0: the publisher makes them); gathered, they are unused.
func (wr *writer) add(subject, reply string, id uint64, data []byte, hdr ...string) error {
	if wr.c == nil {
		return wr.s.pub.publish(wr.w, subject, reply, id, data, hdr...)
	}
	wr.msgs = append(wr.msgs, wr.s.pub.message(subject, data, hdr...))
	return nil
}

// done queues what was gathered and returns the call's Waiter.
func (wr *writer) done() Waiter {
	if wr.c != nil {
		wr.c.enqueue(wr.w, wr.msgs)
	}
	return wr.w
}

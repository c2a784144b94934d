package audit

import (
	"context"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/iotransit/iotransit/internal/backbone/names"
)

// The index
//
// A list filtered by actor, action or target reads the tenant's index, not
// the log: for each entry, the stream AUDX_{tenant} holds one index entry
// per field, on the subject auditx.{tenant}.{field}.{key}, where key is the
// first 16 bytes of the SHA-256 of the field's value in hex (any text
// becomes one subject token). An index entry's data is the entry's Seq and
// its stream sequence in AUD_{tenant}, 8 bytes each, big endian. JetStream
// keeps per-subject state, so the index entries of one value are found
// without reading the others: "the next (or last) index entry of this
// subject from (or up to) a sequence" is one request. A list reads the
// index entries of its most selective field and then each entry they name,
// and checks the entry against the whole filter (a digest collision or a
// stale index entry cannot let a wrong entry through). In a cluster the
// newest-first walk may be answered by a replica a moment behind the
// leader (direct gets): an entry indexed in that moment may be missing
// from a list made at once, never a wrong one listed.
//
// The log itself is not changed: entries stay where Append writes them,
// and Verify reads only AUD_{tenant}. The index is derived data: it is
// brought up to date before each filtered list (an entry appended since is
// indexed then, once), so a log written before the index existed is indexed
// by its first filtered list. Index entries are written in entry order, three
// per entry (actor, action, target, an empty target too); each carries the
// message id e{Seq}.{field}, and each one after the first of a catch-up
// expects the previous one as the stream's last: so processes indexing the
// same tenant at once never interleave, duplicate or reorder index entries,
// and a catch-up that loses the race stops and starts again from what the
// stream holds. The index stream refuses deletes and purges like the log,
// and expires with the log's retention.

// indexFields are the fields of an entry that are indexed, in the order
// their index entries are written.
var indexFields = [...]string{"actor", "action", "target"}

// fieldValue returns the value of an indexed field of e.
func fieldValue(e *Entry, field string) string {
	switch field {
	case "actor":
		return e.Actor
	case "action":
		return e.Action
	}
	return e.Target
}

// indexKey is the subject token of a field's value.
func indexKey(value string) string {
	sum := sha256.Sum256([]byte(value))
	return hex.EncodeToString(sum[:16])
}

// indexRef is an index entry's data: which entry, and where it is stored.
type indexRef struct {
	seq, streamSeq uint64
}

func (r indexRef) encode() []byte {
	b := make([]byte, 16)
	binary.BigEndian.PutUint64(b, r.seq)
	binary.BigEndian.PutUint64(b[8:], r.streamSeq)
	return b
}

func decodeRef(b []byte) (indexRef, bool) {
	if len(b) != 16 {
		return indexRef{}, false
	}
	return indexRef{binary.BigEndian.Uint64(b), binary.BigEndian.Uint64(b[8:])}, true
}

// indexes is what a Log knows of its tenants' indexes.
type indexes struct {
	mu      sync.Mutex
	tenants map[string]*indexState
}

// indexState serializes the catch-ups of one tenant's index within the
// process and holds its stream once ensured.
type indexState struct {
	mu sync.Mutex
	st jetstream.Stream
}

func (x *indexes) state(tenant string) *indexState {
	x.mu.Lock()
	defer x.mu.Unlock()
	if x.tenants == nil {
		x.tenants = map[string]*indexState{}
	}
	s := x.tenants[tenant]
	if s == nil {
		s = &indexState{}
		x.tenants[tenant] = s
	}
	return s
}

// errCodeWrongLastMsgID is JetStream's error code of a publish whose
// expected last message id is not the stream's.
const errCodeWrongLastMsgID jetstream.ErrorCode = 10070

// indexBatch is how many index entries a catch-up publishes before it
// waits for their acknowledgements.
const indexBatch = 768

// index brings the tenant's index up to the entries of log (the tenant's
// AUD stream) stored now, and returns the index stream.
func (l *Log) index(ctx context.Context, tenant string, log jetstream.Stream) (jetstream.Stream, error) {
	is := l.idx.state(tenant)
	is.mu.Lock()
	defer is.mu.Unlock()
	if is.st == nil {
		// Kept as the log is (storage, retention, replicas, no deletes or
		// purges), and readable by direct gets.
		cfg := log.CachedInfo().Config
		cfg.Name = names.AuditIndexStream(tenant)
		cfg.Description = "index of the audit log of tenant " + tenant + " by actor, action and target"
		cfg.Subjects = []string{names.AuditIndexes(tenant)}
		cfg.AllowDirect = true
		st, err := l.streams.Stream(ctx, cfg)
		if err != nil {
			return nil, fmt.Errorf("ensure index stream: %w", err)
		}
		is.st = st
	}
	for attempt := 1; ; attempt++ {
		lost, err := l.catchUp(ctx, tenant, log, is.st)
		if err != nil || !lost {
			return is.st, err
		}
		if attempt == appendAttempts {
			return nil, fmt.Errorf("index: still contended after %d attempts", attempt)
		}
	}
}

// catchUp indexes the entries stored after the last one indexed. lost
// reports that another process indexed at the same time: what it wrote
// is right, and the caller starts again from there.
func (l *Log) catchUp(ctx context.Context, tenant string, log, ix jetstream.Stream) (lost bool, err error) {
	info, err := ix.Info(ctx)
	if err != nil {
		return false, err
	}
	w := &indexWriter{l: l, tenant: tenant, ix: ix, lastSeq: info.State.LastSeq}
	var last indexRef
	resume := len(indexFields) // the next field of the last entry indexed
	if info.State.Msgs > 0 {
		m, err := ix.GetMsg(ctx, info.State.LastSeq)
		if err != nil {
			return false, err
		}
		ref, ok := decodeRef(m.Data)
		if !ok {
			return false, fmt.Errorf("index entry %d is not an index entry", m.Sequence)
		}
		last, w.lastID = ref, m.Header.Get(jetstream.MsgIDHeader)
		// auditx.{tenant}.{field}.{key}
		if parts := strings.Split(m.Subject, "."); len(parts) == 4 {
			for i, f := range indexFields {
				if parts[2] == f {
					resume = i + 1
				}
			}
		}
	}
	if resume < len(indexFields) {
		// A catch-up stopped inside an entry: finish it.
		m, err := log.GetMsg(ctx, last.streamSeq)
		if err != nil {
			return false, err
		}
		if e, ok := listedEntry(m.Data); ok && e.Seq == last.seq {
			w.entry(&e, last.streamSeq, resume)
		}
	}
	loginfo, err := log.Info(ctx)
	if err != nil {
		return false, err
	}
	if loginfo.State.LastSeq > last.streamSeq {
		err = readRange(ctx, log, names.AuditEntry(tenant), last.streamSeq+1, loginfo.State.LastSeq, func(m rawMsg) bool {
			e, ok := listedEntry(m.data)
			if !ok || e.Seq <= last.seq {
				return true // not an entry (Verify reports it), or indexed
			}
			w.entry(&e, m.seq, 0)
			return w.err == nil && (len(w.pending) < indexBatch || w.flush(ctx))
		})
	}
	if err == nil && w.err == nil {
		w.flush(ctx)
	}
	if w.lost {
		return true, nil
	}
	return false, errors.Join(err, w.err)
}

// listedEntry decodes an entry as List does (not only the exact stored
// form: the index lists what an unfiltered list would show).
func listedEntry(data []byte) (Entry, bool) {
	var e Entry
	return e, decodeJSON(data, &e) == nil && e.Seq > 0
}

// indexWriter publishes index entries in order, each after the one before.
type indexWriter struct {
	l       *Log
	tenant  string
	ix      jetstream.Stream
	lastSeq uint64 // the index stream's last sequence when the catch-up began
	lastID  string // the message id of the last index entry published
	pending []jetstream.PubAckFuture
	lost    bool
	err     error
}

// entry queues the index entries of e from field number from on.
func (w *indexWriter) entry(e *Entry, streamSeq uint64, from int) {
	for _, f := range indexFields[from:] {
		id := "e" + strconv.FormatUint(e.Seq, 10) + "." + f
		msg := nats.NewMsg(names.AuditIndex(w.tenant, f, indexKey(fieldValue(e, f))))
		msg.Data = indexRef{e.Seq, streamSeq}.encode()
		msg.Header.Set(jetstream.MsgIDHeader, id)
		opts := []jetstream.PublishOpt{jetstream.WithExpectStream(names.AuditIndexStream(w.tenant))}
		if w.lastID == "" {
			opts = append(opts, jetstream.WithExpectLastSequence(w.lastSeq))
		} else {
			opts = append(opts, jetstream.WithExpectLastMsgID(w.lastID))
		}
		f, err := w.l.js.PublishMsgAsync(msg, opts...)
		if err != nil {
			w.err = err
			return
		}
		w.pending = append(w.pending, f)
		w.lastID = id
	}
}

// flush waits for the published index entries; it reports whether all
// were stored (or found stored already).
func (w *indexWriter) flush(ctx context.Context) bool {
	defer func() { w.pending = w.pending[:0] }()
	for _, f := range w.pending {
		select {
		case <-f.Ok():
		case err := <-f.Err():
			var apiErr *jetstream.APIError
			if wrongLastSequence(err) || errors.As(err, &apiErr) && apiErr.ErrorCode == errCodeWrongLastMsgID {
				w.lost = true
			} else {
				w.err = fmt.Errorf("index: %w", err)
			}
			return false
		case <-ctx.Done():
			w.err = ctx.Err()
			return false
		}
	}
	return true
}

// indexCursor walks the index entries of one subject.
type indexCursor struct {
	ix      jetstream.Stream
	stream  string // its name
	subject string
	prefix  string // the JetStream API prefix, for direct gets
	nc      *nats.Conn
	reads   *int
}

// next returns the first index entry of the subject at or after seq.
func (c *indexCursor) next(ctx context.Context, seq uint64) (*jetstream.RawStreamMsg, error) {
	*c.reads++
	m, err := c.ix.GetMsg(ctx, seq, jetstream.WithGetMsgSubject(c.subject))
	if errors.Is(err, jetstream.ErrMsgNotFound) {
		return nil, nil
	}
	return m, err
}

// prev returns the last index entry of the subject at or before seq.
// JetStream has no "previous by subject", but a direct get of the last
// message per subject up to a sequence is one: asked for one literal
// subject, it answers that subject's last message at or before seq.
func (c *indexCursor) prev(ctx context.Context, seq uint64) (*jetstream.RawStreamMsg, error) {
	*c.reads++
	if seq == 0 {
		return nil, nil
	}
	req, err := json.Marshal(struct {
		MultiLastFor []string `json:"multi_last"`
		UpToSeq      uint64   `json:"up_to_seq"`
	}{[]string{c.subject}, seq})
	if err != nil {
		return nil, err
	}
	rctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	// The answer is the message, then an end-of-batch status this
	// request no longer waits for.
	resp, err := c.nc.RequestWithContext(rctx, c.prefix+"DIRECT.GET."+c.stream, req)
	if err != nil {
		return nil, err
	}
	if len(resp.Data) == 0 && resp.Header.Get("Status") != "" {
		if resp.Header.Get("Status") == "404" {
			return nil, nil
		}
		return nil, fmt.Errorf("direct get: %s %s", resp.Header.Get("Status"), resp.Header.Get("Description"))
	}
	n, err := strconv.ParseUint(resp.Header.Get(jetstream.SequenceHeader), 10, 64)
	if err != nil {
		return nil, fmt.Errorf("direct get: no sequence in the answer")
	}
	return &jetstream.RawStreamMsg{Subject: resp.Header.Get(jetstream.SubjectHeader), Sequence: n, Header: resp.Header, Data: resp.Data}, nil
}

// apiPrefix is the subject prefix of the JetStream API that js uses.
func apiPrefix(js jetstream.JetStream) string {
	o := js.Options()
	switch {
	case o.Domain != "":
		return "$JS." + o.Domain + ".API."
	case o.APIPrefix != "":
		return strings.TrimSuffix(o.APIPrefix, ".") + "."
	}
	return jetstream.DefaultAPIPrefix
}

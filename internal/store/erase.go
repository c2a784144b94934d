package store

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/iotransit/iotransit/internal/backbone/names"
	"github.com/iotransit/iotransit/internal/fault"
	"github.com/iotransit/iotransit/internal/kms"
	"github.com/iotransit/iotransit/internal/thingsee"
)

// Erasure of one sensor's data (GDPR Art. 17)
//
// EraseDevice removes every stored record of a sensor (tsmTuid) of a
// tenant, in four parts, each through a JetStream API that the stream's
// leader replicates to every replica (a message delete is a replicated
// operation of the stream's group, applied by each replica's store):
//
//  1. its accepted messages, iot.{t}.msg.*.{tuid}.*: found by subject;
//  2. its dead letters, in the dead-letter stream of every integration of
//     the tenant (every stream on iot.{t}.dlq.*, also one an interrupted
//     integration deletion left): each carries the stored message's
//     Iot-Tuid header (forward/deadletters.go), read without the payload;
//  3. the copies of them re-driven to integrations,
//     iot.{t}.redrive.*.*.{tuid}.*: found by subject, after the dead
//     letters, so that a redrive running meanwhile leaves no copy;
//  4. its rejected messages: their subject names only the gateway, so each
//     record is opened (sealed under the tenant key, AAD "store/rejected")
//     and matches when its tsmTuid (or, for a whole payload, the tsmTuid of
//     any message in it, at any depth) is the sensor's, or when a payload
//     that is not a message (not JSON, a JSON string, an object without a
//     tsmTuid) holds the TUID's 17 characters.
//
// Delete, not purge. A subject-filtered purge is one operation, but the
// store holds the stream's lock while it loads every block the subjects
// span (for a sensor that reports all week, every block of the stream),
// which stalls the tenant's ingest for that long, and it cannot be stopped
// part way. So every record is deleted on its own: each delete is short,
// ingest goes on between them, and the walk stops at a deadline or when
// ctx ends, with nothing half done.
//
// Secure erase. A plain delete marks a record deleted; its bytes (subject
// and headers in plaintext, the sealed payload) stay in the block file
// until the block is compacted or retention removes it. A secure delete
// (JetStream's default message delete, SecureDeleteMsg) overwrites the
// record in place with random bytes, on every replica, at the cost of
// rewriting its block (up to 8 MB and an fsync) under the stream's lock.
// A part of at most SecureEraseMax records is secure-erased; a larger one
// is deleted plainly, so that an erasure never rewrites blocks by the
// thousand while ingest waits (docs/SECURITY.md says what stays on disk).
//
// Idempotent and resumable. A second erasure finds nothing and returns
// zeros. Parts 1 and 3 need no position: a "next by subject" read from the
// stream's start steps over deleted messages, so they always start afresh
// (and so also catch a message stored since the last call). Parts 2 and 4
// read every record; when the deadline stops them, Erasure.Next is the
// position (stream and sequence) where the next call goes on. Each scan
// stops at the stream's last sequence of when it started: a record stored
// after that is not the erasure's (a later call erases it).

// SecureEraseMax is the most records of one part (one stream's matches)
// that an erasure overwrites in place; above it they are deleted plainly.
const SecureEraseMax = 100

// The bounds in force (tests lower them).
var (
	secureEraseMax = SecureEraseMax
	scanBatch      = 256
	eraseClock     = time.Now
)

// ErrEraseCursor is a continuation that is not one an erasure returned.
var ErrEraseCursor = fault.Define("store.erase_cursor_invalid", fault.InvalidArgument, "the erasure's continuation is not valid")

// Erasure is what an erasure removed: records deleted from each part,
// how many of them were overwritten in place, and whether it is complete.
type Erasure struct {
	Messages    int
	Redriven    int
	DeadLetters int
	Rejected    int
	// Overwritten counts the records overwritten in place (secure erase);
	// the others were deleted without it.
	Overwritten int
	// Complete is false when the deadline stopped the erasure: Next then
	// continues it.
	Complete bool
	Next     string
}

// EraseOptions bound an erasure.
type EraseOptions struct {
	// Next is a previous Erasure.Next ("" to start).
	Next string
	// Deadline, when set, is when the erasure stops and returns what it
	// did with a continuation (Complete false).
	Deadline time.Time
}

// EraseDevice deletes every stored record of sensor tuid of tenant (see
// above). An error (ctx ended, the backbone failed) comes with what was
// erased before it; calling again finishes.
func (s *Store) EraseDevice(ctx context.Context, tenant, tuid string, opt EraseOptions) (Erasure, error) {
	var out Erasure
	if !names.ValidToken(tenant) {
		return out, ErrNoStream
	}
	if !thingsee.ValidTUID(tuid) {
		return out, ErrQueryInvalid.WithDetail("tsmTuid must be 17 characters: 4 uppercase letters, 2 digits, then 11 of A-Z and 0-9")
	}
	pos, err := decodeErasePos(opt.Next, tenant+"/"+tuid)
	if err != nil {
		return out, err
	}
	e := &eraser{s: s, ctx: ctx, tenant: tenant, tuid: tuid, deadline: opt.Deadline, out: &out}

	msgs, err := s.js.Stream(ctx, names.MessageStream(tenant))
	if errors.Is(err, jetstream.ErrStreamNotFound) {
		return out, ErrNoStream
	}
	if err != nil {
		return out, fmt.Errorf("store: erase: %w", err)
	}
	if done, err := e.bySubject(msgs, names.MessageFilter(tenant, "*", tuid, "*"), &out.Messages); err != nil || !done {
		if err == nil {
			out.Next = pos.encode() // nothing of the scans done yet
		}
		return out, err
	}

	dlqs, err := s.deadLetterStreams(ctx, tenant)
	if err != nil {
		return out, err
	}
	for _, name := range dlqs {
		if pos.rejected || (pos.stream != "" && name < pos.stream) {
			continue
		}
		start := uint64(1)
		if name == pos.stream {
			start = pos.seq
		}
		next, done, err := e.scan(name, start, true, e.deadLetterMatch, &out.DeadLetters)
		if err != nil || !done {
			if err == nil {
				out.Next = erasePos{owner: pos.owner, stream: name, seq: next}.encode()
			}
			return out, err
		}
	}

	// The re-driven copies after the dead letters: a redrive that read a
	// dead letter before the scan above deleted it has stored its copy by
	// now, and it is erased here.
	if done, err := e.bySubject(msgs, names.RedriveFilter(tenant, "*", "*", tuid, "*"), &out.Redriven); err != nil || !done {
		if err == nil {
			rej := pos
			if !rej.rejected {
				rej = erasePos{owner: pos.owner, rejected: true, seq: 1} // the dead letters are done
			}
			out.Next = rej.encode()
		}
		return out, err
	}

	start := uint64(1)
	if pos.rejected {
		start = pos.seq
	}
	next, done, err := e.scan(names.RejectedStream(tenant), start, false, e.rejectedMatch, &out.Rejected)
	if err != nil || !done {
		if err == nil {
			out.Next = erasePos{owner: pos.owner, rejected: true, seq: next}.encode()
		}
		return out, err
	}
	out.Complete = true
	return out, nil
}

// eraser is one erasure call.
type eraser struct {
	s        *Store
	ctx      context.Context
	tenant   string
	tuid     string
	deadline time.Time
	out      *Erasure
}

// stop reports whether the erasure must stop here: ctx ended (an error)
// or the deadline passed (no error: a continuation).
func (e *eraser) stop() (bool, error) {
	if err := e.ctx.Err(); err != nil {
		return true, err
	}
	return !e.deadline.IsZero() && !eraseClock().Before(e.deadline), nil
}

// bySubject deletes the messages of st on filter, counting them in n; it
// reports false when the deadline stopped it.
func (e *eraser) bySubject(st jetstream.Stream, filter string, n *int) (bool, error) {
	info, err := st.Info(e.ctx, jetstream.WithSubjectFilter(filter))
	if err != nil {
		return false, fmt.Errorf("store: erase: stream info: %w", err)
	}
	var total uint64
	src := filter
	for subj, c := range info.State.Subjects {
		total += c
		if len(info.State.Subjects) == 1 {
			src = subj // a literal subject is cheaper to step over
		}
	}
	secure := total <= uint64(secureEraseMax)
	for seq := uint64(1); total > 0; {
		if stop, err := e.stop(); stop {
			return false, err
		}
		m, err := st.GetMsg(e.ctx, seq, jetstream.WithGetMsgSubject(src))
		if errors.Is(err, jetstream.ErrMsgNotFound) {
			return true, nil
		}
		if err != nil {
			return false, fmt.Errorf("store: erase: get next %d: %w", seq, err)
		}
		if err := e.delete(st, m.Sequence, secure, n); err != nil {
			return false, err
		}
		seq = m.Sequence + 1
	}
	return true, nil
}

// delete removes one record, overwriting it in place when secure, and
// counts it in n. A record already gone (another erasure, retention) is
// not counted and is no error.
func (e *eraser) delete(st jetstream.Stream, seq uint64, secure bool, n *int) error {
	del := st.DeleteMsg
	if secure {
		del = st.SecureDeleteMsg
	}
	if err := del(e.ctx, seq); err != nil {
		if _, gerr := st.GetMsg(e.ctx, seq); errors.Is(gerr, jetstream.ErrMsgNotFound) {
			return nil
		}
		return fmt.Errorf("store: erase: delete %d of %s: %w", seq, st.CachedInfo().Config.Name, err)
	}
	*n++
	if secure {
		e.out.Overwritten++
	}
	return nil
}

// deadLetterStreams lists the tenant's dead-letter streams, by name.
func (s *Store) deadLetterStreams(ctx context.Context, tenant string) ([]string, error) {
	l := s.js.StreamNames(ctx, jetstream.WithStreamListSubject(names.DeadLetters(tenant)))
	var out []string
	for name := range l.Name() {
		out = append(out, name)
	}
	if err := l.Err(); err != nil {
		return nil, fmt.Errorf("store: erase: list dead-letter streams: %w", err)
	}
	slices.Sort(out)
	return out, nil
}

// scan reads stream from sequence start up to its last sequence of now,
// in order (headers only when headersOnly), and deletes the records match
// picks, counting them in n. It returns where a next call goes on and
// whether it reached the end; the deadline stops it with done false.
//
// The matches of a stream are kept (sequences only) until they number
// more than secureEraseMax: a stream that had no more is secure-erased at
// the end (or at the deadline); past that bound, they and every later one
// are deleted at once without overwrite. Memory stays bounded: a fetch
// batch and at most secureEraseMax+1 sequences.
func (e *eraser) scan(stream string, start uint64, headersOnly bool, match func(jetstream.Msg) (bool, error), n *int) (uint64, bool, error) {
	st, err := e.s.js.Stream(e.ctx, stream)
	if errors.Is(err, jetstream.ErrStreamNotFound) {
		return 0, true, nil
	}
	if err != nil {
		return 0, false, fmt.Errorf("store: erase: stream %s: %w", stream, err)
	}
	state := st.CachedInfo().State
	if state.Msgs == 0 || start > state.LastSeq {
		return 0, true, nil
	}
	last := state.LastSeq
	start = max(start, state.FirstSeq)
	c, err := e.s.js.OrderedConsumer(e.ctx, stream, jetstream.OrderedConsumerConfig{
		DeliverPolicy: jetstream.DeliverByStartSequencePolicy, OptStartSeq: start, HeadersOnly: headersOnly,
		InactiveThreshold: 30 * time.Second,
	})
	if err != nil {
		return 0, false, fmt.Errorf("store: erase: read %s: %w", stream, err)
	}
	var held []uint64
	plain := false
	flush := func(secure bool) error {
		for _, seq := range held {
			if err := e.delete(st, seq, secure, n); err != nil {
				return err
			}
		}
		held = held[:0]
		return nil
	}
	pos := start
	for {
		if stop, err := e.stop(); stop {
			if err == nil {
				err = flush(!plain)
			}
			return pos, false, err
		}
		fb, err := c.FetchNoWait(scanBatch)
		if err != nil {
			return pos, false, fmt.Errorf("store: erase: read %s: %w", stream, err)
		}
		got, end := 0, false
		for m := range fb.Messages() {
			md, err := m.Metadata()
			if err != nil {
				return pos, false, fmt.Errorf("store: erase: read %s: %w", stream, err)
			}
			seq := md.Sequence.Stream
			if seq > last {
				end = true
				break
			}
			got++
			pos = seq + 1
			ok, err := match(m)
			if err != nil {
				return seq, false, err
			}
			if ok {
				held = append(held, seq)
				if len(held) > secureEraseMax {
					plain = true
				}
				if plain {
					if err := flush(false); err != nil {
						return pos, false, err
					}
				}
			}
			if seq == last || md.NumPending == 0 {
				end = true
				break
			}
		}
		if err := fb.Error(); err != nil && !errors.Is(err, jetstream.ErrNoMessages) && !errors.Is(err, nats.ErrTimeout) {
			return pos, false, fmt.Errorf("store: erase: read %s: %w", stream, err)
		}
		if !end && got == 0 {
			// Nothing there now: the end, unless a record remains (the
			// server was slow to deliver it).
			m, err := st.GetMsg(e.ctx, pos, jetstream.WithGetMsgSubject(">"))
			switch {
			case errors.Is(err, jetstream.ErrMsgNotFound):
				end = true
			case err != nil:
				return pos, false, fmt.Errorf("store: erase: read %s: %w", stream, err)
			case m.Sequence > last:
				end = true
			}
		}
		if end || pos > last {
			return pos, true, flush(!plain)
		}
	}
}

// deadLetterMatch picks a dead letter of the sensor by the Iot-Tuid header
// it kept from the stored message.
func (e *eraser) deadLetterMatch(m jetstream.Msg) (bool, error) {
	return m.Headers().Get(hdrTuid) == e.tuid, nil
}

// rejectedMatch opens a rejected record and picks it when it is the
// sensor's (see EraseDevice). A record that can never be opened (damaged,
// or sealed under a key the tenant no longer has) is kept: nothing in the
// system can read it either. One that cannot be opened now (the key store
// is unreachable) stops the erasure: it is not skipped unexamined.
func (e *eraser) rejectedMatch(m jetstream.Msg) (bool, error) {
	body, err := e.s.keys.Open(e.ctx, e.tenant, m.Data(), []byte(rejectedAAD))
	if errors.Is(err, kms.ErrOpen) {
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("store: erase: open rejected: %w", err)
	}
	var r Rejected
	if err := json.Unmarshal(body, &r); err != nil {
		return false, fmt.Errorf("store: erase: decode rejected: %w", err)
	}
	return r.Tuid == e.tuid || namesTuid(r.Raw, e.tuid), nil
}

// namesTuid reports whether a rejected payload is the sensor's: a message
// (JSON object with a tsmTuid) whose tsmTuid is tuid, a payload (JSON
// array, at any depth) holding one, or any other bytes (not JSON, or a
// JSON value that is not a message: a string, an object without a string
// tsmTuid) holding the TUID's characters. A JSON message of another sensor
// that mentions tuid elsewhere is not.
func namesTuid(raw []byte, tuid string) bool {
	raw = bytes.TrimSpace(raw)
	if !json.Valid(raw) || len(raw) == 0 {
		return bytes.Contains(raw, []byte(tuid))
	}
	switch raw[0] {
	case '{':
		var one struct {
			Tuid *string `json:"tsmTuid"`
		}
		if json.Unmarshal(raw, &one) == nil && one.Tuid != nil {
			return *one.Tuid == tuid
		}
	case '[':
		var many []json.RawMessage
		if json.Unmarshal(raw, &many) == nil {
			for _, el := range many {
				if namesTuid(el, tuid) {
					return true
				}
			}
			return false
		}
	}
	return bytes.Contains(raw, []byte(tuid))
}

// erasePos is where an erasure of a sensor (owner: "{tenant}/{tuid}")
// goes on: a dead-letter stream and sequence, or the rejected stream and
// sequence (no stream nor rejected: from the start).
type erasePos struct {
	owner    string
	stream   string
	rejected bool
	seq      uint64
}

const erasePosPrefix = "erase2:"

// encode returns the continuation (base64url of
// "erase2:{owner}:d:{stream}:{seq}" or "erase2:{owner}:r:{seq}"): it
// positions the walk only within the tenant's own streams, which the
// erasure lists itself, and only of the tenant and sensor it names, so an
// edited one can make an erasure skip part of the caller's own data but
// reach nothing else, and one of another erasure (another sensor, or
// another tenant's) is refused: it would skip that erasure's dead letters
// and answer complete.
func (p erasePos) encode() string {
	var s string
	switch {
	case p.rejected:
		s = erasePosPrefix + p.owner + ":r:" + strconv.FormatUint(p.seq, 10)
	case p.stream != "":
		s = erasePosPrefix + p.owner + ":d:" + p.stream + ":" + strconv.FormatUint(p.seq, 10)
	default:
		return ""
	}
	return base64.RawURLEncoding.EncodeToString([]byte(s))
}

// decodeErasePos reads next, a continuation of an erasure of owner
// ("{tenant}/{tuid}").
func decodeErasePos(next, owner string) (erasePos, error) {
	p := erasePos{owner: owner}
	if next == "" {
		return p, nil
	}
	bad := ErrEraseCursor.WithDetail("next must be the value a previous erasure of this tenant's sensor returned, unchanged")
	b, err := base64.RawURLEncoding.DecodeString(next)
	if err != nil || !strings.HasPrefix(string(b), erasePosPrefix) {
		return p, bad
	}
	parts := strings.Split(strings.TrimPrefix(string(b), erasePosPrefix), ":")
	if len(parts) < 3 || parts[0] != owner {
		return p, bad
	}
	parts = parts[1:]
	var seqText string
	switch {
	case len(parts) == 2 && parts[0] == "r":
		p.rejected, seqText = true, parts[1]
	case len(parts) == 3 && parts[0] == "d" && names.ValidToken(parts[1]):
		p.stream, seqText = parts[1], parts[2]
	default:
		return p, bad
	}
	if p.seq, err = strconv.ParseUint(seqText, 10, 64); err != nil || p.seq == 0 {
		return p, bad
	}
	return p, nil
}

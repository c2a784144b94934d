package audit

import (
	"context"
	"crypto/ed25519"
	"encoding/hex"
	"errors"
	"fmt"
	"math"
	"sort"

	"github.com/iotransit/iotransit/internal/backbone/names"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/iotransit/iotransit/client"
)

// Report is the result of verifying a tenant's log, as the API shows it
// (declared in the client package).
type Report = client.AuditReport

// VerifyEntries verifies a tenant's entries and checkpoints, in the order
// they were stored, against the checkpoint signing keys pubs (the current
// and retired ones, as GET /v1/system/keys lists them): each checkpoint
// must be signed by the key its keyId names. It needs no JetStream: an
// offline tool can run it on an export. The tenant is that of the first
// entry (or checkpoint).
func VerifyEntries(entries []Entry, checkpoints []Checkpoint, pubs ...ed25519.PublicKey) Report {
	tenant := ""
	if len(entries) > 0 {
		tenant = entries[0].Tenant
	} else if len(checkpoints) > 0 {
		tenant = checkpoints[0].Tenant
	}
	v := newVerifier(tenant, keyMap(pubs), false)
	for i := range entries {
		v.addEntry(&entries[i], "")
	}
	for _, c := range checkpoints {
		v.addCheckpoint(c, "")
	}
	return v.finish(nil)
}

// Verify reads the tenant's whole audit stream and verifies it. The error is
// only for failing to read; tampering is reported in the Report.
//
// Besides what VerifyEntries checks, Verify compares the stream with the
// last entry this Log appended to the tenant (or read): a tail cut off or
// rewritten after this process wrote it is caught even before it is signed.
func (l *Log) Verify(ctx context.Context, tenant string) (Report, error) {
	return l.VerifyWithin(ctx, tenant, nil)
}

// VerifyWithin is Verify with a price: before it reads, it calls admit (if
// not nil) with how many stored items (entries and checkpoints) it will
// read, and stops with admit's error if admit refuses. A verification reads
// and hashes the whole log, so it cannot stop part way as a page of a list
// does: the API charges it to the caller's read budget up front.
func (l *Log) VerifyWithin(ctx context.Context, tenant string, admit func(reads int) error) (Report, error) {
	r, unknownKey, err := l.verifyWithin(ctx, tenant, admit)
	if err == nil && !r.OK && unknownKey {
		if fn := l.unknown.Load(); fn != nil {
			(*fn)()
			r, _, err = l.verifyWithin(ctx, tenant, nil) // paid for once
		}
	}
	if err == nil && !r.OK {
		l.log.Warn("audit log verification failed", "tenant_id", tenant, "first_broken", r.FirstBroken)
	}
	return r, err
}

// verifyWithin is one verification of VerifyWithin; unknownKey reports
// whether a checkpoint named a key the Log does not know.
func (l *Log) verifyWithin(ctx context.Context, tenant string, admit func(reads int) error) (_ Report, unknownKey bool, _ error) {
	if err := checkTenant(tenant); err != nil {
		return Report{}, false, err
	}
	// Take the remembered head before reading: the stream holds at least
	// that much.
	var w *anchor
	l.mu.Lock()
	ts := l.tenants[tenant]
	l.mu.Unlock()
	if ts != nil {
		ts.mu.Lock()
		if ts.known && ts.seq > 0 {
			w = &anchor{seq: ts.seq, hash: ts.hash}
		}
		ts.mu.Unlock()
	}
	st, err := l.js.Stream(ctx, names.AuditStream(tenant))
	if errors.Is(err, jetstream.ErrStreamNotFound) {
		return Report{}, false, ErrNotFound.New()
	}
	if err != nil {
		return Report{}, false, ErrUnavailable.Wrap(fmt.Errorf("audit: verify %s: %w", tenant, err))
	}
	info, err := st.Info(ctx)
	if err != nil {
		return Report{}, false, ErrUnavailable.Wrap(fmt.Errorf("audit: verify %s: %w", tenant, err))
	}
	if admit != nil {
		if err := admit(int(min(info.State.Msgs, math.MaxInt32))); err != nil {
			return Report{}, false, err
		}
	}
	v := newVerifier(tenant, l.keys.Load().known, l.cfg.Retention > 0)
	if info.State.Msgs > 0 {
		entrySubj, cpSubj := names.AuditEntry(tenant), names.AuditCheckpoint(tenant)
		err = readRange(ctx, st, "", info.State.FirstSeq, info.State.LastSeq, func(m rawMsg) bool {
			switch m.subject {
			case entrySubj:
				if e, err := decodeEntry(m.data); err != nil {
					v.addEntry(nil, decodeProblem(err))
				} else {
					v.addEntry(&e, "")
				}
			case cpSubj:
				if c, err := decodeCheckpoint(m.data); err != nil {
					v.addCheckpoint(Checkpoint{}, decodeProblem(err))
				} else {
					v.addCheckpoint(c, "")
				}
			}
			return true
		})
		if err != nil {
			return Report{}, false, ErrUnavailable.Wrap(fmt.Errorf("audit: verify %s: %w", tenant, err))
		}
	}
	for _, sc := range v.checkpoints {
		if _, known := v.known[sc.c.KeyID]; sc.bad == "" && !known {
			unknownKey = true
		}
	}
	return v.finish(w), unknownKey, nil
}

// decodeProblem says in words of the report why a stored message could not
// be taken (the decoder's own text stays out of reports).
func decodeProblem(err error) string {
	if errors.Is(err, errNotStoredForm) {
		return err.Error()
	}
	return "it is not valid JSON of the expected shape"
}

// anchor is a (seq, hash) pair known from outside the stream.
type anchor struct {
	seq  uint64
	hash string
}

type problem struct {
	first uint64
	text  string
}

type storedCheckpoint struct {
	c   Checkpoint
	bad string // why it could not be decoded
}

// verifier checks a stream of entries as they are read, keeping only the
// 32-byte hash of each verified entry, then checks the checkpoints against
// them.
type verifier struct {
	tenant  string
	known   map[string]ed25519.PublicKey // key id -> checkpoint key
	trimmed bool                         // retention may have removed the first entries

	started   bool
	start     uint64 // seq of the first entry (1 unless trimmed)
	firstPrev string // Prev of the first entry
	expect    uint64 // the seq the next entry must have
	prev      string // the hash the next entry's Prev must be
	hashes    [][32]byte

	entries uint64
	maxSeq  uint64

	broken    bool
	brokenAt  uint64 // the seq that should have been where the chain broke
	brokeText string
	gapSeen   uint64 // the seq found instead of brokenAt, when larger
	reordered bool   // brokenAt appeared later

	checkpoints []storedCheckpoint
}

func newVerifier(tenant string, known map[string]ed25519.PublicKey, trimmed bool) *verifier {
	return &verifier{tenant: tenant, known: known, trimmed: trimmed, start: 1, expect: 1, prev: zeroHash}
}

// good returns the last seq of the verified prefix.
func (v *verifier) good() uint64 { return v.start - 1 + uint64(len(v.hashes)) }

func (v *verifier) breakAt(text string) {
	v.broken = true
	v.brokenAt = v.expect
	v.brokeText = text
}

// addEntry takes the next stored entry; e is nil when it could not be
// decoded, with bad saying why.
func (v *verifier) addEntry(e *Entry, bad string) {
	v.entries++
	if e != nil && e.Seq > v.maxSeq {
		v.maxSeq = e.Seq
	}
	if v.broken {
		if v.gapSeen != 0 && e != nil && e.Seq == v.brokenAt {
			v.reordered = true
		}
		return
	}
	if !v.started {
		v.started = true
		if v.trimmed && e != nil && e.Seq > 1 {
			v.start, v.expect, v.prev = e.Seq, e.Seq, e.Prev
		}
		if e != nil {
			v.firstPrev = e.Prev
		}
	}
	if e == nil {
		v.breakAt(fmt.Sprintf("the entry stored where entry %d belongs is malformed (%s)", v.expect, bad))
		return
	}
	contentOK := hashEntry(e) == e.Hash
	switch {
	case e.Seq != v.expect && !contentOK:
		v.breakAt(fmt.Sprintf("the entry stored where entry %d belongs does not match its hash (it claims seq %d)", v.expect, e.Seq))
	case e.Seq > v.expect:
		v.breakAt("") // missing or reordered: decided in finish
		v.gapSeen = e.Seq
	case e.Seq < v.expect:
		v.breakAt(fmt.Sprintf("entry %d appears again where entry %d belongs (duplicated or reordered)", e.Seq, v.expect))
	case !contentOK:
		v.breakAt(fmt.Sprintf("entry %d: hash does not match its content", v.expect))
	case e.Tenant != v.tenant:
		v.breakAt(fmt.Sprintf("entry %d belongs to tenant %q", v.expect, clip(e.Tenant, 40)))
	case e.Prev != v.prev:
		if v.expect == 1 {
			v.breakAt("entry 1: prev is not 64 zeros")
		} else {
			v.breakAt(fmt.Sprintf("entry %d: prev does not match the hash of entry %d", v.expect, v.expect-1))
		}
	default:
		var h [32]byte
		_, _ = hex.Decode(h[:], []byte(e.Hash)) // valid: it equals a computed hash
		v.hashes = append(v.hashes, h)
		v.prev = e.Hash
		v.expect++
	}
}

// addCheckpoint takes the next stored checkpoint; bad says why it could not
// be decoded.
func (v *verifier) addCheckpoint(c Checkpoint, bad string) {
	v.checkpoints = append(v.checkpoints, storedCheckpoint{c: c, bad: bad})
}

// hashAt returns the verified hash of entry seq.
func (v *verifier) hashAt(seq uint64) ([32]byte, bool) {
	if seq < v.start || seq > v.good() {
		return [32]byte{}, false
	}
	return v.hashes[seq-v.start], true
}

func sameHash(want [32]byte, got string) bool {
	var h [32]byte
	if len(got) != 64 {
		return false
	}
	if _, err := hex.Decode(h[:], []byte(got)); err != nil || hex.EncodeToString(h[:]) != got {
		return false
	}
	return h == want
}

// finish checks the checkpoints (and the remembered head w, if any) and
// returns the report, naming the problem with the smallest FirstBroken.
func (v *verifier) finish(w *anchor) Report {
	r := Report{Tenant: v.tenant, Entries: v.entries, Checkpoints: len(v.checkpoints)}
	var problems []problem
	if v.broken {
		text := v.brokeText
		if text == "" {
			switch {
			case v.reordered:
				text = fmt.Sprintf("entry %d appears before entry %d (entries are reordered)", v.gapSeen, v.brokenAt)
			case v.brokenAt == 1:
				text = fmt.Sprintf("entry 1 is missing (the log starts at entry %d)", v.gapSeen)
			default:
				text = fmt.Sprintf("entry %d is missing (gap after %d)", v.brokenAt, v.brokenAt-1)
			}
		}
		problems = append(problems, problem{v.brokenAt, text})
	}
	good := v.good()
	end := min(good, v.maxSeq) // the last entry known to be in place

	// Authentic checkpoints that match the chain vouch for everything up to
	// their seq; the first entry a failed checkpoint leaves in doubt is the
	// one after the closest such checkpoint below it.
	type failed struct {
		seq      uint64
		text     string
		mismatch bool // authentic, but the chain no longer has its hash
	}
	var matched []uint64
	var failures []failed
	var unreadable []string
	for _, sc := range v.checkpoints {
		c := sc.c
		if sc.bad != "" {
			unreadable = append(unreadable, sc.bad)
			continue
		}
		if c.Tenant != v.tenant {
			failures = append(failures, failed{seq: c.Seq, text: fmt.Sprintf("checkpoint at %d belongs to tenant %q", c.Seq, clip(c.Tenant, 40))})
			continue
		}
		if why := checkSignature(&c, v.known); why != "" {
			failures = append(failures, failed{seq: c.Seq, text: why})
			continue
		}
		switch {
		case c.Seq == 0:
			failures = append(failures, failed{text: "checkpoint at 0 covers no entry"})
		case c.Seq > v.maxSeq:
			problems = append(problems, problem{end + 1, fmt.Sprintf(
				"checkpoint at %d is beyond the last entry %d: entries %d..%d are missing", c.Seq, v.maxSeq, v.maxSeq+1, c.Seq)})
		case v.started && c.Seq == v.start-1:
			// Retention removed entry c.Seq; its hash is the first Prev.
			if c.Hash == v.firstPrev {
				matched = append(matched, c.Seq)
			} else {
				failures = append(failures, failed{seq: c.Seq + 1, text: fmt.Sprintf(
					"checkpoint at %d does not match the prev of entry %d", c.Seq, c.Seq+1)})
			}
		case c.Seq <= good && c.Seq >= v.start:
			h, _ := v.hashAt(c.Seq)
			if sameHash(h, c.Hash) {
				matched = append(matched, c.Seq)
			} else {
				failures = append(failures, failed{seq: c.Seq, mismatch: true})
			}
		default:
			// Below an expired start, or above a break already reported.
		}
	}
	sort.Slice(matched, func(i, j int) bool { return matched[i] < matched[j] })
	below := func(seq uint64) uint64 { // closest vouched-for seq below seq
		i := sort.Search(len(matched), func(i int) bool { return matched[i] >= seq })
		if i == 0 {
			return v.start - 1
		}
		return matched[i-1]
	}
	if len(matched) > 0 {
		r.LastSignedSeq = matched[len(matched)-1]
	}
	for _, f := range failures {
		first := below(f.seq) + 1
		if f.seq == 0 {
			first = 1
		}
		if f.mismatch {
			problems = append(problems, problem{first, fmt.Sprintf(
				"checkpoint at %d does not match the chain: an entry in %d..%d was changed after it was signed", f.seq, first, f.seq)})
			continue
		}
		problems = append(problems, problem{first, fmt.Sprintf("%s (entries from %d on are in doubt)", f.text, first)})
	}
	for _, why := range unreadable {
		first := min(r.LastSignedSeq, end) + 1
		problems = append(problems, problem{first, fmt.Sprintf("a stored checkpoint cannot be read (%s)", why)})
	}
	if w != nil {
		switch {
		case w.seq > v.maxSeq:
			problems = append(problems, problem{end + 1, fmt.Sprintf(
				"entries %d..%d were appended by this node but are missing", v.maxSeq+1, w.seq)})
		case w.seq >= v.start && w.seq <= good:
			if h, _ := v.hashAt(w.seq); !sameHash(h, w.hash) {
				first := below(w.seq) + 1
				problems = append(problems, problem{first, fmt.Sprintf(
					"entry %d differs from what this node wrote: an entry in %d..%d was changed", w.seq, first, w.seq)})
			}
		}
	}

	if len(problems) == 0 {
		r.OK = true
		base := max(r.LastSignedSeq, v.start-1)
		if good > base {
			r.Unsigned = good - base

			r.Problem = fmt.Sprintf("entries after the last checkpoint (seq %d..%d) are not yet signed", base+1, good)
		}
		return r
	}
	best := problems[0]
	for _, p := range problems[1:] {
		if p.first < best.first {
			best = p
		}
	}
	r.FirstBroken, r.Problem = best.first, best.text
	return r
}

// Package queue is the gateway agent's store-and-forward queue: every
// message the agent takes from the mesh is appended here, durably and
// encrypted, before it is uploaded, and leaves only when the cloud has
// acknowledged it.
//
// Storage. One bbolt file (go.etcd.io/bbolt): ACID transactions with one
// writer and copy-on-write pages; a commit writes the new pages, fsyncs,
// writes a checksummed meta page and fsyncs again. A commit torn by a crash
// fails its meta checksum and the file opens at the previous commit, so
// nothing that Append or Ack returned for is lost, after kill -9 or (given a
// disk that honours fsync) power loss. A write-ahead log of our own would
// need framing, checksums, torn-tail repair, segment rotation and a copy of
// the side state in every segment; bbolt has the first four and makes the
// side state one more key in the same transaction. The file is created
// 0600 and locked (flock) while open: a second Open, from another agent or
// this one, fails at once with ErrLocked. Open maps a file that is not a
// queue, a file whose two meta pages are both broken and a truncated file
// to ErrCorrupt, and never crashes on one (faults on the memory-mapped file
// become errors); an empty file is a new queue. A commit that finds the
// file damaged fails with ErrCorrupt, and so does every later call: the
// agent moves the file aside and opens a new queue. The file does not
// shrink: its size follows the highest depth it held, which the bound
// limits.
//
// Group commit. One committer goroutine applies every Append and Ack:
// whatever callers submitted while the previous commit was syncing goes into
// the next transaction, so concurrent callers share one fsync pair and none
// waits for a timer. Append also takes a batch of messages.
//
// Encryption. Records and side values are sealed with AES-256-GCM
// (crypto/aes, crypto/cipher). The caller's KeySource gives a 32-byte data
// key once, at Open (the agent's key store: a 0600 secret file, or a key
// unwrapped by a PKCS#11 token). Each Open starts a session: a random 32-byte
// salt, stored in the file, from which HKDF-SHA256 derives that session's
// key; nonces are the session index and a counter that lives only in memory
// and only rises. So a nonce is never reused under a key, even when a
// transaction aborts after its pages reached the disk, or when the file is
// restored from a backup (the next Open derives a fresh key), and no key
// comes near GCM's limits. The associated data binds each value to the
// file's random id, its kind and its place (a record's id, a side value's
// key): a record moved, swapped or replayed within or between files fails
// to open. The file holds no plaintext of a message; the ids, counts and
// side keys are in the clear. Open refuses a data key that is not the
// file's with ErrWrongKey (a key-check value derived by HKDF) and leaves
// every record in place; a record that does not authenticate is reported as
// a RecordError (ErrCorrupt), never skipped: the caller may Ack past it.
// The data key cannot change for the life of a file: drain the queue first.
//
// Bound. Options.MaxBytes bounds the records' stored size (the message plus
// RecordOverhead bytes) and Options.MaxMessages, if set, their count. When an
// append does not fit, Options.Full decides: DropOldest removes records from
// the head until it fits (counted in Stats.Dropped), RefuseNewest refuses it
// and the rest of its call (counted in Stats.Refused). Both totals survive
// restarts; the agent reports Stats.Depth as queueDepth and
// Stats.Dropped+Stats.Refused as queueDropped. A dropped record may have
// been in flight; its later Ack is then a no-op.
//
// Order, acknowledgement, resends. Records get consecutive ids from 1, never
// reused. Read returns them in append order after a given id, so the uplink
// can keep several batches in flight; Ack(upTo) removes every record up to
// an id, durably (MQTT acknowledges QoS 1 publishes in order, so a
// cumulative ack is enough). After a restart Read starts at the oldest
// record not acknowledged: nothing acknowledged is handed out again. What
// was published but not yet acknowledged when the agent stopped is sent
// again; the queue does not deduplicate, the cloud does, because a
// message's id there is derived from its content, so a resend is stored
// once.
//
// Side state. Append writes side values (Append's side map) in the same
// transaction as its messages: the mesh receiver's anti-replay state is
// committed with the frames it accepted, so a restart neither loses accepted
// frames nor reopens their replay window. Side reads a value back at start.
//
// Use by the agent: live and backlog. The agent appends every message it
// accepts and uploads only from the head, always: live data is simply the
// newest record, and messages reach the cloud in order per node whether or
// not the cloud was away. The mesh receiver should append what it accepted
// while its previous Append was in flight, as one batch with its replay
// state (a commit costs one fsync pair, a few milliseconds, whatever it
// holds). The uplink should Read a few hundred records, publish them, and
// Ack once per batch, with the highest id whose PUBACK came in: an Ack per
// message would cost a commit per message. When Read finds nothing, the
// uplink waits on Appends. Drained that way the queue gives 30,000 to 55,000
// messages a second on a 2-core VM (BenchmarkQueueDrain100k), more than the
// uplink takes, so after an outage the backlog drains at the uplink's speed
// and new messages flow again after depth/(drain rate - live rate).
//
// Memory. Nothing of the queue is held in memory: records are read from the
// file when asked for, through bbolt's read-only memory map. The pages a
// drain touched count as the process's file-backed resident memory (RssFile,
// page cache that the kernel reclaims, bounded by the file size, which the
// bound limits); the heap stays at about a megabyte.
package queue

import (
	"crypto/cipher"
	"crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"runtime/debug"
	"sync"
	"syscall"
	"time"

	bolt "go.etcd.io/bbolt"
	berrors "go.etcd.io/bbolt/errors"
)

// Errors of the queue. Each is wrapped with detail; test with errors.Is.
var (
	// ErrLocked: another Queue, in this process or another, has the file open.
	ErrLocked = errors.New("queue: the file is open in another queue (another agent?)")
	// ErrCorrupt: the file, a record or a side value cannot be read as written.
	ErrCorrupt = errors.New("queue: corrupt")
	// ErrWrongKey: the data key is not the one the file was created with.
	ErrWrongKey = errors.New("queue: the data key does not open this queue")
	// ErrClosed: the queue was closed.
	ErrClosed = errors.New("queue: closed")
	// ErrTooLarge: a message or side value exceeds its limit.
	ErrTooLarge = errors.New("queue: too large")
	// ErrUnknownID: an Ack names an id that was never appended.
	ErrUnknownID = errors.New("queue: ack of an id not yet appended")
	// ErrNonceSpace: a session used up its 2^64 nonces (not reachable in practice).
	ErrNonceSpace = errors.New("queue: nonce space of the session used up")
)

// RecordOverhead is what a record stores besides its message: its 8-byte
// id, the sealing header (format and nonce) and the GCM tag. MaxBytes
// counts it.
const RecordOverhead = recordOverhead

// Limits that are not options.
const (
	maxSideKey   = 255
	maxSideValue = 4 << 20
	lockTimeout  = 100 * time.Millisecond
	maxGroup     = 1024
)

// Bucket and meta key names in the file.
var (
	bucketMeta     = []byte("meta")
	bucketRecords  = []byte("records")
	bucketSide     = []byte("side")
	bucketSessions = []byte("sessions")
	metaFormat     = []byte("format")
	metaFileID     = []byte("file")
	metaKeyCheck   = []byte("keycheck")
	metaState      = []byte("state")
)

// fileFormat is the layout version of the buckets above.
const fileFormat = 1

// KeySource gives the queue its data key: 32 bytes, the same for the life of
// the file. The agent's key store implements it. The queue calls DataKey
// once, in Open, and keeps only keys derived from it.
type KeySource interface {
	DataKey() ([]byte, error)
}

// KeyFunc adapts a function to KeySource.
type KeyFunc func() ([]byte, error)

// DataKey returns f().
func (f KeyFunc) DataKey() ([]byte, error) { return f() }

// Policy is what Append does with a message that does not fit the bound.
// The zero value is no policy: Open refuses it, the choice is explicit.
type Policy int

// Policies when the queue is full.
const (
	// DropOldest removes the oldest records until the new one fits.
	DropOldest Policy = iota + 1
	// RefuseNewest refuses the message that does not fit and the rest of its
	// Append call.
	RefuseNewest
)

// String returns the policy's flag name.
func (p Policy) String() string {
	switch p {
	case DropOldest:
		return "drop-oldest"
	case RefuseNewest:
		return "refuse-newest"
	}
	return fmt.Sprintf("Policy(%d)", int(p))
}

// ParsePolicy reads a policy's flag name: drop-oldest or refuse-newest.
func ParsePolicy(s string) (Policy, error) {
	for _, p := range []Policy{DropOldest, RefuseNewest} {
		if s == p.String() {
			return p, nil
		}
	}
	return 0, fmt.Errorf("queue: unknown full policy %q (drop-oldest or refuse-newest)", s)
}

// Options bound the queue.
type Options struct {
	// MaxBytes bounds the stored size of the records: the messages plus
	// RecordOverhead each.
	MaxBytes int64
	// MaxMessages bounds the number of records; 0 leaves only MaxBytes.
	MaxMessages int64
	// Full is the policy when a message does not fit.
	Full Policy
	// MaxMessageBytes is the largest message Append takes; a larger one
	// fails the call with ErrTooLarge.
	MaxMessageBytes int
}

// DefaultOptions returns the defaults: 16 MiB of records (about 120,000
// Thingsee messages of 100 bytes, in a file of about 20 MB), no count
// bound, drop-oldest, messages up to 64 KiB. The bound also bounds the
// file pages a full drain maps into memory, so it is sized for the agent's
// 32 MiB budget; raise it where the device has room.
func DefaultOptions() Options {
	return Options{MaxBytes: 16 << 20, Full: DropOldest, MaxMessageBytes: 64 << 10}
}

// validate checks that the options describe a usable bound.
func (o Options) validate() error {
	switch {
	case o.Full != DropOldest && o.Full != RefuseNewest:
		return fmt.Errorf("queue: no full policy (%v): choose drop-oldest or refuse-newest", o.Full)
	case o.MaxMessageBytes <= 0:
		return errors.New("queue: MaxMessageBytes must be positive")
	case o.MaxBytes < int64(o.MaxMessageBytes)+recordOverhead:
		return fmt.Errorf("queue: MaxBytes %d cannot hold one message of MaxMessageBytes %d", o.MaxBytes, o.MaxMessageBytes)
	case o.MaxMessages < 0:
		return errors.New("queue: MaxMessages must not be negative")
	}
	return nil
}

// Record is one queued message with its id.
type Record struct {
	ID   uint64
	Data []byte
}

// RecordError reports a record that does not open (ErrCorrupt). It stays in
// the queue; the caller decides (for example logs it and Acks past it).
type RecordError struct {
	ID  uint64
	Err error
}

// Error says which record and why.
func (e *RecordError) Error() string { return fmt.Sprintf("queue: record %d: %v", e.ID, e.Err) }

// Unwrap returns the cause.
func (e *RecordError) Unwrap() error { return e.Err }

// Appended is what one Append did.
type Appended struct {
	// FirstID is the id of the first accepted message (when Accepted > 0);
	// the others follow consecutively.
	FirstID uint64
	// Accepted messages, the first ones of the call, are stored.
	Accepted int
	// Refused messages, the last ones of the call, were not (RefuseNewest).
	Refused int
	// Dropped is how many older records were removed to make room
	// (DropOldest); a call larger than the bound drops its own first ones.
	Dropped int
}

// Stats are the queue's counters.
type Stats struct {
	// Depth is the number of records held, Bytes their stored size.
	Depth, Bytes uint64
	// OldestID is the id of the oldest record (NextID when empty); NextID
	// is the id the next record gets.
	OldestID, NextID uint64
	// Appended, Acked, Dropped and Refused count records since the file
	// was created. Refusals of a call that changed nothing else are saved
	// with the next commit (or Close); a kill can lose those counts.
	Appended, Acked, Dropped, Refused uint64
	// Commits counts write transactions (each one fsync pair) since Open.
	Commits uint64
}

// state is the queue's position and totals; all but head are saved in the
// meta bucket with every commit (head is the first record's id).
type state struct {
	head, next                        uint64
	bytes                             uint64
	appended, acked, dropped, refused uint64
}

const stateLen = 6 * 8

// encode returns the saved form of s.
func (s *state) encode() []byte {
	b := make([]byte, stateLen)
	for i, v := range []uint64{s.next, s.bytes, s.appended, s.acked, s.dropped, s.refused} {
		binary.BigEndian.PutUint64(b[8*i:], v)
	}
	return b
}

// decode reads the saved form of s.
func (s *state) decode(b []byte) error {
	if len(b) != stateLen {
		return fmt.Errorf("%w: state of %d bytes", ErrCorrupt, len(b))
	}
	u := func(i int) uint64 { return binary.BigEndian.Uint64(b[8*i:]) }
	s.next, s.bytes, s.appended, s.acked, s.dropped, s.refused = u(0), u(1), u(2), u(3), u(4), u(5)
	return nil
}

// Queue is an open queue file. Its methods are safe for concurrent use.
type Queue struct {
	db   *bolt.DB
	path string
	opts Options
	seal *sealer

	reqs     chan *request
	quit     chan struct{}
	done     chan struct{}
	once     sync.Once
	appended chan struct{}

	mu      sync.RWMutex
	st      state
	commits uint64
	unsaved bool  // refusals counted in st but not yet saved
	broken  error // set when a commit found the file corrupt
}

// Open opens the queue file at path, creating it (0600) if it does not
// exist. keys gives the data key; opts bound the queue.
func Open(path string, keys KeySource, opts Options) (*Queue, error) {
	if err := opts.validate(); err != nil {
		return nil, err
	}
	key, err := keys.DataKey()
	if err != nil {
		return nil, fmt.Errorf("queue: data key: %w", err)
	}
	if len(key) != keyLen {
		return nil, fmt.Errorf("queue: data key of %d bytes, want %d", len(key), keyLen)
	}
	// A damaged file can fault in bbolt's memory map: make that a panic
	// (recovered as ErrCorrupt), not a crash, while Open reads it.
	defer debug.SetPanicOnFault(debug.SetPanicOnFault(true))
	_, statErr := os.Stat(path)
	db, err := openDB(path)
	if err != nil {
		return nil, err
	}
	if errors.Is(statErr, fs.ErrNotExist) {
		if err := syncDir(filepath.Dir(path)); err != nil {
			db.Close()
			return nil, fmt.Errorf("queue: sync directory of %s: %w", path, err)
		}
	}
	q := &Queue{
		db: db, path: path, opts: opts,
		reqs: make(chan *request), quit: make(chan struct{}), done: make(chan struct{}),
		appended: make(chan struct{}, 1),
	}
	if err := q.load(key); err != nil {
		db.Close()
		return nil, fmt.Errorf("queue: open %s: %w", path, err)
	}
	go q.run()
	return q, nil
}

// openDB opens the bbolt file, mapping bbolt's errors, and its panics on a
// damaged file, to the queue's.
func openDB(path string) (db *bolt.DB, err error) {
	var f *os.File
	defer func() {
		if r := recover(); r != nil {
			if f != nil {
				// bbolt's mapping of the file outlives this (it is lost
				// with the panic) and keeps the file and so its flock:
				// release the lock explicitly.
				unlockFile(f)
				f.Close()
			}
			db, err = nil, fmt.Errorf("queue: open %s: %w: %v", path, ErrCorrupt, r)
		}
	}()
	db, err = bolt.Open(path, 0o600, &bolt.Options{
		Timeout:      lockTimeout,
		FreelistType: bolt.FreelistMapType,
		OpenFile: func(name string, flag int, perm os.FileMode) (*os.File, error) {
			var err error
			f, err = os.OpenFile(name, flag, perm)
			return f, err
		},
	})
	switch {
	case err == nil:
		return db, nil
	case errors.Is(err, berrors.ErrTimeout):
		return nil, fmt.Errorf("queue: open %s: %w", path, ErrLocked)
	}
	var pathErr *fs.PathError
	var errno syscall.Errno
	if errors.As(err, &pathErr) || errors.As(err, &errno) {
		return nil, fmt.Errorf("queue: open %s: %w", path, err)
	}
	// What is left is bbolt's reading of the file: invalid meta pages
	// (ErrInvalid, ErrChecksum, ErrVersionMismatch), a file too small.
	return nil, fmt.Errorf("queue: open %s: %w: %v", path, ErrCorrupt, err)
}

// syncDir makes a new file's directory entry durable.
func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}

// load checks the file and the key, reads the state and starts a session,
// in one transaction: a wrong key or a corrupt file changes nothing.
func (q *Queue) load(key []byte) error {
	return q.update(func(tx *bolt.Tx) error {
		fi, err := os.Stat(q.path)
		if err != nil {
			return err
		}
		if tx.Size() > fi.Size() {
			return fmt.Errorf("%w: the file has %d bytes, its pages reach %d (truncated)", ErrCorrupt, fi.Size(), tx.Size())
		}
		meta := tx.Bucket(bucketMeta)
		if meta == nil {
			if err := create(tx, key); err != nil {
				return err
			}
			meta = tx.Bucket(bucketMeta)
		}
		if f := meta.Get(metaFormat); len(f) != 1 || f[0] != fileFormat {
			return fmt.Errorf("%w: not a queue file of format %d", ErrCorrupt, fileFormat)
		}
		recs, side, sessions := tx.Bucket(bucketRecords), tx.Bucket(bucketSide), tx.Bucket(bucketSessions)
		fileID := meta.Get(metaFileID)
		if recs == nil || side == nil || sessions == nil || len(fileID) != fileIDLen {
			return fmt.Errorf("%w: buckets or file id missing", ErrCorrupt)
		}
		ok, err := checkKey(key, fileID, meta.Get(metaKeyCheck))
		if err != nil {
			return err
		}
		if !ok {
			return ErrWrongKey
		}
		if err := q.st.decode(meta.Get(metaState)); err != nil {
			return err
		}
		if err := q.loadPosition(recs); err != nil {
			return err
		}
		q.seal = &sealer{fileID: append([]byte(nil), fileID...), aeads: map[uint32]cipher.AEAD{}}
		return q.startSession(key, recs, side, sessions)
	})
}

// create lays out a new file.
func create(tx *bolt.Tx, key []byte) error {
	if k, _ := tx.Cursor().First(); k != nil {
		return fmt.Errorf("%w: a bbolt file, but not a queue (bucket %q, no meta)", ErrCorrupt, k)
	}
	meta, err := tx.CreateBucket(bucketMeta)
	if err != nil {
		return err
	}
	for _, name := range [][]byte{bucketRecords, bucketSide, bucketSessions} {
		if _, err := tx.CreateBucket(name); err != nil {
			return err
		}
	}
	fileID := make([]byte, fileIDLen)
	rand.Read(fileID)
	check, err := keyCheck(key, fileID)
	if err != nil {
		return err
	}
	st := state{next: 1}
	for k, v := range map[string][]byte{
		string(metaFormat): {fileFormat}, string(metaFileID): fileID,
		string(metaKeyCheck): check, string(metaState): st.encode(),
	} {
		if err := meta.Put([]byte(k), v); err != nil {
			return err
		}
	}
	return nil
}

// loadPosition sets the head from the first record and checks that the
// records lie below the next id.
func (q *Queue) loadPosition(recs *bolt.Bucket) error {
	c := recs.Cursor()
	first, _ := c.First()
	last, _ := c.Last()
	if first == nil {
		q.st.head = q.st.next
		if q.st.bytes != 0 {
			return fmt.Errorf("%w: no record but %d bytes counted", ErrCorrupt, q.st.bytes)
		}
		return nil
	}
	if len(first) != 8 || len(last) != 8 {
		return fmt.Errorf("%w: record key of %d bytes", ErrCorrupt, len(first))
	}
	q.st.head = binary.BigEndian.Uint64(first)
	if l := binary.BigEndian.Uint64(last); l >= q.st.next {
		return fmt.Errorf("%w: records %d..%d do not match the next id %d", ErrCorrupt, q.st.head, l, q.st.next)
	}
	return nil
}

// startSession derives the keys of the sessions still in use, forgets the
// older ones, and adds this Open's session. A session is in use from the
// one of the oldest record on (records only get newer sessions) and by
// every side value; the values that tell are authenticated first, so a
// damaged one cannot make the queue forget the keys of the others.
func (q *Queue) startSession(key []byte, recs, side, sessions *bolt.Bucket) error {
	err := sessions.ForEach(func(k, salt []byte) error {
		if len(k) != 4 || len(salt) != saltLen {
			return fmt.Errorf("%w: session entry", ErrCorrupt)
		}
		aead, err := sessionAEAD(key, salt, q.seal.fileID)
		q.seal.aeads[binary.BigEndian.Uint32(k)] = aead
		return err
	})
	if err != nil {
		return err
	}
	oldest, prune := ^uint32(0), true
	inUse := func(kind byte, place, sealed []byte) {
		if _, err := q.seal.open(kind, place, sealed); err != nil {
			prune = false
			return
		}
		s, _ := sessionOf(sealed)
		oldest = min(oldest, s)
	}
	if k, v := recs.Cursor().First(); k != nil {
		inUse(kindRecord, k, v)
	}
	if err := side.ForEach(func(k, v []byte) error { inUse(kindSide, k, v); return nil }); err != nil {
		return err
	}
	for idx := range q.seal.aeads {
		if prune && idx < oldest {
			delete(q.seal.aeads, idx)
			if err := sessions.Delete(binary.BigEndian.AppendUint32(nil, idx)); err != nil {
				return err
			}
		}
	}
	seq, err := sessions.NextSequence()
	if err != nil {
		return err
	}
	if seq > uint64(^uint32(0)) {
		return ErrNonceSpace
	}
	salt := make([]byte, saltLen)
	rand.Read(salt)
	if err := sessions.Put(binary.BigEndian.AppendUint32(nil, uint32(seq)), salt); err != nil {
		return err
	}
	aead, err := sessionAEAD(key, salt, q.seal.fileID)
	if err != nil {
		return err
	}
	q.seal.session = uint32(seq)
	q.seal.aeads[q.seal.session] = aead
	return nil
}

// idKey is the record key of an id.
func idKey(id uint64) []byte { return binary.BigEndian.AppendUint64(make([]byte, 0, 8), id) }

// Read returns up to max records with ids above after, in append order
// (after 0: from the oldest). A record that does not open ends the list
// with a *RecordError; the records before it are returned.
func (q *Queue) Read(after uint64, max int) ([]Record, error) {
	if max <= 0 || after == ^uint64(0) {
		return nil, nil
	}
	var recs []Record
	err := q.view(func(tx *bolt.Tx) error {
		c := tx.Bucket(bucketRecords).Cursor()
		for k, v := c.Seek(idKey(after + 1)); k != nil && len(recs) < max; k, v = c.Next() {
			id := binary.BigEndian.Uint64(k)
			data, err := q.seal.open(kindRecord, k, v)
			if err != nil {
				return &RecordError{ID: id, Err: err}
			}
			recs = append(recs, Record{ID: id, Data: data})
		}
		return nil
	})
	return recs, err
}

// Side returns the side value saved under key, nil if there is none.
func (q *Queue) Side(key string) ([]byte, error) {
	var val []byte
	err := q.view(func(tx *bolt.Tx) error {
		sealed := tx.Bucket(bucketSide).Get([]byte(key))
		if sealed == nil {
			return nil
		}
		var err error
		val, err = q.seal.open(kindSide, []byte(key), sealed)
		if err != nil {
			return fmt.Errorf("side value %q: %w", key, err)
		}
		return nil
	})
	return val, err
}

// view runs a read transaction, turning a fault on a damaged file into
// ErrCorrupt.
func (q *Queue) view(fn func(*bolt.Tx) error) (err error) {
	q.mu.RLock()
	broken := q.broken
	q.mu.RUnlock()
	if broken != nil {
		return broken
	}
	defer debug.SetPanicOnFault(debug.SetPanicOnFault(true))
	defer recoverCorrupt(&err)
	err = q.db.View(fn)
	if errors.Is(err, berrors.ErrDatabaseNotOpen) {
		return ErrClosed
	}
	return err
}

// update runs a write transaction, turning a panic of a damaged file into
// ErrCorrupt (the caller's goroutine panics on faults: the committer's
// always does, Open's does while it runs).
func (q *Queue) update(fn func(*bolt.Tx) error) (err error) {
	defer recoverCorrupt(&err)
	return q.db.Update(fn)
}

// recoverCorrupt turns a panic into ErrCorrupt. bbolt panics on pages it
// cannot parse, and the runtime on a fault in a truncated mapping.
func recoverCorrupt(err *error) {
	if r := recover(); r != nil {
		*err = fmt.Errorf("%w: %v", ErrCorrupt, r)
	}
}

// Appends returns a channel that receives after a commit that appended
// records (one value at most waits in it): the uplink, its one reader,
// waits on it when Read found nothing new.
func (q *Queue) Appends() <-chan struct{} { return q.appended }

// Stats returns the counters.
func (q *Queue) Stats() Stats {
	q.mu.RLock()
	defer q.mu.RUnlock()
	s := q.st
	return Stats{
		Depth: s.next - s.head, Bytes: s.bytes, OldestID: s.head, NextID: s.next,
		Appended: s.appended, Acked: s.acked, Dropped: s.dropped, Refused: s.refused,
		Commits: q.commits,
	}
}

// Close waits for the commits under way, saves the counts not yet saved
// and closes the file. Calls after the first return nil.
func (q *Queue) Close() error {
	var err error
	q.once.Do(func() { err = q.close() })
	return err
}

// close stops the committer and closes the file.
func (q *Queue) close() error {
	close(q.quit)
	<-q.done
	q.mu.Lock()
	save := q.unsaved && q.broken == nil
	st := q.st
	q.mu.Unlock()
	var err error
	if save {
		err = q.update(func(tx *bolt.Tx) error { return tx.Bucket(bucketMeta).Put(metaState, st.encode()) })
	}
	if cerr := q.db.Close(); err == nil {
		err = cerr
	}
	return err
}

package queue

import (
	"bytes"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/iotransit/iotransit/internal/testutil"
)

// newKey returns a fresh data key.
func newKey(t testing.TB) []byte {
	t.Helper()
	k := make([]byte, keyLen)
	rand.Read(k)
	return k
}

// staticKey is a KeySource of one key.
func staticKey(k []byte) KeySource {
	return KeyFunc(func() ([]byte, error) { return k, nil })
}

// openT opens the queue at path and closes it at the end of the test.
func openT(t testing.TB, path string, key []byte, opts Options) *Queue {
	t.Helper()
	q, err := Open(path, staticKey(key), opts)
	if err != nil {
		t.Fatalf("open: %v", err)
	}
	t.Cleanup(func() { q.Close() })
	return q
}

// reopen closes q and opens its file again with the same key and options.
func reopen(t testing.TB, q *Queue, key []byte) *Queue {
	t.Helper()
	if err := q.Close(); err != nil {
		t.Fatalf("close: %v", err)
	}
	return openT(t, q.path, key, q.opts)
}

// msgs returns n messages named prefix-i.
func msgs(prefix string, from, n int) [][]byte {
	out := make([][]byte, n)
	for i := range out {
		out[i] = fmt.Appendf(nil, "%s-%d", prefix, from+i)
	}
	return out
}

// mustAppend appends and fails the test on error.
func mustAppend(t testing.TB, q *Queue, m [][]byte, side map[string][]byte) Appended {
	t.Helper()
	a, err := q.Append(m, side)
	if err != nil {
		t.Fatalf("append: %v", err)
	}
	return a
}

// readAll returns every record, checking that ids are consecutive.
func readAll(t testing.TB, q *Queue) []Record {
	t.Helper()
	var all []Record
	after := uint64(0)
	for {
		recs, err := q.Read(after, 100)
		if err != nil {
			t.Fatalf("read after %d: %v", after, err)
		}
		if len(recs) == 0 {
			return all
		}
		for _, r := range recs {
			if len(all) > 0 && r.ID != all[len(all)-1].ID+1 {
				t.Fatalf("record %d follows %d", r.ID, all[len(all)-1].ID)
			}
			all = append(all, r)
		}
		after = recs[len(recs)-1].ID
	}
}

// datas returns the records' messages as strings.
func datas(recs []Record) []string {
	out := make([]string, len(recs))
	for i, r := range recs {
		out[i] = string(r.Data)
	}
	return out
}

// strs returns messages as strings.
func strs(m [][]byte) []string {
	out := make([]string, len(m))
	for i, b := range m {
		out[i] = string(b)
	}
	return out
}

func TestQueueKeepsAppendOrderAcrossReopen(t *testing.T) {
	key := newKey(t)
	q := openT(t, filepath.Join(t.TempDir(), "q.db"), key, DefaultOptions())
	var want []string
	for i := range 5 {
		m := msgs("m", i*7, 7)
		a := mustAppend(t, q, m, nil)
		if a.Accepted != 7 || a.FirstID != uint64(i*7+1) {
			t.Fatalf("append %d: %+v", i, a)
		}
		want = append(want, strs(m)...)
	}
	if got := datas(readAll(t, q)); !slices.Equal(got, want) {
		t.Fatalf("read %v, want %v", got, want)
	}
	recs, err := q.Read(10, 3)
	if err != nil || len(recs) != 3 || recs[0].ID != 11 || string(recs[2].Data) != want[12] {
		t.Fatalf("Read(10, 3) = %v, %v", recs, err)
	}
	q = reopen(t, q, key)
	if got := datas(readAll(t, q)); !slices.Equal(got, want) {
		t.Fatalf("after reopen read %v, want %v", got, want)
	}
	a := mustAppend(t, q, msgs("n", 0, 1), nil)
	if a.FirstID != 36 {
		t.Fatalf("after reopen the next id is %d, want 36", a.FirstID)
	}
}

func TestQueueAckRemovesDurablyAndIsNotResent(t *testing.T) {
	key := newKey(t)
	q := openT(t, filepath.Join(t.TempDir(), "q.db"), key, DefaultOptions())
	mustAppend(t, q, msgs("m", 1, 10), nil)
	// The uplink reads ahead of what is acknowledged.
	first, _ := q.Read(0, 4)
	second, _ := q.Read(first[len(first)-1].ID, 4)
	if second[0].ID != 5 {
		t.Fatalf("read ahead starts at %d", second[0].ID)
	}
	if err := q.Ack(4); err != nil {
		t.Fatal(err)
	}
	if err := q.Ack(2); err != nil {
		t.Fatalf("ack of ids already gone: %v", err)
	}
	if err := q.Ack(11); !errors.Is(err, ErrUnknownID) {
		t.Fatalf("ack past the last id: %v, want ErrUnknownID", err)
	}
	q = reopen(t, q, key)
	recs := readAll(t, q)
	if recs[0].ID != 5 || len(recs) != 6 || string(recs[0].Data) != "m-5" {
		t.Fatalf("after ack 4 and reopen: %v", datas(recs))
	}
	s := q.Stats()
	if s.Depth != 6 || s.Acked != 4 || s.Appended != 10 || s.OldestID != 5 || s.NextID != 11 {
		t.Fatalf("stats %+v", s)
	}
	if err := q.Ack(10); err != nil {
		t.Fatal(err)
	}
	q = reopen(t, q, key)
	if recs := readAll(t, q); len(recs) != 0 {
		t.Fatalf("all acked, still read %v", datas(recs))
	}
	if s := q.Stats(); s.Depth != 0 || s.Bytes != 0 || s.OldestID != 11 {
		t.Fatalf("empty queue stats %+v", s)
	}
}

func TestQueueBoundPolicies(t *testing.T) {
	const rec = 10 + RecordOverhead // the stored size of a 10-byte message
	ten := func(prefix string, n int) [][]byte {
		out := make([][]byte, n)
		for i := range out {
			out[i] = fmt.Appendf(nil, "%s%09d", prefix, i)
		}
		return out
	}
	cases := []struct {
		name    string
		opts    Options
		appends [][][]byte
		last    Appended // of the last append
		want    []string
		dropped uint64
		refused uint64
	}{
		{
			name:    "exactly full, drop-oldest drops nothing",
			opts:    Options{MaxBytes: 3 * rec, Full: DropOldest, MaxMessageBytes: 10},
			appends: [][][]byte{ten("a", 3)},
			last:    Appended{FirstID: 1, Accepted: 3},
			want:    strs(ten("a", 3)),
		},
		{
			name:    "full, drop-oldest drops the oldest for a new one",
			opts:    Options{MaxBytes: 3 * rec, Full: DropOldest, MaxMessageBytes: 10},
			appends: [][][]byte{ten("a", 3), ten("b", 1)},
			last:    Appended{FirstID: 4, Accepted: 1, Dropped: 1},
			want:    append(strs(ten("a", 3))[1:], "b000000000"),
			dropped: 1,
		},
		{
			name:    "exactly full, refuse-newest refuses nothing",
			opts:    Options{MaxBytes: 3 * rec, Full: RefuseNewest, MaxMessageBytes: 10},
			appends: [][][]byte{ten("a", 3)},
			last:    Appended{FirstID: 1, Accepted: 3},
			want:    strs(ten("a", 3)),
		},
		{
			name:    "full, refuse-newest refuses the new one",
			opts:    Options{MaxBytes: 3 * rec, Full: RefuseNewest, MaxMessageBytes: 10},
			appends: [][][]byte{ten("a", 3), ten("b", 1)},
			last:    Appended{Refused: 1},
			want:    strs(ten("a", 3)),
			refused: 1,
		},
		{
			name:    "one byte short of a record holds one record less",
			opts:    Options{MaxBytes: 3*rec - 1, Full: RefuseNewest, MaxMessageBytes: 10},
			appends: [][][]byte{ten("a", 3)},
			last:    Appended{FirstID: 1, Accepted: 2, Refused: 1},
			want:    strs(ten("a", 2)),
			refused: 1,
		},
		{
			name: "refuse-newest refuses the rest of the call, even what would fit",
			opts: Options{MaxBytes: 2*rec + 5, Full: RefuseNewest, MaxMessageBytes: 20},
			appends: [][][]byte{
				{[]byte("a000000000"), []byte("big-message-of-20-by"), []byte("c")},
			},
			last:    Appended{FirstID: 1, Accepted: 1, Refused: 2},
			want:    []string{"a000000000"},
			refused: 2,
		},
		{
			name:    "count bound, drop-oldest",
			opts:    Options{MaxBytes: 1 << 20, MaxMessages: 2, Full: DropOldest, MaxMessageBytes: 10},
			appends: [][][]byte{ten("a", 2), ten("b", 1)},
			last:    Appended{FirstID: 3, Accepted: 1, Dropped: 1},
			want:    []string{"a000000001", "b000000000"},
			dropped: 1,
		},
		{
			name:    "count bound, refuse-newest",
			opts:    Options{MaxBytes: 1 << 20, MaxMessages: 2, Full: RefuseNewest, MaxMessageBytes: 10},
			appends: [][][]byte{ten("a", 3)},
			last:    Appended{FirstID: 1, Accepted: 2, Refused: 1},
			want:    strs(ten("a", 2)),
			refused: 1,
		},
		{
			name:    "a call larger than the bound keeps its newest (drop-oldest)",
			opts:    Options{MaxBytes: 2 * rec, Full: DropOldest, MaxMessageBytes: 10},
			appends: [][][]byte{ten("a", 5)},
			last:    Appended{FirstID: 1, Accepted: 5, Dropped: 3},
			want:    strs(ten("a", 5))[3:],
			dropped: 3,
		},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			key := newKey(t)
			q := openT(t, filepath.Join(t.TempDir(), "q.db"), key, tc.opts)
			var last Appended
			for _, m := range tc.appends {
				last = mustAppend(t, q, m, nil)
			}
			if last != tc.last {
				t.Errorf("last append %+v, want %+v", last, tc.last)
			}
			check := func(when string) {
				if got := datas(readAll(t, q)); !slices.Equal(got, tc.want) {
					t.Errorf("%s: held %v, want %v", when, got, tc.want)
				}
				s := q.Stats()
				if s.Dropped != tc.dropped || s.Refused != tc.refused {
					t.Errorf("%s: dropped %d refused %d, want %d %d", when, s.Dropped, s.Refused, tc.dropped, tc.refused)
				}
				held := uint64(0)
				for _, w := range tc.want {
					held += uint64(len(w) + RecordOverhead)
				}
				if s.Bytes > uint64(tc.opts.MaxBytes) || s.Bytes != held {
					t.Errorf("%s: %d bytes held for %d records (bound %d)", when, s.Bytes, len(tc.want), tc.opts.MaxBytes)
				}
				if tc.opts.MaxMessages > 0 && s.Depth > uint64(tc.opts.MaxMessages) {
					t.Errorf("%s: depth %d over the count bound %d", when, s.Depth, tc.opts.MaxMessages)
				}
			}
			check("open")
			q = reopen(t, q, key)
			check("reopened")
		})
	}
}

func TestQueueRefusalsAreCountedAcrossRestarts(t *testing.T) {
	key := newKey(t)
	opts := Options{MaxBytes: 2 * (1 + RecordOverhead), Full: RefuseNewest, MaxMessageBytes: 1}
	q := openT(t, filepath.Join(t.TempDir(), "q.db"), key, opts)
	mustAppend(t, q, [][]byte{{'a'}, {'b'}}, nil)
	commits := q.Stats().Commits
	for range 3 {
		if a := mustAppend(t, q, [][]byte{{'c'}}, nil); a.Refused != 1 || a.Accepted != 0 {
			t.Fatalf("full queue took %+v", a)
		}
	}
	if s := q.Stats(); s.Refused != 3 || s.Commits != commits {
		t.Fatalf("after 3 refusals: refused %d, commits %d (were %d): a refusal alone must not cost an fsync", s.Refused, s.Commits, commits)
	}
	q = reopen(t, q, key)
	if s := q.Stats(); s.Refused != 3 || s.Depth != 2 {
		t.Fatalf("after reopen: %+v, want 3 refused, depth 2", s)
	}
}

func TestQueueRejectsOversizeInput(t *testing.T) {
	q := openT(t, filepath.Join(t.TempDir(), "q.db"), newKey(t), Options{MaxBytes: 1 << 20, Full: DropOldest, MaxMessageBytes: 8})
	cases := []struct {
		name string
		msgs [][]byte
		side map[string][]byte
	}{
		{name: "message over MaxMessageBytes", msgs: [][]byte{[]byte("123456789")}},
		{name: "empty side key", side: map[string][]byte{"": {1}}},
		{name: "side key too long", side: map[string][]byte{strings.Repeat("k", maxSideKey+1): {1}}},
		{name: "side value too large", side: map[string][]byte{"k": make([]byte, maxSideValue+1)}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			if _, err := q.Append(tc.msgs, tc.side); !errors.Is(err, ErrTooLarge) {
				t.Fatalf("append: %v, want ErrTooLarge", err)
			}
			if s := q.Stats(); s.Appended != 0 || s.Commits != 0 {
				t.Fatalf("a refused call changed the queue: %+v", s)
			}
		})
	}
}

func TestQueueOpenRejectsBadOptionsAndKeys(t *testing.T) {
	good := DefaultOptions()
	cases := []struct {
		name string
		opts Options
		keys KeySource
	}{
		{name: "no full policy", opts: Options{MaxBytes: 1 << 20, MaxMessageBytes: 100}, keys: staticKey(newKey(t))},
		{name: "bound below one message", opts: Options{MaxBytes: 100, Full: DropOldest, MaxMessageBytes: 100}, keys: staticKey(newKey(t))},
		{name: "no message size", opts: Options{MaxBytes: 100, Full: DropOldest}, keys: staticKey(newKey(t))},
		{name: "negative count bound", opts: Options{MaxBytes: 1 << 20, MaxMessages: -1, Full: DropOldest, MaxMessageBytes: 100}, keys: staticKey(newKey(t))},
		{name: "short key", opts: good, keys: staticKey(make([]byte, 16))},
		{name: "key source fails", opts: good, keys: KeyFunc(func() ([]byte, error) { return nil, errors.New("token absent") })},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "q.db")
			q, err := Open(path, tc.keys, tc.opts)
			if err == nil {
				q.Close()
				t.Fatal("opened")
			}
			if _, err := os.Stat(path); err == nil {
				t.Fatal("a refused Open created the file")
			}
		})
	}
	if p, err := ParsePolicy("refuse-newest"); err != nil || p != RefuseNewest {
		t.Fatalf("ParsePolicy: %v %v", p, err)
	}
	if _, err := ParsePolicy("drop-newest"); err == nil {
		t.Fatal("ParsePolicy took drop-newest")
	}
}

func TestQueueSideStateCommitsWithMessagesAndOutlivesSessions(t *testing.T) {
	key := newKey(t)
	q := openT(t, filepath.Join(t.TempDir(), "q.db"), key, DefaultOptions())
	if v, err := q.Side("mesh"); err != nil || v != nil {
		t.Fatalf("side of a new queue: %q %v", v, err)
	}
	mustAppend(t, q, msgs("m", 0, 3), map[string][]byte{"mesh": []byte("window-3"), "other": []byte("x")})
	if v, _ := q.Side("mesh"); string(v) != "window-3" {
		t.Fatalf("side %q", v)
	}
	// Side values outlive the sessions of the records: ack everything and
	// reopen several times (each Open is a session; old ones are pruned).
	if err := q.Ack(3); err != nil {
		t.Fatal(err)
	}
	for range 3 {
		q = reopen(t, q, key)
	}
	if v, err := q.Side("mesh"); err != nil || string(v) != "window-3" {
		t.Fatalf("side after acks and reopens: %q %v", v, err)
	}
	mustAppend(t, q, nil, map[string][]byte{"other": nil, "mesh": []byte("window-4")})
	q = reopen(t, q, key)
	if v, _ := q.Side("other"); v != nil {
		t.Fatalf("deleted side value reads %q", v)
	}
	if v, _ := q.Side("mesh"); string(v) != "window-4" {
		t.Fatalf("side %q", v)
	}
	// Old sessions are pruned: only the side value's and the current one remain.
	q.Close()
	n := 0
	inspect(t, q.path, func(tx *bolt.Tx) error {
		n = tx.Bucket(bucketSessions).Stats().KeyN
		return nil
	})
	if n != 2 {
		t.Fatalf("%d sessions kept, want 2", n)
	}
}

func TestQueueFileHoldsNoPlaintext(t *testing.T) {
	key := newKey(t)
	path := filepath.Join(t.TempDir(), "q.db")
	q := openT(t, path, key, DefaultOptions())
	marker := "PLAINTEXT-MARKER-" + hex.EncodeToString(newKey(t)[:8])
	var m [][]byte
	for i := range 200 {
		m = append(m, fmt.Appendf(nil, `{"tsmTuid":"%s-%d","temp":21.5}`, marker, i))
	}
	mustAppend(t, q, m[:100], map[string][]byte{"mesh": []byte(marker + "-side")})
	mustAppend(t, q, m[100:], nil)
	if err := q.Ack(150); err != nil { // freed pages keep old bytes
		t.Fatal(err)
	}
	scan := func(when string) {
		raw, err := os.ReadFile(path)
		if err != nil {
			t.Fatal(err)
		}
		if bytes.Contains(raw, []byte("PLAINTEXT-MARKER")) || bytes.Contains(raw, []byte("tsmTuid")) || bytes.Contains(raw, key) {
			t.Fatalf("%s: the file holds plaintext or the key", when)
		}
		// The scan works: the record keys are in the clear.
		if !bytes.Contains(raw, idKey(151)) {
			t.Fatalf("%s: the scan does not see the file's record keys", when)
		}
	}
	scan("open")
	if err := q.Close(); err != nil {
		t.Fatal(err)
	}
	scan("closed")
	fi, err := os.Stat(path)
	if err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("file mode %v %v, want 0600", fi.Mode(), err)
	}
}

func TestQueueRefusesWrongKeyAndKeepsRecords(t *testing.T) {
	key := newKey(t)
	path := filepath.Join(t.TempDir(), "q.db")
	q := openT(t, path, key, DefaultOptions())
	mustAppend(t, q, msgs("m", 0, 5), map[string][]byte{"mesh": []byte("s")})
	q.Close()
	_, err := Open(path, staticKey(newKey(t)), DefaultOptions())
	if !errors.Is(err, ErrWrongKey) {
		t.Fatalf("open with another key: %v, want ErrWrongKey", err)
	}
	q = openT(t, path, key, DefaultOptions())
	if got := datas(readAll(t, q)); !slices.Equal(got, strs(msgs("m", 0, 5))) {
		t.Fatalf("after a wrong-key open the queue holds %v", got)
	}
}

func TestQueueFileIsLocked(t *testing.T) {
	key := newKey(t)
	path := filepath.Join(t.TempDir(), "q.db")
	q := openT(t, path, key, DefaultOptions())
	q2, err := Open(path, staticKey(key), DefaultOptions())
	if !errors.Is(err, ErrLocked) {
		if q2 != nil {
			q2.Close()
		}
		t.Fatalf("second open: %v, want ErrLocked", err)
	}
	q.Close()
	openT(t, path, key, DefaultOptions())
}

func TestQueueClosedRefusesCalls(t *testing.T) {
	q := openT(t, filepath.Join(t.TempDir(), "q.db"), newKey(t), DefaultOptions())
	mustAppend(t, q, msgs("m", 0, 1), nil)
	if err := q.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := q.Append(msgs("m", 1, 1), nil); !errors.Is(err, ErrClosed) {
		t.Errorf("append after close: %v", err)
	}
	if err := q.Ack(1); !errors.Is(err, ErrClosed) {
		t.Errorf("ack after close: %v", err)
	}
	if _, err := q.Read(0, 1); !errors.Is(err, ErrClosed) {
		t.Errorf("read after close: %v", err)
	}
	if err := q.Close(); err != nil {
		t.Errorf("second close: %v", err)
	}
}

func TestQueueConcurrentAppendersShareCommits(t *testing.T) {
	const writers, each = 8, 40
	key := newKey(t)
	q := openT(t, filepath.Join(t.TempDir(), "q.db"), key, DefaultOptions())
	var wg sync.WaitGroup
	errs := make(chan error, writers)
	for w := range writers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range each {
				if _, err := q.Append([][]byte{fmt.Appendf(nil, "w%d-%03d", w, i)}, nil); err != nil {
					errs <- err
					return
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	q = reopen(t, q, key)
	recs := readAll(t, q)
	if len(recs) != writers*each {
		t.Fatalf("%d records, want %d", len(recs), writers*each)
	}
	next := map[string]int{}
	for _, r := range recs {
		w, n, _ := strings.Cut(string(r.Data), "-")
		if want := fmt.Sprintf("%03d", next[w]); n != want {
			t.Fatalf("writer %s: record %s where %s was due", w, n, want)
		}
		next[w]++
	}
}

func TestQueueGroupsConcurrentAppendsIntoFewCommits(t *testing.T) {
	const writers, each = 8, 40
	q := openT(t, filepath.Join(t.TempDir(), "q.db"), newKey(t), DefaultOptions())
	var wg sync.WaitGroup
	for w := range writers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range each {
				q.Append([][]byte{fmt.Appendf(nil, "w%d-%d", w, i)}, nil)
			}
		}()
	}
	wg.Wait()
	s := q.Stats()
	if s.Appended != writers*each {
		t.Fatalf("appended %d", s.Appended)
	}
	// Each commit waits for an fsync; the other writers queue meanwhile.
	if s.Commits > s.Appended/2 {
		t.Fatalf("%d commits for %d concurrent appends: no group commit", s.Commits, s.Appended)
	}
	t.Logf("%d appends in %d commits", s.Appended, s.Commits)
}

// inspect opens a closed queue file with bbolt directly.
func inspect(t testing.TB, path string, fn func(*bolt.Tx) error) {
	t.Helper()
	db, err := bolt.Open(path, 0o600, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	if err := db.Update(fn); err != nil {
		t.Fatal(err)
	}
}

func TestQueueSignalsAppendsToItsReader(t *testing.T) {
	q := openT(t, filepath.Join(t.TempDir(), "q.db"), newKey(t), DefaultOptions())
	select {
	case <-q.Appends():
		t.Fatal("signal before any append")
	default:
	}
	got := make(chan []Record, 1)
	go func() {
		<-q.Appends()
		recs, _ := q.Read(0, 10)
		got <- recs
	}()
	mustAppend(t, q, msgs("m", 0, 2), nil)
	select {
	case recs := <-got:
		if len(recs) != 2 {
			t.Fatalf("woken reader read %v", datas(recs))
		}
	case <-time.After(10 * time.Second * testutil.Slowdown()):
		t.Fatal("the reader was not woken")
	}
	// Acks and refusals do not signal.
	if err := q.Ack(2); err != nil {
		t.Fatal(err)
	}
	select {
	case <-q.Appends():
		t.Fatal("an ack signalled")
	default:
	}
}

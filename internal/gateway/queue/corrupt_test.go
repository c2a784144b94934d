package queue

import (
	"crypto/rand"
	"encoding/binary"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"testing"

	bolt "go.etcd.io/bbolt"
)

// metaTxid is where bbolt keeps a meta page's transaction id and checksum:
// after the 16-byte page header, the meta's magic, version, page size,
// flags (4 bytes each), root bucket (16), freelist and high-water page ids
// (8 each); all little endian.
const (
	metaTxidAt     = 16 + 4*4 + 16 + 8 + 8
	metaChecksumAt = metaTxidAt + 8
)

// newestMeta returns the offset of the meta page with the higher
// transaction id.
func newestMeta(t *testing.T, raw []byte) int {
	t.Helper()
	ps := os.Getpagesize()
	tx0 := binary.LittleEndian.Uint64(raw[metaTxidAt:])
	tx1 := binary.LittleEndian.Uint64(raw[ps+metaTxidAt:])
	if tx1 > tx0 {
		return ps
	}
	return 0
}

// queueWith returns the path of a closed queue file holding the messages
// of each append, one commit each.
func queueWith(t *testing.T, key []byte, appends ...[][]byte) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "q.db")
	q := openT(t, path, key, DefaultOptions())
	for _, m := range appends {
		mustAppend(t, q, m, nil)
	}
	if err := q.Close(); err != nil {
		t.Fatal(err)
	}
	return path
}

// rewrite applies edit to the raw bytes of the file at path.
func rewrite(t *testing.T, path string, edit func([]byte) []byte) {
	t.Helper()
	raw, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, edit(raw), 0o600); err != nil {
		t.Fatal(err)
	}
}

func TestQueueOpenRefusesDamagedFiles(t *testing.T) {
	ps := os.Getpagesize()
	cases := []struct {
		name string
		edit func(t *testing.T, raw []byte) []byte
	}{
		{name: "not a queue: random bytes", edit: func(t *testing.T, raw []byte) []byte {
			b := make([]byte, 64<<10)
			rand.Read(b)
			return b
		}},
		{name: "both meta pages broken", edit: func(t *testing.T, raw []byte) []byte {
			raw[metaChecksumAt] ^= 0xff
			raw[ps+metaChecksumAt] ^= 0xff
			return raw
		}},
		{name: "truncated to its meta pages and a bit", edit: func(t *testing.T, raw []byte) []byte {
			return raw[:2*ps+100]
		}},
		{name: "truncated to half", edit: func(t *testing.T, raw []byte) []byte {
			return raw[:len(raw)/2]
		}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			key := newKey(t)
			path := queueWith(t, key, msgs("m", 0, 2000))
			rewrite(t, path, func(raw []byte) []byte { return tc.edit(t, raw) })
			q, err := Open(path, staticKey(key), DefaultOptions())
			if err == nil {
				q.Close()
				t.Fatal("opened a damaged file")
			}
			if !errors.Is(err, ErrCorrupt) {
				t.Fatalf("open: %v, want ErrCorrupt", err)
			}
			t.Log(err)
			// The refusal released the file: opening it again says the same,
			// not ErrLocked; and it can be moved aside for a new queue.
			if q, err := Open(path, staticKey(key), DefaultOptions()); !errors.Is(err, ErrCorrupt) {
				if q != nil {
					q.Close()
				}
				t.Fatalf("second open: %v, want ErrCorrupt again", err)
			}
			if err := os.Rename(path, path+".corrupt"); err != nil {
				t.Fatal(err)
			}
			openT(t, path, key, DefaultOptions())
		})
	}
}

func TestQueueOpenRefusesAnotherBboltFile(t *testing.T) {
	path := filepath.Join(t.TempDir(), "other.db")
	db, err := bolt.Open(path, 0o600, nil)
	if err != nil {
		t.Fatal(err)
	}
	db.Update(func(tx *bolt.Tx) error { _, err := tx.CreateBucket([]byte("records")); return err })
	db.Close()
	if _, err := Open(path, staticKey(newKey(t)), DefaultOptions()); !errors.Is(err, ErrCorrupt) {
		t.Fatalf("open of a bbolt file that is no queue: %v, want ErrCorrupt", err)
	}
}

func TestQueueTornCommitOpensAtThePreviousOne(t *testing.T) {
	key := newKey(t)
	first, second := msgs("first", 0, 3), msgs("second", 0, 3)
	path := queueWith(t, key, first, second)
	// A commit whose meta page was torn (its checksum fails) is not there.
	rewrite(t, path, func(raw []byte) []byte {
		raw[newestMeta(t, raw)+metaChecksumAt] ^= 0xff
		return raw
	})
	q := openT(t, path, key, DefaultOptions())
	if got := datas(readAll(t, q)); !slices.Equal(got, strs(first)) {
		t.Fatalf("after a torn last commit the queue holds %v, want %v", got, strs(first))
	}
	if a := mustAppend(t, q, msgs("third", 0, 1), nil); a.FirstID != 4 {
		t.Fatalf("next id %d after the torn commit, want 4", a.FirstID)
	}
}

func TestQueueReportsRecordsThatDoNotAuthenticate(t *testing.T) {
	key := newKey(t)
	cases := []struct {
		name   string
		tamper func(recs, side *bolt.Bucket) error
		badID  uint64
	}{
		{name: "a flipped ciphertext byte", badID: 2, tamper: func(recs, _ *bolt.Bucket) error {
			v := slices.Clone(recs.Get(idKey(2)))
			v[headerLen] ^= 1
			return recs.Put(idKey(2), v)
		}},
		{name: "two records swapped", badID: 1, tamper: func(recs, _ *bolt.Bucket) error {
			v1, v2 := slices.Clone(recs.Get(idKey(1))), slices.Clone(recs.Get(idKey(2)))
			if err := recs.Put(idKey(1), v2); err != nil {
				return err
			}
			return recs.Put(idKey(2), v1)
		}},
		{name: "a record replayed at a later id", badID: 3, tamper: func(recs, _ *bolt.Bucket) error {
			return recs.Put(idKey(3), slices.Clone(recs.Get(idKey(1))))
		}},
		{name: "a side value moved into the records", badID: 2, tamper: func(recs, side *bolt.Bucket) error {
			return recs.Put(idKey(2), slices.Clone(side.Get([]byte("mesh"))))
		}},
		{name: "a record cut short", badID: 1, tamper: func(recs, _ *bolt.Bucket) error {
			return recs.Put(idKey(1), slices.Clone(recs.Get(idKey(1))[:headerLen+3]))
		}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "q.db")
			q := openT(t, path, key, DefaultOptions())
			mustAppend(t, q, msgs("m", 1, 4), map[string][]byte{"mesh": []byte("state")})
			q.Close()
			inspect(t, path, func(tx *bolt.Tx) error {
				return tc.tamper(tx.Bucket(bucketRecords), tx.Bucket(bucketSide))
			})
			q = openT(t, path, key, DefaultOptions())
			recs, err := q.Read(0, 10)
			var re *RecordError
			if !errors.As(err, &re) || re.ID != tc.badID || !errors.Is(err, ErrCorrupt) {
				t.Fatalf("read: %v, want a RecordError for %d (ErrCorrupt)", err, tc.badID)
			}
			if len(recs) != int(tc.badID-1) {
				t.Fatalf("read returned %d records before the bad one, want %d", len(recs), tc.badID-1)
			}
			// Nothing is dropped silently: the record stays until the caller acks past it.
			if s := q.Stats(); s.Depth != 4 {
				t.Fatalf("depth %d after a bad read, want 4", s.Depth)
			}
			if _, err := q.Read(0, 10); !errors.As(err, &re) {
				t.Fatalf("second read: %v", err)
			}
			if err := q.Ack(tc.badID); err != nil {
				t.Fatal(err)
			}
			if _, err := q.Read(0, 10); errors.As(err, &re) && re.ID <= tc.badID {
				t.Fatalf("after acking past it, read still stops at %d", re.ID)
			}
		})
	}
}

func TestQueueReportsATamperedSideValue(t *testing.T) {
	key := newKey(t)
	path := filepath.Join(t.TempDir(), "q.db")
	q := openT(t, path, key, DefaultOptions())
	mustAppend(t, q, nil, map[string][]byte{"mesh": []byte("state-a"), "other": []byte("state-b")})
	q.Close()
	inspect(t, path, func(tx *bolt.Tx) error {
		side := tx.Bucket(bucketSide)
		return side.Put([]byte("mesh"), slices.Clone(side.Get([]byte("other"))))
	})
	q = openT(t, path, key, DefaultOptions())
	if _, err := q.Side("mesh"); !errors.Is(err, ErrCorrupt) {
		t.Fatalf("side value moved to another key: %v, want ErrCorrupt", err)
	}
	if v, err := q.Side("other"); err != nil || string(v) != "state-b" {
		t.Fatalf("untouched side value: %q %v", v, err)
	}
}

func TestQueueOpenRefusesEveryTruncation(t *testing.T) {
	key := newKey(t)
	want := msgs("m", 0, 1500)
	path := queueWith(t, key, want[:500], want[500:])
	raw, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	ps := os.Getpagesize()
	opened := 0
	for n := ps / 2; n < len(raw); n += ps / 2 {
		if err := os.WriteFile(path, raw[:n], 0o600); err != nil {
			t.Fatal(err)
		}
		q, err := Open(path, staticKey(key), DefaultOptions())
		if err != nil {
			if !errors.Is(err, ErrCorrupt) {
				t.Fatalf("truncated to %d bytes: %v, want ErrCorrupt", n, err)
			}
			continue
		}
		// Only the unused tail of the file may go: then everything is there.
		opened++
		recs, err := q.Read(0, len(want)+1)
		q.Close()
		if err != nil || len(recs) != len(want) {
			t.Fatalf("truncated to %d bytes, opened and read %d records, %v", n, len(recs), err)
		}
	}
	t.Logf("%d of %d truncations opened with every record", opened, len(raw)/(ps/2))
}

func TestQueueDamagedOldestRecordKeepsTheOthersReadable(t *testing.T) {
	key := newKey(t)
	path := filepath.Join(t.TempDir(), "q.db")
	q := openT(t, path, key, DefaultOptions())
	mustAppend(t, q, msgs("m", 1, 3), nil)
	q = reopen(t, q, key) // a new session for the next records
	mustAppend(t, q, msgs("m", 4, 2), nil)
	q.Close()
	// A damaged session index in the oldest record must not make Open
	// forget the sessions the other records need.
	inspect(t, path, func(tx *bolt.Tx) error {
		recs := tx.Bucket(bucketRecords)
		v := slices.Clone(recs.Get(idKey(1)))
		binary.BigEndian.PutUint32(v[1:5], 1<<30)
		return recs.Put(idKey(1), v)
	})
	q = openT(t, path, key, DefaultOptions())
	var re *RecordError
	if _, err := q.Read(0, 10); !errors.As(err, &re) || re.ID != 1 {
		t.Fatalf("read: %v, want a RecordError for 1", err)
	}
	if err := q.Ack(1); err != nil {
		t.Fatal(err)
	}
	q = reopen(t, q, key)
	if got := datas(readAll(t, q)); !slices.Equal(got, strs(msgs("m", 2, 4))) {
		t.Fatalf("after the damaged record: %v", got)
	}
}

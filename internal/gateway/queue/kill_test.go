package queue

import (
	"bufio"
	"encoding/hex"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/iotransit/iotransit/internal/testutil"
)

// The kill test re-runs this test binary as a helper process (an agent in
// miniature) selected by these variables.
const (
	helperEnv      = "QUEUE_TEST_HELPER"
	helperPathEnv  = "QUEUE_TEST_PATH"
	helperKeyEnv   = "QUEUE_TEST_KEY"
	helperRoundEnv = "QUEUE_TEST_ROUND"
	helperWriters  = 4
)

func TestMain(m *testing.M) {
	if os.Getenv(helperEnv) == "append-and-ack" {
		os.Exit(appendAndAckHelper())
	}
	os.Exit(m.Run())
}

// appendAndAckHelper appends from several goroutines and reads and acks
// from another, forever, reporting on stdout each call after it returned:
// "A <firstID> <message>..." and "K <upTo>". Each append also sets the side
// value "last" to its last message. It ends only when killed.
func appendAndAckHelper() int {
	key, _ := hex.DecodeString(os.Getenv(helperKeyEnv))
	round := os.Getenv(helperRoundEnv)
	q, err := Open(os.Getenv(helperPathEnv), staticKey(key), DefaultOptions())
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 2
	}
	var mu sync.Mutex
	report := func(line string) {
		mu.Lock()
		defer mu.Unlock()
		os.Stdout.Write([]byte(line + "\n")) // one write, unbuffered: it survives the kill
	}
	fail := func(err error) {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(3)
	}
	for w := range helperWriters {
		go func() {
			for n := 0; ; n++ {
				batch := make([][]byte, 1+n%3)
				for i := range batch {
					batch[i] = fmt.Appendf(nil, "r%s-w%d-%07d", round, w, n*3+i)
				}
				a, err := q.Append(batch, map[string][]byte{"last": batch[len(batch)-1]})
				if err != nil || a.Accepted != len(batch) {
					fail(fmt.Errorf("append: %+v %v", a, err))
				}
				report(fmt.Sprintf("A %d %s", a.FirstID, strs(batch)))
			}
		}()
	}
	after := uint64(0)
	for {
		recs, err := q.Read(after, 50)
		if err != nil {
			fail(err)
		}
		if len(recs) == 0 {
			<-q.Appends()
			continue
		}
		after = recs[len(recs)-1].ID
		time.Sleep(2 * time.Millisecond) // the uplink waits for its PUBACKs
		if err := q.Ack(after); err != nil {
			fail(err)
		}
		report(fmt.Sprintf("K %d", after))
	}
}

// killRound runs the helper on path until it has reported enough appends
// and acks and then an ack, kills it with SIGKILL and returns what it reported: the
// message of every id whose append returned, and the highest acked id.
func killRound(t *testing.T, path, key string, round int) (appended map[uint64]string, acked uint64) {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), helperEnv+"=append-and-ack", helperPathEnv+"="+path,
		helperKeyEnv+"="+key, helperRoundEnv+"="+strconv.Itoa(round))
	var stderr testutil.SyncBuffer
	cmd.Stderr = &stderr
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	lines := make(chan string, 1024)
	go func() {
		defer close(lines)
		sc := bufio.NewScanner(out)
		for sc.Scan() {
			lines <- sc.Text()
		}
	}()
	appended = map[uint64]string{}
	acks := 0
	parse := func(line string) {
		f := strings.Fields(strings.NewReplacer("[", " ", "]", " ").Replace(line))
		id, err := strconv.ParseUint(f[1], 10, 64)
		if err != nil {
			t.Fatalf("helper line %q", line)
		}
		switch f[0] {
		case "A":
			for i, m := range f[2:] {
				appended[id+uint64(i)] = m
			}
		case "K":
			acked, acks = max(acked, id), acks+1
		}
	}
	// Kill right after an ack was reported, once there is enough history:
	// between an ack and the next read.
	deadline := time.After(60 * time.Second * testutil.Slowdown())
	for justAcked := false; len(appended) < 600 || acks < 10 || !justAcked; {
		select {
		case line, ok := <-lines:
			if !ok {
				t.Fatalf("helper ended: %v", stderr.String())
			}
			parse(line)
			justAcked = line[0] == 'K'
		case <-deadline:
			cmd.Process.Kill()
			t.Fatalf("helper reported %d appends and %d acks in time; stderr: %s", len(appended), acks, stderr.String())
		}
	}
	if err := cmd.Process.Kill(); err != nil { // SIGKILL
		t.Fatal(err)
	}
	for line := range lines { // what it wrote before it died
		parse(line)
	}
	cmd.Wait()
	return appended, acked
}

func TestQueueKill9LosesNothingAppendedAndResendsNothingAcked(t *testing.T) {
	key := newKey(t)
	path := filepath.Join(t.TempDir(), "q.db")
	appended := map[uint64]string{} // id → message, of every append that returned
	var acked uint64                // highest id whose ack returned
	for round := range 3 {
		a, k := killRound(t, path, hex.EncodeToString(key), round)
		for id, m := range a {
			if prev, dup := appended[id]; dup {
				t.Fatalf("id %d reported for %s and %s", id, prev, m)
			}
			appended[id] = m
		}
		acked = max(acked, k)

		q := openT(t, path, key, DefaultOptions())
		s := q.Stats()
		recs := readAll(t, q)
		if s.Dropped != 0 || s.Acked != s.OldestID-1 || s.Depth != uint64(len(recs)) {
			t.Fatalf("round %d: stats %+v for %d records", round, s, len(recs))
		}
		// Nothing acknowledged is handed out again.
		if s.OldestID <= acked {
			t.Fatalf("round %d: the queue starts at %d, but %d was acknowledged", round, s.OldestID, acked)
		}
		// Every append that returned is there, once, in place, unless an ack
		// (returned or not yet reported) removed it.
		held := map[uint64]string{}
		seen := map[string]bool{}
		for _, r := range recs {
			held[r.ID] = string(r.Data)
			if seen[string(r.Data)] {
				t.Fatalf("round %d: %s stored twice", round, r.Data)
			}
			seen[string(r.Data)] = true
		}
		for id, m := range appended {
			if id >= s.OldestID && held[id] != m {
				t.Fatalf("round %d: record %d is %q, its append returned for %q", round, id, held[id], m)
			}
		}
		// Each writer's messages are in the order it appended them.
		last := map[string]string{}
		for _, r := range recs {
			w := string(r.Data[:strings.LastIndexByte(string(r.Data), '-')])
			if string(r.Data) <= last[w] {
				t.Fatalf("round %d: %s after %s", round, r.Data, last[w])
			}
			last[w] = string(r.Data)
		}
		// The side value was committed with the last append.
		if len(recs) > 0 {
			side, err := q.Side("last")
			if err != nil || string(side) != string(recs[len(recs)-1].Data) {
				t.Fatalf("round %d: side value %q, %v; the last record is %q", round, side, err, recs[len(recs)-1].Data)
			}
		}
		t.Logf("round %d: %d appends and acks up to %d reported; the queue holds %d..%d after the kill", round, len(a), k, s.OldestID, s.NextID-1)
		if err := q.Close(); err != nil {
			t.Fatal(err)
		}
	}
}

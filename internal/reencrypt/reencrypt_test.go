package reencrypt_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/iotransit/iotransit/client"
	"github.com/iotransit/iotransit/internal/backbone"
	"github.com/iotransit/iotransit/internal/kms"
	"github.com/iotransit/iotransit/internal/reencrypt"
	tu "github.com/iotransit/iotransit/internal/testutil"
	"github.com/iotransit/iotransit/internal/testutil/storetest"
)

const (
	tenant = "acme"
	bucket = "test_sealed"
	stream = "TEST_SEALED"
)

// stored is a test record: a sealed value bound to its key.
type stored struct {
	Sealed []byte `json:"sealed"`
}

// fixture is a backbone with records and messages of the tenant sealed
// under version 1, and a count of the job's calls per record.
type fixture struct {
	bb   *backbone.Backbone
	keys *kms.Keyring
	kv   jetstream.KeyValue

	mu    sync.Mutex
	calls map[string]int
	// hook, when set, runs in the job's re-seal of a record before it.
	hook func(key string)
}

func newFixture(t *testing.T, records, messages int) *fixture {
	t.Helper()
	ctx := context.Background()
	bb, keys := storetest.Backbone(t, tenant)
	f := &fixture{bb: bb, keys: keys, calls: map[string]int{}}
	var err error
	if f.kv, err = bb.KV(ctx, bucket, 1); err != nil {
		t.Fatal(err)
	}
	for i := range records {
		f.put(t, fmt.Sprintf("k%03d", i), fmt.Sprintf("secret %d", i))
	}
	if messages > 0 {
		if _, err := bb.JS.CreateStream(ctx, jetstream.StreamConfig{Name: stream, Subjects: []string{"test.sealed"}}); err != nil {
			t.Fatal(err)
		}
		for i := range messages {
			f.publish(t, fmt.Sprintf("message %d", i))
		}
	}
	return f
}

// put stores plain sealed under the newest version at key.
func (f *fixture) put(t *testing.T, key, plain string) {
	t.Helper()
	if err := f.write(key, plain); err != nil {
		t.Fatal(err)
	}
}

// write is put for a goroutine of the job (no t.Fatal there).
func (f *fixture) write(key, plain string) error {
	ctx := context.Background()
	s, err := f.keys.Seal(ctx, tenant, []byte(plain), []byte(key))
	if err != nil {
		return err
	}
	b, _ := json.Marshal(stored{Sealed: s})
	_, err = f.kv.Put(ctx, key, b)
	return err
}

func (f *fixture) publish(t *testing.T, plain string) {
	t.Helper()
	ctx := context.Background()
	s, err := f.keys.Seal(ctx, tenant, []byte(plain), []byte("msg"))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.bb.JS.Publish(ctx, "test.sealed", s); err != nil {
		t.Fatal(err)
	}
}

// sources are the fixture's records and stream.
func (f *fixture) sources(context.Context, string) ([]reencrypt.Records, []reencrypt.Stream, error) {
	return []reencrypt.Records{{
			Kind: "test", Bucket: bucket,
			Reseal: func(key string, b []byte, reseal kms.ResealFunc) ([]byte, bool, error) {
				f.mu.Lock()
				f.calls[key]++
				hook := f.hook
				f.mu.Unlock()
				if hook != nil {
					hook(key)
				}
				return kms.ResealJSON(b, reseal, func(r *stored) (*[]byte, []byte) { return &r.Sealed, []byte(key) })
			},
		}, {Kind: "absent", Bucket: "no_such_bucket"}},
		[]reencrypt.Stream{{Kind: "messages", Name: stream}, {Kind: "deadletters", Name: "NO_SUCH_STREAM"}}, nil
}

func (f *fixture) service(t *testing.T, node string, cfg reencrypt.Config) *reencrypt.Service {
	t.Helper()
	cfg.NodeID = node
	if cfg.RecordRate == 0 {
		cfg.RecordRate = 1000
	}
	cfg.Settle = time.Millisecond
	s := reencrypt.New(cfg, f.keys, f.bb, f.bb.JS, f.sources, tu.Logger(t))
	t.Cleanup(s.Close)
	return s
}

func (f *fixture) callsOf() map[string]int {
	f.mu.Lock()
	defer f.mu.Unlock()
	out := map[string]int{}
	for k, v := range f.calls {
		out[k] = v
	}
	return out
}

// check opens every record and asserts each is sealed under version want
// and holds its plaintext (or, for the keys in plain, that one).
func (f *fixture) check(t *testing.T, want uint32, plain map[string]string) {
	t.Helper()
	ctx := context.Background()
	lister, err := f.kv.ListKeys(ctx)
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for key := range lister.Keys() {
		e, err := f.kv.Get(ctx, key)
		if err != nil {
			t.Fatal(err)
		}
		var r stored
		if err := json.Unmarshal(e.Value(), &r); err != nil {
			t.Fatal(err)
		}
		if v, err := kms.SealedVersion(r.Sealed); err != nil || v != want {
			t.Errorf("record %s is under version %d (%v), want %d", key, v, err, want)
		}
		got, err := f.keys.Open(ctx, tenant, r.Sealed, []byte(key))
		if err != nil {
			t.Fatalf("record %s does not open: %v", key, err)
		}
		exp, ok := plain[key]
		if !ok {
			exp = "secret " + strings.TrimLeft(key[1:], "0")
			if exp == "secret " {
				exp = "secret 0"
			}
		}
		if string(got) != exp {
			t.Errorf("record %s holds %q, want %q", key, got, exp)
		}
		n++
	}
	if n == 0 {
		t.Fatal("no records")
	}
}

// wait polls the job until its state is not running, and returns it.
func wait(t *testing.T, s *reencrypt.Service) *client.KMSReencryption {
	t.Helper()
	var j *client.KMSReencryption
	tu.Eventually(t, 30*time.Second, 20*time.Millisecond, func() error {
		var err error
		if j, err = s.Status(context.Background(), tenant); err != nil {
			return err
		}
		if j == nil || j.State == client.ReencryptRunning {
			return errors.New("still running")
		}
		return nil
	})
	return j
}

func records(t *testing.T, j *client.KMSReencryption, kind string) client.ReencryptRecords {
	t.Helper()
	for _, r := range j.Records {
		if r.Kind == kind {
			return r
		}
	}
	t.Fatalf("no progress of %s in %+v", kind, j.Records)
	return client.ReencryptRecords{}
}

// TestReencryptMovesRecordsAndCountsMessages: records sealed under v1 are
// all under v2 after the job and read back; the stream's messages are
// counted per version; every record is gone through once.
func TestReencryptMovesRecordsAndCountsMessages(t *testing.T) {
	ctx := context.Background()
	f := newFixture(t, 12, 5)
	if _, err := f.keys.Rotate(ctx, tenant); err != nil {
		t.Fatal(err)
	}
	for i := range 3 {
		f.publish(t, fmt.Sprintf("after %d", i))
	}
	s := f.service(t, "n1", reencrypt.Config{})
	if j, err := s.Start(ctx, tenant); err != nil || j.State != client.ReencryptRunning {
		t.Fatalf("Start = %+v, %v", j, err)
	}
	j := wait(t, s)
	if j.State != client.ReencryptDone || j.LastError != "" || j.TargetVersion != 2 || j.FinishedAt == nil {
		t.Fatalf("job ended %+v", j)
	}
	f.check(t, 2, nil)
	if p := records(t, j, "test"); p.Total != 12 || p.Done != 12 || p.Resealed != 12 || !p.Finished || p.Position != "k011" {
		t.Errorf("progress %+v, want 12 of 12 re-sealed, at k011", p)
	}
	if p := records(t, j, "absent"); !p.Finished || p.Total != 0 {
		t.Errorf("a bucket that does not exist: %+v, want finished with none", p)
	}
	for key, n := range f.callsOf() {
		if n != 1 {
			t.Errorf("record %s gone through %d times, want once", key, n)
		}
	}
	var counted *client.ReencryptStream
	for i := range j.Streams {
		if j.Streams[i].Stream == stream {
			counted = &j.Streams[i]
		}
	}
	if counted == nil || !counted.Finished || counted.Total != 8 || counted.Position != 8 {
		t.Fatalf("stream progress %+v, want 8 of 8", counted)
	}
	want := []client.ReencryptVersionCount{{Version: 1, Messages: 5, LastSeq: 5}, {Version: 2, Messages: 3, LastSeq: 8}}
	if fmt.Sprint(counted.Versions) != fmt.Sprint(want) {
		t.Errorf("counted %+v, want %+v", counted.Versions, want)
	}
	// Once retention removed the messages under v1, the status says so.
	str, err := f.bb.JS.Stream(ctx, stream)
	if err != nil {
		t.Fatal(err)
	}
	if err := str.Purge(ctx, jetstream.WithPurgeSequence(6)); err != nil {
		t.Fatal(err)
	}
	j, err = s.Status(ctx, tenant)
	if err != nil {
		t.Fatal(err)
	}
	for _, st := range j.Streams {
		if st.Stream != stream {
			continue
		}
		if !st.Versions[0].AgedOut || st.Versions[1].AgedOut {
			t.Errorf("after the purge of v1's messages: %+v, want v1 aged out and v2 not", st.Versions)
		}
	}
}

// TestReencryptWithoutRotationIsANoOp: a tenant with version 1 alone: the
// job ends done at once and touches nothing.
func TestReencryptWithoutRotationIsANoOp(t *testing.T) {
	f := newFixture(t, 3, 2)
	s := f.service(t, "n1", reencrypt.Config{})
	if _, err := s.Start(context.Background(), tenant); err != nil {
		t.Fatal(err)
	}
	j := wait(t, s)
	if j.State != client.ReencryptDone || j.TargetVersion != 1 || len(j.Records) != 0 || len(j.Streams) != 0 {
		t.Fatalf("job %+v, want done with nothing to do", j)
	}
	if c := f.callsOf(); len(c) != 0 {
		t.Errorf("records gone through: %v", c)
	}
	f.check(t, 1, nil)
	if _, err := s.Start(context.Background(), "nobody"); !errors.Is(err, kms.ErrNoKey) {
		t.Errorf("Start for a tenant without keys: %v, want ErrNoKey", err)
	}
}

// TestReencryptConcurrentWriterWins: a record written while the job
// re-seals it keeps the writer's value (the job's compare-and-set loses
// and reads it again); a rotation during the job makes another pass, to
// the newer version.
func TestReencryptConcurrentWriterAndRotation(t *testing.T) {
	ctx := context.Background()
	f := newFixture(t, 10, 0)
	if _, err := f.keys.Rotate(ctx, tenant); err != nil {
		t.Fatal(err)
	}
	var once sync.Once
	f.hook = func(key string) {
		switch key {
		case "k003":
			if err := f.write(key, "written meanwhile"); err != nil { // between the job's read and its write
				t.Error(err)
			}
		case "k006":
			once.Do(func() {
				if _, err := f.keys.Rotate(ctx, tenant); err != nil {
					t.Error(err)
				}
			})
		}
	}
	s := f.service(t, "n1", reencrypt.Config{})
	if _, err := s.Start(ctx, tenant); err != nil {
		t.Fatal(err)
	}
	j := wait(t, s)
	if j.State != client.ReencryptDone || j.TargetVersion != 3 || j.Pass != 2 {
		t.Fatalf("job %+v, want done in pass 2 at version 3", j)
	}
	f.check(t, 3, map[string]string{"k003": "written meanwhile"})
}

// TestReencryptResumesFromItsPosition stops the job midway (its node
// stops) and starts a node again: the job goes on after its saved
// position, without going through the records done before it, and ends.
// A node with another id takes the job over once its lease expired.
func TestReencryptResumesFromItsPosition(t *testing.T) {
	tests := []struct {
		name  string
		again string // the id of the node started afterwards
	}{
		{name: "same node", again: "n1"},
		{name: "another node", again: "n2"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			ctx := context.Background()
			const n = 40
			f := newFixture(t, n, 0)
			if _, err := f.keys.Rotate(ctx, tenant); err != nil {
				t.Fatal(err)
			}
			cfg := reencrypt.Config{RecordRate: 40, SaveEvery: 1, LeaseTTL: time.Second}
			s1 := f.service(t, "n1", cfg)
			if _, err := s1.Start(ctx, tenant); err != nil {
				t.Fatal(err)
			}
			var mid *client.KMSReencryption
			tu.Eventually(t, 20*time.Second, 10*time.Millisecond, func() error {
				j, err := s1.Status(ctx, tenant)
				if err != nil {
					return err
				}
				if len(j.Records) == 0 || j.Records[0].Done < 8 {
					return errors.New("not far enough")
				}
				mid = j
				return nil
			})
			if mid.State != client.ReencryptRunning || mid.Records[0].Total != n || mid.Records[0].Done >= n {
				t.Fatalf("status midway %+v, want running, done < total = %d", mid.Records[0], n)
			}
			s1.Close()
			stopped, err := s1.Status(ctx, tenant)
			if err != nil {
				t.Fatal(err)
			}
			p := stopped.Records[0]
			if stopped.State != client.ReencryptRunning || p.Position == "" || p.Finished {
				t.Fatalf("job after its node stopped: %+v %+v, want running with a position", stopped, p)
			}
			before := f.callsOf()

			s2 := f.service(t, tc.again, cfg)
			go s2.Run(t.Context())
			j := wait(t, s2)
			if j.State != client.ReencryptDone || j.Node != tc.again {
				t.Fatalf("job %+v, want done by %s", j, tc.again)
			}
			f.check(t, 2, nil)
			after := f.callsOf()
			for key, c := range after {
				again := c - before[key]
				if key <= p.Position && again != 0 {
					t.Errorf("record %s, at or before the position %s, gone through again", key, p.Position)
				}
				if c > 2 || (c == 2 && key != nextKey(p.Position)) {
					t.Errorf("record %s gone through %d times", key, c)
				}
			}
			if got := records(t, j, "test"); got.Done != n || got.Resealed != n {
				t.Errorf("progress %+v, want %d done and re-sealed", got, n)
			}
		})
	}
}

// nextKey is the fixture's key after key: the one the job may have been
// working on when it stopped.
func nextKey(key string) string {
	var i int
	fmt.Sscanf(key, "k%03d", &i)
	return fmt.Sprintf("k%03d", i+1)
}

// TestReencryptStartWhileRunningReturnsTheJob: a second start does not
// start another job.
func TestReencryptStartWhileRunningReturnsTheJob(t *testing.T) {
	ctx := context.Background()
	f := newFixture(t, 20, 0)
	if _, err := f.keys.Rotate(ctx, tenant); err != nil {
		t.Fatal(err)
	}
	s := f.service(t, "n1", reencrypt.Config{RecordRate: 50})
	first, err := s.Start(ctx, tenant)
	if err != nil {
		t.Fatal(err)
	}
	second, err := s.Start(ctx, tenant)
	if err != nil {
		t.Fatal(err)
	}
	if !second.StartedAt.Equal(first.StartedAt) || second.State != client.ReencryptRunning {
		t.Errorf("second start %+v, want the running job of %v", second, first.StartedAt)
	}
	wait(t, s)
	for key, c := range f.callsOf() {
		if c != 1 {
			t.Errorf("record %s gone through %d times", key, c)
		}
	}
}

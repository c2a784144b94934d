// Package reencrypt moves a tenant's sealed data to the newest version of
// its data key after a rotation: a background job per tenant, run by one
// node at a time, that re-seals every stored record sealed under an older
// version (compare-and-set: a concurrent writer wins and the record is read
// again) and counts, per stream and key version, the stored messages that
// are still under an older version (a stream's messages are immutable:
// retention ages them out; docs/SECURITY.md).
//
// The job keeps its state, progress and position in a KV record
// (names.ReencryptBucket, key: the tenant), written compare-and-set: that
// record is also the job's lease. A node that stops (kill -9) leaves the job
// running with its position; the same node resumes it at its next start,
// another one once the lease's heartbeat is older than LeaseTTL. A rotation
// during the job starts another pass to the newer version.
package reencrypt

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/iotransit/iotransit/client"
	"github.com/iotransit/iotransit/internal/backbone/kverr"
	"github.com/iotransit/iotransit/internal/backbone/names"
	"github.com/iotransit/iotransit/internal/kms"
	"github.com/iotransit/iotransit/internal/retry"
)

// Keys re-seals values under a tenant's newest data key (kms.Keyring).
type Keys interface {
	CurrentVersion(ctx context.Context, tenant string) (uint32, error)
	Reseal(ctx context.Context, tenant string, sealed, aad []byte) ([]byte, bool, error)
	Status(ctx context.Context, tenant string) (kms.Status, error)
}

// KVProvider opens or creates the job bucket (backbone.Backbone).
type KVProvider interface {
	KV(ctx context.Context, bucket string, history uint8) (jetstream.KeyValue, error)
}

// Records is one kind of KV record in which a tenant keeps sealed values.
type Records struct {
	// Kind names the records in the job's progress (integrations, …).
	Kind string
	// Bucket is the KV bucket that holds them; a bucket that does not
	// exist holds none.
	Bucket string
	// Keys, when not nil, are the only keys of Bucket that are the
	// tenant's (a bucket shared by tenants); nil: every key.
	Keys []string
	// Reseal re-seals the sealed values of the record stored under key
	// with reseal; it returns the record to store and true when they
	// changed (false for a key that holds no sealed value).
	Reseal func(key string, stored []byte, reseal kms.ResealFunc) ([]byte, bool, error)
}

// Stream is a stream of the tenant's sealed messages.
type Stream struct {
	// Kind is messages, rejected or deadletters.
	Kind string
	Name string
}

// Sources lists what the tenant keeps sealed.
type Sources func(ctx context.Context, tenant string) ([]Records, []Stream, error)

// Config sets the node's name and the job's pace.
type Config struct {
	// NodeID names this node in the job's lease; a node restarted with
	// the same id resumes its jobs at once.
	NodeID string
	// RecordRate bounds the records gone through a second (default 100),
	// ScanRate the stored messages counted a second (default 5000), so
	// that live ingest is not starved.
	RecordRate float64
	ScanRate   float64
	// LeaseTTL is how long a job whose node stopped writing its heartbeat
	// waits before another node takes it (default 15 s).
	LeaseTTL time.Duration
	// SaveEvery is how many records the job goes through between saves
	// of its position (default 20; and at least every LeaseTTL/3).
	SaveEvery int
	// OnEnd, when set, hears of each job that ended (done or failed) on
	// this node, once its end is stored (the node audits it).
	OnEnd func(tenant string, job client.KMSReencryption)
	// Settle is how long after a version was made the job waits before it
	// goes through the records and counts stored messages, so that every
	// node seals under it (default 3 s: a keyring follows a rotation
	// within a second).
	Settle time.Duration
}

func (c *Config) defaults() {
	if c.RecordRate <= 0 {
		c.RecordRate = 100
	}
	if c.ScanRate <= 0 {
		c.ScanRate = 5000
	}
	if c.LeaseTTL <= 0 {
		c.LeaseTTL = 15 * time.Second
	}
	if c.SaveEvery <= 0 {
		c.SaveEvery = 20
	}
	if c.Settle <= 0 {
		c.Settle = 3 * time.Second
	}
}

// Service runs the re-encryption jobs of this node.
type Service struct {
	cfg     Config
	keys    Keys
	kvs     KVProvider
	js      jetstream.JetStream
	sources Sources
	log     *slog.Logger

	ctx    context.Context // ends at Close
	cancel context.CancelFunc
	wg     sync.WaitGroup

	mu      sync.Mutex
	running map[string]bool // tenants whose job runs here
}

// New returns a service; Run resumes the jobs left running.
func New(cfg Config, keys Keys, kvs KVProvider, js jetstream.JetStream, sources Sources, log *slog.Logger) *Service {
	cfg.defaults()
	ctx, cancel := context.WithCancel(context.Background())
	return &Service{cfg: cfg, keys: keys, kvs: kvs, js: js, sources: sources, log: log,
		ctx: ctx, cancel: cancel, running: map[string]bool{}}
}

// Close stops the jobs running here (their state stays running: they
// resume at the next start, or on another node) and waits for them.
func (s *Service) Close() {
	s.mu.Lock() // launch adds to wg under mu, before the end only
	s.cancel()
	s.mu.Unlock()
	s.wg.Wait()
}

// job is a job as stored.
type job struct {
	client.KMSReencryption
	Tenant string `json:"tenant"`
}

func (s *Service) bucket(ctx context.Context) (jetstream.KeyValue, error) {
	return s.kvs.KV(ctx, names.ReencryptBucket, 1)
}

// load reads the tenant's job and its revision (0: none).
func (s *Service) load(ctx context.Context, kv jetstream.KeyValue, tenant string) (*job, uint64, error) {
	e, err := kv.Get(ctx, tenant)
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		return nil, 0, nil
	}
	if err != nil {
		return nil, 0, fmt.Errorf("reencrypt: read the job of %s: %w", tenant, err)
	}
	var j job
	if err := json.Unmarshal(e.Value(), &j); err != nil {
		return nil, 0, fmt.Errorf("reencrypt: decode the job of %s: %w", tenant, err)
	}
	return &j, e.Revision(), nil
}

// write stores j if the record is still at rev (0: absent); it reports
// false when another writer came first.
func write(ctx context.Context, kv jetstream.KeyValue, j *job, rev uint64) (uint64, bool, error) {
	b, err := json.Marshal(j)
	if err != nil {
		return 0, false, err
	}
	if rev == 0 {
		rev, err = kv.Create(ctx, j.Tenant, b)
	} else {
		rev, err = kv.Update(ctx, j.Tenant, b, rev)
	}
	if kverr.Conflict(err) {
		return 0, false, nil
	}
	if err != nil {
		return 0, false, fmt.Errorf("reencrypt: store the job of %s: %w", j.Tenant, err)
	}
	return rev, true, nil
}

// clone returns a deep copy of a job's view.
func clone(v client.KMSReencryption) client.KMSReencryption {
	v.Records = slices.Clone(v.Records)
	v.Streams = slices.Clone(v.Streams)
	for i := range v.Streams {
		v.Streams[i].Versions = slices.Clone(v.Streams[i].Versions)
	}
	if v.FinishedAt != nil {
		t := *v.FinishedAt
		v.FinishedAt = &t
	}
	return v
}

// stale reports whether a running job's node stopped writing its heartbeat.
func (s *Service) stale(j *job) bool {
	return time.Since(j.UpdatedAt) > s.cfg.LeaseTTL
}

func (s *Service) isRunning(tenant string) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.running[tenant]
}

// Start starts the tenant's job and returns it: a running job (here or on
// another live node) is returned as it is; a failed one, or one whose node
// stopped, resumes from its position; otherwise a new job begins.
func (s *Service) Start(ctx context.Context, tenant string) (client.KMSReencryption, error) {
	if _, err := s.keys.CurrentVersion(ctx, tenant); err != nil {
		return client.KMSReencryption{}, err
	}
	kv, err := s.bucket(ctx)
	if err != nil {
		return client.KMSReencryption{}, err
	}
	for {
		j, rev, err := s.load(ctx, kv, tenant)
		if err != nil {
			return client.KMSReencryption{}, err
		}
		now := time.Now().UTC()
		switch {
		case j != nil && j.State == client.ReencryptRunning && j.Node == s.cfg.NodeID && s.isRunning(tenant):
			return j.KMSReencryption, nil
		case j != nil && j.State == client.ReencryptRunning && j.Node != s.cfg.NodeID && !s.stale(j):
			return j.KMSReencryption, nil
		case j != nil && j.State != client.ReencryptDone:
			// Failed, or its node stopped: resume from the position.
			j.State, j.LastError, j.FinishedAt = client.ReencryptRunning, "", nil
		default:
			j = &job{Tenant: tenant, KMSReencryption: client.KMSReencryption{
				State: client.ReencryptRunning, StartedAt: now,
				Records: []client.ReencryptRecords{}, Streams: []client.ReencryptStream{},
			}}
		}
		j.Node, j.UpdatedAt = s.cfg.NodeID, now
		nrev, ok, err := write(ctx, kv, j, rev)
		if err != nil {
			return client.KMSReencryption{}, err
		}
		if ok {
			view := clone(j.KMSReencryption) // the job goes on changing j
			s.launch(kv, j, nrev)
			return view, nil
		}
	}
}

// Status returns the tenant's job, nil when none was started. For each
// stream it marks the versions whose last counted message retention (or an
// erasure) has removed since.
func (s *Service) Status(ctx context.Context, tenant string) (*client.KMSReencryption, error) {
	kv, err := s.bucket(ctx)
	if err != nil {
		return nil, err
	}
	j, _, err := s.load(ctx, kv, tenant)
	if err != nil || j == nil {
		return nil, err
	}
	for i := range j.Streams {
		st := &j.Streams[i]
		first := uint64(0)
		if str, err := s.js.Stream(ctx, st.Stream); err == nil {
			info, err := str.Info(ctx)
			if err != nil {
				return nil, fmt.Errorf("reencrypt: stream %s: %w", st.Stream, err)
			}
			first = info.State.FirstSeq
			if info.State.Msgs == 0 {
				first = info.State.LastSeq + 1
			}
		} else if !errors.Is(err, jetstream.ErrStreamNotFound) {
			return nil, fmt.Errorf("reencrypt: stream %s: %w", st.Stream, err)
		}
		for k := range st.Versions {
			v := &st.Versions[k]
			v.AgedOut = first == 0 || first > v.LastSeq
		}
	}
	return &j.KMSReencryption, nil
}

// Run resumes, until ctx ends or Close, the jobs left running by this node
// (at once) or by a node that stopped (once their lease expired).
func (s *Service) Run(ctx context.Context) {
	t := time.NewTicker(s.cfg.LeaseTTL / 3)
	defer t.Stop()
	for {
		if err := s.resume(ctx); err != nil && ctx.Err() == nil && s.ctx.Err() == nil {
			s.log.Warn("re-encryption: resuming jobs failed", "error", err)
		}
		select {
		case <-ctx.Done():
			return
		case <-s.ctx.Done():
			return
		case <-t.C:
		}
	}
}

// resume claims and runs the running jobs that no live node runs.
func (s *Service) resume(ctx context.Context) error {
	kv, err := s.bucket(ctx)
	if err != nil {
		return err
	}
	lister, err := kv.ListKeys(ctx)
	if err != nil {
		return err
	}
	defer lister.Stop()
	var tenants []string
	for key := range lister.Keys() {
		tenants = append(tenants, key)
	}
	for _, tenant := range tenants {
		if s.isRunning(tenant) {
			continue
		}
		j, rev, err := s.load(ctx, kv, tenant)
		if err != nil {
			return err
		}
		if j == nil || j.State != client.ReencryptRunning || (j.Node != s.cfg.NodeID && !s.stale(j)) {
			continue
		}
		j.Node, j.UpdatedAt = s.cfg.NodeID, time.Now().UTC()
		nrev, ok, err := write(ctx, kv, j, rev)
		if err != nil {
			return err
		}
		if ok {
			s.log.Info("re-encryption: resuming", "tenant_id", tenant, "pass", j.Pass)
			s.launch(kv, j, nrev)
		}
	}
	return nil
}

// launch runs j in the background, unless it runs here already.
func (s *Service) launch(kv jetstream.KeyValue, j *job, rev uint64) {
	s.mu.Lock()
	if s.running[j.Tenant] || s.ctx.Err() != nil {
		s.mu.Unlock()
		return
	}
	s.running[j.Tenant] = true
	s.wg.Add(1)
	s.mu.Unlock()
	go func() {
		defer s.wg.Done()
		defer func() {
			s.mu.Lock()
			delete(s.running, j.Tenant)
			s.mu.Unlock()
		}()
		r := &run{s: s, kv: kv, j: j, rev: rev, saved: time.Now()}
		r.run(s.ctx)
	}()
}

// errLost is what a save finds when another writer changed the job (a
// node that took it over): the job stops here.
var errLost = errors.New("reencrypt: the job was taken over")

// run is one job running on this node.
type run struct {
	s       *Service
	kv      jetstream.KeyValue
	j       *job
	rev     uint64
	saved   time.Time
	unsaved int
}

// save writes the job's progress (and so its heartbeat).
func (r *run) save(ctx context.Context) error {
	r.j.UpdatedAt = time.Now().UTC()
	rev, ok, err := write(ctx, r.kv, r.j, r.rev)
	if err != nil {
		return err
	}
	if !ok {
		return errLost
	}
	r.rev, r.saved, r.unsaved = rev, time.Now(), 0
	return nil
}

// step counts one unit of work and saves when enough has been done since
// the last save, or the heartbeat is due.
func (r *run) step(ctx context.Context) error {
	r.unsaved++
	if r.unsaved >= r.s.cfg.SaveEvery || time.Since(r.saved) >= r.s.cfg.LeaseTTL/3 {
		return r.save(ctx)
	}
	return nil
}

// run works through the job's passes and stores how it ended. A job
// stopped by Close, or taken over, ends without a state change.
func (r *run) run(ctx context.Context) {
	err := r.passes(ctx)
	if ctx.Err() != nil || errors.Is(err, errLost) {
		return
	}
	now := time.Now().UTC()
	r.j.FinishedAt = &now
	r.j.State = client.ReencryptDone
	if err != nil {
		r.j.State, r.j.LastError = client.ReencryptFailed, err.Error()
		r.s.log.Warn("re-encryption failed", "tenant_id", r.j.Tenant, "error", err)
	}
	// The end is stored even while the node stops.
	sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
	defer cancel()
	if err := r.save(sctx); err != nil {
		r.s.log.Warn("re-encryption: storing the end failed", "tenant_id", r.j.Tenant, "error", err)
		return
	}
	if r.s.cfg.OnEnd != nil {
		r.s.cfg.OnEnd(r.j.Tenant, clone(r.j.KMSReencryption))
	}
}

// passes runs passes until one ends with no newer version made meanwhile.
func (r *run) passes(ctx context.Context) error {
	tenant := r.j.Tenant
	for {
		if r.j.TargetVersion == 0 { // a new pass
			v, err := r.s.keys.CurrentVersion(ctx, tenant)
			if err != nil {
				return err
			}
			r.j.TargetVersion, r.j.Pass = v, r.j.Pass+1
			r.j.Records, r.j.Streams = []client.ReencryptRecords{}, []client.ReencryptStream{}
			if err := r.save(ctx); err != nil {
				return err
			}
		}
		if r.j.TargetVersion > 1 { // version 1 alone: nothing is older
			if err := r.pass(ctx); err != nil {
				return err
			}
		}
		v, err := r.s.keys.CurrentVersion(ctx, tenant)
		if err != nil {
			return err
		}
		if v <= r.j.TargetVersion {
			return nil
		}
		r.j.TargetVersion = 0 // rotated meanwhile: again, to the newer one
	}
}

// pass re-seals every kind of record and counts every stream, going on
// from the saved position.
func (r *run) pass(ctx context.Context) error {
	recs, streams, err := r.s.sources(ctx, r.j.Tenant)
	if err != nil {
		return err
	}
	// A node that has not read the rotation yet still seals under the
	// older version: a record it writes behind the job's position would
	// stay there, so the records wait for the version to settle too.
	if err := r.settle(ctx); err != nil {
		return err
	}
	for _, rec := range recs {
		p := r.records(rec.Kind)
		if p.Finished {
			continue
		}
		if err := r.reseal(ctx, rec, p); err != nil {
			return fmt.Errorf("%s: %w", rec.Kind, err)
		}
	}
	for _, st := range streams {
		p := r.stream(st)
		if p.Finished {
			continue
		}
		if err := r.count(ctx, st, p); err != nil {
			return fmt.Errorf("stream %s: %w", st.Name, err)
		}
	}
	return r.save(ctx)
}

// records returns the progress of a kind of record, adding it when new.
func (r *run) records(kind string) *client.ReencryptRecords {
	for i := range r.j.Records {
		if r.j.Records[i].Kind == kind {
			return &r.j.Records[i]
		}
	}
	r.j.Records = append(r.j.Records, client.ReencryptRecords{Kind: kind})
	return &r.j.Records[len(r.j.Records)-1]
}

// stream returns the progress of a stream, adding it when new.
func (r *run) stream(st Stream) *client.ReencryptStream {
	for i := range r.j.Streams {
		if r.j.Streams[i].Stream == st.Name {
			return &r.j.Streams[i]
		}
	}
	r.j.Streams = append(r.j.Streams, client.ReencryptStream{Kind: st.Kind, Stream: st.Name, Versions: []client.ReencryptVersionCount{}})
	return &r.j.Streams[len(r.j.Streams)-1]
}

// pace waits as long as n units take at rate a second.
func pace(ctx context.Context, n int, rate float64) error {
	if !retry.Sleep(ctx, time.Duration(float64(n)/rate*float64(time.Second))) {
		return ctx.Err()
	}
	return nil
}

// reseal goes through the records of one kind in key order, after the
// position p keeps.
func (r *run) reseal(ctx context.Context, rec Records, p *client.ReencryptRecords) error {
	kv, err := r.s.js.KeyValue(ctx, rec.Bucket)
	if errors.Is(err, jetstream.ErrBucketNotFound) {
		p.Finished = true
		return r.save(ctx)
	}
	if err != nil {
		return err
	}
	keys := rec.Keys
	if keys == nil {
		if keys, err = listKeys(ctx, kv); err != nil {
			return err
		}
	}
	keys = slices.Clone(keys)
	slices.Sort(keys)
	p.Total = p.Done + len(keys) - len(keys[:countUpTo(keys, p.Position)])
	for _, key := range keys[countUpTo(keys, p.Position):] {
		if err := pace(ctx, 1, r.s.cfg.RecordRate); err != nil {
			return err
		}
		changed, err := r.resealOne(ctx, kv, rec, key)
		if err != nil {
			return fmt.Errorf("record %s: %w", key, err)
		}
		p.Done++
		if changed {
			p.Resealed++
		}
		p.Position = key
		if err := r.step(ctx); err != nil {
			return err
		}
	}
	p.Finished = true
	return r.save(ctx)
}

// countUpTo returns how many of the sorted keys are at or before pos
// (done in an earlier run); 0 when pos is empty.
func countUpTo(keys []string, pos string) int {
	if pos == "" {
		return 0
	}
	n, found := slices.BinarySearch(keys, pos)
	if found {
		n++
	}
	return n
}

// listKeys lists a bucket's keys (none when it is empty).
func listKeys(ctx context.Context, kv jetstream.KeyValue) ([]string, error) {
	lister, err := kv.ListKeys(ctx)
	if err != nil {
		return nil, err
	}
	defer lister.Stop()
	var keys []string
	for key := range lister.Keys() {
		keys = append(keys, key)
	}
	if err := ctx.Err(); err != nil { // the listing ends early when ctx ends
		return nil, err
	}
	return keys, nil
}

// resealAttempts bounds the re-reads of a record that concurrent writers
// keep changing.
const resealAttempts = 32

// resealOne re-seals one record compare-and-set: when another writer
// changed it meanwhile, its value stands and is read again (a value a
// writer sealed just now is under the newest version already).
func (r *run) resealOne(ctx context.Context, kv jetstream.KeyValue, rec Records, key string) (bool, error) {
	reseal := func(sealed, aad []byte) ([]byte, bool, error) {
		return r.s.keys.Reseal(ctx, r.j.Tenant, sealed, aad)
	}
	for range resealAttempts {
		e, err := kv.Get(ctx, key)
		if errors.Is(err, jetstream.ErrKeyNotFound) {
			return false, nil // deleted meanwhile
		}
		if err != nil {
			return false, err
		}
		out, changed, err := rec.Reseal(key, e.Value(), reseal)
		if err != nil || !changed {
			return false, err
		}
		_, err = kv.Update(ctx, key, out, e.Revision())
		if kverr.Conflict(err) {
			continue
		}
		return err == nil, err
	}
	return false, fmt.Errorf("changed by others %d times running", resealAttempts)
}

// settle waits until the target version is Settle old, so that every node
// seals under it before the records are gone through and the streams counted.
func (r *run) settle(ctx context.Context) error {
	st, err := r.s.keys.Status(ctx, r.j.Tenant)
	if err != nil {
		return err
	}
	for _, v := range st.Versions {
		if v.Version == r.j.TargetVersion && !v.Created.IsZero() {
			if wait := time.Until(v.Created.Add(r.s.cfg.Settle)); wait > 0 && !retry.Sleep(ctx, wait) {
				return ctx.Err()
			}
		}
	}
	return nil
}

// countBatch is how many messages a fetch of count asks for.
const countBatch = 256

// count counts a stream's messages per data key version, from the
// position p keeps up to the stream's last sequence when the count began.
func (r *run) count(ctx context.Context, st Stream, p *client.ReencryptStream) error {
	str, err := r.s.js.Stream(ctx, st.Name)
	if errors.Is(err, jetstream.ErrStreamNotFound) {
		p.Finished = true
		return r.save(ctx)
	}
	if err != nil {
		return err
	}
	info, err := str.Info(ctx)
	if err != nil {
		return err
	}
	if p.Total == 0 {
		p.Total = info.State.LastSeq
	}
	start := max(p.Position+1, info.State.FirstSeq)
	if info.State.Msgs == 0 || start > p.Total {
		p.Position, p.Finished = p.Total, true
		return r.save(ctx)
	}
	cons, err := str.OrderedConsumer(ctx, jetstream.OrderedConsumerConfig{
		DeliverPolicy: jetstream.DeliverByStartSequencePolicy, OptStartSeq: start,
	})
	if err != nil {
		return err
	}
	for idle := 0; p.Position < p.Total; {
		batch, err := cons.Fetch(countBatch, jetstream.FetchMaxWait(time.Second))
		if err != nil {
			return err
		}
		n := 0
		for m := range batch.Messages() {
			md, err := m.Metadata()
			if err != nil {
				return err
			}
			if md.Sequence.Stream > p.Total { // stored after the count began
				p.Position = p.Total
				continue
			}
			v, err := kms.SealedVersion(m.Data())
			if err != nil {
				v = 0 // not a sealed value: counted as version 0
			}
			tally(p, v, md.Sequence.Stream)
			p.Position = md.Sequence.Stream
			n++
		}
		if err := batch.Error(); err != nil && !errors.Is(err, nats.ErrTimeout) && !errors.Is(err, jetstream.ErrNoMessages) {
			return err
		}
		if n == 0 {
			// Nothing came: the rest was removed meanwhile (retention,
			// an erasure), or the server is slow to answer.
			if info, err = str.Info(ctx); err != nil {
				return err
			}
			if info.State.Msgs == 0 || info.State.LastSeq <= p.Position {
				break
			}
			if idle++; idle > 3 {
				return fmt.Errorf("no message came after sequence %d of %d", p.Position, p.Total)
			}
			continue
		}
		idle = 0
		if err := r.save(ctx); err != nil {
			return err
		}
		if err := pace(ctx, n, r.s.cfg.ScanRate); err != nil {
			return err
		}
	}
	p.Position, p.Finished = p.Total, true
	return r.save(ctx)
}

// tally counts one message of version v at seq.
func tally(p *client.ReencryptStream, v uint32, seq uint64) {
	i, found := slices.BinarySearchFunc(p.Versions, v, func(c client.ReencryptVersionCount, v uint32) int { return int(int64(c.Version) - int64(v)) })
	if !found {
		p.Versions = slices.Insert(p.Versions, i, client.ReencryptVersionCount{Version: v})
	}
	p.Versions[i].Messages++
	p.Versions[i].LastSeq = max(p.Versions[i].LastSeq, seq)
}

package main

import (
	"context"
	"crypto/rand"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"maps"
	"math"
	mrand "math/rand/v2"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/iotransit/iotransit/internal/mesh"
	"github.com/iotransit/iotransit/internal/securefile"
)

// "iotransit mesh-sim": simulated sensor nodes of the secured mesh
// (docs/mesh.md) that send sealed Thingsee messages as UDP frames to a
// gateway agent's mesh receiver, with attacks injected on demand.

const meshSimUsage = `Usage: iotransit mesh-sim --gateway HOST:PORT --network-key-file F [flags]
  Simulate the sensor nodes of a secured mesh: each node seals realistic
  Thingsee messages of several types with the network's current key
  (AES-128-GCM, docs/mesh.md) and sends them as UDP frames to the gateway
  agent's mesh receiver (its --mesh-addr). Node ids run from --first-node;
  node 1's TUID is TSEN01MSH00000001. Each node's boot counter is kept in
  --state-dir and raised, durably, before the first frame: a restart of
  mesh-sim is a new boot, so no (boot, counter) pair is ever sent twice.
  The attacks asked for are spread over the run:
    --replay N        resend frames already sent (dropped: replay)
    --forge N         frames altered after sealing, or sealed with a random
                      key (dropped: forged)
    --unknown-node N  frames of nodes not on the network's list, sealed with
                      the real key (dropped: unknown_node)
    --stale-epoch N   frames of an epoch older than the key file's current
                      one: an expired epoch's real key if the file holds one
                      (dropped: stale_epoch)
  Prints what it sent. The key file is the one "iotransit mesh key export"
  writes (JSON: networkId, version, keys by epoch); it must be 0600.

Flags:
`

// meshSimForeignBase is where the ids of --unknown-node's nodes start:
// nodes an attacker claims, which no network's list should hold.
const meshSimForeignBase = 0xF0000001

// meshSimConfig is what mesh-sim does.
type meshSimConfig struct {
	gateway   string
	keyFile   string
	stateDir  string
	nodes     int
	firstNode uint
	rate      float64
	duration  time.Duration
	// Attacks to inject, by kind.
	replay, forge, unknownNode, staleEpoch int
}

// meshSim is "iotransit mesh-sim".
func meshSim(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fset := newFlagSet("iotransit mesh-sim", meshSimUsage, stderr)
	var c meshSimConfig
	fset.StringVar(&c.gateway, "gateway", "", "the gateway agent's mesh receiver, HOST:PORT (UDP; required)")
	fset.StringVar(&c.keyFile, "network-key-file", "", "the network's key file, 0600 (required)")
	fset.StringVar(&c.stateDir, "state-dir", "", "directory of the nodes' boot counters (default: the key file's)")
	fset.IntVar(&c.nodes, "nodes", 5, "simulated nodes")
	fset.UintVar(&c.firstNode, "first-node", 1, "id of the first node; the others follow")
	fset.Float64Var(&c.rate, "rate", 10, "frames per second, all nodes together (attacks come on top)")
	fset.DurationVar(&c.duration, "duration", 10*time.Second, "how long to send")
	fset.IntVar(&c.replay, "replay", 0, "replayed frames to inject")
	fset.IntVar(&c.forge, "forge", 0, "forged frames to inject")
	fset.IntVar(&c.unknownNode, "unknown-node", 0, "frames of unknown nodes to inject")
	fset.IntVar(&c.staleEpoch, "stale-epoch", 0, "frames of a stale key epoch to inject")
	if helpAsked(fset, args, stdout) {
		return nil
	}
	if err := parseFlags(fset, args); err != nil {
		return err
	}
	if err := c.validate(); err != nil {
		return err
	}
	say := func(format string, a ...any) { fmt.Fprintf(stdout, format+"\n", a...) }
	rep, err := runMeshSim(ctx, c, say)
	if err != nil {
		return fmt.Errorf("mesh-sim: %w", err)
	}
	rep.print(say)
	if rep.SendErrors > 0 {
		return fmt.Errorf("mesh-sim: %d frame(s) could not be sent to %s (is the agent's mesh receiver there?)", rep.SendErrors, c.gateway)
	}
	return nil
}

// validate reports every problem of the command line at once.
func (c *meshSimConfig) validate() error {
	var errs []error
	if c.gateway == "" {
		errs = append(errs, usageError("mesh-sim needs --gateway HOST:PORT"))
	}
	if c.keyFile == "" {
		errs = append(errs, usageError("mesh-sim needs --network-key-file F"))
	}
	if c.nodes < 1 || c.nodes > 100_000 {
		errs = append(errs, usageError("--nodes %d: want 1 to 100000", c.nodes))
	}
	if c.firstNode < 1 || uint64(c.firstNode)+uint64(c.nodes) > meshSimForeignBase {
		errs = append(errs, usageError("--first-node %d: the nodes' ids must lie in 1..%d", c.firstNode, meshSimForeignBase-1))
	}
	if !(c.rate > 0 && c.rate <= 1e6) {
		errs = append(errs, usageError("--rate %g: want more than 0 and at most 1000000 frames per second", c.rate))
	}
	if c.duration <= 0 {
		errs = append(errs, usageError("--duration %s: must be positive", c.duration))
	}
	for _, a := range []struct {
		name string
		n    int
	}{{"replay", c.replay}, {"forge", c.forge}, {"unknown-node", c.unknownNode}, {"stale-epoch", c.staleEpoch}} {
		if a.n < 0 {
			errs = append(errs, usageError("--%s %d: must not be negative", a.name, a.n))
		}
	}
	if c.replay > 0 && c.goodFrames() == 0 {
		errs = append(errs, usageError("--replay needs frames to replay: raise --rate or --duration"))
	}
	return errors.Join(errs...)
}

// goodFrames is how many genuine frames the run sends.
func (c *meshSimConfig) goodFrames() int {
	return int(math.Round(c.rate * c.duration.Seconds()))
}

// meshSimReport is what a run sent.
type meshSimReport struct {
	NetworkID uint32
	Epoch     uint32
	FirstNode uint32
	Nodes     int
	Boot      uint32 // the boot of the first node (the others are alike)
	Good      int
	ByTsmID   map[int]int
	// Attacks sent, by kind.
	Replay, Forge, UnknownNode, StaleEpoch int
	// StaleFromFile says whether the stale frames used an expired epoch's
	// real key from the key file (else a random key of an earlier epoch).
	StaleFromFile bool
	SendErrors    int
	Elapsed       time.Duration
}

// print says what the run sent.
func (r *meshSimReport) print(say func(string, ...any)) {
	var types []string
	for _, id := range slices.Sorted(maps.Keys(r.ByTsmID)) {
		types = append(types, fmt.Sprintf("%d×%d", id, r.ByTsmID[id]))
	}
	say("sent %d genuine frame(s) in %s (by tsmId: %s)", r.Good, r.Elapsed.Round(time.Millisecond), strings.Join(types, ", "))
	say("injected %d replay, %d forge, %d unknown-node, %d stale-epoch", r.Replay, r.Forge, r.UnknownNode, r.StaleEpoch)
	if r.SendErrors > 0 {
		say("%d frame(s) could not be sent", r.SendErrors)
	}
}

// meshSimState is the nodes' boot counters, kept per network in
// --state-dir (mesh-sim-NETWORK.json): the last boot each node used.
type meshSimState struct {
	path  string
	Boots map[uint32]uint32 `json:"boots"`
}

// loadMeshSimState reads the boot counters of network in dir (none yet:
// an empty state).
func loadMeshSimState(dir string, network uint32) (*meshSimState, error) {
	st := &meshSimState{path: filepath.Join(dir, fmt.Sprintf("mesh-sim-%d.json", network)), Boots: map[uint32]uint32{}}
	b, err := os.ReadFile(st.path)
	if errors.Is(err, fs.ErrNotExist) {
		return st, nil
	}
	if err != nil {
		return nil, err
	}
	if err := json.Unmarshal(b, st); err != nil {
		return nil, fmt.Errorf("%s: %w", st.path, err)
	}
	return st, nil
}

// newBoots raises the boot counter of every node in ids and writes them
// durably (atomic replace, synced) before returning the new boots: a node
// seals nothing under a boot before it is on disk.
func (st *meshSimState) newBoots(ids []uint32) (map[uint32]uint32, error) {
	boots := make(map[uint32]uint32, len(ids))
	for _, id := range ids {
		b := st.Boots[id]
		if b == math.MaxUint32 {
			return nil, fmt.Errorf("node %d has spent its boot counters: rotate the network key", id)
		}
		st.Boots[id], boots[id] = b+1, b+1
	}
	data, err := json.Marshal(st)
	if err != nil {
		return nil, err
	}
	if err := os.MkdirAll(filepath.Dir(st.path), 0o700); err != nil {
		return nil, err
	}
	if err := securefile.WriteAtomic(st.path, append(data, '\n'), 0o600); err != nil {
		return nil, fmt.Errorf("persist boot counters: %w", err)
	}
	return boots, nil
}

// meshNode is one simulated node: a Thingsee sensor and its Sender.
type meshNode struct {
	*sensor
	id     uint32
	sender *mesh.Sender
	sent   int
	dist   float64
	angle  float64
}

// meshKinds are the nodes' sensors, in turn: the demo's (sim.go) and more.
var meshKinds = []struct {
	model string
	id    int
}{
	{"TSEN01", 12100}, {"TSPR04", 13100}, {"TSAR01", 24100}, {"TSPD04", 2100}, {"TSEN01", 13101},
	{"TSTF02", 17200}, {"TSAN01", 18100},
}

// meshSimRun is one run's state.
type meshSimRun struct {
	cfg     meshSimConfig
	sim     *simulation
	conn    net.Conn
	state   *meshSimState
	ks      mesh.KeySet
	epoch   uint32
	key     *mesh.Key
	nodes   []*meshNode
	foreign []*meshNode
	history [][]byte // the last genuine frames, for replays
	rep     meshSimReport
	say     func(string, ...any)
}

// runMeshSim sends what c asks for and reports it.
func runMeshSim(ctx context.Context, c meshSimConfig, say func(string, ...any)) (*meshSimReport, error) {
	ks, err := mesh.ReadKeyFile(c.keyFile)
	if err != nil {
		return nil, err
	}
	epoch, key, err := ks.Current()
	if err != nil {
		return nil, err
	}
	if c.stateDir == "" {
		c.stateDir = filepath.Dir(c.keyFile)
	}
	st, err := loadMeshSimState(c.stateDir, ks.NetworkID)
	if err != nil {
		return nil, err
	}
	conn, err := net.Dial("udp", c.gateway)
	if err != nil {
		return nil, err
	}
	defer conn.Close()
	seed := uint64(time.Now().UnixNano())
	r := &meshSimRun{
		cfg: c, sim: &simulation{rng: mrand.New(mrand.NewPCG(seed, seed^0x9e3779b97f4a7c15))},
		conn: conn, state: st, ks: ks, epoch: epoch, key: key, say: say,
		rep: meshSimReport{NetworkID: ks.NetworkID, Epoch: epoch, FirstNode: uint32(c.firstNode), Nodes: c.nodes, ByTsmID: map[int]int{}},
	}
	if err := r.makeNodes(); err != nil {
		return nil, err
	}
	say("mesh-sim: %d node(s), ids %d..%d (%s..), network %d, epoch %d, boot %d, %g frame(s)/s for %s to %s",
		c.nodes, c.firstNode, int(c.firstNode)+c.nodes-1, r.nodes[0].tuid, ks.NetworkID, epoch, r.rep.Boot, c.rate, c.duration, c.gateway)
	return &r.rep, r.send(ctx)
}

// makeNodes makes the nodes and the foreign nodes, raising their boots.
func (r *meshSimRun) makeNodes() error {
	var ids []uint32
	for i := range r.cfg.nodes {
		ids = append(ids, uint32(r.cfg.firstNode)+uint32(i))
	}
	foreign := min(r.cfg.unknownNode, 3)
	for i := range foreign {
		ids = append(ids, meshSimForeignBase+uint32(i))
	}
	boots, err := r.state.newBoots(ids)
	if err != nil {
		return err
	}
	for i, id := range ids {
		k := meshKinds[i%len(meshKinds)]
		tuid := fmt.Sprintf("%sMSH%08d", k.model, id)
		if i >= r.cfg.nodes {
			tuid = fmt.Sprintf("%sMSH%08X", k.model, id)
		}
		n := &meshNode{
			sensor: &sensor{tuid: tuid, kind: k.id, temp: 20 + r.sim.rng.Float64()*3, co2: 450 + r.sim.rng.Float64()*100, batl: 100 - float64(i%50)},
			id:     id,
			sender: mesh.NewSender(mesh.Header{NetworkID: r.ks.NetworkID, Epoch: r.epoch, Node: id, Boot: boots[id]}, r.key),
			dist:   500 + r.sim.rng.Float64()*1000, angle: r.sim.rng.Float64() * 90,
		}
		if i < r.cfg.nodes {
			r.nodes = append(r.nodes, n)
		} else {
			r.foreign = append(r.foreign, n)
		}
	}
	r.rep.Boot = boots[ids[0]]
	return nil
}

// message returns the next message of n: its sensor's measurement, and now
// and then its battery level or (angle sensors) its orientation.
func (r *meshSimRun) message(n *meshNode, now time.Time) ([]byte, int) {
	n.sent++
	head := func(id int) map[string]any {
		return map[string]any{"tsmId": id, "tsmEv": 10, "tsmTs": now.Unix(), "tsmTuid": n.tuid}
	}
	rng := r.sim.rng
	var m map[string]any
	switch {
	case n.sent%10 == 0:
		n.batl = math.Max(0, n.batl-0.1)
		m = head(1110)
		m["batl"] = round(n.batl, 1)
	case n.kind == 17200:
		n.dist = math.Min(4000, math.Max(30, n.dist+rng.NormFloat64()*20))
		m = head(17200)
		m["dist"], m["status"], m["ambientRate"], m["numberOfSPADs"], m["signalPerSPAD"] = int(n.dist), 0, rng.IntN(20), 5+rng.IntN(20), 10000+rng.IntN(20000)
	case n.kind == 18100 && n.sent%2 == 0:
		m = head(1111)
		m["accx"], m["accy"], m["accz"] = rng.IntN(129)-64, rng.IntN(129)-64, -1024+rng.IntN(65)-32
	case n.kind == 18100:
		n.angle = math.Mod(n.angle+rng.NormFloat64()*2+360, 360)
		m = head(18100)
		m["angle"] = round(n.angle, 1)
	default:
		m = r.sim.message(n.sensor, now)
	}
	b, _ := json.Marshal(m)
	return b, m["tsmId"].(int)
}

// seal seals msg as n's next frame, starting a new boot (persisted first)
// when n's counter is spent.
func (r *meshSimRun) seal(n *meshNode, msg []byte) ([]byte, error) {
	f, err := n.sender.Seal(msg)
	if !errors.Is(err, mesh.ErrNewBootNeeded) {
		return f, err
	}
	boots, err := r.state.newBoots([]uint32{n.id})
	if err != nil {
		return nil, err
	}
	h := n.sender.Next()
	h.Boot, h.Counter = boots[n.id], 0
	n.sender = mesh.NewSender(h, r.key)
	return n.sender.Seal(msg)
}

// write sends one frame.
func (r *meshSimRun) write(f []byte) {
	if _, err := r.conn.Write(f); err != nil {
		r.rep.SendErrors++
	}
}

// attack kinds, in the order they take turns.
const (
	attackReplay = iota
	attackForge
	attackUnknownNode
	attackStaleEpoch
)

// schedule spreads the attacks over the genuine frames: it returns, for
// each genuine frame's index, the attacks to send after it. The kinds take
// turns, so each is spread over the run.
func (r *meshSimRun) schedule(good int) map[int][]int {
	left := []int{r.cfg.replay, r.cfg.forge, r.cfg.unknownNode, r.cfg.staleEpoch}
	var order []int
	for more := true; more; {
		more = false
		for kind := range left {
			if left[kind] > 0 {
				order, left[kind], more = append(order, kind), left[kind]-1, true
			}
		}
	}
	at := map[int][]int{}
	for k, kind := range order {
		i := 0
		if good > 0 {
			i = min(good-1, (k+1)*good/(len(order)+1))
		}
		at[i] = append(at[i], kind)
	}
	return at
}

// send sends the genuine frames at the rate, and the attacks among them.
func (r *meshSimRun) send(ctx context.Context) error {
	good := r.cfg.goodFrames()
	attacks := r.schedule(good)
	start := time.Now()
	defer func() { r.rep.Elapsed = time.Since(start) }()
	var interval time.Duration
	if good > 0 {
		interval = r.cfg.duration / time.Duration(good)
	}
	timer := time.NewTimer(0)
	defer timer.Stop()
	<-timer.C
	for i := 0; i < max(good, 1); i++ {
		if i < good {
			if d := time.Until(start.Add(time.Duration(i) * interval)); d > 0 {
				timer.Reset(d)
				select {
				case <-ctx.Done():
					return nil
				case <-timer.C:
				}
			} else if ctx.Err() != nil {
				return nil
			}
			n := r.nodes[i%len(r.nodes)]
			msg, id := r.message(n, time.Now())
			f, err := r.seal(n, msg)
			if err != nil {
				return err
			}
			r.write(f)
			r.rep.Good++
			r.rep.ByTsmID[id]++
			r.history = append(r.history, f)
			if len(r.history) > 16 {
				r.history = r.history[1:]
			}
		}
		for _, kind := range attacks[i] {
			if err := r.attack(kind); err != nil {
				return err
			}
		}
	}
	return nil
}

// attack sends one injected frame of kind and counts it.
func (r *meshSimRun) attack(kind int) error {
	f, err := r.attackFrame(kind)
	if err != nil {
		return err
	}
	r.write(f)
	*[]*int{&r.rep.Replay, &r.rep.Forge, &r.rep.UnknownNode, &r.rep.StaleEpoch}[kind]++
	return nil
}

// attackFrame makes the frame of an attack of kind.
func (r *meshSimRun) attackFrame(kind int) ([]byte, error) {
	n := r.nodes[r.sim.rng.IntN(len(r.nodes))]
	switch kind {
	case attackReplay:
		// The latest frame, or the oldest kept (perhaps below the window).
		if r.rep.Replay%2 == 1 {
			return r.history[0], nil
		}
		return r.history[len(r.history)-1], nil
	case attackForge:
		msg, _ := r.message(n, time.Now())
		return r.forged(n, msg)
	case attackUnknownNode:
		n = r.foreign[r.rep.UnknownNode%len(r.foreign)]
		msg, _ := r.message(n, time.Now())
		return r.seal(n, msg)
	default: // attackStaleEpoch
		epoch, key, fromFile, err := r.staleKey()
		if err != nil {
			return nil, err
		}
		r.rep.StaleFromFile = fromFile
		// Under the node's own counters (spent, as for any sealing).
		msg, _ := r.message(n, time.Now())
		n.sender.Rekey(epoch, key)
		f, err := r.seal(n, msg)
		n.sender.Rekey(r.epoch, r.key) // on the sender seal may have replaced
		return f, err
	}
}

// forged returns a forged frame of n: in turns, a genuine frame altered in
// flight (its tag no longer verifies; its counter is spent, as for any
// sealing), and a frame sealed by someone without the key under n's next
// header (the counter is not spent: no real key was used).
func (r *meshSimRun) forged(n *meshNode, msg []byte) ([]byte, error) {
	if r.rep.Forge%2 == 0 {
		f, err := r.seal(n, msg)
		if err != nil {
			return nil, err
		}
		f[len(f)-1] ^= 0x01
		return f, nil
	}
	k, err := randomMeshKey()
	if err != nil {
		return nil, err
	}
	return mesh.Seal(k, n.sender.Next(), msg)
}

// randomMeshKey is a key nobody holds.
func randomMeshKey() (*mesh.Key, error) {
	raw := make([]byte, mesh.KeySize)
	if _, err := rand.Read(raw); err != nil {
		return nil, err
	}
	return mesh.NewKey(raw)
}

// staleKey returns an epoch the receiver must refuse and a key for it: an
// epoch of the key file whose grace period has ended, else the epoch
// before the file's oldest with a random key.
func (r *meshSimRun) staleKey() (uint32, *mesh.Key, bool, error) {
	oldest := r.epoch
	for _, k := range r.ks.Keys {
		if k.NotAfter != nil && time.Now().After(*k.NotAfter) {
			key, err := mesh.NewKey(k.Key)
			return k.Epoch, key, true, err
		}
		oldest = min(oldest, k.Epoch)
	}
	key, err := randomMeshKey()
	return oldest - 1, key, false, err
}

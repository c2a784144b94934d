package agent_test

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/iotransit/iotransit/internal/gateway/agent"
	"github.com/iotransit/iotransit/internal/mesh"
	"github.com/iotransit/iotransit/internal/node"
	"github.com/iotransit/iotransit/internal/testutil"
	"github.com/iotransit/iotransit/receiver"
)

// waitStored waits until gateway has want messages stored.
func waitStored(t *testing.T, c *cloud, serial string, want int) {
	t.Helper()
	testutil.Eventually(t, 30*time.Second*testutil.Slowdown(), 50*time.Millisecond, func() error {
		if n := len(c.messages(t, serial)); n != want {
			return fmt.Errorf("%d messages stored, want %d", n, want)
		}
		return nil
	})
}

// waitDropped waits until the agent's receiver counted want drops by
// reason (and checks that no other reason counted any).
func waitDropped(t *testing.T, a *running, want map[string]uint64) {
	t.Helper()
	testutil.Eventually(t, 10*time.Second, 20*time.Millisecond, func() error {
		got := a.Status().Mesh.Dropped
		for _, r := range mesh.DropReasons() {
			if got[r.String()] != want[r.String()] {
				return fmt.Errorf("dropped %v, want %v", got, want)
			}
		}
		return nil
	})
}

// TestEndToEnd: frames sealed as a node seals them reach the cloud through
// an agent enrolled with a real token, in order per node; every kind of
// bad frame is dropped, counted by its reason, and none is stored.
func TestEndToEnd(t *testing.T) {
	c := newCloud(t, nil)
	const serial = "TSGW06AGT00000001"
	a := start(t, c.config(t, t.TempDir(), serial, c.token(t, serial)))
	nw := newNetwork(t, 3)
	nw.deliver(t, a.Agent)
	if got := a.Certificate().Subject.CommonName; got != serial {
		t.Fatalf("certificate for %q", got)
	}
	addr := a.MeshAddr().String()

	var frames [][]byte
	for counter := uint32(0); counter < 40; counter++ {
		for _, n := range nw.nodes {
			frames = append(frames, nw.frame(t, 2, n, 1, counter))
		}
	}
	send(t, addr, frames...)
	waitStored(t, c, serial, 120)

	forged := nw.frame(t, 2, 1, 1, 40)
	forged[len(forged)-1] ^= 1
	foreign := mesh.KeySet{NetworkID: testNetwork, Version: 1, Keys: []mesh.EpochKey{{Epoch: 2, Key: randomKey(t)}}}
	otherKey, _ := mesh.NewKey(foreign.Keys[0].Key)
	sealedElsewhere, err := mesh.Seal(otherKey, mesh.Header{NetworkID: testNetwork, Epoch: 2, Node: 2, Boot: 1, Counter: 41}, []byte(testutil.Thingsee(tuid(2), baseTs, 1)))
	if err != nil {
		t.Fatal(err)
	}
	unknown, err := mesh.Seal(nw.key(t, 2), mesh.Header{NetworkID: testNetwork, Epoch: 2, Node: 99, Boot: 1, Counter: 0}, []byte(testutil.Thingsee(tuid(99), baseTs, 1)))
	if err != nil {
		t.Fatal(err)
	}
	attacks := []struct {
		name   string
		frame  []byte
		reason string
	}{
		{name: "replayed frame", frame: frames[7], reason: "replay"},
		{name: "forged tag", frame: forged, reason: "forged"},
		{name: "sealed with another key", frame: sealedElsewhere, reason: "forged"},
		{name: "truncated frame", frame: nw.frame(t, 2, 3, 1, 40)[:mesh.HeaderSize+5], reason: "truncated"},
		{name: "unknown node", frame: unknown, reason: "unknown_node"},
		{name: "stale epoch after its grace period", frame: nw.frame(t, 1, 1, 1, 41), reason: "stale_epoch"},
		{name: "older boot of a node", frame: nw.frame(t, 2, 3, 0, 500), reason: "replay"},
		{name: "not a frame", frame: []byte("hello"), reason: "malformed"},
	}
	want := map[string]uint64{}
	for _, at := range attacks {
		t.Run(at.name, func(t *testing.T) {
			send(t, addr, at.frame)
			want[at.reason]++
			waitDropped(t, a, want)
		})
	}
	// A genuine frame after the attacks is still taken, and nothing of
	// the attacks was stored.
	send(t, addr, nw.frame(t, 2, 1, 1, 40))
	waitStored(t, c, serial, 121)
	msgs := c.messages(t, serial)
	checkOrdered(t, msgs[:120], nw.nodes, 0, 39)
	if st := a.Status(); st.Mesh.Accepted != 121 {
		t.Errorf("accepted %d, want 121", st.Mesh.Accepted)
	}
	testutil.Eventually(t, 10*time.Second, 20*time.Millisecond, func() error {
		if d := a.Status().QueueDepth; d != 0 {
			return fmt.Errorf("queue depth %d after the upload", d)
		}
		return nil
	})
}

// TestRestartKeepsReplayWindows: after a restart (offline: no keys or
// nodes delivered again) the replay windows are where they were, so a
// frame accepted before the restart is a replay after it, and the node's
// next frames are taken.
func TestRestartKeepsReplayWindows(t *testing.T) {
	c := newCloud(t, nil)
	const serial = "TSGW06AGT00000002"
	dir := t.TempDir()
	a := start(t, c.config(t, dir, serial, c.token(t, serial)))
	nw := newNetwork(t, 2)
	nw.deliver(t, a.Agent)
	var frames [][]byte
	for counter := uint32(0); counter < 10; counter++ {
		frames = append(frames, nw.frame(t, 2, 1, 7, counter), nw.frame(t, 2, 2, 7, counter))
	}
	send(t, a.MeshAddr().String(), frames...)
	waitStored(t, c, serial, 20)
	a.stop()

	// No token: the identity, keys and nodes are on disk.
	b := start(t, c.config(t, dir, serial, ""))
	cases := []struct {
		name   string
		frame  []byte
		reason string
	}{
		{name: "the last frame again", frame: frames[19], reason: "replay"},
		{name: "a frame inside the old window", frame: frames[6], reason: "replay"},
		{name: "the first frame of the boot", frame: frames[0], reason: "replay"},
		{name: "an earlier boot", frame: nw.frame(t, 2, 1, 6, 100), reason: "replay"},
	}
	want := map[string]uint64{}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			send(t, b.MeshAddr().String(), tc.frame)
			want[tc.reason]++
			waitDropped(t, b, want)
		})
	}
	send(t, b.MeshAddr().String(), nw.frame(t, 2, 1, 7, 10), nw.frame(t, 2, 2, 8, 0))
	waitStored(t, c, serial, 22)
	if st := b.Status(); st.Mesh.Accepted != 2 {
		t.Errorf("accepted %d after the restart, want 2", st.Mesh.Accepted)
	}
}

// TestKeysForAnotherGateway: a key set sealed to another gateway's
// key-delivery key does not open, and the receiver keeps what it had.
func TestKeysForAnotherGateway(t *testing.T) {
	c := newCloud(t, nil)
	a := start(t, c.config(t, t.TempDir(), "TSGW06AGT00000003", c.token(t, "TSGW06AGT00000003")))
	b := start(t, c.config(t, t.TempDir(), "TSGW06AGT00000004", c.token(t, "TSGW06AGT00000004")))
	nw := newNetwork(t, 1)
	err := a.HandleKeys(nw.sealTo(t, b.DeliveryKey()))
	if !errors.Is(err, receiver.ErrNotForThisKey) {
		t.Fatalf("keys sealed to another gateway: %v, want ErrNotForThisKey", err)
	}
	if k, _ := a.Receiver().Versions(); k != 0 {
		t.Errorf("the receiver took keys version %d", k)
	}
	sealed := nw.sealTo(t, a.DeliveryKey())
	sealed[len(sealed)-1] ^= 1
	if err := a.HandleKeys(sealed); !errors.Is(err, receiver.ErrNotForThisKey) {
		t.Fatalf("altered delivery: %v, want ErrNotForThisKey", err)
	}
	if len(a.DeliveryKey()) != 32 {
		t.Errorf("key-delivery key of %d bytes", len(a.DeliveryKey()))
	}
}

// TestStatus: the status carries the agent's version, the key-delivery
// key and the mesh counters of every reason.
func TestStatus(t *testing.T) {
	c := newCloud(t, nil)
	a := start(t, c.config(t, t.TempDir(), "TSGW06AGT00000005", c.token(t, "TSGW06AGT00000005")))
	st := a.Status()
	if st.AgentVersion == "" || len(st.KeyDeliveryKey) != 32 || st.Time.IsZero() {
		t.Fatalf("status %+v", st)
	}
	var reasons []string
	for _, r := range mesh.DropReasons() {
		reasons = append(reasons, r.String())
	}
	for _, r := range reasons {
		if _, ok := st.Mesh.Dropped[r]; !ok {
			t.Errorf("status lacks reason %s: %v", r, maps.Collect(maps.All(st.Mesh.Dropped)))
		}
	}
}

// copyFile copies src to dst.
func copyFile(t *testing.T, src, dst string) {
	t.Helper()
	b, err := os.ReadFile(src)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(dst, b, 0o600); err != nil {
		t.Fatal(err)
	}
}

// TestResendStoredOnce: the worst a kill can do to the acknowledgements —
// every PUBACK received and none saved — makes the agent send the whole
// backlog again after a restart, and the cloud stores each message once
// (its id is derived from the content: JetStream's duplicate window).
func TestResendStoredOnce(t *testing.T) {
	c := newCloud(t, nil)
	const serial = "TSGW06AGT00000006"
	dir := t.TempDir()
	cfg := c.config(t, dir, serial, c.token(t, serial))
	up := cfg.MQTTAddr
	cfg.MQTTAddr = fmt.Sprintf("127.0.0.1:%d", testutil.FreePort(t)) // the cloud's MQTT is away
	a := start(t, cfg)
	nw := newNetwork(t, 4)
	nw.deliver(t, a.Agent)
	var frames [][]byte
	for counter := uint32(0); counter < 250; counter++ {
		for _, n := range nw.nodes {
			frames = append(frames, nw.frame(t, 2, n, 1, counter))
		}
	}
	send(t, a.MeshAddr().String(), frames...)
	testutil.Eventually(t, 10*time.Second, 20*time.Millisecond, func() error {
		if d := a.Status().QueueDepth; d != len(frames) {
			return fmt.Errorf("queue depth %d, want %d", d, len(frames))
		}
		return nil
	})
	a.stop()
	snapshot := filepath.Join(t.TempDir(), "queue.db")
	copyFile(t, filepath.Join(dir, "queue.db"), snapshot)

	cfg.MQTTAddr, cfg.EnrollToken = up, ""
	b := start(t, cfg)
	waitStored(t, c, serial, len(frames))
	testutil.Eventually(t, 10*time.Second, 20*time.Millisecond, func() error {
		if d := b.Status().QueueDepth; d != 0 {
			return fmt.Errorf("queue depth %d", d)
		}
		return nil
	})
	b.stop()

	// The acknowledgements are lost: the queue is back as before the upload.
	copyFile(t, snapshot, filepath.Join(dir, "queue.db"))
	r := start(t, cfg)
	testutil.Eventually(t, 30*time.Second, 20*time.Millisecond, func() error {
		if d := r.Status().QueueDepth; d != 0 {
			return fmt.Errorf("queue depth %d: the resend is not through", d)
		}
		return nil
	})
	msgs := c.messages(t, serial)
	checkOrdered(t, msgs, nw.nodes, 0, 249)
}

// TestRefusals: a refusal for now (the gateway's message rate) is sent
// again until taken, and every message is stored once; a refusal for good
// (a message that is not a Thingsee message) is counted and skipped,
// costing no other message.
func TestRefusals(t *testing.T) {
	c := newCloud(t, func(cfg *node.Config) {
		cfg.Ingest.MsgRate, cfg.Ingest.MsgBurst = 200, 50
	})
	const serial = "TSGW06AGT00000007"
	cfg := c.config(t, t.TempDir(), serial, c.token(t, serial))
	cfg.BatchMessages = 20
	a := start(t, cfg)
	nw := newNetwork(t, 3)
	nw.deliver(t, a.Agent)
	good := nw.nodes[:2]
	// One message the cloud rejects within a batch (on down/errors), one
	// it refuses as a whole publish (not JSON: sent alone, PUBACK 0x99),
	// both from node 3.
	rejected, err := mesh.Seal(nw.key(t, 2), mesh.Header{NetworkID: testNetwork, Epoch: 2, Node: 3, Boot: 1, Counter: 0}, []byte(`{"not":"thingsee"}`))
	if err != nil {
		t.Fatal(err)
	}
	refused, err := mesh.Seal(nw.key(t, 2), mesh.Header{NetworkID: testNetwork, Epoch: 2, Node: 3, Boot: 1, Counter: 1}, []byte(`not json`))
	if err != nil {
		t.Fatal(err)
	}
	var frames [][]byte
	for counter := uint32(0); counter < 150; counter++ {
		for _, n := range good {
			frames = append(frames, nw.frame(t, 2, n, 1, counter))
		}
	}
	frames = slices.Insert(frames, 100, refused)
	frames = slices.Insert(frames, 10, rejected)
	send(t, a.MeshAddr().String(), frames...)
	waitStored(t, c, serial, 300)
	testutil.Eventually(t, 10*time.Second, 20*time.Millisecond, func() error {
		if d := a.Status().QueueDepth; d != 0 {
			return fmt.Errorf("queue depth %d", d)
		}
		return nil
	})
	// Once each; the order may differ where a publish in flight was taken
	// while the one before it was refused for the rate.
	checkOnce(t, c.messages(t, serial), good, 0, 149)
	if got := a.Refused(); got != 1 {
		t.Errorf("refused for good: %d messages, want 1", got)
	}
	testutil.Eventually(t, 10*time.Second, 20*time.Millisecond, func() error {
		// The batch's one rejection, and the refused publish's report (a
		// batch sent again reports its rejection again).
		if got := a.Rejected(); got < 2 {
			return fmt.Errorf("rejected in reports: %d messages, want 2 or more", got)
		}
		return nil
	})
}

// TestNewRefuses: what New refuses, and that a refusal leaves nothing
// open (the next New on the same directory works).
func TestNewRefuses(t *testing.T) {
	c := newCloud(t, nil)
	const serial = "TSGW06AGT00000011"
	dir := t.TempDir()
	cases := []struct {
		name string
		mod  func(*agent.Config)
		want string
	}{
		{name: "first start without a token", mod: func(cfg *agent.Config) { cfg.EnrollToken = "" }, want: "needs an enrollment token"},
		{name: "a token that is not one", mod: func(cfg *agent.Config) { cfg.EnrollToken = "iet_nope" }, want: "enroll"},
		{name: "no serial", mod: func(cfg *agent.Config) { cfg.Serial = "" }, want: "serial is required"},
		{name: "no CA", mod: func(cfg *agent.Config) { cfg.CAPEM = nil }, want: "CA"},
		{name: "mesh address invalid", mod: func(cfg *agent.Config) { cfg.MeshAddr = "256.0.0.1:1" }, want: "mesh"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			cfg := c.config(t, dir, serial, "")
			tc.mod(&cfg)
			a, err := agent.New(context.Background(), cfg)
			if err == nil {
				a.Close()
				t.Fatal("New succeeded")
			}
			if !strings.Contains(err.Error(), tc.want) {
				t.Errorf("error %q, want it to say %q", err, tc.want)
			}
		})
	}
	a := start(t, c.config(t, dir, serial, c.token(t, serial)))
	if a.Certificate() == nil {
		t.Fatal("no certificate")
	}
}

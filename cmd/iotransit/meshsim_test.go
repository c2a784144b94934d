package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"maps"
	"net"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/iotransit/iotransit/internal/mesh"
	"github.com/iotransit/iotransit/internal/securefile"
	"github.com/iotransit/iotransit/internal/testutil"
	"github.com/iotransit/iotransit/internal/thingsee"
)

const meshSimNetwork = 0x00ABC123

// meshSimKeySet is a network whose current epoch is 3 and whose epoch 2
// ended its grace period an hour ago.
func meshSimKeySet() mesh.KeySet {
	ended := time.Now().Add(-time.Hour).UTC().Truncate(time.Second)
	return mesh.KeySet{NetworkID: meshSimNetwork, Version: 3, Keys: []mesh.EpochKey{
		{Epoch: 3, Key: bytes.Repeat([]byte{0x33}, 16)},
		{Epoch: 2, Key: bytes.Repeat([]byte{0x22}, 16), NotAfter: &ended},
	}}
}

// writeMeshKeyFile writes ks as a key file (0600) in a new directory.
func writeMeshKeyFile(t *testing.T, ks mesh.KeySet) string {
	t.Helper()
	b, err := ks.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), "mesh-keys.json")
	if err := securefile.WriteExcl(path, b, 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

// meshGateway is the gateway side of the test: a mesh.Receiver reading a
// UDP socket, keeping the messages it accepts.
type meshGateway struct {
	r    *mesh.Receiver
	conn net.PacketConn
	mu   sync.Mutex
	msgs [][]byte
	done chan struct{}
}

func startMeshGateway(t *testing.T, ks mesh.KeySet, nodes []uint32) *meshGateway {
	t.Helper()
	g := &meshGateway{r: mesh.NewReceiver(nil), done: make(chan struct{})}
	if err := g.r.SetKeys(ks); err != nil {
		t.Fatal(err)
	}
	if err := g.r.SetNodes(ks.NetworkID, 1, nodes); err != nil {
		t.Fatal(err)
	}
	conn, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	_ = conn.(*net.UDPConn).SetReadBuffer(1 << 20)
	g.conn = conn
	go func() {
		defer close(g.done)
		buf := make([]byte, 2048)
		for {
			n, _, err := conn.ReadFrom(buf)
			if err != nil {
				return
			}
			if msg, _, reason := g.r.Receive(buf[:n]); reason == mesh.Accepted {
				g.mu.Lock()
				g.msgs = append(g.msgs, bytes.Clone(msg))
				g.mu.Unlock()
			}
		}
	}()
	t.Cleanup(func() { conn.Close(); <-g.done })
	return g
}

// waitFor polls until the receiver's counters are want.
func (g *meshGateway) waitFor(t *testing.T, want mesh.Stats) {
	t.Helper()
	testutil.Eventually(t, 10*time.Second, 20*time.Millisecond, func() error {
		if got := g.r.Stats(); got.Accepted != want.Accepted || !maps.Equal(got.Dropped, want.Dropped) {
			return fmt.Errorf("receiver counted %+v, want %+v", got, want)
		}
		return nil
	})
}

// dropped returns a Dropped map with every reason, n of each given one.
func dropped(n map[mesh.Reason]uint64) map[string]uint64 {
	m := map[string]uint64{}
	for _, r := range mesh.DropReasons() {
		m[r.String()] = n[r]
	}
	return m
}

func runMeshSimCmd(t *testing.T, args ...string) string {
	t.Helper()
	var out, errOut bytes.Buffer
	if err := run(context.Background(), append([]string{"mesh-sim"}, args...), &out, &errOut); err != nil {
		t.Fatalf("mesh-sim %s: %v\n%s%s", strings.Join(args, " "), err, out.String(), errOut.String())
	}
	return out.String()
}

// TestMeshSimAttacksAreDroppedWithTheirReasons runs mesh-sim against a
// mesh.Receiver on a UDP socket: every genuine frame is accepted and is a
// valid Thingsee message of a realistic TUID, every injected attack is
// dropped with its reason; a second run (a restart of the nodes) starts a
// new boot, so its frames are accepted too and none is a replay.
func TestMeshSimAttacksAreDroppedWithTheirReasons(t *testing.T) {
	ks := meshSimKeySet()
	keyFile := writeMeshKeyFile(t, ks)
	g := startMeshGateway(t, ks, []uint32{1, 2, 3, 4, 5, 6, 7})
	args := []string{
		"--gateway", g.conn.LocalAddr().String(), "--network-key-file", keyFile,
		"--nodes", "7", "--rate", "400", "--duration", "500ms",
		"--replay", "3", "--forge", "4", "--unknown-node", "2", "--stale-epoch", "2",
	}
	out := runMeshSimCmd(t, args...)
	for _, want := range []string{"sent 200 genuine frame(s)", "injected 3 replay, 4 forge, 2 unknown-node, 2 stale-epoch", "network 11256099, epoch 3, boot 1"} {
		if !strings.Contains(out, want) {
			t.Errorf("output lacks %q:\n%s", want, out)
		}
	}
	g.waitFor(t, mesh.Stats{Accepted: 200, Dropped: dropped(map[mesh.Reason]uint64{
		mesh.Replay: 3, mesh.Forged: 4, mesh.UnknownNode: 2, mesh.StaleEpoch: 2,
	})})

	v := thingsee.NewValidator(thingsee.Options{RejectUnknownIDs: true})
	tuid := regexp.MustCompile(`^[A-Z]{4}[0-9]{2}MSH000000(0[1-7])$`)
	ids := map[int]int{}
	g.mu.Lock()
	msgs := g.msgs
	g.mu.Unlock()
	for _, msg := range msgs {
		res := v.Validate(msg, "TSGW06ABC12345678")
		if len(res.Accepted) != 1 || len(res.Rejected) != 0 {
			t.Fatalf("mesh-sim sent an invalid Thingsee message %s: %+v", msg, res.Rejected)
		}
		var m struct {
			ID   int    `json:"tsmId"`
			Tuid string `json:"tsmTuid"`
		}
		if err := json.Unmarshal(msg, &m); err != nil || !tuid.MatchString(m.Tuid) {
			t.Fatalf("message %s: TUID %q (%v)", msg, m.Tuid, err)
		}
		ids[m.ID]++
	}
	if len(ids) < 7 {
		t.Errorf("messages of %d types (%v), want the demo's and more", len(ids), ids)
	}

	// Restart: a new boot for every node, so the counters start again at 0
	// without a single replay.
	out = runMeshSimCmd(t, append(args[:8:8], "--rate", "200", "--duration", "250ms")...)
	if !strings.Contains(out, "boot 2") {
		t.Errorf("the second run is not boot 2:\n%s", out)
	}
	g.waitFor(t, mesh.Stats{Accepted: 250, Dropped: dropped(map[mesh.Reason]uint64{
		mesh.Replay: 3, mesh.Forged: 4, mesh.UnknownNode: 2, mesh.StaleEpoch: 2,
	})})
	state := filepath.Join(filepath.Dir(keyFile), fmt.Sprintf("mesh-sim-%d.json", meshSimNetwork))
	st, err := os.Stat(state)
	if err != nil || st.Mode().Perm() != 0o600 {
		t.Fatalf("boot state %s: %v %v", state, st, err)
	}
	if b, _ := os.ReadFile(state); !strings.Contains(string(b), `"1":2`) || !strings.Contains(string(b), fmt.Sprintf(`"%d":1`, uint32(meshSimForeignBase))) {
		t.Fatalf("boot state %s", b)
	}
}

// TestMeshSimStaleEpochWithoutAnExpiredKey: with only a current key in the
// file, the stale frames claim the epoch before it, under a random key.
func TestMeshSimStaleEpochWithoutAnExpiredKey(t *testing.T) {
	ks := mesh.KeySet{NetworkID: 7, Version: 1, Keys: []mesh.EpochKey{{Epoch: 1, Key: bytes.Repeat([]byte{0x11}, 16)}}}
	keyFile := writeMeshKeyFile(t, ks)
	g := startMeshGateway(t, ks, []uint32{10, 11})
	runMeshSimCmd(t, "--gateway", g.conn.LocalAddr().String(), "--network-key-file", keyFile,
		"--state-dir", t.TempDir(), "--nodes", "2", "--first-node", "10", "--rate", "100", "--duration", "100ms", "--stale-epoch", "3")
	g.waitFor(t, mesh.Stats{Accepted: 10, Dropped: dropped(map[mesh.Reason]uint64{mesh.StaleEpoch: 3})})
}

func TestMeshSimRefusesBadCommandLines(t *testing.T) {
	ks := meshSimKeySet()
	keyFile := writeMeshKeyFile(t, ks)
	open := filepath.Join(t.TempDir(), "open.json")
	b, _ := ks.Marshal()
	if err := os.WriteFile(open, b, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(open, 0o644); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name string
		args []string
		want string
	}{
		{"no gateway", []string{"--network-key-file", keyFile}, "needs --gateway"},
		{"no key file", []string{"--gateway", "127.0.0.1:9"}, "needs --network-key-file"},
		{"no nodes", []string{"--gateway", "127.0.0.1:9", "--network-key-file", keyFile, "--nodes", "0"}, "--nodes 0"},
		{"no rate", []string{"--gateway", "127.0.0.1:9", "--network-key-file", keyFile, "--rate", "0"}, "--rate 0"},
		{"negative attack", []string{"--gateway", "127.0.0.1:9", "--network-key-file", keyFile, "--forge", "-1"}, "--forge -1"},
		{"replay without frames", []string{"--gateway", "127.0.0.1:9", "--network-key-file", keyFile, "--rate", "1", "--duration", "100ms", "--replay", "1"}, "--replay needs"},
		{"key file readable by others", []string{"--gateway", "127.0.0.1:9", "--network-key-file", open}, "must be 0600"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var out, errOut bytes.Buffer
			err := run(context.Background(), append([]string{"mesh-sim"}, tc.args...), &out, &errOut)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("mesh-sim %v: %v, want an error with %q", tc.args, err, tc.want)
			}
		})
	}
}

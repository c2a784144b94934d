package agent

import (
	"context"
	"fmt"
	"net"
	"path/filepath"
	"testing"
	"time"

	"github.com/iotransit/iotransit/internal/gateway/queue"
	"github.com/iotransit/iotransit/internal/mesh"
	"github.com/iotransit/iotransit/internal/testutil"
)

// bareAgent is an Agent with only its receiver, queue and mesh socket:
// enough for the path from the socket to the queue.
func bareAgent(t *testing.T, qpath string, ks mesh.KeySet) *Agent {
	t.Helper()
	q, err := queue.Open(qpath, queue.KeyFunc(func() ([]byte, error) { return make([]byte, 32), nil }), queue.DefaultOptions())
	if err != nil {
		t.Fatal(err)
	}
	conn, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	a := &Agent{cfg: Config{DataDir: t.TempDir(), Queue: queue.DefaultOptions()}, log: testutil.Logger(t), q: q, conn: conn,
		rcv: mesh.NewReceiver(nil), inbox: make(chan []byte, 64), changed: make(chan struct{}, 1)}
	if err := a.rcv.SetKeys(ks); err != nil {
		t.Fatal(err)
	}
	if err := a.rcv.SetNodes(ks.NetworkID, 1, []uint32{1}); err != nil {
		t.Fatal(err)
	}
	if err := a.restoreMesh(); err != nil {
		t.Fatal(err)
	}
	return a
}

// TestReplayStateOfFramesBeforeTheAppender: frames the receiver accepted
// before the appender started (a slow start, one core) have their replay
// windows written with them, so a restart refuses them. The appender used
// to take its first mark after them, and never wrote their windows.
func TestReplayStateOfFramesBeforeTheAppender(t *testing.T) {
	key := make([]byte, mesh.KeySize)
	key[0] = 1
	ks := mesh.KeySet{NetworkID: 7, Version: 1, Keys: []mesh.EpochKey{{Epoch: 1, Key: key}}}
	k, _ := mesh.NewKey(key)
	qpath := filepath.Join(t.TempDir(), "queue.db")
	a := bareAgent(t, qpath, ks)
	ctx, cancel := context.WithCancel(context.Background())
	received := make(chan struct{})
	go func() { defer close(received); a.receive(ctx) }()
	var frames [][]byte
	c, err := net.Dial("udp", a.conn.LocalAddr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	for i := range uint32(5) {
		f, err := mesh.Seal(k, mesh.Header{NetworkID: 7, Epoch: 1, Node: 1, Boot: 1, Counter: i}, []byte(`{"n":1}`))
		if err != nil {
			t.Fatal(err)
		}
		frames = append(frames, f)
		if _, err := c.Write(f); err != nil {
			t.Fatal(err)
		}
	}
	testutil.Eventually(t, 5*time.Second, 5*time.Millisecond, func() error {
		if n := a.rcv.Stats().Accepted; n != 5 {
			return fmt.Errorf("accepted %d", n)
		}
		return nil
	})
	appended := make(chan struct{})
	go func() { defer close(appended); a.appendLoop(ctx) }()
	testutil.Eventually(t, 5*time.Second, 5*time.Millisecond, func() error {
		if d := a.q.Stats().Depth; d != 5 {
			return fmt.Errorf("queued %d", d)
		}
		return nil
	})
	cancel()
	a.conn.Close()
	<-received
	<-appended
	if err := a.q.Close(); err != nil {
		t.Fatal(err)
	}

	b := bareAgent(t, qpath, ks)
	defer b.q.Close()
	defer b.conn.Close()
	for i, f := range frames {
		if _, _, r := b.rcv.Receive(f); r != mesh.Replay {
			t.Errorf("frame %d after the restart: %v, want replay", i, r)
		}
	}
}

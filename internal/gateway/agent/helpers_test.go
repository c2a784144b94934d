package agent_test

import (
	"context"
	"crypto/ecdh"
	"crypto/rand"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"net"
	"slices"
	"testing"
	"time"

	"github.com/iotransit/iotransit/client"
	"github.com/iotransit/iotransit/internal/gateway/agent"
	"github.com/iotransit/iotransit/internal/gwproto"
	"github.com/iotransit/iotransit/internal/mesh"
	"github.com/iotransit/iotransit/internal/node"
	"github.com/iotransit/iotransit/internal/retry"
	"github.com/iotransit/iotransit/internal/testutil"
	"github.com/iotransit/iotransit/internal/testutil/nodetest"
	"github.com/iotransit/iotransit/receiver"
)

// testNetwork is the mesh network of the tests.
const testNetwork = 0xABCD01

// cloud is a running node with a tenant.
type cloud struct {
	n      *node.Node
	api    *nodetest.API
	tenant string
}

func newCloud(t *testing.T, mod func(*node.Config)) *cloud {
	t.Helper()
	n := nodetest.Start(t, func(c *node.Config) {
		nodetest.NoLimits(c)
		if mod != nil {
			mod(c)
		}
	})
	c := &cloud{n: n, api: nodetest.NewAPI(t, n), tenant: "acme"}
	if _, err := n.CreateTenant(context.Background(), c.tenant); err != nil {
		t.Fatal(err)
	}
	return c
}

// token registers serial and returns a one-time enrollment token for it.
func (c *cloud) token(t *testing.T, serial string) string {
	t.Helper()
	ctx := context.Background()
	if _, ok := c.n.Registry().Gateway(c.tenant, serial); !ok {
		if _, err := c.n.Registry().RegisterGateway(ctx, c.tenant, serial); err != nil {
			t.Fatal(err)
		}
	}
	_, tok, err := c.n.Registry().CreateEnrollmentToken(ctx, c.tenant, serial, 0, "test")
	if err != nil {
		t.Fatal(err)
	}
	return tok
}

// config is an agent configuration for this cloud.
func (c *cloud) config(t *testing.T, dir, serial, token string) agent.Config {
	return agent.Config{
		DataDir: dir, Server: "https://" + c.n.APIAddr(), MQTTAddr: c.n.MQTTAddr(), CAPEM: c.n.ServerCAPEM(),
		ServerName: "127.0.0.1", Serial: serial, EnrollToken: token, MeshAddr: "127.0.0.1:0",
		Logger: testutil.Logger(t), StatusInterval: 100 * time.Millisecond,
		Reconnect: retry.Backoff{Base: 50 * time.Millisecond, Max: 500 * time.Millisecond},
	}
}

// messages returns the tenant's stored messages of gateway, oldest first.
func (c *cloud) messages(t *testing.T, gateway string) []client.Message {
	t.Helper()
	var out []client.Message
	for m, err := range c.api.Client.AllMessages(context.Background(), c.tenant, client.MessageQuery{Gateway: gateway, Oldest: true, Limit: 1000}) {
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, m)
	}
	return out
}

// running is an agent running in the test.
type running struct {
	*agent.Agent
	stop func()
}

// start makes and runs an agent; it stops at cleanup.
func start(t *testing.T, cfg agent.Config) *running {
	t.Helper()
	a, err := agent.New(context.Background(), cfg)
	if err != nil {
		t.Fatalf("agent: %v", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); _ = a.Run(ctx) }()
	r := &running{Agent: a}
	stopped := false
	r.stop = func() {
		if !stopped {
			stopped = true
			cancel()
			<-done
			a.Close()
		}
	}
	t.Cleanup(r.stop)
	return r
}

// network is the tests' mesh network: its key set and node list.
type network struct {
	ks    mesh.KeySet
	nodes []uint32
}

// newNetwork makes a network of one current key (epoch 2) and an
// expired one (epoch 1), with nodes 1..n authorized.
func newNetwork(t *testing.T, n int) *network {
	t.Helper()
	past := time.Now().Add(-time.Hour)
	nw := &network{ks: mesh.KeySet{NetworkID: testNetwork, Version: 1, Keys: []mesh.EpochKey{
		{Epoch: 2, Key: randomKey(t)},
		{Epoch: 1, Key: randomKey(t), NotAfter: &past},
	}}}
	for i := 1; i <= n; i++ {
		nw.nodes = append(nw.nodes, uint32(i))
	}
	return nw
}

func randomKey(t *testing.T) []byte {
	k := make([]byte, mesh.KeySize)
	if _, err := rand.Read(k); err != nil {
		t.Fatal(err)
	}
	return k
}

// sealTo seals the key set to a gateway's raw key-delivery key, as the
// cloud does on the keys topic.
func (nw *network) sealTo(t *testing.T, deliveryKey []byte) []byte {
	t.Helper()
	pub, err := ecdh.X25519().NewPublicKey(deliveryKey)
	if err != nil {
		t.Fatal(err)
	}
	der, err := x509.MarshalPKIXPublicKey(pub)
	if err != nil {
		t.Fatal(err)
	}
	s, err := receiver.ParsePublicKey(pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der}))
	if err != nil {
		t.Fatal(err)
	}
	pt, err := nw.ks.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	sealed, err := s.Seal(pt)
	if err != nil {
		t.Fatal(err)
	}
	return sealed
}

// deliver gives the agent the network's keys and nodes, as the cloud's
// down topics would.
func (nw *network) deliver(t *testing.T, a *agent.Agent) {
	t.Helper()
	if err := a.HandleKeys(nw.sealTo(t, a.DeliveryKey())); err != nil {
		t.Fatal(err)
	}
	b, _ := json.Marshal(gwproto.NodeList{NetworkID: testNetwork, Version: 1, Nodes: nw.nodes})
	if err := a.HandleNodes(b); err != nil {
		t.Fatal(err)
	}
}

// key returns the key of epoch.
func (nw *network) key(t *testing.T, epoch uint32) *mesh.Key {
	t.Helper()
	i := slices.IndexFunc(nw.ks.Keys, func(k mesh.EpochKey) bool { return k.Epoch == epoch })
	k, err := mesh.NewKey(nw.ks.Keys[i].Key)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

// tuid is node's sensor id.
func tuid(node uint32) string { return fmt.Sprintf("TSEN01AGT%08d", node) }

// baseTs is the first tsmTs of the tests' messages.
var baseTs = time.Now().Unix() - 100000

// frame seals the message of node's frame counter (tsmTs baseTs+counter,
// temp the boot, so that every frame's message is unique).
func (nw *network) frame(t *testing.T, epoch, node, boot, counter uint32) []byte {
	t.Helper()
	msg := testutil.Thingsee(tuid(node), baseTs+int64(counter), float64(boot))
	f, err := mesh.Seal(nw.key(t, epoch), mesh.Header{NetworkID: testNetwork, Epoch: epoch, Node: node, Boot: boot, Counter: counter}, []byte(msg))
	if err != nil {
		t.Fatal(err)
	}
	return f
}

// send sends frames to the mesh address as UDP datagrams, pacing a
// little so that the socket buffer never overflows.
func send(t *testing.T, addr string, frames ...[]byte) {
	t.Helper()
	c, err := net.Dial("udp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	for i, f := range frames {
		if _, err := c.Write(f); err != nil {
			t.Fatal(err)
		}
		if i%100 == 99 {
			time.Sleep(2 * time.Millisecond)
		}
	}
}

// checkOrdered fails unless msgs hold each node's counters in from..to
// exactly once and in order.
func checkOrdered(t *testing.T, msgs []client.Message, nodes []uint32, from, to uint32) {
	t.Helper()
	checkCounters(t, msgs, nodes, from, to, false)
}

// checkOnce fails unless msgs hold each node's counters in from..to
// exactly once, in any order.
func checkOnce(t *testing.T, msgs []client.Message, nodes []uint32, from, to uint32) {
	t.Helper()
	checkCounters(t, msgs, nodes, from, to, true)
}

func checkCounters(t *testing.T, msgs []client.Message, nodes []uint32, from, to uint32, anyOrder bool) {
	t.Helper()
	byTuid := map[string][]int64{}
	for _, m := range msgs {
		var v struct {
			Tuid string `json:"tsmTuid"`
			Ts   int64  `json:"tsmTs"`
		}
		if err := json.Unmarshal(m.Message, &v); err != nil {
			t.Fatal(err)
		}
		byTuid[v.Tuid] = append(byTuid[v.Tuid], v.Ts-baseTs)
	}
	for _, n := range nodes {
		got := byTuid[tuid(n)]
		if anyOrder {
			slices.Sort(got)
		}
		var want []int64
		for c := from; c <= to; c++ {
			want = append(want, int64(c))
		}
		if !slices.Equal(got, want) {
			t.Errorf("node %d: stored counters %v, want %d..%d once each, in order", n, got, from, to)
		}
	}
}

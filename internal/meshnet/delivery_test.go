package meshnet_test

import (
	"bytes"
	"context"
	"crypto/ecdh"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/paho"

	"github.com/iotransit/iotransit/client"
	"github.com/iotransit/iotransit/internal/gateway"
	"github.com/iotransit/iotransit/internal/gwproto"
	"github.com/iotransit/iotransit/internal/mesh"
	"github.com/iotransit/iotransit/internal/node"
	tu "github.com/iotransit/iotransit/internal/testutil"
	"github.com/iotransit/iotransit/internal/testutil/nodetest"
	"github.com/iotransit/iotransit/receiver"
)

const (
	tenant = "acme"
	other  = "globex"
	gwA    = "TSGW06ACM00000001"
	gwB    = "TSGW06ACM00000002"
	gwO    = "TSGW06GLX00000001"
)

func ctx(t *testing.T) context.Context {
	c, cancel := context.WithTimeout(context.Background(), 20*time.Second*tu.Slowdown())
	t.Cleanup(cancel)
	return c
}

// gw is a connected test gateway that records what the cloud sends it.
type gw struct {
	t      *testing.T
	serial string
	up     *gateway.Uplink
	key    *ecdh.PrivateKey
	mu     sync.Mutex
	got    map[string][][]byte // topic → payloads
}

// connect enrolls (once) and connects serial over MQTT 5 and subscribes to
// its down/ topics.
func connect(t *testing.T, n *node.Node, tenant, serial string, cert *tls.Certificate) *gw {
	t.Helper()
	if cert == nil {
		cert = nodetest.Gateway(t, n, tenant, serial)
	}
	up, err := nodetest.Dial(t, n, cert, serial, nil)
	if err != nil {
		t.Fatal(err)
	}
	k, err := ecdh.X25519().GenerateKey(nil)
	if err != nil {
		t.Fatal(err)
	}
	g := &gw{t: t, serial: serial, up: up, key: k, got: map[string][][]byte{}}
	up.Client().AddOnPublishReceived(func(pr paho.PublishReceived) (bool, error) {
		g.mu.Lock()
		g.got[pr.Packet.Topic] = append(g.got[pr.Packet.Topic], slices.Clone(pr.Packet.Payload))
		g.mu.Unlock()
		return true, nil
	})
	sa, err := up.Client().Subscribe(ctx(t), &paho.Subscribe{Subscriptions: []paho.SubscribeOptions{{Topic: gwproto.DownTopic(serial) + "/#", QoS: 1}}})
	if err != nil || sa.Reasons[0] >= 0x80 {
		t.Fatalf("subscribe: %v %v", err, sa)
	}
	return g
}

// status publishes a status naming the gateway's key-delivery key.
func (g *gw) status(st gwproto.Status) *paho.PublishResponse {
	g.t.Helper()
	st.KeyDeliveryKey = g.key.PublicKey().Bytes()
	b, err := json.Marshal(st)
	if err != nil {
		g.t.Fatal(err)
	}
	return g.publish(g.t, gwproto.StatusTopic(g.serial), b)
}

// publish publishes at QoS 1 and returns the PUBACK, a refusing one too.
func (g *gw) publish(t *testing.T, topic string, b []byte) *paho.PublishResponse {
	t.Helper()
	res, err := g.up.Client().Publish(ctx(t), &paho.Publish{Topic: topic, QoS: 1, Payload: b})
	if res == nil {
		t.Fatalf("publish to %s: %v", topic, err)
	}
	return res
}

// last returns the last payload on topic.
func (g *gw) last(topic string) ([]byte, int) {
	g.mu.Lock()
	defer g.mu.Unlock()
	ps := g.got[topic]
	if len(ps) == 0 {
		return nil, 0
	}
	return ps[len(ps)-1], len(ps)
}

// keys waits for a key set on the keys topic satisfying ok and returns it,
// opened with the gateway's key.
func (g *gw) keys(ok func(mesh.KeySet) bool) mesh.KeySet {
	g.t.Helper()
	var ks mesh.KeySet
	tu.Eventually(g.t, 10*time.Second, 20*time.Millisecond, func() error {
		b, _ := g.last(gwproto.KeysTopic(g.serial))
		if b == nil {
			return errors.New("no key set delivered")
		}
		plain, err := gwproto.OpenKeys(g.key, b)
		if err != nil {
			return err
		}
		if ks, err = mesh.ParseKeySet(plain); err != nil {
			return err
		}
		if !ok(ks) {
			return fmt.Errorf("key set version %d not the one awaited", ks.Version)
		}
		return nil
	})
	return ks
}

// nodes waits for a node list satisfying ok.
func (g *gw) nodes(ok func(gwproto.NodeList) bool) gwproto.NodeList {
	g.t.Helper()
	var nl gwproto.NodeList
	tu.Eventually(g.t, 10*time.Second, 20*time.Millisecond, func() error {
		b, _ := g.last(gwproto.NodesTopic(g.serial))
		if b == nil {
			return errors.New("no node list delivered")
		}
		nl = gwproto.NodeList{}
		if err := json.Unmarshal(b, &nl); err != nil {
			return err
		}
		if !ok(nl) {
			return fmt.Errorf("node list %+v not the one awaited", nl)
		}
		return nil
	})
	return nl
}

func exported(t *testing.T, c *client.Client, tenant string) mesh.KeySet {
	t.Helper()
	b, err := c.ExportMeshKeys(ctx(t), tenant)
	if err != nil {
		t.Fatal(err)
	}
	ks, err := mesh.ParseKeySet(b)
	if err != nil {
		t.Fatal(err)
	}
	return ks
}

func sameKeys(a, b mesh.KeySet) bool {
	if a.NetworkID != b.NetworkID || a.Version != b.Version || len(a.Keys) != len(b.Keys) {
		return false
	}
	for i := range a.Keys {
		x, y := a.Keys[i], b.Keys[i]
		if x.Epoch != y.Epoch || !bytes.Equal(x.Key, y.Key) || (x.NotAfter == nil) != (y.NotAfter == nil) || x.NotAfter != nil && !x.NotAfter.Equal(*y.NotAfter) {
			return false
		}
	}
	return true
}

func TestStatusShownOnGateway(t *testing.T) {
	n := nodetest.Start(t, nil)
	api := nodetest.NewAPI(t, n)
	g := connect(t, n, tenant, gwA, nil)
	before := time.Now().Add(-time.Second)
	res := g.status(gwproto.Status{AgentVersion: "agent-1.2.3", FirmwareVersion: "4.5.6", Slot: "b", QueueDepth: 17, QueueDropped: 3,
		Mesh: gwproto.MeshCounters{Accepted: 1000, Dropped: map[string]uint64{"replay": 2, "forged": 1}}, Time: time.Now()})
	if res.ReasonCode != 0 {
		t.Fatalf("status PUBACK 0x%02x %q", res.ReasonCode, res.Properties.ReasonString)
	}
	var v *client.Gateway
	tu.Eventually(t, 5*time.Second, 20*time.Millisecond, func() error {
		var err error
		if v, err = api.Client.GetGateway(ctx(t), tenant, gwA); err != nil {
			return err
		}
		if v.AgentVersion == "" {
			return errors.New("no status shown yet")
		}
		return nil
	})
	switch {
	case v.LastSeen == nil || v.LastSeen.Before(before):
		t.Errorf("lastSeen = %v", v.LastSeen)
	case v.AgentVersion != "agent-1.2.3" || v.Firmware == nil || v.Firmware.Version != "4.5.6" || v.Firmware.Slot != "b":
		t.Errorf("agent %q firmware %+v", v.AgentVersion, v.Firmware)
	case v.QueueDepth == nil || *v.QueueDepth != 17 || v.QueueDropped == nil || *v.QueueDropped != 3:
		t.Errorf("queue %v dropped %v", v.QueueDepth, v.QueueDropped)
	case v.Mesh == nil || v.Mesh.Accepted != 1000 || v.Mesh.Dropped["replay"] != 2 || v.Mesh.Dropped["forged"] != 1:
		t.Errorf("mesh %+v", v.Mesh)
	}
	page, err := api.Client.ListGateways(ctx(t), tenant, client.GatewayQuery{})
	if err != nil || len(page.Items) != 1 || page.Items[0].AgentVersion != "agent-1.2.3" || page.Items[0].LastSeen == nil {
		t.Errorf("list: %v %+v", err, page)
	}
	// The state is in the bucket, not in the registry record: after the
	// gateway left, a node that does not follow it reads it from there.
	_ = g.up.Close()
	tu.Eventually(t, 10*time.Second, 50*time.Millisecond, func() error {
		if n.Registry() == nil {
			return nil
		}
		v, err := api.Client.GetGateway(ctx(t), tenant, gwA)
		if err != nil {
			return err
		}
		if v.Connected || v.AgentVersion != "agent-1.2.3" {
			return fmt.Errorf("connected %v agent %q", v.Connected, v.AgentVersion)
		}
		return nil
	})
	// A status is never a message.
	if msgs := api.Messages(tenant, 10); len(msgs) != 0 {
		t.Errorf("a status was stored as a message: %d", len(msgs))
	}
	// A gateway deleted and registered again starts without the state of
	// the earlier one.
	if err := api.Client.DeleteGateway(ctx(t), tenant, gwA); err != nil {
		t.Fatal(err)
	}
	again, err := api.Client.RegisterGateway(ctx(t), tenant, client.RegisterGatewayRequest{Serial: gwA})
	if err != nil || again.LastSeen != nil || again.AgentVersion != "" {
		t.Fatalf("re-registered: %v %+v", err, again)
	}
	if v, err := api.Client.GetGateway(ctx(t), tenant, gwA); err != nil || v.LastSeen != nil || v.AgentVersion != "" || v.Mesh != nil {
		t.Errorf("a re-registered gateway shows the deleted one's state: %v %+v", err, v)
	}
}

func TestStatusRefused(t *testing.T) {
	n := nodetest.Start(t, nil)
	api := nodetest.NewAPI(t, n)
	g := connect(t, n, tenant, gwA, nil)
	nodetest.Gateway(t, n, tenant, gwB)
	tests := []struct {
		name    string
		topic   string
		payload string
		code    byte
		reason  string
	}{
		{name: "malformed", topic: gwproto.StatusTopic(gwA), payload: `{"agentVersion":`, code: 0x99, reason: "status"},
		{name: "unknown field", topic: gwproto.StatusTopic(gwA), payload: `{"agentVersion":"1","root":true}`, code: 0x99, reason: "unknown field"},
		{name: "oversized", topic: gwproto.StatusTopic(gwA), payload: `{"agentVersion":"` + strings.Repeat("x", 5000) + `"}`, code: 0x99, reason: "at most"},
		{name: "bad key", topic: gwproto.StatusTopic(gwA), payload: `{"keyDeliveryKey":"AAAA"}`, code: 0x99, reason: "keyDeliveryKey"},
		{name: "another gateway's status topic", topic: gwproto.StatusTopic(gwB), payload: `{"agentVersion":"1"}`, code: 0x87},
		{name: "a down topic", topic: gwproto.KeysTopic(gwA), payload: `{}`, code: 0x87},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			res := g.publish(t, tc.topic, []byte(tc.payload))
			if res.ReasonCode != tc.code {
				t.Fatalf("PUBACK 0x%02x, want 0x%02x", res.ReasonCode, tc.code)
			}
			if tc.reason != "" && (res.Properties == nil || !strings.Contains(res.Properties.ReasonString, tc.reason)) {
				t.Errorf("reason %+v, want one containing %q", res.Properties, tc.reason)
			}
		})
	}
	if c := tu.Counter(t, n.Metrics(), "iotransit_ingest_publishes_refused_total", map[string]string{"reason": "status_invalid"}); c != 4 {
		t.Errorf("status_invalid counter = %v, want 4", c)
	}
	// The four took the session's burst of statuses: a fifth, valid one
	// within seconds is refused for its rate.
	if res := g.status(gwproto.Status{AgentVersion: "1"}); res.ReasonCode != 0x96 || !strings.Contains(res.Properties.ReasonString, "status rate") {
		t.Errorf("a status over the rate: 0x%02x %+v", res.ReasonCode, res.Properties)
	}
	if c := tu.Counter(t, n.Metrics(), "iotransit_ingest_publishes_refused_total", map[string]string{"reason": "status_rate"}); c != 1 {
		t.Errorf("status_rate counter = %v, want 1", c)
	}
	if msgs, rej := api.Messages(tenant, 10), api.Rejected(tenant, 10); len(msgs)+len(rej) != 0 {
		t.Errorf("refused statuses stored: %d messages, %d rejected", len(msgs), len(rej))
	}
	if v, err := api.Client.GetGateway(ctx(t), tenant, gwA); err != nil || v.AgentVersion != "" {
		t.Errorf("a refused status is shown: %v %q", err, v.AgentVersion)
	}
	if v, err := api.Client.GetGateway(ctx(t), tenant, gwB); err != nil || v.AgentVersion != "" || v.LastSeen != nil {
		t.Errorf("gateway B shows a status it never sent: %v %+v", err, v)
	}
}

func TestKeyDeliveryOnConnectAndRotation(t *testing.T) {
	n := nodetest.Start(t, nil)
	api := nodetest.NewAPI(t, n).Client
	a := connect(t, n, tenant, gwA, nil)
	// Nothing to deliver before the tenant has a network.
	a.status(gwproto.Status{AgentVersion: "1"})
	created, err := api.RotateMeshKey(ctx(t), tenant, client.MeshKeyRequest{})
	if err != nil || !created.Created || len(created.Epochs) != 1 {
		t.Fatalf("create: %v %+v", err, created)
	}
	if _, err := api.AddMeshNodes(ctx(t), tenant, []uint32{7, 3, 5}); err != nil {
		t.Fatal(err)
	}
	// A gateway connected before the network was made gets it at once.
	ks1 := a.keys(func(ks mesh.KeySet) bool { return ks.Version == 1 })
	if want := exported(t, api, tenant); !sameKeys(ks1, want) || len(ks1.Keys) != 1 {
		t.Fatalf("delivered %+v, export %+v", ks1, want)
	}
	nl := a.nodes(func(nl gwproto.NodeList) bool { return len(nl.Nodes) == 3 })
	if nl.NetworkID != created.NetworkID || !slices.Equal(nl.Nodes, []uint32{3, 5, 7}) {
		t.Errorf("node list %+v", nl)
	}

	// A gateway that connects later gets them after its status.
	b := connect(t, n, tenant, gwB, nil)
	b.status(gwproto.Status{AgentVersion: "1"})
	ksB := b.keys(func(ks mesh.KeySet) bool { return ks.Version == 1 })
	if !sameKeys(ksB, ks1) {
		t.Errorf("B got %+v, A %+v", ksB, ks1)
	}
	b.nodes(func(nl gwproto.NodeList) bool { return len(nl.Nodes) == 3 })

	// What is sealed to A does not open with B's key.
	sealedA, _ := a.last(gwproto.KeysTopic(gwA))
	if _, err := gwproto.OpenKeys(b.key, sealedA); !errors.Is(err, receiver.ErrNotForThisKey) {
		t.Errorf("A's key set opened with B's key: %v", err)
	}
	// Nor may B subscribe to A's down topics.
	sa, err := b.up.Client().Subscribe(ctx(t), &paho.Subscribe{Subscriptions: []paho.SubscribeOptions{{Topic: gwproto.KeysTopic(gwA), QoS: 1}}})
	if sa == nil || len(sa.Reasons) != 1 || sa.Reasons[0] != 0x87 {
		t.Errorf("B subscribing to A's keys: %v %+v", err, sa)
	}

	// A rotation reaches both at once: the new epoch is current, the old
	// one kept for the grace period with its notAfter.
	grace := int64(3600)
	rot, err := api.RotateMeshKey(ctx(t), tenant, client.MeshKeyRequest{GraceSeconds: &grace})
	if err != nil || rot.Created || len(rot.Epochs) != 2 || rot.Epochs[0].NotAfter == nil {
		t.Fatalf("rotate: %v %+v", err, rot)
	}
	ks2 := a.keys(func(ks mesh.KeySet) bool { return ks.Version == 2 })
	want := exported(t, api, tenant)
	if !sameKeys(ks2, want) || len(ks2.Keys) != 2 || ks2.Keys[0].Epoch != 1 || ks2.Keys[1].Epoch != 2 {
		t.Fatalf("after rotation A got %+v, export %+v", ks2, want)
	}
	if d := time.Until(*ks2.Keys[0].NotAfter); d < 59*time.Minute || d > time.Hour+time.Minute {
		t.Errorf("old epoch notAfter in %v, want about an hour", d)
	}
	if !bytes.Equal(ks2.Keys[0].Key, ks1.Keys[0].Key) || bytes.Equal(ks2.Keys[1].Key, ks1.Keys[0].Key) {
		t.Error("the rotation did not keep the old key and add a new one")
	}
	if !sameKeys(b.keys(func(ks mesh.KeySet) bool { return ks.Version == 2 }), want) {
		t.Error("B did not get the rotation")
	}
	// The key set a gateway gets is what its mesh receiver takes.
	r := mesh.NewReceiver(time.Now)
	if err := r.SetKeys(ks2); err != nil {
		t.Errorf("receiver refused the delivered key set: %v", err)
	}

	// Node changes reach it too.
	if err := api.DeleteMeshNode(ctx(t), tenant, 5); err != nil {
		t.Fatal(err)
	}
	a.nodes(func(nl gwproto.NodeList) bool { return slices.Equal(nl.Nodes, []uint32{3, 7}) })

	// After a reconnect the retained key set is there before any status.
	_ = a.up.Close()
	a2 := connect(t, n, tenant, gwA, nodetest.Enroll(t, n, tenant, gwA, time.Hour))
	a2.key = a.key // the same gateway, the same key-delivery key
	a2.keys(func(ks mesh.KeySet) bool { return ks.Version == 2 })
}

func TestKeyDeliveryStaysInTenant(t *testing.T) {
	n := nodetest.Start(t, nil)
	api := nodetest.NewAPI(t, n).Client
	o := connect(t, n, other, gwO, nil)
	o.status(gwproto.Status{AgentVersion: "1"})
	a := connect(t, n, tenant, gwA, nil)
	a.status(gwproto.Status{AgentVersion: "1"})
	if _, err := api.RotateMeshKey(ctx(t), tenant, client.MeshKeyRequest{}); err != nil {
		t.Fatal(err)
	}
	a.keys(func(ks mesh.KeySet) bool { return ks.Version == 1 })
	// The other tenant's gateway got nothing of acme's mesh.
	if b, _ := o.last(gwproto.KeysTopic(gwO)); b != nil {
		t.Errorf("a gateway of another tenant got a key set")
	}
	if b, _ := o.last(gwproto.NodesTopic(gwO)); b != nil {
		t.Errorf("a gateway of another tenant got a node list")
	}
}

// TestDeliveryNotInheritedByTheSerialsNextTenant: a serial deleted by one
// tenant and registered to another (a gateway sold on, or returned and
// refurbished) is a new gateway on the same topics. What the cloud
// published retained on them for the first tenant (its node list and
// network id, its key set) used to stay in the broker's retained store and
// reach the new owner's gateway as soon as it subscribed.
func TestDeliveryNotInheritedByTheSerialsNextTenant(t *testing.T) {
	n := nodetest.Start(t, nil)
	api := nodetest.NewAPI(t, n).Client
	a := connect(t, n, tenant, gwA, nil)
	a.status(gwproto.Status{AgentVersion: "1"})
	if _, err := api.RotateMeshKey(ctx(t), tenant, client.MeshKeyRequest{}); err != nil {
		t.Fatal(err)
	}
	if _, err := api.AddMeshNodes(ctx(t), tenant, []uint32{7, 3}); err != nil {
		t.Fatal(err)
	}
	first := a.keys(func(ks mesh.KeySet) bool { return ks.Version == 1 })
	a.nodes(func(nl gwproto.NodeList) bool { return len(nl.Nodes) == 2 })
	_ = a.up.Close()
	if err := api.DeleteGateway(ctx(t), tenant, gwA); err != nil {
		t.Fatal(err)
	}

	// The serial goes to the other tenant, which has a mesh of its own.
	cert := nodetest.Gateway(t, n, other, gwA)
	net, err := api.RotateMeshKey(ctx(t), other, client.MeshKeyRequest{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := api.AddMeshNodes(ctx(t), other, []uint32{99}); err != nil {
		t.Fatal(err)
	}
	o := connect(t, n, other, gwA, cert)
	o.key = a.key // even a gateway that names the same key-delivery key
	o.status(gwproto.Status{AgentVersion: "1"})
	// Its own mesh arrives after anything retained before it subscribed.
	o.nodes(func(nl gwproto.NodeList) bool { return nl.NetworkID == net.NetworkID })
	o.keys(func(ks mesh.KeySet) bool { return ks.NetworkID == net.NetworkID })
	o.mu.Lock()
	defer o.mu.Unlock()
	for _, b := range o.got[gwproto.NodesTopic(gwA)] {
		var nl gwproto.NodeList
		if err := json.Unmarshal(b, &nl); err != nil || nl.NetworkID != net.NetworkID {
			t.Errorf("the serial's new tenant got a node list of another network: %s", b)
		}
	}
	for _, b := range o.got[gwproto.KeysTopic(gwA)] {
		plain, err := gwproto.OpenKeys(o.key, b)
		if err != nil {
			t.Errorf("a key set it cannot open: %v", err)
			continue
		}
		if ks, err := mesh.ParseKeySet(plain); err != nil || ks.NetworkID != net.NetworkID {
			t.Errorf("the serial's new tenant got the key set of network %d (the first tenant's: %d)", ks.NetworkID, first.NetworkID)
		}
	}
}

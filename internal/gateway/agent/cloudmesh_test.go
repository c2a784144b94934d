package agent_test

import (
	"context"
	"fmt"
	"net"
	"testing"
	"time"

	"github.com/iotransit/iotransit/client"
	"github.com/iotransit/iotransit/internal/mesh"
	"github.com/iotransit/iotransit/internal/testutil"
)

// cloudNetwork creates the tenant's mesh network in the cloud (first key,
// nodes) and returns it as a key file exports it.
func (c *cloud) cloudNetwork(t *testing.T, nodes ...uint32) *network {
	t.Helper()
	ctx := context.Background()
	if _, err := c.api.Client.RotateMeshKey(ctx, c.tenant, client.MeshKeyRequest{}); err != nil {
		t.Fatal(err)
	}
	if _, err := c.api.Client.AddMeshNodes(ctx, c.tenant, nodes); err != nil {
		t.Fatal(err)
	}
	return &network{ks: c.exportKeys(t), nodes: nodes}
}

// exportKeys returns the tenant's current key set.
func (c *cloud) exportKeys(t *testing.T) mesh.KeySet {
	t.Helper()
	b, err := c.api.Client.ExportMeshKeys(context.Background(), c.tenant)
	if err != nil {
		t.Fatal(err)
	}
	ks, err := mesh.ParseKeySet(b)
	if err != nil {
		t.Fatal(err)
	}
	return ks
}

// waitKeys waits until the agent holds the key set version and a node list.
func waitKeys(t *testing.T, a *running, version uint64) {
	t.Helper()
	testutil.Eventually(t, 15*time.Second*testutil.Slowdown(), 20*time.Millisecond, func() error {
		if k, n := a.Receiver().Versions(); k < version || n == 0 {
			return fmt.Errorf("agent holds keys version %d (want %d) and nodes version %d", k, version, n)
		}
		return nil
	})
}

// TestCloudMesh: the cloud delivers the tenant's keys (sealed to the
// agent's key-delivery key, which its status named) and node list over
// MQTT; frames sealed with the exported key reach the cloud; the status
// shows on the gateway; a key rotation under traffic loses no frame, and
// the old epoch is refused once its grace period is over.
func TestCloudMesh(t *testing.T) {
	c := newCloud(t, nil)
	const serial = "TSGW06AGT00000020"
	nw := c.cloudNetwork(t, 1, 2, 3)
	a := start(t, c.config(t, t.TempDir(), serial, c.token(t, serial)))
	waitKeys(t, a, nw.ks.Version)
	epoch1 := nw.ks.Keys[0].Epoch

	var frames [][]byte
	for counter := uint32(0); counter < 20; counter++ {
		for _, n := range nw.nodes {
			frames = append(frames, nw.frame(t, epoch1, n, 1, counter))
		}
	}
	send(t, a.MeshAddr().String(), frames...)
	waitStored(t, c, serial, 60)
	testutil.Eventually(t, 20*time.Second*testutil.Slowdown(), 100*time.Millisecond, func() error {
		g, err := c.api.Client.GetGateway(context.Background(), c.tenant, serial)
		if err != nil {
			return err
		}
		if g.LastSeen == nil || g.Mesh == nil || g.QueueDepth == nil {
			return fmt.Errorf("gateway shows no status: %+v", g)
		}
		if g.Mesh.Accepted != 60 || *g.QueueDepth != 0 {
			return fmt.Errorf("gateway shows %d accepted, queue depth %d", g.Mesh.Accepted, *g.QueueDepth)
		}
		return nil
	})

	// Rotation under traffic: node 1 sends all along, with the old key
	// until the agent holds the new one (a node learns of it later still).
	grace := int64(3)
	stop := make(chan struct{})
	sent := make(chan int)
	conn, err := net.Dial("udp", a.MeshAddr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	key1 := nw.key(t, epoch1)
	go func() { // no t.Fatal here: errors are t.Error
		n, counter := 0, uint32(100)
		epoch, key := epoch1, key1
		for {
			select {
			case <-stop:
				sent <- n
				return
			case <-time.After(5 * time.Millisecond):
			}
			if k, _ := a.Receiver().Versions(); k > nw.ks.Version && epoch == epoch1 {
				b, err := c.api.Client.ExportMeshKeys(context.Background(), c.tenant)
				if err == nil {
					var ks mesh.KeySet
					if ks, err = mesh.ParseKeySet(b); err == nil {
						epoch, key, err = ks.Current()
					}
				}
				if err != nil {
					t.Error(err)
					sent <- n
					return
				}
			}
			f, err := mesh.Seal(key, mesh.Header{NetworkID: nw.ks.NetworkID, Epoch: epoch, Node: 1, Boot: 1, Counter: counter}, []byte(testutil.Thingsee(tuid(1), baseTs+int64(counter), 1)))
			if err == nil {
				_, err = conn.Write(f)
			}
			if err != nil {
				t.Error(err)
			}
			counter++
			n++
		}
	}()
	time.Sleep(100 * time.Millisecond)
	rotated, err := c.api.Client.RotateMeshKey(context.Background(), c.tenant, client.MeshKeyRequest{GraceSeconds: &grace})
	if err != nil {
		t.Fatal(err)
	}
	waitKeys(t, a, rotated.Version)
	time.Sleep(200 * time.Millisecond)
	close(stop)
	n := <-sent
	waitStored(t, c, serial, 60+n)

	// Node 2 still on the old key within the grace period: taken; after
	// it: stale_epoch, not stored.
	nw2 := &network{ks: c.exportKeys(t), nodes: nw.nodes}
	send(t, a.MeshAddr().String(), nw2.frame(t, epoch1, 2, 1, 20))
	waitStored(t, c, serial, 61+n)
	old := nw2.ks.Keys[len(nw2.ks.Keys)-1]
	for _, k := range nw2.ks.Keys {
		if k.Epoch == epoch1 {
			old = k
		}
	}
	if old.NotAfter == nil {
		t.Fatalf("the old epoch has no end: %+v", nw2.ks)
	}
	time.Sleep(time.Until(*old.NotAfter) + 100*time.Millisecond)
	before := a.Status().Mesh.Dropped["stale_epoch"]
	send(t, a.MeshAddr().String(), nw2.frame(t, epoch1, 3, 1, 20))
	testutil.Eventually(t, 5*time.Second, 20*time.Millisecond, func() error {
		if got := a.Status().Mesh.Dropped["stale_epoch"]; got != before+1 {
			return fmt.Errorf("stale_epoch %d, want %d", got, before+1)
		}
		return nil
	})
	cur, _, _ := nw2.ks.Current()
	send(t, a.MeshAddr().String(), nw2.frame(t, cur, 3, 1, 21))
	waitStored(t, c, serial, 62+n)
}

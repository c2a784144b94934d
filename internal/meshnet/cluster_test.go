package meshnet_test

import (
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"

	"github.com/iotransit/iotransit/client"
	"github.com/iotransit/iotransit/internal/gwproto"
	"github.com/iotransit/iotransit/internal/mesh"
	"github.com/iotransit/iotransit/internal/node"
	tu "github.com/iotransit/iotransit/internal/testutil"
	"github.com/iotransit/iotransit/internal/testutil/nodetest"
)

// TestKeyDeliveryAcrossNodes runs two iotransit nodes on one JetStream: a
// rotation made through one node's API reaches a gateway connected to the
// other (its KV watch of the mesh bucket), and the gateway's status is
// visible from both.
func TestKeyDeliveryAcrossNodes(t *testing.T) {
	ns, err := server.NewServer(&server.Options{Host: "127.0.0.1", Port: tu.FreePort(t), JetStream: true, StoreDir: filepath.Join(t.TempDir(), "js"), NoSigs: true})
	if err != nil {
		t.Fatal(err)
	}
	ns.Start()
	t.Cleanup(ns.Shutdown)
	if !ns.ReadyForConnections(10 * time.Second) {
		t.Fatal("NATS not ready")
	}
	dir1, dir2 := t.TempDir(), t.TempDir()
	start := func(dir string) *node.Node {
		return nodetest.Start(t, func(c *node.Config) {
			c.DataDir, c.Dev, c.ServerNames = dir, false, []string{"127.0.0.1"}
			c.NATSURLs = []string{ns.ClientURL()}
		})
	}
	n1 := start(dir1)
	// The second node shares the root key (a cluster's nodes do).
	root, err := os.ReadFile(filepath.Join(dir1, "root.key"))
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir2, "root.key"), root, 0o600); err != nil {
		t.Fatal(err)
	}
	n2 := start(dir2)

	g := connect(t, n2, tenant, gwA, nil)
	g.status(gwproto.Status{AgentVersion: "cluster-1"})
	api1 := nodetest.NewAPI(t, n1).Client
	if _, err := api1.RotateMeshKey(ctx(t), tenant, client.MeshKeyRequest{}); err != nil {
		t.Fatal(err)
	}
	ks := g.keys(func(ks mesh.KeySet) bool { return ks.Version == 1 })
	if !sameKeys(ks, exported(t, api1, tenant)) {
		t.Error("the key set delivered by node 2 differs from node 1's export")
	}
	if _, err := api1.AddMeshNodes(ctx(t), tenant, []uint32{4}); err != nil {
		t.Fatal(err)
	}
	g.nodes(func(nl gwproto.NodeList) bool { return len(nl.Nodes) == 1 && nl.Nodes[0] == 4 })
	// Node 1 shows the status the gateway sent to node 2 (from the bucket).
	tu.Eventually(t, 10*time.Second, 50*time.Millisecond, func() error {
		v, err := api1.GetGateway(ctx(t), tenant, gwA)
		if err != nil {
			return err
		}
		if v.AgentVersion != "cluster-1" || v.LastSeen == nil {
			return fmt.Errorf("node 1 shows agent %q, lastSeen %v", v.AgentVersion, v.LastSeen)
		}
		return nil
	})
}

package nodetest

import (
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"

	"github.com/iotransit/iotransit/internal/node"
	"github.com/iotransit/iotransit/internal/testutil"
)

// StartPair starts a JetStream server and two nodes on it, sharing the
// root key as a cluster's nodes do (each node is otherwise Start's, not
// in dev mode); mod may adjust both configurations. Changes made through
// one node reach the other through the backbone only.
func StartPair(t testing.TB, mod func(*node.Config)) (*node.Node, *node.Node) {
	t.Helper()
	ns, err := server.NewServer(&server.Options{Host: "127.0.0.1", Port: testutil.FreePort(t), JetStream: true,
		StoreDir: filepath.Join(t.TempDir(), "js"), NoSigs: true})
	if err != nil {
		t.Fatal(err)
	}
	ns.Start()
	t.Cleanup(ns.Shutdown)
	if !ns.ReadyForConnections(10 * time.Second) {
		t.Fatal("NATS not ready")
	}
	start := func(dir string) *node.Node {
		return Start(t, func(c *node.Config) {
			c.DataDir, c.Dev, c.ServerNames = dir, false, []string{"127.0.0.1"}
			c.NATSURLs = []string{ns.ClientURL()}
			if mod != nil {
				mod(c)
			}
		})
	}
	dir1, dir2 := t.TempDir(), t.TempDir()
	n1 := start(dir1)
	root, err := os.ReadFile(filepath.Join(dir1, "root.key"))
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir2, "root.key"), root, 0o600); err != nil {
		t.Fatal(err)
	}
	return n1, start(dir2)
}

package node_test

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"

	"github.com/iotransit/iotransit/internal/backbone/names"
	tu "github.com/iotransit/iotransit/internal/testutil"
	"github.com/iotransit/iotransit/internal/testutil/nodetest"
)

// startCluster starts a three-node NATS JetStream cluster on loopback and
// returns its servers and client URLs.
func startCluster(t *testing.T) ([]*server.Server, []string) {
	t.Helper()
	const size = 3
	clusterPorts := make([]int, size)
	for i := range clusterPorts {
		clusterPorts[i] = tu.FreePort(t)
	}
	var routes []string
	for _, p := range clusterPorts {
		routes = append(routes, fmt.Sprintf("nats://127.0.0.1:%d", p))
	}
	var srvs []*server.Server
	var urls []string
	for i := 0; i < size; i++ {
		opts := &server.Options{
			ServerName: fmt.Sprintf("n%d", i),
			Host:       "127.0.0.1",
			Port:       tu.FreePort(t),
			JetStream:  true,
			StoreDir:   filepath.Join(t.TempDir(), "js"),
			NoSigs:     true,
			Cluster:    server.ClusterOpts{Name: "iotransit-test", Host: "127.0.0.1", Port: clusterPorts[i]},
			Routes:     server.RoutesFromStr(strings.Join(routes, ",")),
		}
		s, err := server.NewServer(opts)
		if err != nil {
			t.Fatal(err)
		}
		if os.Getenv("IOTRANSIT_TEST_NATSLOG") != "" {
			s.ConfigureLogger()
		}
		s.Start()
		t.Cleanup(s.Shutdown)
		srvs = append(srvs, s)
		urls = append(urls, s.ClientURL())
	}
	for _, s := range srvs {
		if !s.ReadyForConnections(20 * time.Second) {
			t.Fatal("cluster node not ready")
		}
	}
	tu.Eventually(t, 30*time.Second, 100*time.Millisecond, func() error {
		for _, s := range srvs {
			if s.JetStreamIsLeader() {
				return nil
			}
		}
		return fmt.Errorf("no JetStream meta leader")
	})
	return srvs, urls
}

// TestNodeReplicatedDurability runs a node on an external three-node
// JetStream cluster with --replicas 3: streams are replicated, and a
// publish is still acknowledged and stored after one NATS node dies.
func TestNodeReplicatedDurability(t *testing.T) {
	srvs, n := startReplicated(t)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	cert := nodetest.Gateway(t, n, "acme", "TSGW06ACM00000001")
	st, err := n.JetStream().Stream(ctx, names.MessageStream("acme"))
	if err != nil {
		t.Fatal(err)
	}
	info, err := st.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if info.Config.Replicas != 3 {
		t.Fatalf("message stream has %d replicas, want 3", info.Config.Replicas)
	}

	// publish behaves like a gateway: a publish that is not acknowledged
	// (the node closes the connection when it cannot persist) is resent on
	// a new connection.
	publish := func(ts int64) {
		t.Helper()
		tu.Eventually(t, 30*time.Second, 200*time.Millisecond, func() error {
			up, err := nodetest.Dial(t, n, cert, "TSGW06ACM00000001", nil)
			if err != nil {
				return err
			}
			defer up.Close()
			pctx, cancel := context.WithTimeout(ctx, 3*time.Second)
			defer cancel()
			res, err := up.Publish(pctx, []byte(tu.Thingsee("TSEN01ABC12345678", ts, 21)), 1)
			if err != nil || res.ReasonCode != 0 {
				return fmt.Errorf("publish: %v 0x%02x %s", err, res.ReasonCode, res.Reason)
			}
			return nil
		})
	}
	publish(1700000000)
	// Lose one of three nodes: a quorum remains, writes go on (after the
	// node's NATS client has moved to another server, when it was on this one).
	for _, s := range srvs {
		if !s.JetStreamIsLeader() {
			s.Shutdown()
			break
		}
	}
	publish(1700000060)
	publish(1700000060) // a resend of an acknowledged message is stored once
	if msgs := nodetest.NewAPI(t, n).Messages("acme", 10); len(msgs) != 2 {
		t.Fatalf("stored %d, want 2", len(msgs))
	}
}

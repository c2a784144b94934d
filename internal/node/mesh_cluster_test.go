package node_test

import (
	"context"
	"crypto"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"

	"github.com/iotransit/iotransit/client"
	"github.com/iotransit/iotransit/internal/node"
	"github.com/iotransit/iotransit/internal/pki"
	tu "github.com/iotransit/iotransit/internal/testutil"
	"github.com/iotransit/iotransit/internal/testutil/nodetest"
)

// startReplicated starts a node on a three-node JetStream cluster
// (startCluster) with --replicas 3.
func startReplicated(t *testing.T) ([]*server.Server, *node.Node) {
	t.Helper()
	if testing.Short() {
		t.Skip("starts a cluster")
	}
	srvs, urls := startCluster(t)
	var n *node.Node
	dataDir := t.TempDir() // the root key must stay the same across attempts
	tu.Eventually(t, 60*time.Second, 500*time.Millisecond, func() error {
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer cancel()
		var err error
		n, err = node.Start(ctx, node.Config{
			DataDir: dataDir, MQTTAddr: "127.0.0.1:0", APIAddr: "127.0.0.1:0", ServerNames: []string{"127.0.0.1"},
			NATSURLs: urls, Replicas: 3, Logger: tu.Logger(t),
		})
		return err
	})
	t.Cleanup(n.Close)
	return srvs, n
}

// TestNodeMeshChangesRetryInAReplicatedCluster: concurrent changes of a
// tenant's mesh node list on replicated buckets (--replicas 3) each take
// effect. A replicated stream reports a write that lost the optimistic
// concurrency race on a subject still in process as error 10164, not
// 10071: meshnet retried only on 10071, so such a change failed with an
// internal error instead of being applied on top of the other one.
func TestNodeMeshChangesRetryInAReplicatedCluster(t *testing.T) {
	_, n := startReplicated(t)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	if _, err := n.CreateTenant(ctx, "acme"); err != nil {
		t.Fatal(err)
	}
	api := nodetest.NewAPI(t, n).Client
	if _, err := api.RotateMeshKey(ctx, "acme", client.MeshKeyRequest{}); err != nil {
		t.Fatal(err)
	}
	const writers = 24
	var wg sync.WaitGroup
	errs := make(chan error, writers)
	for i := range writers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if _, err := api.AddMeshNodes(ctx, "acme", []uint32{uint32(i + 1)}); err != nil {
				errs <- fmt.Errorf("node %d: %w", i+1, err)
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	nodes, err := api.MeshNodes(ctx, "acme")
	if err != nil {
		t.Fatal(err)
	}
	if len(nodes.Nodes) != writers || nodes.Version != writers {
		t.Errorf("%d nodes at version %d after %d concurrent adds", len(nodes.Nodes), nodes.Version, writers)
	}
}

// TestNodeRacingClaimsInAReplicatedCluster: claims of one gateway with its
// code, many at once, on replicated buckets: exactly one answers 201, every
// other as an unknown serial. A claim that lost the race for the code's
// record got 10164, not the ErrKeyExists the registry looked for, and
// answered 500: unlike an unknown serial.
func TestNodeRacingClaimsInAReplicatedCluster(t *testing.T) {
	_, n := startReplicated(t)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	tenants := []string{"acme", "beta"}
	for _, id := range tenants {
		if _, err := n.CreateTenant(ctx, id); err != nil {
			t.Fatal(err)
		}
	}
	api := nodetest.NewAPI(t, n)
	b, err := api.Client.ProvisionGateways(ctx, client.ProvisionGatewaysRequest{Count: 1, Model: "TSGW06"})
	if err != nil {
		t.Fatal(err)
	}
	g := b.Gateways[0]
	const claims = 12
	var wg sync.WaitGroup
	res := make([]nodetest.Response, claims)
	for i := range res {
		wg.Go(func() {
			res[i] = api.Do("POST", "/v1/tenants/"+tenants[i%2]+"/gateways/claim", api.Key(), client.ClaimGatewayRequest{Serial: g.Serial, ClaimCode: g.ClaimCode})
		})
	}
	wg.Wait()
	won := 0
	for i, r := range res {
		code, _ := r.Problem()
		switch {
		case r.Status == 201:
			won++
		case r.Status == 404 && code == "registry.claim_invalid":
		default:
			t.Errorf("claim %d: %d %s", i, r.Status, r.Body)
		}
	}
	if won != 1 {
		t.Errorf("%d claims won, want 1", won)
	}
}

// TestNodeGatewayChangesRetryInAReplicatedCluster: concurrent changes of
// one gateway (labels) and concurrent enrollments with one token on
// replicated buckets: every change is applied (none answers 500), and
// exactly one enrollment wins while the others are told the token was used.
// Like the mesh's node list, the registry retried a lost revision race
// only on error 10071, which a replicated stream reports as 10164.
func TestNodeGatewayChangesRetryInAReplicatedCluster(t *testing.T) {
	_, n := startReplicated(t)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	if _, err := n.CreateTenant(ctx, "acme"); err != nil {
		t.Fatal(err)
	}
	const serial = "TSGW06RPL00000001"
	if _, err := n.Registry().RegisterGateway(ctx, "acme", serial); err != nil {
		t.Fatal(err)
	}
	api := nodetest.NewAPI(t, n).Client
	const writers = 24
	var wg sync.WaitGroup
	errs := make(chan error, 2*writers)
	for i := range writers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			labels := map[string]string{"writer": fmt.Sprint(i)}
			if _, err := api.UpdateGateway(ctx, "acme", serial, client.UpdateGatewayRequest{Labels: &labels}); err != nil {
				errs <- fmt.Errorf("writer %d: %w", i, err)
			}
		}()
	}
	wg.Wait()
	tok, err := api.CreateEnrollmentToken(ctx, "acme", client.CreateEnrollmentTokenRequest{Serial: serial})
	if err != nil {
		t.Fatal(err)
	}
	var won sync.WaitGroup
	wins := make(chan struct{}, writers)
	for range 8 {
		won.Add(1)
		go func() {
			defer won.Done()
			_, err := pki.NewKeyPair(serial, func(_ crypto.Signer, csr []byte) ([]byte, error) {
				e, err := api.Enroll(ctx, tok.Token, csr)
				if err != nil {
					return nil, err
				}
				return []byte(e.Certificate), nil
			})
			var p *client.Problem
			switch {
			case err == nil:
				wins <- struct{}{}
			case errors.As(err, &p) && p.Status < 500:
			default:
				errs <- fmt.Errorf("enroll: %w", err)
			}
		}()
	}
	won.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	if len(wins) != 1 {
		t.Errorf("%d of 8 enrollments with one token won", len(wins))
	}
}

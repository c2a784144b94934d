package node_test

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/paho"

	"github.com/iotransit/iotransit/client"
	"github.com/iotransit/iotransit/internal/registry"
	tu "github.com/iotransit/iotransit/internal/testutil"
	"github.com/iotransit/iotransit/internal/testutil/nodetest"
)

// TestCARetiredBetweenHandshakeAndConnect: a gateway whose TLS handshake
// (on a certificate of CA version 1) completed just before version 1 was
// retired, and whose CONNECT comes after the node ended the retired
// version's live sessions, is refused or ended as the retired CA's: it
// must not get a session that no later sweep ends.
func TestCARetiredBetweenHandshakeAndConnect(t *testing.T) {
	const tenant = "acme"
	n := nodetest.Start(t, nil)
	api := nodetest.NewAPI(t, n)
	ctx := context.Background()
	live := nodetest.Gateway(t, n, tenant, "TSGW06CAR00000001")
	late := nodetest.Gateway(t, n, tenant, "TSGW06CAR00000002")
	disconnected := mqtt5Session(t, n, live, "TSGW06CAR00000001")

	// TLS 1.2: the client's handshake ends with the server's Finished,
	// sent once the server accepted the certificate.
	cfg := nodetest.ClientTLS(t, n, late)
	cfg.MaxVersion = tls.VersionTLS12
	conn, err := tls.Dial("tcp", n.MQTTAddr(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = conn.Close() })

	if _, err := api.Client.RotateCA(ctx, tenant, client.RotateCARequest{Overlap: "1h"}); err != nil {
		t.Fatal(err)
	}
	if _, err := api.Client.RetireCA(ctx, tenant, client.RetireCARequest{Version: 1}); err != nil {
		t.Fatal(err)
	}
	select { // the node swept the retired version's sessions
	case d := <-disconnected:
		if d.Properties == nil || !strings.Contains(d.Properties.ReasonString, "ca_retired") {
			t.Fatalf("live session ended with %+v, want ca_retired", d.Properties)
		}
	case <-time.After(10 * time.Second * tu.Slowdown()):
		t.Fatal("the live session on the retired CA was not ended")
	}

	// The sweep that ended it may still be running through the tenant's
	// gateways: the CONNECT must come after it, as a slower client's would
	// (the wait makes the race certain, it decides nothing).
	time.Sleep(750 * time.Millisecond) // three of the sweep's polls (caRetirementPoll)

	ended := make(chan *paho.Disconnect, 1)
	c := paho.NewClient(paho.ClientConfig{Conn: conn, OnServerDisconnect: func(d *paho.Disconnect) { ended <- d }})
	cctx, cancel := context.WithTimeout(ctx, 5*time.Second*tu.Slowdown())
	defer cancel()
	ack, err := c.Connect(cctx, &paho.Connect{ClientID: "TSGW06CAR00000002", KeepAlive: 30, CleanStart: true})
	if err != nil || ack == nil || ack.ReasonCode != 0 {
		t.Logf("refused: %v %+v", err, ack)
		return // refused: fine
	}
	select { // accepted: the session must be ended as the retired CA's
	case d := <-ended:
		if d.Properties == nil || !strings.Contains(d.Properties.ReasonString, "ca_retired") {
			t.Fatalf("late session ended with %+v, want ca_retired", d.Properties)
		}
	case <-time.After(5 * time.Second * tu.Slowdown()):
		t.Fatal("a session on a retired CA's certificate, connected after the retirement's sweep, lives on")
	}
}

// TestCARetiredOnTheOtherNode: a retirement made through one node ends
// the live session a gateway holds on the other node with a certificate
// of the retired version, and that node refuses its next connection.
func TestCARetiredOnTheOtherNode(t *testing.T) {
	const tenant, serial = "acme", "TSGW06CAR00000003"
	n1, n2 := nodetest.StartPair(t, nil)
	api1 := nodetest.NewAPI(t, n1).Client
	ctx := context.Background()
	cert := nodetest.Gateway(t, n1, tenant, serial)
	tu.Eventually(t, 10*time.Second, 50*time.Millisecond, func() error {
		_, err := n2.Registry().Authenticate([]*x509.Certificate{cert.Leaf}, time.Now())
		return err
	})
	disconnected := mqtt5Session(t, n2, cert, serial)
	if _, err := api1.RotateCA(ctx, tenant, client.RotateCARequest{Overlap: "1h"}); err != nil {
		t.Fatal(err)
	}
	if _, err := api1.RetireCA(ctx, tenant, client.RetireCARequest{}); err != nil {
		t.Fatal(err)
	}
	select {
	case d := <-disconnected:
		if d.Properties == nil || !strings.Contains(d.Properties.ReasonString, "ca_retired") {
			t.Fatalf("session on node 2 ended with %+v, want ca_retired", d.Properties)
		}
	case <-time.After(10 * time.Second * tu.Slowdown()):
		t.Fatal("node 2 kept the session of a retired CA's certificate")
	}
	_, err := n2.Registry().Authenticate([]*x509.Certificate{cert.Leaf}, time.Now())
	var re *registry.RefusedError
	if !errors.As(err, &re) || re.Reason != registry.ReasonCARetired {
		t.Fatalf("node 2 authenticates the retired CA's certificate: %v, want %s", err, registry.ReasonCARetired)
	}
}

package node_test

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/paho"

	"github.com/iotransit/iotransit/client"
	"github.com/iotransit/iotransit/internal/node"
	tu "github.com/iotransit/iotransit/internal/testutil"
	"github.com/iotransit/iotransit/internal/testutil/nodetest"
)

// records keeps the log records whose message is msg, with their
// attributes, and passes every record on to h.
type records struct {
	h   slog.Handler
	msg string
	mu  *sync.Mutex
	got *[]map[string]string
}

func (r records) Enabled(context.Context, slog.Level) bool { return true }

func (r records) Handle(ctx context.Context, rec slog.Record) error {
	if rec.Message == r.msg {
		attrs := map[string]string{}
		rec.Attrs(func(a slog.Attr) bool { attrs[a.Key] = a.Value.String(); return true })
		r.mu.Lock()
		*r.got = append(*r.got, attrs)
		r.mu.Unlock()
	}
	if r.h.Enabled(ctx, rec.Level) {
		return r.h.Handle(ctx, rec)
	}
	return nil
}

func (r records) WithAttrs(as []slog.Attr) slog.Handler { r.h = r.h.WithAttrs(as); return r }
func (r records) WithGroup(name string) slog.Handler    { r.h = r.h.WithGroup(name); return r }

// mqtt5Session connects a gateway with a real MQTT 5 client and returns the
// DISCONNECT the server sends it.
func mqtt5Session(t *testing.T, n *node.Node, cert *tls.Certificate, serial string) <-chan *paho.Disconnect {
	t.Helper()
	conn, err := tls.Dial("tcp", n.MQTTAddr(), nodetest.ClientTLS(t, n, cert))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = conn.Close() })
	got := make(chan *paho.Disconnect, 1)
	c := paho.NewClient(paho.ClientConfig{Conn: conn, OnServerDisconnect: func(d *paho.Disconnect) { got <- d }})
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second*tu.Slowdown())
	defer cancel()
	if _, err := c.Connect(ctx, &paho.Connect{ClientID: serial, KeepAlive: 30, CleanStart: true}); err != nil {
		t.Fatalf("connect %s: %v", serial, err)
	}
	return got
}

// TestSessionEndsAreNamed: a live session that the server ends because its
// gateway was revoked or isolated, its certificate superseded by renewals,
// or because the gateway connected again, is recorded in the tenant's audit
// log with that reason; the MQTT 5 client gets a DISCONNECT with a fitting
// reason code and a reason string; the refusal of the gateway's next
// connection is logged with its tenant and serial.
func TestSessionEndsAreNamed(t *testing.T) {
	const tenant = "acme"
	var mu sync.Mutex
	var refusals []map[string]string
	n := nodetest.Start(t, func(c *node.Config) {
		c.Logger = slog.New(records{h: tu.Logger(t).Handler(), msg: "gateway connection refused", mu: &mu, got: &refusals})
	})
	api := nodetest.NewAPI(t, n)
	ctx := context.Background()
	tests := []struct {
		name   string
		serial string
		end    func(t *testing.T, serial string, cert *tls.Certificate)
		reason string
		code   byte
		// refusal is the reason of the next connection's refusal ("": it
		// is not refused).
		refusal string
	}{
		{name: "revoked", serial: "TSGW06REV00000001", reason: "revoked", code: 0x98, refusal: "revoked",
			end: func(t *testing.T, serial string, _ *tls.Certificate) {
				if _, err := api.Client.RevokeGateway(ctx, tenant, serial); err != nil {
					t.Fatal(err)
				}
			}},
		{name: "isolated", serial: "TSGW06ISO00000001", reason: "isolated", code: 0x98, refusal: "isolated",
			end: func(t *testing.T, serial string, _ *tls.Certificate) {
				if _, err := api.Client.IsolateGateway(ctx, tenant, serial); err != nil {
					t.Fatal(err)
				}
			}},
		{name: "superseded", serial: "TSGW06SUP00000001", reason: "superseded", code: 0x87, refusal: "cert_revoked",
			end: func(t *testing.T, serial string, _ *tls.Certificate) {
				nodetest.Enroll(t, n, tenant, serial, time.Hour) // the newest two stay valid
				nodetest.Enroll(t, n, tenant, serial, time.Hour)
			}},
		{name: "taken over", serial: "TSGW06TAK00000001", reason: "taken over", code: 0x8E,
			end: func(t *testing.T, serial string, cert *tls.Certificate) {
				mqtt5Session(t, n, cert, serial)
			}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			cert := nodetest.Gateway(t, n, tenant, tc.serial)
			disconnected := mqtt5Session(t, n, cert, tc.serial)
			tc.end(t, tc.serial, cert)
			select {
			case d := <-disconnected:
				if d.ReasonCode != tc.code {
					t.Errorf("DISCONNECT reason code 0x%02x, want 0x%02x", d.ReasonCode, tc.code)
				}
				if d.Properties == nil || !strings.Contains(d.Properties.ReasonString, tc.reason) {
					t.Errorf("DISCONNECT properties %+v: want a reason string naming %q", d.Properties, tc.reason)
				}
			case <-time.After(10 * time.Second * tu.Slowdown()):
				t.Fatal("no DISCONNECT from the server")
			}
			tu.Eventually(t, 10*time.Second, 50*time.Millisecond, func() error {
				page, err := api.Client.ListAudit(ctx, tenant, client.AuditQuery{Action: "ingest.connection.disconnect", Target: "gateway:" + tc.serial, Oldest: true})
				if err != nil {
					return err
				}
				var reasons []string
				for _, e := range page.Items {
					if e.Detail["reason"] == tc.reason {
						return nil
					}
					reasons = append(reasons, e.Detail["reason"])
				}
				return fmt.Errorf("disconnect reasons in the audit log: %q, want %q", reasons, tc.reason)
			})
			if tc.refusal == "" {
				return
			}
			nodetest.Handshake(n.MQTTAddr(), nodetest.ClientTLS(t, n, cert))
			tu.Eventually(t, 10*time.Second, 50*time.Millisecond, func() error {
				mu.Lock()
				defer mu.Unlock()
				for _, r := range refusals {
					if r["gateway_id"] == tc.serial {
						if r["tenant_id"] != tenant || r["reason"] != tc.refusal {
							return fmt.Errorf("refusal logged as %v, want tenant %s, reason %s", r, tenant, tc.refusal)
						}
						return nil
					}
				}
				return errors.New("no refusal logged that names the gateway")
			})
		})
	}
}

package node_test

import (
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io/fs"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/paho"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/iotransit/iotransit/client"
	"github.com/iotransit/iotransit/internal/backbone/names"
	"github.com/iotransit/iotransit/internal/kms"
	"github.com/iotransit/iotransit/internal/node"
	"github.com/iotransit/iotransit/internal/store"
	tu "github.com/iotransit/iotransit/internal/testutil"
	"github.com/iotransit/iotransit/internal/testutil/nodetest"
)

// sealedMessage is one stored message as JetStream holds it: its sealed
// body and the associated data it was sealed with.
type sealedMessage struct {
	data []byte
	aad  []byte
}

// sealedMessages reads every message of the tenant's message stream raw.
func sealedMessages(t *testing.T, n *node.Node, tenant string) []sealedMessage {
	t.Helper()
	ctx := context.Background()
	st, err := n.JetStream().Stream(ctx, names.MessageStream(tenant))
	if err != nil {
		t.Fatal(err)
	}
	info, err := st.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	var out []sealedMessage
	for seq := info.State.FirstSeq; seq <= info.State.LastSeq && info.State.Msgs > 0; seq++ {
		m, err := st.GetMsg(ctx, seq)
		if err != nil {
			t.Fatalf("message %d: %v", seq, err)
		}
		out = append(out, sealedMessage{data: m.Data, aad: []byte(store.ContentID(m.Header))})
	}
	return out
}

// copyStreamFiles copies the files of the JetStream store under dir whose
// path names stream to the directory aside and returns their contents
// joined.
func copyStreamFiles(t *testing.T, dir, stream, aside string) []byte {
	t.Helper()
	var all []byte
	copied := 0
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() || !strings.Contains(p, string(filepath.Separator)+stream+string(filepath.Separator)) {
			return err
		}
		b, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		copied++
		all = append(all, b...)
		return os.WriteFile(filepath.Join(aside, fmt.Sprintf("%d-%s", copied, d.Name())), b, 0o600)
	})
	if err != nil {
		t.Fatal(err)
	}
	if copied == 0 {
		t.Fatalf("no file of stream %s under %s", stream, dir)
	}
	return all
}

// problemCode returns the stable code of an API refusal ("" for none).
func problemCode(err error) string {
	var p *client.Problem
	if errors.As(err, &p) {
		return p.Code
	}
	return ""
}

// TestTenantDeleteShredsDataAndEndsAccess deletes a tenant with stored
// messages, a connected gateway and an API key: copies of its message
// stream files taken before no longer open with any keyring, its gateway
// is disconnected and refused, its key refused, its streams and buckets
// gone, its id reserved; the deletion is in _system's audit log, which
// still verifies; another tenant keeps publishing and reading untouched.
func TestTenantDeleteShredsDataAndEndsAccess(t *testing.T) {
	const (
		doomed, doomedGW = "doomed", "TSGW06DOO00000001"
		keeper, keeperGW = "keeper", "TSGW06KEE00000001"
	)
	var dataDir string
	n := nodetest.Start(t, func(c *node.Config) { dataDir = c.DataDir })
	api := nodetest.NewAPI(t, n)
	ctx := context.Background()
	doomedCert := nodetest.Gateway(t, n, doomed, doomedGW)
	keeperCert := nodetest.Gateway(t, n, keeper, keeperGW)
	upload := func(cert *tls.Certificate, serial string, ts int64) {
		t.Helper()
		up, err := nodetest.Dial(t, n, cert, serial, nil)
		if err != nil {
			t.Fatal(err)
		}
		defer up.Close()
		pctx, cancel := context.WithTimeout(ctx, 10*time.Second*tu.Slowdown())
		defer cancel()
		if res, err := up.Publish(pctx, []byte(tu.Thingsee("TSEN01ABC12345678", ts, 21.5)), 1); err != nil || res.ReasonCode != 0 {
			t.Fatalf("publish of %s: %v 0x%02x %s", serial, err, res.ReasonCode, res.Reason)
		}
	}
	for i := range 5 {
		upload(doomedCert, doomedGW, 1700000000+int64(i))
	}
	upload(keeperCert, keeperGW, 1700000000)
	key, err := api.Client.CreateAPIKey(ctx, doomed, client.CreateAPIKeyRequest{Name: "reader", Scopes: []string{"messages:read"}})
	if err != nil {
		t.Fatal(err)
	}
	tenantAPI := api.Client.WithCredential(key.Key)
	// A re-encryption job of the tenant leaves its record, which the
	// deletion must take too.
	if _, err := api.Client.RotateKMSKey(ctx, doomed); err != nil {
		t.Fatal(err)
	}
	if _, err := api.Client.ReencryptKMS(ctx, doomed); err != nil {
		t.Fatal(err)
	}
	if _, err := tenantAPI.ListMessages(ctx, doomed, client.MessageQuery{Limit: 10}); err != nil {
		t.Fatalf("the tenant's key before the deletion: %v", err)
	}

	// What is left on disk: every sealed message is in the copied files,
	// and opens now (the check below can fail).
	keys := node.Keyring(n)
	sealed := sealedMessages(t, n, doomed)
	if len(sealed) != 5 {
		t.Fatalf("stored %d messages, want 5", len(sealed))
	}
	// JetStream writes a stored message to its block file within moments.
	aside := t.TempDir()
	tu.Eventually(t, 10*time.Second, 50*time.Millisecond, func() error {
		copies := copyStreamFiles(t, filepath.Join(dataDir, "jetstream"), names.MessageStream(doomed), aside)
		for i, m := range sealed {
			if !bytes.Contains(copies, m.data) {
				return fmt.Errorf("sealed message %d is not in the copied stream files", i)
			}
		}
		return nil
	})
	for i, m := range sealed {
		if _, err := keys.Open(ctx, doomed, m.data, m.aad); err != nil {
			t.Fatalf("message %d does not open before the deletion: %v", i, err)
		}
	}

	disconnected := mqtt5Session(t, n, doomedCert, doomedGW)
	tomb, err := api.Client.DeleteTenant(ctx, doomed, doomed)
	if err != nil {
		t.Fatal(err)
	}
	if tomb.State != client.TenantDeleted || tomb.DeletedBy != "operator" || tomb.DeletedAt == nil {
		t.Errorf("tombstone %+v: want state deleted, by operator, with a time", tomb)
	}

	t.Run("gateway disconnected and refused", func(t *testing.T) {
		select {
		case d := <-disconnected:
			if d.ReasonCode != 0x98 || d.Properties == nil || !strings.Contains(d.Properties.ReasonString, "tenant deleted") {
				t.Errorf("DISCONNECT 0x%02x %+v: want 0x98 naming the tenant's deletion", d.ReasonCode, d.Properties)
			}
		case <-time.After(10 * time.Second * tu.Slowdown()):
			t.Fatal("no DISCONNECT")
		}
		if up, err := nodetest.Dial(t, n, doomedCert, doomedGW, nil); err == nil {
			up.Close()
			t.Fatal("the deleted tenant's gateway connected again")
		}
	})
	t.Run("API key refused", func(t *testing.T) {
		_, err := tenantAPI.ListMessages(ctx, doomed, client.MessageQuery{Limit: 10})
		var p *client.Problem
		if !errors.As(err, &p) || p.Status != http.StatusUnauthorized {
			t.Fatalf("the deleted tenant's key: %v, want 401", err)
		}
	})
	t.Run("copies do not open", func(t *testing.T) {
		fresh := kms.NewKeyring(keys.Store(), keys.Root())
		for i, m := range sealed {
			for name, k := range map[string]*kms.Keyring{"node's": keys, "fresh": fresh} {
				if b, err := k.Open(ctx, doomed, m.data, m.aad); err == nil {
					t.Errorf("message %d opened with the %s keyring after the deletion: %q", i, name, b)
				}
			}
		}
	})
	t.Run("streams and buckets gone", func(t *testing.T) {
		js := n.JetStream()
		for _, s := range []string{names.MessageStream(doomed), names.RejectedStream(doomed), names.AuditStream(doomed), names.AuditIndexStream(doomed)} {
			if _, err := js.Stream(ctx, s); !errors.Is(err, jetstream.ErrStreamNotFound) {
				t.Errorf("stream %s: %v, want not found", s, err)
			}
		}
		for _, b := range []string{names.GatewaysBucket(doomed), names.CredentialsBucket(doomed), names.IntegrationsBucket(doomed), names.GatewayStateBucket(doomed)} {
			if _, err := js.KeyValue(ctx, b); !errors.Is(err, jetstream.ErrBucketNotFound) {
				t.Errorf("bucket %s: %v, want not found", b, err)
			}
		}
		serials, err := js.KeyValue(ctx, names.SerialsBucket)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := serials.Get(ctx, doomedGW); !errors.Is(err, jetstream.ErrKeyNotFound) {
			t.Errorf("serial %s still reserved: %v", doomedGW, err)
		}
		jobs, err := js.KeyValue(ctx, names.ReencryptBucket)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := jobs.Get(ctx, doomed); !errors.Is(err, jetstream.ErrKeyNotFound) {
			t.Errorf("the tenant's re-encryption job record: %v, want gone", err)
		}
	})
	t.Run("id reserved and hidden", func(t *testing.T) {
		if _, err := api.Client.CreateTenant(ctx, doomed); problemCode(err) != "registry.tenant_deleted" {
			t.Errorf("re-create: %v, want registry.tenant_deleted", err)
		}
		if _, err := api.Client.GetTenant(ctx, doomed); problemCode(err) != "registry.tenant_not_found" {
			t.Errorf("get: %v, want registry.tenant_not_found", err)
		}
		if _, err := api.Client.DeleteTenant(ctx, doomed, doomed); problemCode(err) != "registry.tenant_deleted" {
			t.Errorf("delete again: %v, want registry.tenant_deleted", err)
		}
		gone, err := api.Client.ListDeletedTenants(ctx)
		if err != nil || len(gone) != 1 || gone[0].ID != doomed || gone[0].State != client.TenantDeleted {
			t.Errorf("deleted tenants %+v, %v: want %s deleted", gone, err, doomed)
		}
		live, err := api.Client.ListTenants(ctx)
		if err != nil {
			t.Fatal(err)
		}
		for _, tn := range live {
			if tn.ID == doomed {
				t.Errorf("the deleted tenant is listed among the live ones")
			}
		}
	})
	t.Run("audited in _system", func(t *testing.T) {
		page, err := api.Client.ListAudit(ctx, "_system", client.AuditQuery{Target: "tenant:" + doomed, Oldest: true})
		if err != nil {
			t.Fatal(err)
		}
		var found bool
		for _, e := range page.Items {
			if e.Action == "registry.tenant.delete" && e.Outcome == "ok" && e.Actor == "operator" {
				found = true
			}
		}
		if !found {
			t.Errorf("no registry.tenant.delete entry by the operator in _system: %+v", page.Items)
		}
		ahead, err := api.Client.ListAudit(ctx, "_system", client.AuditQuery{Action: "api.change", Target: "route:DELETE /v1/tenants/{tenant}"})
		if err != nil || len(ahead.Items) == 0 {
			t.Errorf("no write-ahead entry in _system: %v", err)
		}
		rep, err := api.Client.VerifyAudit(ctx, "_system")
		if err != nil || !rep.OK {
			t.Errorf("verify _system: %+v, %v", rep, err)
		}
	})
	t.Run("other tenant untouched", func(t *testing.T) {
		upload(keeperCert, keeperGW, 1700000060)
		msgs := api.Messages(keeper, 10)
		if len(msgs) != 2 {
			t.Fatalf("keeper reads %d messages, want 2", len(msgs))
		}
		if rep, err := api.Client.VerifyAudit(ctx, keeper); err != nil || !rep.OK {
			t.Errorf("verify keeper: %+v, %v", rep, err)
		}
	})
}

// TestTenantDeleteRefusals: the confirmation, the operator's role, the
// kind of credential and the tenant are checked before anything is
// deleted, each with its stable code.
func TestTenantDeleteRefusals(t *testing.T) {
	n := nodetest.Start(t, nil)
	api := nodetest.NewAPI(t, n)
	ctx := context.Background()
	nodetest.Gateway(t, n, "acme", "TSGW06ACM00000001")
	key, err := api.Client.CreateAPIKey(ctx, "acme", client.CreateAPIKeyRequest{Name: "admin", Scopes: []string{"gateways:write", "keys:write"}})
	if err != nil {
		t.Fatal(err)
	}
	asRole := func(role string) *client.Client {
		op, err := api.Client.CreateOperator(ctx, client.CreateOperatorRequest{Name: "op-" + strings.ReplaceAll(role, ":", "-"), Role: role})
		if err != nil {
			t.Fatal(err)
		}
		return api.Client.WithCredential(op.Key)
	}
	tests := []struct {
		name    string
		c       *client.Client
		tenant  string
		confirm string
		code    string
	}{
		{name: "missing confirmation", c: api.Client, tenant: "acme", confirm: "", code: "api.tenant_delete_unconfirmed"},
		{name: "wrong confirmation", c: api.Client, tenant: "acme", confirm: "acme2", code: "api.tenant_delete_unconfirmed"},
		{name: "provisioning operator", c: asRole(client.RoleProvisioning), tenant: "acme", confirm: "acme", code: "api.operator_role"},
		{name: "readonly operator", c: asRole(client.RoleReadonly), tenant: "acme", confirm: "acme", code: "api.operator_role"},
		{name: "metrics operator", c: asRole(client.RoleMetrics), tenant: "acme", confirm: "acme", code: "api.operator_role"},
		{name: "tenant credential", c: api.Client.WithCredential(key.Key), tenant: "acme", confirm: "acme", code: "api.operator_only"},
		{name: "platform tenant", c: api.Client, tenant: "_system", confirm: "_system", code: "api.tenant_delete_system"},
		{name: "unknown tenant", c: api.Client, tenant: "nobody", confirm: "nobody", code: "registry.tenant_not_found"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if _, err := tc.c.DeleteTenant(ctx, tc.tenant, tc.confirm); problemCode(err) != tc.code {
				t.Errorf("got %v, want %s", err, tc.code)
			}
		})
	}
	// An empty body is a missing confirmation too.
	if r := api.Do(http.MethodDelete, "/v1/tenants/acme", api.Key(), nil); r.Status != http.StatusBadRequest || !strings.Contains(string(r.Body), "api.tenant_delete_unconfirmed") {
		t.Errorf("no body: %d %s", r.Status, r.Body)
	}
	if _, err := api.Client.GetTenant(ctx, "acme"); err != nil {
		t.Fatalf("a refused deletion deleted: %v", err)
	}
	if _, ok := n.Registry().Gateway("acme", "TSGW06ACM00000001"); !ok {
		t.Fatal("a refused deletion removed the gateway")
	}
	// An admin operator may.
	if _, err := asRole(client.RoleAdmin).DeleteTenant(ctx, "acme", "acme"); err != nil {
		t.Fatalf("operator:admin: %v", err)
	}
	page, err := api.Client.ListAudit(ctx, "_system", client.AuditQuery{Action: "registry.tenant.delete", Target: "tenant:acme"})
	if err != nil || len(page.Items) == 0 || page.Items[0].Actor != "operator:op-operator-admin" {
		t.Errorf("audit of the admin's deletion: %+v, %v", page, err)
	}
}

// TestTenantDeleteResumes: a deletion that fails midway has already
// refused the tenant everywhere; sending it again finishes it, and a node
// started on the data of one cut short finishes it on its own.
func TestTenantDeleteResumes(t *testing.T) {
	for _, step := range []string{"shred", "streams", "shared", "buckets", "tombstone"} {
		t.Run(step, func(t *testing.T) {
			var dir string
			n := nodetest.Start(t, func(c *node.Config) { dir = c.DataDir })
			api := nodetest.NewAPI(t, n)
			ctx := context.Background()
			nodetest.Gateway(t, n, "acme", "TSGW06ACM00000001")
			injected := errors.New("injected failure")
			node.SetTenantDeleteHook(n, func(s string) error {
				if s == step {
					return injected
				}
				return nil
			})
			if _, err := api.Client.DeleteTenant(ctx, "acme", "acme"); err == nil {
				t.Fatal("the deletion did not fail at the injected step")
			}
			if _, err := api.Client.GetTenant(ctx, "acme"); problemCode(err) != "registry.tenant_not_found" {
				t.Errorf("the tenant after a failed deletion: %v, want not found", err)
			}
			gone, err := api.Client.ListDeletedTenants(ctx)
			if err != nil || len(gone) != 1 || gone[0].State != client.TenantDeleting {
				t.Fatalf("deleted tenants %+v, %v: want acme deleting", gone, err)
			}
			if step == "buckets" { // resumed by a node started on the same data
				n.Close()
				n = nodetest.Start(t, func(c *node.Config) { c.DataDir = dir })
				api = nodetest.NewAPI(t, n)
				tu.Eventually(t, 30*time.Second, 100*time.Millisecond, func() error {
					gone, err := api.Client.ListDeletedTenants(ctx)
					if err != nil {
						return err
					}
					if len(gone) != 1 || gone[0].State != client.TenantDeleted {
						return fmt.Errorf("deleted tenants %+v: want acme deleted", gone)
					}
					return nil
				})
			} else {
				node.SetTenantDeleteHook(n, nil)
				tomb, err := api.Client.DeleteTenant(ctx, "acme", "acme")
				if err != nil || tomb.State != client.TenantDeleted {
					t.Fatalf("the deletion sent again: %+v, %v", tomb, err)
				}
			}
			js := n.JetStream()
			if _, err := js.Stream(ctx, names.MessageStream("acme")); !errors.Is(err, jetstream.ErrStreamNotFound) {
				t.Errorf("message stream: %v, want not found", err)
			}
			if _, err := js.KeyValue(ctx, names.GatewaysBucket("acme")); !errors.Is(err, jetstream.ErrBucketNotFound) {
				t.Errorf("gateways bucket: %v, want not found", err)
			}
			if _, err := node.Keyring(n).Seal(ctx, "acme", []byte("x"), nil); err == nil {
				t.Error("the deleted tenant's key still seals")
			}
		})
	}
}

// TestTenantDeleteReachesOtherNodes: two nodes share one NATS; a tenant
// deleted through one has its gateway's session on the other ended within
// about a second, and its reconnect there refused.
func TestTenantDeleteReachesOtherNodes(t *testing.T) {
	a, b := nodetest.StartPair(t, nil)
	ctx := context.Background()
	if _, err := a.CreateTenant(ctx, "acme"); err != nil {
		t.Fatal(err)
	}
	const serial = "TSGW06ACM00000001"
	cert := nodetest.Gateway(t, a, "acme", serial)
	tu.Eventually(t, 10*time.Second, 20*time.Millisecond, func() error {
		if _, ok := b.Registry().Gateway("acme", serial); !ok {
			return errors.New("node b does not know the gateway yet")
		}
		return nil
	})
	// An OAuth2 token made through a, used on b only after the deletion
	// (b never read the tenant's credentials).
	apiA := nodetest.NewAPI(t, a)
	oc, err := apiA.Client.CreateOAuth2Client(ctx, "acme", client.CreateOAuth2ClientRequest{Name: "reader", Scopes: []string{"gateways:read"}})
	if err != nil {
		t.Fatal(err)
	}
	tok, err := apiA.Client.Token(ctx, oc.ID, oc.ClientSecret)
	if err != nil {
		t.Fatal(err)
	}
	ended := mqtt5Session(t, b, cert, serial)
	type end struct {
		d  *paho.Disconnect
		at time.Time
	}
	got := make(chan end, 1)
	go func() {
		select {
		case d := <-ended:
			got <- end{d, time.Now()}
		case <-time.After(30 * time.Second):
			close(got)
		}
	}()
	start := time.Now()
	if _, err := nodetest.NewAPI(t, a).Client.DeleteTenant(ctx, "acme", "acme"); err != nil {
		t.Fatal(err)
	}
	e, ok := <-got
	if !ok {
		t.Fatal("node b did not end the deleted tenant's session")
	}
	if e.d.ReasonCode != 0x98 {
		t.Errorf("DISCONNECT 0x%02x, want 0x98", e.d.ReasonCode)
	}
	if took := e.at.Sub(start); took > time.Second*tu.Slowdown() {
		t.Errorf("node b ended the session %v after the deletion started, want about a second at most", took)
	}
	if up, err := nodetest.Dial(t, b, cert, serial, nil); err == nil {
		up.Close()
		t.Fatal("node b let the deleted tenant's gateway connect again")
	}
	if _, ok := b.Registry().Tenant("acme"); ok {
		t.Error("node b still knows the tenant")
	}
	_, err = nodetest.NewAPI(t, b).Client.WithCredential(tok.AccessToken).GetTenant(ctx, "acme")
	var p *client.Problem
	if !errors.As(err, &p) || p.Status != http.StatusUnauthorized {
		t.Errorf("the deleted tenant's token on node b: %v, want 401", err)
	}
	if _, err := b.JetStream().KeyValue(ctx, names.CredentialsBucket("acme")); !errors.Is(err, jetstream.ErrBucketNotFound) {
		t.Errorf("credentials bucket after the token's use: %v, want not found", err)
	}
}

// TestTenantDeleteOfDevTenant: a dev node whose tenant dev was deleted
// starts again (without it: its id stays reserved).
func TestTenantDeleteOfDevTenant(t *testing.T) {
	var dir string
	n := nodetest.Start(t, func(c *node.Config) { dir = c.DataDir })
	if _, err := nodetest.NewAPI(t, n).Client.DeleteTenant(context.Background(), node.DevTenant, node.DevTenant); err != nil {
		t.Fatal(err)
	}
	n.Close()
	n = nodetest.Start(t, func(c *node.Config) { c.DataDir = dir })
	if _, ok := n.Registry().Tenant(node.DevTenant); ok {
		t.Error("the deleted dev tenant is back")
	}
}

// TestTenantDeleteStopsForwarders: an integration of the tenant that keeps
// retrying a failing endpoint stops with the deletion, and its lease is
// gone.
func TestTenantDeleteStopsForwarders(t *testing.T) {
	n := nodetest.Start(t, func(c *node.Config) {
		c.Forward.RetryBase, c.Forward.RetryMax = 10*time.Millisecond, 20*time.Millisecond
	})
	api := nodetest.NewAPI(t, n)
	ctx := context.Background()
	cert := nodetest.Gateway(t, n, "acme", "TSGW06ACM00000001")
	rcv := tu.NewReceiver(t)
	rcv.Handle(func(w http.ResponseWriter, _ *http.Request, _ []byte) bool {
		w.WriteHeader(http.StatusInternalServerError)
		return true
	})
	if _, err := api.Client.CreateIntegration(ctx, "acme", client.Integration{Name: "failing", Type: "webhook",
		Webhook: &client.WebhookConfig{URL: rcv.URL, CAPEM: rcv.CAPEM}}); err != nil {
		t.Fatal(err)
	}
	up, err := nodetest.Dial(t, n, cert, "TSGW06ACM00000001", nil)
	if err != nil {
		t.Fatal(err)
	}
	if res, err := up.Publish(ctx, []byte(tu.Thingsee("TSEN01ABC12345678", 1700000000, 20)), 1); err != nil || res.ReasonCode != 0 {
		t.Fatalf("publish: %v 0x%02x", err, res.ReasonCode)
	}
	tu.Eventually(t, 30*time.Second, 20*time.Millisecond, func() error {
		if got := len(rcv.Got()); got < 3 {
			return fmt.Errorf("%d attempts so far", got)
		}
		return nil
	})
	if _, err := api.Client.DeleteTenant(ctx, "acme", "acme"); err != nil {
		t.Fatal(err)
	}
	after := len(rcv.Got())
	leases, err := n.JetStream().KeyValue(ctx, names.LeasesBucket)
	if err != nil {
		t.Fatal(err)
	}
	// Retries came every few milliseconds: a forwarder still running
	// would have tried many times within this second.
	deadline := time.Now().Add(time.Second * tu.Slowdown())
	for time.Now().Before(deadline) {
		if got := len(rcv.Got()); got > after+1 { // one attempt may have been in flight
			t.Fatalf("%d delivery attempts after the deletion", got-after)
		}
		time.Sleep(50 * time.Millisecond)
	}
	keys, err := leases.ListKeysFiltered(ctx, "acme.>")
	if err != nil {
		t.Fatal(err)
	}
	for k := range keys.Keys() {
		t.Errorf("lease %s left after the deletion", k)
	}
}

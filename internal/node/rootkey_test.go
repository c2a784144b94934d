package node_test

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/iotransit/iotransit/client"
	"github.com/iotransit/iotransit/internal/kms"
	"github.com/iotransit/iotransit/internal/node"
	"github.com/iotransit/iotransit/internal/testutil"
	"github.com/iotransit/iotransit/internal/testutil/nodetest"
)

// startAt starts a dev node on dir with the root key settings of kcfg.
func startAt(t *testing.T, dir string, kcfg node.KMSConfig) (*node.Node, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second*testutil.Slowdown())
	defer cancel()
	n, err := node.Start(ctx, node.Config{
		DataDir: dir, MQTTAddr: "127.0.0.1:0", APIAddr: "127.0.0.1:0", Dev: true,
		Logger: testutil.Logger(t), KMS: kcfg,
	})
	if err == nil {
		t.Cleanup(n.Close)
	}
	return n, err
}

func mustStartAt(t *testing.T, dir string, kcfg node.KMSConfig) *node.Node {
	t.Helper()
	n, err := startAt(t, dir, kcfg)
	if err != nil {
		t.Fatalf("start node: %v", err)
	}
	return n
}

// tenantData is what a test writes through a node and reads back after a
// restart: messages, an integration whose secret reaches its endpoint, and
// a tenant CA that issues certificates.
type tenantData struct {
	tenant      string
	serial      string
	temps       []float64 // the messages' temperatures: markers
	secret      string    // the integration's auth header value
	integration string
	receiver    *testutil.Receiver
}

// writeData uploads messages with the marker temperatures through a gateway
// of a new tenant and makes a webhook integration holding secret.
func writeData(t *testing.T, n *node.Node, tenant string, temps []float64, secret string) *tenantData {
	t.Helper()
	ctx := context.Background()
	api := nodetest.NewAPI(t, n).Client
	if _, err := api.CreateTenant(ctx, tenant); err != nil {
		t.Fatal(err)
	}
	d := &tenantData{tenant: tenant, serial: "TSGW06KMS" + fmt.Sprintf("%08d", len(tenant)), temps: temps, secret: secret, receiver: testutil.NewReceiver(t)}
	sendMessages(t, n, d, temps)
	in, err := api.CreateIntegration(ctx, tenant, client.Integration{Name: "hook", Type: "webhook", Webhook: &client.WebhookConfig{
		URL: d.receiver.URL, CAPEM: d.receiver.CAPEM,
		Auth: &client.WebhookAuth{Kind: "apikey", HeaderName: "X-Api-Key", HeaderValue: secret},
	}})
	if err != nil {
		t.Fatal(err)
	}
	d.integration = in.ID
	return d
}

// sendMessages uploads one message per temperature through the tenant's
// gateway (registered and certified on first use).
func sendMessages(t *testing.T, n *node.Node, d *tenantData, temps []float64) {
	t.Helper()
	cert := nodetest.Gateway(t, n, d.tenant, d.serial)
	up, err := nodetest.Dial(t, n, cert, d.serial, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer up.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second*testutil.Slowdown())
	defer cancel()
	base := time.Now().Add(-2 * time.Hour).Unix()
	for i, temp := range temps {
		res, err := up.Publish(ctx, []byte(testutil.Thingsee("TSPR04KMS00000001", base+int64(i)+int64(temp*100), temp)), 1)
		if err != nil || res.ReasonCode != 0 {
			t.Fatalf("publish: %v, reason 0x%02x %s", err, res.ReasonCode, res.Reason)
		}
	}
}

// checkData reads everything of d back through n: the messages, the
// integration's secret (a test delivery carries it), and the tenant's CA
// (it issues a certificate).
func checkData(t *testing.T, n *node.Node, d *tenantData) {
	t.Helper()
	ctx := context.Background()
	a := nodetest.NewAPI(t, n)
	msgs := a.Messages(d.tenant, 1000)
	for _, temp := range d.temps {
		found := false
		for _, m := range msgs {
			found = found || strings.Contains(string(m.Message), fmt.Sprintf(`"temp":%g`, temp))
		}
		if !found {
			t.Errorf("%s: the message with temp %g did not read back (%d messages)", d.tenant, temp, len(msgs))
		}
	}
	res, err := a.Client.TestIntegration(ctx, d.tenant, d.integration)
	if err != nil {
		t.Fatalf("%s: test delivery: %v", d.tenant, err)
	}
	// The test delivery by its webhook-id: other integrations of the
	// tenant deliver to the same receiver meanwhile.
	i := slices.IndexFunc(d.receiver.Got(), func(r testutil.Delivery) bool { return r.Header.Get("webhook-id") == res.BatchID })
	if i < 0 || d.receiver.Got()[i].Header.Get("X-Api-Key") != d.secret {
		t.Fatalf("%s: the test delivery (%+v) did not carry the integration's secret", d.tenant, res)
	}
	nodetest.Gateway(t, n, d.tenant, "TSGW06KMC"+fmt.Sprintf("%08d", time.Now().UnixNano()%1e8)) // the CA key signs
}

// TestNodeRootKeyOutsideDataDirGuardsTheData: a node whose root key file
// lives outside its data directory refuses to start with another root key
// (naming both root key ids) and with the file missing (making no new
// one), and in both cases leaves the data as it was: started again with the
// right file, everything reads back.
func TestNodeRootKeyOutsideDataDirGuardsTheData(t *testing.T) {
	dir, keyDir := t.TempDir(), t.TempDir()
	right := node.KMSConfig{RootKeyFile: filepath.Join(keyDir, "root.key")}
	n := mustStartAt(t, dir, right)
	if _, err := os.Stat(filepath.Join(dir, node.RootKeyFile)); !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("a root key file was made in the data dir: %v", err)
	}
	d := writeData(t, n, "acme", []float64{21.25, 22.5}, "kms-secret-outside")
	st, err := nodetest.NewAPI(t, n).Client.KMSStatus(context.Background(), "acme")
	if err != nil {
		t.Fatal(err)
	}
	rightID := st.RootKeyID
	n.Close()

	otherFile := filepath.Join(keyDir, "other.key")
	if _, err := kms.OpenFileRoot(otherFile, true); err != nil {
		t.Fatal(err)
	}
	other, _ := kms.OpenFileRoot(otherFile, false)
	missing := filepath.Join(keyDir, "missing.key")
	for _, tc := range []struct {
		name    string
		cfg     node.KMSConfig
		wantErr error
		names   []string
	}{
		{name: "another root key", cfg: node.KMSConfig{RootKeyFile: otherFile}, wantErr: kms.ErrWrongRoot, names: []string{rightID, other.ID()}},
		{name: "missing root key file", cfg: node.KMSConfig{RootKeyFile: missing}, wantErr: kms.ErrNoRootKey, names: []string{missing, rightID}},
		{name: "default file in the data dir (absent)", cfg: node.KMSConfig{}, wantErr: kms.ErrNoRootKey, names: []string{rightID}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := startAt(t, dir, tc.cfg)
			if !errors.Is(err, tc.wantErr) {
				t.Fatalf("start: %v, want %v", err, tc.wantErr)
			}
			t.Logf("refused: %v", err)
			for _, s := range tc.names {
				if !strings.Contains(err.Error(), s) {
					t.Errorf("the error %q does not name %s", err, s)
				}
			}
			for _, f := range []string{missing, filepath.Join(dir, node.RootKeyFile)} {
				if _, err := os.Stat(f); !errors.Is(err, fs.ErrNotExist) {
					t.Errorf("%s was made", f)
				}
			}
		})
	}
	n = mustStartAt(t, dir, right)
	checkData(t, n, d)
}

// TestNodeRotationKeepsDataReadable: through the API, a rotation makes a new
// data key version (audited); messages and integration secrets written
// before and after it read back, also after a restart.
func TestNodeRotationKeepsDataReadable(t *testing.T) {
	dir := t.TempDir()
	n := mustStartAt(t, dir, node.KMSConfig{})
	ctx := context.Background()
	before := writeData(t, n, "acme", []float64{31.25}, "kms-secret-before")
	api := nodetest.NewAPI(t, n).Client
	st, err := api.RotateKMSKey(ctx, "acme")
	if err != nil {
		t.Fatal(err)
	}
	if st.CurrentVersion != 2 || len(st.Versions) != 2 || !st.Rotated {
		t.Fatalf("after rotate: %+v", st)
	}
	for _, v := range st.Versions {
		if v.CreatedAt.IsZero() || v.RootKeyID != st.RootKeyID || !strings.HasPrefix(v.RootKeyID, "file:") {
			t.Errorf("version %+v", v)
		}
	}
	sendMessages(t, n, before, []float64{32.5})
	before.temps = append(before.temps, 32.5)
	in, err := api.CreateIntegration(ctx, "acme", client.Integration{Name: "after", Type: "webhook", Webhook: &client.WebhookConfig{
		URL: before.receiver.URL, CAPEM: before.receiver.CAPEM,
		Auth: &client.WebhookAuth{Kind: "apikey", HeaderName: "X-Api-Key", HeaderValue: "kms-secret-after"},
	}})
	if err != nil {
		t.Fatal(err)
	}
	after := *before
	after.integration, after.secret = in.ID, "kms-secret-after"
	audit, err := api.ListAudit(ctx, "acme", client.AuditQuery{})
	if err != nil {
		t.Fatal(err)
	}
	found := false
	for _, e := range audit.Items {
		found = found || (e.Action == "kms.key.rotate" && e.Outcome == "ok" && e.Detail["version"] == "2")
	}
	if !found {
		t.Error("the rotation is not in the tenant's audit log")
	}
	for _, restart := range []bool{false, true} {
		if restart {
			n.Close()
			n = mustStartAt(t, dir, node.KMSConfig{})
		}
		checkData(t, n, before)
		checkData(t, n, &after)
	}
	// A tenant credential needs keys:read to see the versions and
	// keys:write to rotate; no answer holds key material.
	a := nodetest.NewAPI(t, n)
	if r := a.Do(http.MethodGet, "/v1/tenants/nobody/kms", a.Key(), nil); r.Status != http.StatusNotFound {
		t.Errorf("status of an unknown tenant: %d", r.Status)
	}
	reader, err := a.Client.CreateAPIKey(ctx, "acme", client.CreateAPIKeyRequest{Scopes: []string{"keys:read"}})
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name, method, path string
		want               int
	}{
		{name: "status with keys:read", method: http.MethodGet, path: "/v1/tenants/acme/kms", want: http.StatusOK},
		{name: "rotate without keys:write", method: http.MethodPost, path: "/v1/tenants/acme/kms/rotate", want: http.StatusForbidden},
		// Another tenant answers as an unknown one.
		{name: "another tenant", method: http.MethodGet, path: "/v1/tenants/dev/kms", want: http.StatusNotFound},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := a.Do(tc.method, tc.path, reader.Key, nil)
			if r.Status != tc.want {
				t.Fatalf("%s %s: %d %s, want %d", tc.method, tc.path, r.Status, r.Body, tc.want)
			}
			if r.Status == http.StatusOK && !strings.Contains(string(r.Body), `"currentVersion":2`) {
				t.Fatalf("status: %s", r.Body)
			}
		})
	}
}

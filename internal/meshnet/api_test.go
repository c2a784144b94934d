package meshnet_test

import (
	"bytes"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/iotransit/iotransit/client"
	"github.com/iotransit/iotransit/internal/backbone/names"
	"github.com/iotransit/iotransit/internal/gwproto"
	"github.com/iotransit/iotransit/internal/mesh"
	"github.com/iotransit/iotransit/internal/node"
	tu "github.com/iotransit/iotransit/internal/testutil"
	"github.com/iotransit/iotransit/internal/testutil/nodetest"
)

// logBuffer keeps everything a node logs.
type logBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (l *logBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.buf.Write(p)
}

func (l *logBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.buf.String()
}

// keyForms are the ways a key could show: raw, base64 (std and URL), hex.
func keyForms(k []byte) []string {
	return []string{string(k), base64.StdEncoding.EncodeToString(k), base64.RawStdEncoding.EncodeToString(k),
		base64.RawURLEncoding.EncodeToString(k), hex.EncodeToString(k), strings.ToUpper(hex.EncodeToString(k))}
}

// apiKey makes a key of tenant holding scopes and returns a client with it.
func apiKey(t *testing.T, op *client.Client, tenant string, scopes ...string) *client.Client {
	t.Helper()
	k, err := op.CreateAPIKey(ctx(t), tenant, client.CreateAPIKeyRequest{Scopes: scopes})
	if err != nil {
		t.Fatal(err)
	}
	return op.WithCredential(k.Key)
}

func wantProblem(t *testing.T, err error, status int, code string) {
	t.Helper()
	p, ok := err.(*client.Problem)
	if !ok || p.Status != status || p.Code != code {
		t.Errorf("error %v, want %d %s", err, status, code)
	}
}

func TestMeshAPIScopesAuditAndSecrecy(t *testing.T) {
	logs := &logBuffer{}
	n := nodetest.Start(t, func(c *node.Config) {
		c.Logger = slog.New(slog.NewJSONHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	})
	op := nodetest.NewAPI(t, n).Client
	for _, id := range []string{tenant, other} {
		if _, err := op.CreateTenant(ctx(t), id); err != nil {
			t.Fatal(err)
		}
	}
	writer := apiKey(t, op, tenant, client.ScopeMeshRead, client.ScopeMeshWrite)
	reader := apiKey(t, op, tenant, client.ScopeMeshRead)
	noMesh := apiKey(t, op, tenant, client.ScopeGatewaysRead, client.ScopeGatewaysWrite)
	foreign := apiKey(t, op, other, client.ScopeMeshRead, client.ScopeMeshWrite)

	// Scopes: mesh:write makes and changes, mesh:read only reads.
	_, err := reader.RotateMeshKey(ctx(t), tenant, client.MeshKeyRequest{})
	wantProblem(t, err, 403, "api.scope_missing")
	_, err = noMesh.RotateMeshKey(ctx(t), tenant, client.MeshKeyRequest{})
	wantProblem(t, err, 403, "api.scope_missing")
	created, err := writer.RotateMeshKey(ctx(t), tenant, client.MeshKeyRequest{})
	if err != nil || !created.Created {
		t.Fatalf("create: %v %+v", err, created)
	}
	grace := int64(600)
	if _, err := writer.RotateMeshKey(ctx(t), tenant, client.MeshKeyRequest{GraceSeconds: &grace}); err != nil {
		t.Fatal(err)
	}
	for _, bad := range []int64{-1, 30*24*3600 + 1} {
		_, err = writer.RotateMeshKey(ctx(t), tenant, client.MeshKeyRequest{GraceSeconds: &bad})
		wantProblem(t, err, 400, "meshnet.grace_invalid")
	}
	_, err = reader.ExportMeshKeys(ctx(t), tenant)
	wantProblem(t, err, 403, "api.scope_missing")
	_, err = noMesh.MeshKeys(ctx(t), tenant)
	wantProblem(t, err, 403, "api.scope_missing")
	_, err = reader.PutMeshNode(ctx(t), tenant, 9)
	wantProblem(t, err, 403, "api.scope_missing")
	err = reader.DeleteMeshNode(ctx(t), tenant, 9)
	wantProblem(t, err, 403, "api.scope_missing")
	_, err = noMesh.MeshNodes(ctx(t), tenant)
	wantProblem(t, err, 403, "api.scope_missing")
	shown, err := reader.MeshKeys(ctx(t), tenant)
	if err != nil || len(shown.Epochs) != 2 {
		t.Fatalf("reader: %v %+v", err, shown)
	}
	file, err := writer.ExportMeshKeys(ctx(t), tenant)
	if err != nil {
		t.Fatal(err)
	}
	ks, err := mesh.ParseKeySet(file)
	if err != nil || len(ks.Keys) != 2 {
		t.Fatalf("export: %v %+v", err, ks)
	}
	if _, err := writer.PutMeshNode(ctx(t), tenant, 9); err != nil {
		t.Fatal(err)
	}
	if _, err := writer.AddMeshNodes(ctx(t), tenant, []uint32{10, 11}); err != nil {
		t.Fatal(err)
	}
	if err := writer.DeleteMeshNode(ctx(t), tenant, 10); err != nil {
		t.Fatal(err)
	}
	if l, err := reader.MeshNodes(ctx(t), tenant); err != nil || !slices.Equal(l.Nodes, []uint32{9, 11}) || l.Version != 3 {
		t.Errorf("nodes %v %+v", err, l)
	}
	for _, path := range []string{"0", "4294967296", "x"} {
		_, err := writer.Do(ctx(t), "PUT", "/v1/tenants/"+tenant+"/mesh/nodes/"+path, nil, nil)
		wantProblem(t, err, 400, "meshnet.node_invalid")
	}

	// Another tenant's credential finds nothing, as if the tenant did not exist.
	_, err = foreign.MeshKeys(ctx(t), tenant)
	wantProblem(t, err, 404, "registry.tenant_not_found")
	_, err = foreign.ExportMeshKeys(ctx(t), tenant)
	wantProblem(t, err, 404, "registry.tenant_not_found")
	err = foreign.DeleteMeshNode(ctx(t), tenant, 9)
	wantProblem(t, err, 404, "registry.tenant_not_found")
	_, err = foreign.MeshKeys(ctx(t), other)
	wantProblem(t, err, 404, "meshnet.network_not_found")

	// Every change is audited, by its actor; requests refused before any
	// change (scope, an invalid grace period) are not changes.
	entries, err := op.ListAudit(ctx(t), tenant, client.AuditQuery{Limit: 100, Oldest: true})
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, e := range entries.Items {
		if strings.HasPrefix(e.Action, "meshnet.") {
			got = append(got, e.Action+" "+e.Target+" "+e.Outcome)
			if !strings.HasPrefix(e.Actor, "apikey:") {
				t.Errorf("%s by %q", e.Action, e.Actor)
			}
		}
	}
	want := []string{
		"meshnet.keys.create mesh:keys ok", "meshnet.keys.rotate mesh:keys ok",
		"meshnet.keys.export mesh:keys ok", "meshnet.node.add node:9 ok", "meshnet.node.add node:10 ok",
		"meshnet.node.add node:11 ok", "meshnet.node.remove node:10 ok",
	}
	if !slices.Equal(got, want) {
		t.Errorf("audit\n got %q\nwant %q", got, want)
	}

	// The keys are nowhere but in the export: not in GET, the audit log,
	// the logs, or the bucket (sealed by kms).
	raw, err := op.Do(ctx(t), "GET", "/v1/tenants/"+tenant+"/mesh/keys", nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	auditRaw, err := op.Do(ctx(t), "GET", "/v1/tenants/"+tenant+"/audit", map[string][]string{"limit": {"100"}}, nil)
	if err != nil {
		t.Fatal(err)
	}
	kv, err := n.JetStream().KeyValue(ctx(t), names.MeshBucket)
	if err != nil {
		t.Fatal(err)
	}
	stored, err := kv.Get(ctx(t), names.MeshKey(tenant, "network"))
	if err != nil {
		t.Fatal(err)
	}
	for _, k := range ks.Keys {
		for _, form := range keyForms(k.Key) {
			for where, s := range map[string]string{"GET mesh/keys": string(raw.Body), "audit": string(auditRaw.Body), "logs": logs.String(), "bucket": string(stored.Value())} {
				if strings.Contains(s, form) {
					t.Errorf("epoch %d's key is in the %s", k.Epoch, where)
				}
			}
		}
	}
	if !strings.Contains(logs.String(), "iotransit started") {
		t.Error("the log capture caught nothing")
	}
}

func TestGraceEndsOldEpoch(t *testing.T) {
	n := nodetest.Start(t, nil)
	api := nodetest.NewAPI(t, n).Client
	g := connect(t, n, tenant, gwA, nil)
	g.status(gwproto.Status{AgentVersion: "1"})
	if _, err := api.RotateMeshKey(ctx(t), tenant, client.MeshKeyRequest{}); err != nil {
		t.Fatal(err)
	}
	old := g.keys(func(ks mesh.KeySet) bool { return ks.Version == 1 })
	grace := int64(1)
	if _, err := api.RotateMeshKey(ctx(t), tenant, client.MeshKeyRequest{GraceSeconds: &grace}); err != nil {
		t.Fatal(err)
	}
	ks := g.keys(func(ks mesh.KeySet) bool { return ks.Version == 2 })
	if len(ks.Keys) != 2 || ks.Keys[0].NotAfter == nil {
		t.Fatalf("delivered %+v", ks)
	}
	// The receiver enforces notAfter itself: a frame of the old epoch is
	// accepted within the grace period and refused after it.
	r := mesh.NewReceiver(time.Now)
	if err := r.SetKeys(ks); err != nil {
		t.Fatal(err)
	}
	if err := r.SetNodes(ks.NetworkID, 1, []uint32{1}); err != nil {
		t.Fatal(err)
	}
	oldKey, err := mesh.NewKey(old.Keys[0].Key)
	if err != nil {
		t.Fatal(err)
	}
	s := mesh.NewSender(mesh.Header{NetworkID: ks.NetworkID, Epoch: old.Keys[0].Epoch, Node: 1, Boot: 1}, oldKey)
	frame := func() []byte {
		f, err := s.Seal([]byte(`{"tsmId":1}`))
		if err != nil {
			t.Fatal(err)
		}
		return f
	}
	if _, _, reason := r.Receive(frame()); reason != mesh.Accepted && time.Now().Before(*ks.Keys[0].NotAfter) {
		t.Fatalf("old epoch within grace: %v", reason)
	}
	tu.Eventually(t, 5*time.Second, 50*time.Millisecond, func() error {
		if _, _, reason := r.Receive(frame()); reason != mesh.StaleEpoch {
			return fmt.Errorf("old epoch after grace: %v", reason)
		}
		return nil
	})
	// The cloud no longer hands out the expired key: not in an export, not
	// in the next delivery.
	b, err := api.ExportMeshKeys(ctx(t), tenant)
	if err != nil {
		t.Fatal(err)
	}
	var file mesh.KeySet
	if err := json.Unmarshal(b, &file); err != nil || len(file.Keys) != 1 || file.Keys[0].Epoch != 2 {
		t.Errorf("export after grace: %v %s", err, b)
	}
	if _, err := api.PutMeshNode(ctx(t), tenant, 77); err != nil {
		t.Fatal(err)
	}
	g.nodes(func(nl gwproto.NodeList) bool { return slices.Contains(nl.Nodes, 77) })
	g.keys(func(ks mesh.KeySet) bool { return len(ks.Keys) == 1 && ks.Keys[0].Epoch == 2 })
}

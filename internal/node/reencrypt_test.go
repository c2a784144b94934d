package node_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/iotransit/iotransit/client"
	"github.com/iotransit/iotransit/internal/backbone/names"
	"github.com/iotransit/iotransit/internal/kms"
	"github.com/iotransit/iotransit/internal/node"
	"github.com/iotransit/iotransit/internal/testutil"
	"github.com/iotransit/iotransit/internal/testutil/nodetest"
)

// sealedVersions reads the raw stored value of every kind of record the
// tenant keeps sealed and returns the key version each names.
func sealedVersions(t *testing.T, n *node.Node, tenant, integration string) map[string]uint32 {
	t.Helper()
	ctx := context.Background()
	field := func(b []byte, name string) []byte {
		var m map[string]json.RawMessage
		if err := json.Unmarshal(b, &m); err != nil {
			t.Fatal(err)
		}
		var v []byte
		if err := json.Unmarshal(m[name], &v); err != nil {
			t.Fatalf("field %s: %v", name, err)
		}
		return v
	}
	read := func(bucket, key string) []byte {
		kv, err := n.JetStream().KeyValue(ctx, bucket)
		if err != nil {
			t.Fatal(err)
		}
		e, err := kv.Get(ctx, key)
		if err != nil {
			t.Fatalf("%s %s: %v", bucket, key, err)
		}
		return e.Value()
	}
	sealed := map[string][]byte{
		"tenant-ca":          field(read(names.TenantsBucket, tenant), "caKey"),
		"integration":        field(read(names.IntegrationsBucket(tenant), integration), "sealedSecrets"),
		"mesh":               field(read(names.MeshBucket, names.MeshKey(tenant, "network")), "sealed"),
		"firmware-snapshot":  read(names.FirmwareKeysBucket, tenant+".snapshot"),
		"firmware-timestamp": read(names.FirmwareKeysBucket, tenant+".timestamp"),
	}
	out := map[string]uint32{}
	for what, s := range sealed {
		v, err := kms.SealedVersion(s)
		if err != nil {
			t.Fatalf("%s: %v", what, err)
		}
		out[what] = v
	}
	return out
}

// TestNodeReencryptMovesSealedRecordsToTheNewVersion: a tenant's CA key,
// integration secret, mesh keys and firmware online keys sealed under v1;
// a rotation, then a re-encryption through the API (audited), which the
// node is stopped in the middle of and resumes after its restart: every
// record is then under v2 in its raw bytes and reads back, and the status
// counts the stored messages per version.
func TestNodeReencryptMovesSealedRecordsToTheNewVersion(t *testing.T) {
	dir := t.TempDir()
	ctx := context.Background()
	start := func() *node.Node {
		c, cancel := context.WithTimeout(ctx, 60*time.Second*testutil.Slowdown())
		defer cancel()
		n, err := node.Start(c, node.Config{
			DataDir: dir, MQTTAddr: "127.0.0.1:0", APIAddr: "127.0.0.1:0", Dev: true,
			Logger: testutil.Logger(t), ReencryptRate: 4,
		})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(n.Close)
		return n
	}
	n := start()
	d := writeData(t, n, "acme", []float64{21.5}, "reenc-secret")
	api := nodetest.NewAPI(t, n).Client
	if _, err := api.RotateMeshKey(ctx, "acme", client.MeshKeyRequest{}); err != nil {
		t.Fatal(err)
	}
	if _, err := api.FirmwareOnlineKeys(ctx, "acme"); err != nil {
		t.Fatal(err)
	}
	for what, v := range sealedVersions(t, n, "acme", d.integration) {
		if v != 1 {
			t.Fatalf("%s is under version %d before the rotation", what, v)
		}
	}
	if _, err := api.RotateKMSKey(ctx, "acme"); err != nil {
		t.Fatal(err)
	}
	sendMessages(t, n, d, []float64{22.5})
	d.temps = append(d.temps, 22.5)

	job, err := api.ReencryptKMS(ctx, "acme")
	if err != nil || job.State != client.ReencryptRunning {
		t.Fatalf("reencrypt = %+v, %v", job, err)
	}
	// Stop the node once the job did some records, not all.
	testutil.Eventually(t, 30*time.Second, 20*time.Millisecond, func() error {
		st, err := api.KMSStatus(ctx, "acme")
		if err != nil {
			return err
		}
		j := st.Reencryption
		if j == nil || len(j.Records) == 0 || j.Records[0].Done == 0 {
			return errors.New("no record done yet")
		}
		if j.State != client.ReencryptRunning {
			return fmt.Errorf("the job ended before the node stopped: %+v", j)
		}
		return nil
	})
	n.Close()
	n = start()
	api = nodetest.NewAPI(t, n).Client
	var j *client.KMSReencryption
	testutil.Eventually(t, 60*time.Second, 50*time.Millisecond, func() error {
		st, err := api.KMSStatus(ctx, "acme")
		if err != nil {
			return err
		}
		if j = st.Reencryption; j == nil || j.State == client.ReencryptRunning {
			return errors.New("running")
		}
		return nil
	})
	if j.State != client.ReencryptDone || j.TargetVersion != 2 || j.Pass != 1 {
		t.Fatalf("job %+v", j)
	}
	resealed := 0
	for _, r := range j.Records {
		if !r.Finished || r.Done != r.Total {
			t.Errorf("records %+v not finished", r)
		}
		resealed += r.Resealed
	}
	if resealed != 5 {
		t.Errorf("%d records re-sealed, want 5 (CA key, integration, mesh, 2 firmware keys): %+v", resealed, j.Records)
	}
	for what, v := range sealedVersions(t, n, "acme", d.integration) {
		if v != 2 {
			t.Errorf("%s is under version %d after the re-encryption, want 2", what, v)
		}
	}
	for _, s := range j.Streams {
		if s.Kind != "messages" {
			continue
		}
		want := fmt.Sprint([]client.ReencryptVersionCount{{Version: 1, Messages: 1, LastSeq: 1}, {Version: 2, Messages: 1, LastSeq: 2}})
		if !s.Finished || fmt.Sprint(s.Versions) != want {
			t.Errorf("messages counted %+v, want %s", s, want)
		}
	}
	checkData(t, n, d)
	if _, err := api.MeshKeys(ctx, "acme"); err != nil {
		t.Errorf("mesh keys after the re-encryption: %v", err)
	}
	if _, err := api.FirmwareOnlineKeys(ctx, "acme"); err != nil {
		t.Errorf("firmware keys after the re-encryption: %v", err)
	}
	// The end is audited once stored: a moment after the status says so.
	testutil.Eventually(t, 10*time.Second, 20*time.Millisecond, func() error {
		audit, err := api.ListAudit(ctx, "acme", client.AuditQuery{})
		if err != nil {
			return err
		}
		started, ended := false, false
		for _, e := range audit.Items {
			started = started || (e.Action == "kms.reencrypt.start" && e.Outcome == "ok")
			ended = ended || (e.Action == "kms.reencrypt.end" && e.Outcome == "ok" && e.Detail["state"] == "done" && e.Detail["resealed"] == "5")
		}
		if !started || !ended {
			return fmt.Errorf("the re-encryption's start (%v) or end (%v) is not in the tenant's audit log", started, ended)
		}
		return nil
	})
}

package main

import (
	"encoding/base64"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/iotransit/iotransit/internal/gwproto"
	"github.com/iotransit/iotransit/internal/mesh"
	tu "github.com/iotransit/iotransit/internal/testutil"
	"github.com/iotransit/iotransit/internal/testutil/nodetest"
)

func TestMeshCLI(t *testing.T) {
	a := startAdminNode(t)
	a.mustOp(t, "tenant", "create", "acme")
	tn := []string{"--tenant", "acme"}
	if _, _, err := a.op(t, append([]string{"mesh", "key", "list"}, tn...)...); err == nil || !strings.Contains(err.Error(), "meshnet.network_not_found") {
		t.Fatalf("list before create: %v", err)
	}
	out := a.mustOp(t, append([]string{"mesh", "key", "create"}, tn...)...)
	if !strings.Contains(out, "network ") || !strings.Contains(out, "current") {
		t.Errorf("create printed %q", out)
	}
	if _, _, err := a.op(t, append([]string{"mesh", "key", "create"}, tn...)...); err == nil {
		t.Error("a second create did not refuse")
	}
	out = a.mustOp(t, append([]string{"mesh", "key", "rotate", "--grace", "1h"}, tn...)...)
	if strings.Count(out, "\n") != 4 || !strings.Contains(out, "version 2") {
		t.Errorf("rotate printed %q", out)
	}
	keyFile := filepath.Join(t.TempDir(), "mesh.keys")
	a.mustOp(t, append([]string{"mesh", "key", "export", "--out", keyFile}, tn...)...)
	st, err := os.Stat(keyFile)
	if err != nil || st.Mode().Perm() != 0o600 {
		t.Fatalf("key file %v %v", st, err)
	}
	ks, err := mesh.ReadKeyFile(keyFile) // what mesh-sim --network-key-file reads
	if err != nil || len(ks.Keys) != 2 || ks.Version != 2 {
		t.Fatalf("key file: %v %+v", err, ks)
	}
	// Exported again after a rotation, the file is replaced.
	a.mustOp(t, append([]string{"mesh", "key", "rotate", "--grace", "0s"}, tn...)...)
	a.mustOp(t, append([]string{"mesh", "key", "export", "--out", keyFile}, tn...)...)
	if ks, err = mesh.ReadKeyFile(keyFile); err != nil || len(ks.Keys) != 1 || ks.Keys[0].Epoch != 3 {
		t.Fatalf("key file after a rotation without grace: %v %+v", err, ks)
	}
	// The list never shows a key.
	out = a.mustOp(t, append([]string{"mesh", "key", "list", "-o", "json"}, tn...)...)
	for _, k := range ks.Keys {
		if strings.Contains(out, string(k.Key)) || strings.Contains(out, base64.StdEncoding.EncodeToString(k.Key)) {
			t.Fatal("mesh key list shows a key")
		}
	}

	a.mustOp(t, append([]string{"mesh", "node", "add", "5,3,9"}, tn...)...)
	out = a.mustOp(t, append([]string{"mesh", "node", "list"}, tn...)...)
	if got := strings.Fields(out); strings.Join(got, " ") != "NODE 3 5 9" {
		t.Errorf("node list %q", out)
	}
	a.mustOp(t, append([]string{"mesh", "node", "remove", "5"}, tn...)...)
	if _, _, err := a.op(t, append([]string{"mesh", "node", "remove", "5"}, tn...)...); err == nil || !strings.Contains(err.Error(), "meshnet.node_not_found") {
		t.Errorf("removing an unknown node: %v", err)
	}
	for _, bad := range []string{"0", "x", "4294967296", "1,,2"} {
		if _, _, err := a.op(t, append([]string{"mesh", "node", "add", bad}, tn...)...); err == nil {
			t.Errorf("node add %q was taken", bad)
		}
	}
	if _, _, err := a.op(t, "mesh", "flux"); err == nil {
		t.Error("an unknown mesh command was taken")
	}

	// gateway get shows what the gateway last said of itself.
	const serial = "TSGW06ACM00000009"
	up, err := nodetest.Dial(t, a.n, nodetest.Gateway(t, a.n, "acme", serial), serial, nil)
	if err != nil {
		t.Fatal(err)
	}
	status := `{"agentVersion":"agent-7","firmwareVersion":"3.1","slot":"b","queueDepth":12,"queueDropped":2,"mesh":{"accepted":40,"dropped":{"replay":3}}}`
	if res, err := up.PublishTo(t.Context(), gwproto.StatusTopic(serial), []byte(status), 1); err != nil || res.ReasonCode != 0 {
		t.Fatalf("status: %v %+v", err, res)
	}
	tu.Eventually(t, 10*time.Second, 50*time.Millisecond, func() error {
		out := a.mustOp(t, append([]string{"gateway", "get", serial}, tn...)...)
		for _, want := range []string{"AGENT:", "agent-7", "3.1 (slot b)", "12 waiting, 2 dropped", "40 accepted; dropped: replay=3", "LAST-SEEN:"} {
			if !strings.Contains(out, want) {
				return fmt.Errorf("gateway get lacks %q:\n%s", want, out)
			}
		}
		return nil
	})
}

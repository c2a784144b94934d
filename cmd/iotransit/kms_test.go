package main

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/iotransit/iotransit/client"
	"github.com/iotransit/iotransit/internal/kms"
	"github.com/iotransit/iotransit/internal/node"
	"github.com/iotransit/iotransit/internal/testutil/nodetest"
)

// TestAdminKMSRotateAndStatus: "kms rotate" makes version 2 of the dev
// tenant's data key and "kms status" lists both, in a table and as JSON,
// naming the root key and no key material.
func TestAdminKMSRotateAndStatus(t *testing.T) {
	a := startAdminNode(t)
	out := a.mustOp(t, "kms", "status", "--tenant", node.DevTenant)
	row := tableRow(t, out, "1")
	if row[1] != "yes" || !strings.HasPrefix(row[3], "file:") {
		t.Fatalf("status before rotation:\n%s", out)
	}
	out = a.mustOp(t, "kms", "rotate", "--tenant", node.DevTenant)
	if tableRow(t, out, "1")[1] != "no" || tableRow(t, out, "2")[1] != "yes" {
		t.Fatalf("rotate:\n%s", out)
	}
	var st client.KMSStatus
	a.mustJSON(t, &st, "kms", "status", "--tenant", node.DevTenant)
	if st.CurrentVersion != 2 || len(st.Versions) != 2 || st.Versions[1].RootKeyID != st.RootKeyID {
		t.Fatalf("status: %+v", st)
	}
	_, _, err := a.op(t, "kms", "status", "--tenant", "nobody")
	wantProblem(t, err, "registry.tenant_not_found")
}

// TestKMSRewrapCommand: "kms rewrap" on a stopped node's data dir moves its
// keys to a new root key file; it refuses without the previous root, and
// with a previous root that does not open the data.
func TestKMSRewrapCommand(t *testing.T) {
	dir := t.TempDir()
	nodetest.Start(t, func(c *node.Config) { c.DataDir = dir }).Close()
	oldFile := filepath.Join(dir, node.RootKeyFile)
	newFile := filepath.Join(t.TempDir(), "new.key")
	if _, _, err := runCLI(t, "kms", "rewrap", "--data-dir", dir, "--root-key-file", newFile); err == nil || !strings.Contains(err.Error(), "--previous-root-key-file") {
		t.Fatalf("rewrap without the previous root: %v", err)
	}
	stranger := filepath.Join(t.TempDir(), "stranger.key")
	if _, err := kms.OpenFileRoot(stranger, true); err != nil {
		t.Fatal(err)
	}
	if _, _, err := runCLI(t, "kms", "rewrap", "--data-dir", dir, "--root-key-file", newFile, "--previous-root-key-file", stranger); !errors.Is(err, kms.ErrWrongRoot) {
		t.Fatalf("rewrap from a root that does not open the data: %v", err)
	}
	out, _, err := runCLI(t, "kms", "rewrap", "--data-dir", dir, "--root-key-file", newFile, "--previous-root-key-file", oldFile)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(out, "rewrapped 3 keys under root key file:") { // dev, _system, the root check
		t.Fatalf("rewrap printed %q", out)
	}
	if err := os.Remove(oldFile); err != nil {
		t.Fatal(err)
	}
	out, _, err = runCLI(t, "kms", "rewrap", "--data-dir", dir, "--root-key-file", newFile, "--previous-root-key-file", stranger)
	if err != nil || !strings.HasPrefix(out, "rewrapped 0 keys") {
		t.Fatalf("a second rewrap: %q, %v", out, err)
	}
}

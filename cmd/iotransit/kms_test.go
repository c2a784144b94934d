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

// TestServeCheckConfigChecksTheRootKey: --check-config reports an unknown
// provider, pkcs11 settings missing, a root key file others may read and a
// previous root key file that does not exist; a root key file not made yet
// is fine.
func TestServeCheckConfigChecksTheRootKey(t *testing.T) {
	keyDir := t.TempDir()
	open := filepath.Join(keyDir, "open.key")
	if err := os.WriteFile(open, make([]byte, kms.RootKeySize), 0o644); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name string
		args []string
		want string // "" for a configuration that passes
	}{
		{name: "file not made yet", args: []string{"--root-key-file", filepath.Join(keyDir, "new.key")}},
		{name: "unknown provider", args: []string{"--kms-provider", "vault"}, want: `--kms-provider "vault"`},
		{name: "pkcs11 without settings", args: []string{"--kms-provider", "pkcs11"}, want: "--pkcs11-token"},
		{name: "readable by others", args: []string{"--root-key-file", open}, want: open},
		{name: "missing previous root", args: []string{"--previous-root-key-file", filepath.Join(keyDir, "gone.key")}, want: "gone.key"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			args := append([]string{"serve", "--check-config", "--data-dir", t.TempDir(), "--dev", "--mqtt-addr", "127.0.0.1:0", "--api-addr", "127.0.0.1:0"}, tc.args...)
			out, _, err := runCLI(t, args...)
			switch {
			case tc.want == "" && err != nil:
				t.Fatalf("refused: %v", err)
			case tc.want == "" && !strings.Contains(out, "configuration ok"):
				t.Fatalf("printed %q", out)
			case tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want)):
				t.Fatalf("report %v does not name %q", err, tc.want)
			}
		})
	}
	if _, err := os.Stat(filepath.Join(keyDir, "new.key")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("--check-config made the root key file: %v", err)
	}
}

package main

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/iotransit/iotransit/client"
	"github.com/iotransit/iotransit/internal/node"
)

// TestCLIFirmwareInitPublishRollout sets up a repository with keys made
// by the CLI (0600), publishes an image signed with the targets key, and
// rolls it out to a gateway.
func TestCLIFirmwareInitPublishRollout(t *testing.T) {
	a := startAdminNode(t)
	dir := t.TempDir()
	rootKey, targetsKey := filepath.Join(dir, "keys", "root.pem"), filepath.Join(dir, "keys", "targets.pem")
	ten := []string{"--tenant", node.DevTenant}
	out := a.mustOp(t, append([]string{"firmware", "init", "--root-key", rootKey, "--targets-key", targetsKey}, ten...)...)
	if !strings.Contains(out, `"_type":"root"`) {
		t.Fatalf("init does not print the root to commission gateways with:\n%s", out)
	}
	for _, f := range []string{rootKey, targetsKey} {
		if st, err := os.Stat(f); err != nil || st.Mode().Perm() != 0o600 {
			t.Fatalf("%s: %v %v", f, st.Mode(), err)
		}
	}
	img := filepath.Join(dir, "fw.bin")
	if err := os.WriteFile(img, []byte("firmware 1.2.0"), 0o644); err != nil {
		t.Fatal(err)
	}
	// Signed with the root key, it is refused (by the publisher itself: the
	// current targets are not signed by that key).
	if _, _, err := a.op(t, append([]string{"firmware", "publish", "--file", img, "--version", "1.2.0", "--target", "TSGW06", "--sign-key", rootKey}, ten...)...); err == nil || !strings.Contains(err.Error(), "not signed by the targets key") {
		t.Fatalf("publish signed by the root key: %v", err)
	}
	a.mustOp(t, append([]string{"firmware", "publish", "--file", img, "--version", "1.2.0", "--target", "TSGW06", "--sign-key", targetsKey}, ten...)...)
	if out := a.mustOp(t, append([]string{"firmware", "list"}, ten...)...); !strings.Contains(out, "TSGW06-1.2.0") {
		t.Fatalf("list:\n%s", out)
	}
	// Signed again before it expires, then the root and targets keys
	// rotated: the old targets key no longer publishes, the new one does.
	a.mustOp(t, append([]string{"firmware", "resign", "--sign-key", targetsKey}, ten...)...)
	newRoot, newTargets := filepath.Join(dir, "keys", "root2.pem"), filepath.Join(dir, "keys", "targets2.pem")
	a.mustOp(t, append([]string{"firmware", "rotate-root", "--root-key", rootKey, "--new-root-key", newRoot, "--new-targets-key", newTargets}, ten...)...)
	var repo client.FirmwareRepository
	a.mustJSON(t, &repo, append([]string{"firmware", "list"}, ten...)...)
	if repo.Roles.Root.Version != 2 || repo.Roles.Targets.Version != 4 || len(repo.Targets) != 1 {
		t.Fatalf("after resign and rotation: %+v", repo)
	}
	if err := os.WriteFile(img, []byte("firmware 1.3.0"), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, _, err := a.op(t, append([]string{"firmware", "publish", "--file", img, "--version", "1.3.0", "--target", "TSGW06", "--sign-key", targetsKey}, ten...)...); err == nil || !strings.Contains(err.Error(), "not signed by the targets key") {
		t.Fatalf("publish with the old targets key: %v", err)
	}
	a.mustOp(t, append([]string{"firmware", "publish", "--file", img, "--version", "1.3.0", "--target", "TSGW06", "--sign-key", newTargets}, ten...)...)

	serial := "TSGW06CLI00000001"
	if _, err := a.n.Registry().RegisterGateway(context.Background(), node.DevTenant, serial); err != nil {
		t.Fatal(err)
	}
	var ro client.Rollout
	a.mustJSON(t, &ro, append([]string{"firmware", "rollout", "create", "--target", "TSGW06", "--version", "1.2.0", "--serial", serial}, ten...)...)
	if len(ro.Gateways) != 1 || ro.Gateways[0].State != client.FirmwarePending {
		t.Fatalf("rollout %+v", ro)
	}
	if out := a.mustOp(t, append([]string{"firmware", "rollout", "get", ro.ID}, ten...)...); !strings.Contains(out, serial) || !strings.Contains(out, "pending") {
		t.Fatalf("rollout get:\n%s", out)
	}
}

package node_test

import (
	"context"
	"path/filepath"
	"testing"

	"github.com/iotransit/iotransit/internal/backbone/names"
	"github.com/iotransit/iotransit/internal/kms"
	"github.com/iotransit/iotransit/internal/kms/kmstest"
	"github.com/iotransit/iotransit/internal/node"
	"github.com/iotransit/iotransit/internal/testutil/nodetest"
)

// kmsStore returns the node's kms stream store.
func kmsStore(t *testing.T, n *node.Node) kms.StreamStore {
	t.Helper()
	s, err := n.JetStream().Stream(context.Background(), names.KMSStream)
	if err != nil {
		t.Fatal(err)
	}
	return kms.StreamStore{JS: n.JetStream(), Stream: s, Prefix: names.KMSKeyPrefix}
}

// TestNodeShredLeavesNoWrappedKeyOnDisk: a tenant's data written through a
// node (messages, an integration secret, its CA, a second key version)
// and on disk (a restart), then its keys shredded as tenant deletion does
// (Keyring.Shred, here from another keyring on the same stream): once the
// node stopped, no file of the data directory holds a wrapped key of the
// tenant. Another tenant's are found, so the scan reads the node's files.
func TestNodeShredLeavesNoWrappedKeyOnDisk(t *testing.T) {
	dir := t.TempDir()
	ctx := context.Background()
	n := mustStartAt(t, dir, node.KMSConfig{})
	writeData(t, n, "acme", []float64{24.5}, "kms-secret-shredded")
	writeData(t, n, "other", []float64{25.5}, "kms-secret-kept")
	if _, err := nodetest.NewAPI(t, n).Client.RotateKMSKey(ctx, "acme"); err != nil {
		t.Fatal(err)
	}
	n.Close()
	n = mustStartAt(t, dir, node.KMSConfig{})
	gone, kept := kmstest.WrappedKeys(t, kmsStore(t, n), "acme.v"), kmstest.WrappedKeys(t, kmsStore(t, n), "other.v")
	if v := len(kmstest.Only(gone, kmstest.AsStored)); v != 2 {
		t.Fatalf("%d versions of acme's key, want 2", v)
	}
	root, err := kms.OpenFileRoot(filepath.Join(dir, node.RootKeyFile), false)
	if err != nil {
		t.Fatal(err)
	}
	if err := kms.NewKeyring(kmsStore(t, n), root).Shred(ctx, "acme"); err != nil {
		t.Fatal(err)
	}
	n.Close()
	for _, f := range kmstest.FilesHolding(t, dir, gone) {
		t.Errorf("after the shred: %s", f)
	}
	if len(kmstest.FilesHolding(t, dir, kept)) == 0 {
		t.Error("the other tenant's wrapped keys are in no file: the scan missed the node's files")
	}
}

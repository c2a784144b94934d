package node_test

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/iotransit/iotransit/internal/backbone/names"
	"github.com/iotransit/iotransit/internal/kms"
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

// wrappedKeys returns the stored values of the keys of the node's kms
// stream that start with prefix, and the wrapped keys in them (base64, as
// the stored JSON holds them).
func wrappedKeys(t *testing.T, n *node.Node, prefix string) map[string][]byte {
	t.Helper()
	entries, err := kmsStore(t, n).Entries(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	out := map[string][]byte{}
	for _, e := range entries {
		if !strings.HasPrefix(e.Key, prefix) {
			continue
		}
		var w struct {
			Key []byte `json:"key"`
		}
		if err := json.Unmarshal(e.Value, &w); err != nil || len(w.Key) == 0 {
			t.Fatalf("%s: not a wrapped key: %v", e.Key, err)
		}
		out[e.Key] = e.Value
		out[e.Key+" wrapped key"] = []byte(base64.StdEncoding.EncodeToString(w.Key))
	}
	if len(out) == 0 {
		t.Fatalf("no key %s* in the kms stream", prefix)
	}
	return out
}

// holding returns which of needles the files under dir hold, with the file.
func holding(t *testing.T, dir string, needles map[string][]byte) []string {
	t.Helper()
	var found []string
	err := filepath.WalkDir(dir, func(path string, e fs.DirEntry, err error) error {
		if err != nil || e.IsDir() {
			return err
		}
		b, err := os.ReadFile(path)
		for name, needle := range needles {
			if err == nil && bytes.Contains(b, needle) {
				found = append(found, name+" in "+path)
			}
		}
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	return found
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
	gone, kept := wrappedKeys(t, n, "acme.v"), wrappedKeys(t, n, "other.v")
	if len(gone) != 4 {
		t.Fatalf("%d values of acme's keys, want 2 versions", len(gone)/2)
	}
	root, err := kms.OpenFileRoot(filepath.Join(dir, node.RootKeyFile), false)
	if err != nil {
		t.Fatal(err)
	}
	if err := kms.NewKeyring(kmsStore(t, n), root).Shred(ctx, "acme"); err != nil {
		t.Fatal(err)
	}
	n.Close()
	for _, f := range holding(t, dir, gone) {
		t.Errorf("after the shred: %s", f)
	}
	if len(holding(t, dir, kept)) == 0 {
		t.Error("the other tenant's wrapped keys are in no file: the scan missed the node's files")
	}
}

package node_test

import (
	"context"
	"io/fs"
	"path/filepath"
	"testing"
	"time"

	"github.com/iotransit/iotransit/internal/backbone"
	"github.com/iotransit/iotransit/internal/backbone/names"
	"github.com/iotransit/iotransit/internal/kms"
	"github.com/iotransit/iotransit/internal/node"
	"github.com/iotransit/iotransit/internal/testutil"
)

// streamDirs returns the directories of the JetStream streams named name
// under dir.
func streamDirs(t *testing.T, dir, name string) []string {
	t.Helper()
	var found []string
	err := filepath.WalkDir(dir, func(path string, d fs.DirEntry, err error) error {
		if err == nil && d.IsDir() && d.Name() == name {
			found = append(found, path)
		}
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	return found
}

// toOldLayout puts the kms keys of the stopped node's data directory back
// where a node before the kms stream kept them, the KV bucket
// iotransit_kms (kms.KVStore, as that node wrote them), and deletes the
// stream: the data directory of an older node.
func toOldLayout(t *testing.T, dir string) int {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second*testutil.Slowdown())
	defer cancel()
	bb, err := backbone.Start(ctx, backbone.Config{DataDir: dir, Replicas: 1}, testutil.Logger(t))
	if err != nil {
		t.Fatal(err)
	}
	defer bb.Close()
	store, err := bb.KMSStore(ctx)
	if err != nil {
		t.Fatal(err)
	}
	kv, err := bb.KV(ctx, names.KMSBucket, 1)
	if err != nil {
		t.Fatal(err)
	}
	n, err := kms.CopyKeys(ctx, store, kms.KVStore{KV: kv})
	if err != nil || n < 3 {
		t.Fatalf("copy to the old bucket: %d keys, %v", n, err)
	}
	if err := bb.JS.DeleteStream(ctx, names.KMSStream); err != nil {
		t.Fatal(err)
	}
	return n
}

// TestNodeMovesKMSKeysOutOfTheOldBucket: a node started on the data
// directory of an older node, whose kms keys are in the KV bucket
// iotransit_kms, moves them to the kms stream and deletes the bucket (its
// files with it): the data written before reads back, and so after
// another restart.
func TestNodeMovesKMSKeysOutOfTheOldBucket(t *testing.T) {
	dir := t.TempDir()
	n := mustStartAt(t, dir, node.KMSConfig{})
	d := writeData(t, n, "acme", []float64{23.75}, "kms-secret-moved")
	n.Close()
	toOldLayout(t, dir)
	bucket := "KV_" + names.KMSBucket
	if len(streamDirs(t, dir, bucket)) != 1 || len(streamDirs(t, dir, names.KMSStream)) != 0 {
		t.Fatalf("the old layout: %v %v", streamDirs(t, dir, bucket), streamDirs(t, dir, names.KMSStream))
	}
	for _, restart := range []string{"first start on the old layout", "restart"} {
		t.Run(restart, func(t *testing.T) {
			n := mustStartAt(t, dir, node.KMSConfig{})
			defer n.Close()
			checkData(t, n, d)
			if got := streamDirs(t, dir, bucket); len(got) != 0 {
				t.Errorf("the old bucket's files are left: %v", got)
			}
			if len(streamDirs(t, dir, names.KMSStream)) != 1 {
				t.Error("no kms stream")
			}
		})
	}
}

package node_test

import (
	"bytes"
	"context"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/iotransit/iotransit/client"
	tu "github.com/iotransit/iotransit/internal/testutil"
	"github.com/iotransit/iotransit/internal/testutil/nodetest"
)

// TestNodeEraseDeviceOnEveryReplica (issue 12): on a three-node JetStream
// cluster with --replicas 3, erasing a sensor removes its messages on
// every replica: each server's block files of the message stream lose
// the sensor's TUID (its subjects and headers are plaintext there; the
// erasure overwrote them in place), and keep the other sensor's. The
// replicas' consensus logs are not scanned: they may still hold the
// entries until they are compacted (docs/SECURITY.md says so).
func TestNodeEraseDeviceOnEveryReplica(t *testing.T) {
	srvs, n := startReplicated(t)
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	const gw, erased, kept = "TSGW06ACM00000001", "TSEN01ERASE000001", "TSEN01ERASE000002"
	up, err := nodetest.Dial(t, n, nodetest.Gateway(t, n, "acme", gw), gw, nil)
	if err != nil {
		t.Fatal(err)
	}
	for i := range 3 {
		for _, tuid := range []string{erased, kept} {
			if res, err := up.Publish(ctx, []byte(tu.Thingsee(tuid, 1_700_000_000+int64(i), 21)), 1); err != nil || res.ReasonCode != 0 {
				t.Fatalf("publish: %+v, %v", res, err)
			}
		}
	}
	msgFiles := func(dir string) ([]byte, error) {
		var all []byte
		err := filepath.WalkDir(dir, func(path string, d fs.DirEntry, err error) error {
			if err != nil || d.IsDir() || !strings.Contains(path, string(filepath.Separator)+"MSG_acme"+string(filepath.Separator)) {
				return err
			}
			b, err := os.ReadFile(path)
			all = append(all, b...)
			return err
		})
		return all, err
	}
	onEveryReplica := func(check func(files []byte) error) {
		t.Helper()
		tu.Eventually(t, 30*time.Second, 200*time.Millisecond, func() error {
			for _, s := range srvs {
				files, err := msgFiles(s.StoreDir())
				if err != nil {
					return err
				}
				if err := check(files); err != nil {
					return fmt.Errorf("server %s: %w", s.Name(), err)
				}
			}
			return nil
		})
	}
	onEveryReplica(func(files []byte) error {
		if !bytes.Contains(files, []byte(erased)) || !bytes.Contains(files, []byte(kept)) {
			return fmt.Errorf("the messages are not in its files yet")
		}
		return nil
	})

	got, err := nodetest.NewAPI(t, n).Client.EraseDevice(ctx, "acme", erased)
	if err != nil {
		t.Fatal(err)
	}
	if want := (client.DeviceErasure{Tuid: erased, Messages: 3, Overwritten: 3, Complete: true}); *got != want {
		t.Fatalf("erasure %+v, want %+v", got, want)
	}
	onEveryReplica(func(files []byte) error {
		if bytes.Contains(files, []byte(erased)) {
			return fmt.Errorf("the erased sensor's TUID is still in the message stream's files")
		}
		if !bytes.Contains(files, []byte(kept)) {
			return fmt.Errorf("the kept sensor's messages are gone from its files")
		}
		return nil
	})
}

package node_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/iotransit/iotransit/internal/node"
	tu "github.com/iotransit/iotransit/internal/testutil"
)

// TestNodeRefusesAHeldDataDirectory: a second server on the data directory
// of a running one is refused with a clear message (two would write one
// JetStream store and one registry cache), and the directory is free again
// once the first is closed (issue 10, bug 4).
func TestNodeRefusesAHeldDataDirectory(t *testing.T) {
	dir := t.TempDir()
	cfg := func() node.Config {
		return node.Config{DataDir: dir, MQTTAddr: "127.0.0.1:0", APIAddr: "127.0.0.1:0", Dev: true, Logger: tu.Logger(t)}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	first, err := node.Start(ctx, cfg())
	if err != nil {
		t.Fatal(err)
	}
	second, err := node.Start(ctx, cfg())
	if err == nil {
		second.Close()
		first.Close()
		t.Fatal("a second node started on a held data directory")
	}
	if !strings.Contains(err.Error(), "in use by another iotransit") || !strings.Contains(err.Error(), dir) {
		t.Errorf("refusal %q does not say the directory is in use", err)
	}
	first.Close()
	again, err := node.Start(ctx, cfg())
	if err != nil {
		t.Fatalf("after the first closed: %v", err)
	}
	again.Close()
}

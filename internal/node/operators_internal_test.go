package node

import (
	"context"
	"testing"
	"time"

	"github.com/iotransit/iotransit/client"
	"github.com/iotransit/iotransit/internal/credential"
	tu "github.com/iotransit/iotransit/internal/testutil"
)

// TestBootstrapResetFailsClosed: --reset-bootstrap-operator is audited in
// _system before the key works again; when that entry cannot be written
// the node does not start and the bootstrap key stays retired (the reset
// was made first, so the next start took the key back unaudited).
func TestBootstrapResetFailsClosed(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	n, err := Start(ctx, Config{DataDir: t.TempDir(), MQTTAddr: "127.0.0.1:0", APIAddr: "127.0.0.1:0", Dev: true, Logger: tu.Logger(t)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(n.Close)
	creds, err := credential.Open(ctx, n.bb)
	if err != nil {
		t.Fatal(err)
	}
	ops := credential.NewOperators(creds)
	if _, _, err := ops.Create(ctx, "admin", client.RoleAdmin, 0, "test"); err != nil {
		t.Fatal(err)
	}
	if _, err := ops.RetireBootstrap(ctx, "test"); err != nil {
		t.Fatal(err)
	}
	n.audit.Close() // the platform's log refuses writes from now on
	n.cfg.ResetBootstrapOperator = true
	if _, err := n.operators(ctx, creds); err == nil {
		t.Fatal("the reset went through although its audit entry could not be written")
	}
	b, err := credential.NewOperators(creds).Bootstrap(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if !b.Retired {
		t.Fatal("the bootstrap key works again although its reset was not audited")
	}
}

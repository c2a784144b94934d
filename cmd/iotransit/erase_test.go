package main

import (
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/iotransit/iotransit/client"
	"github.com/iotransit/iotransit/internal/node"
	tu "github.com/iotransit/iotransit/internal/testutil"
)

// TestMessagesEraseRemovesOneSensor: messages erase --tuid erases the
// sensor's messages and rejected message, says how many in a table (or as
// data with -o json), leaves the other sensor's; again it erases nothing;
// without --tuid it is a usage error.
func TestMessagesEraseRemovesOneSensor(t *testing.T) {
	a := startAdminNode(t)
	up := integrationGateway(t, a, msgSerialA)
	publish(t, up, msgTuid1)
	publishRaw(t, up, moveMessage(msgTuid1))
	publish(t, up, msgTuid2)
	refuse(t, up, msgTuid1)
	count := func(tuid string) int {
		t.Helper()
		var p client.Page[client.Message]
		a.mustJSON(t, &p, "messages", "list", "--tenant", node.DevTenant, "--tuid", tuid)
		return len(p.Items)
	}
	tu.Eventually(t, 10*time.Second, 50*time.Millisecond, func() error {
		if n1, n2 := count(msgTuid1), count(msgTuid2); n1 != 2 || n2 != 1 {
			return fmt.Errorf("stored %d and %d, want 2 and 1", n1, n2)
		}
		return nil
	})

	out := a.mustOp(t, "messages", "erase", "--tenant", node.DevTenant, "--tuid", msgTuid1)
	wantLines(t, out, "TSM-TUID", "MESSAGES", "REJECTED", "OVERWRITTEN")
	row := strings.Fields(strings.Split(strings.TrimSpace(out), "\n")[1])
	if want := []string{msgTuid1, "2", "0", "0", "1", "3"}; strings.Join(row, " ") != strings.Join(want, " ") {
		t.Fatalf("erase row %v, want %v", row, want)
	}
	if n1, n2 := count(msgTuid1), count(msgTuid2); n1 != 0 || n2 != 1 {
		t.Fatalf("after the erasure: %d and %d messages, want 0 and 1", n1, n2)
	}
	var again client.DeviceErasure
	a.mustJSON(t, &again, "messages", "erase", "--tenant", node.DevTenant, "--tuid", msgTuid1)
	if again != (client.DeviceErasure{Tuid: msgTuid1, Complete: true}) {
		t.Fatalf("second erasure %+v, want zeros", again)
	}
	if _, _, err := a.op(t, "messages", "erase", "--tenant", node.DevTenant); !errors.Is(err, errUsage) || !strings.Contains(err.Error(), "--tuid") {
		t.Fatalf("erase without --tuid: %v, want a usage error naming --tuid", err)
	}
}

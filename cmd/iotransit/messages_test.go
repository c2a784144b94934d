package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/iotransit/iotransit/client"
	"github.com/iotransit/iotransit/internal/api"
	"github.com/iotransit/iotransit/internal/gateway"
	"github.com/iotransit/iotransit/internal/node"
	tu "github.com/iotransit/iotransit/internal/testutil"
	"go.yaml.in/yaml/v3"
)

const (
	msgSerialA = "TSGW06MSGS0000001"
	msgSerialB = "TSGW06MSGS0000002"
	msgTuid1   = "TSPR04MSGA0000001"
	msgTuid2   = "TSPR04MSGA0000002"
)

// publishRaw publishes payload and fails the test unless the node takes it.
func publishRaw(t *testing.T, up *gateway.Uplink, payload string) {
	t.Helper()
	res, err := up.Publish(context.Background(), []byte(payload), 1)
	if err != nil || res.ReasonCode != 0 {
		t.Fatalf("publish %s: %v, reason %#x %s", payload, err, res.ReasonCode, res.Reason)
	}
}

// moveMessage is a Thingsee message of type 13100 of tuid.
func moveMessage(tuid string) string {
	return fmt.Sprintf(`{"tsmId":13100,"tsmEv":10,"tsmTs":%d,"tsmTuid":"%s","moveCount":1}`, time.Now().Unix(), tuid)
}

// refuse publishes a message of tuid that the node refuses: it carries
// tsmCloudTs, which only the cloud sets (thingsee.cloud_field).
func refuse(t *testing.T, up *gateway.Uplink, tuid string) {
	t.Helper()
	bad := fmt.Sprintf(`{"tsmId":12100,"tsmEv":10,"tsmTs":%d,"tsmTuid":"%s","temp":20,"humd":40,"tsmCloudTs":1}`, time.Now().Unix(), tuid)
	if _, err := up.Publish(context.Background(), []byte(bad), 1); err != nil {
		t.Fatal(err)
	}
}

// msgKey is what a test compares of a message: who sent it, of which
// sensor, of which type.
func msgKey(m client.Message) string {
	l := messageLine(m)
	return fmt.Sprintf("%s/%s/%d", l.Gateway, l.Tuid, l.TsmID)
}

func TestMessagesListFilters(t *testing.T) {
	a := startAdminNode(t)
	upA := integrationGateway(t, a, msgSerialA)
	upB := integrationGateway(t, a, msgSerialB)
	publish(t, upA, msgTuid1)
	publishRaw(t, upA, moveMessage(msgTuid1))
	publish(t, upB, msgTuid2)

	list := func(args ...string) []string {
		t.Helper()
		var p client.Page[client.Message]
		a.mustJSON(t, &p, append([]string{"messages", "list", "--tenant", node.DevTenant}, args...)...)
		keys := make([]string, len(p.Items))
		for i, m := range p.Items {
			keys[i] = msgKey(m)
		}
		return keys
	}
	tu.Eventually(t, 10*time.Second, 50*time.Millisecond, func() error {
		if got := list(); len(got) != 3 {
			return fmt.Errorf("stored %v, want 3 messages", got)
		}
		return nil
	})

	for _, tc := range []struct {
		name string
		args []string
		want []string
	}{
		{"all, newest first", nil, []string{msgSerialB + "/" + msgTuid2 + "/12100", msgSerialA + "/" + msgTuid1 + "/13100", msgSerialA + "/" + msgTuid1 + "/12100"}},
		{"oldest first, one", []string{"--oldest", "--limit", "1"}, []string{msgSerialA + "/" + msgTuid1 + "/12100"}},
		{"gateway", []string{"--gateway", msgSerialB}, []string{msgSerialB + "/" + msgTuid2 + "/12100"}},
		{"tuid", []string{"--tuid", msgTuid1, "--oldest"}, []string{msgSerialA + "/" + msgTuid1 + "/12100", msgSerialA + "/" + msgTuid1 + "/13100"}},
		{"tsm-id", []string{"--tsm-id", "13100"}, []string{msgSerialA + "/" + msgTuid1 + "/13100"}},
		{"gateway and tsm-id, none", []string{"--gateway", msgSerialB, "--tsm-id", "13100"}, []string{}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := list(tc.args...); !slices.Equal(got, tc.want) {
				t.Fatalf("messages list %s: %v, want %v", strings.Join(tc.args, " "), got, tc.want)
			}
		})
	}

	// The table shows time, gateway, tuid, tsmId and the body.
	out := a.mustOp(t, "messages", "list", "--tenant", node.DevTenant, "--gateway", msgSerialB)
	wantLines(t, out, "TIME", "GATEWAY", "TUID", "TSM-ID", "BODY", `"tsmTuid":"`+msgTuid2+`"`)
	tableRow(t, out, "TIME")
	for _, l := range strings.Split(strings.TrimSpace(out), "\n")[1:] {
		if f := strings.Fields(l); len(f) < 5 || f[1] != msgSerialB || f[2] != msgTuid2 || f[3] != "12100" {
			t.Fatalf("row %q: want time, %s, %s, 12100, body", l, msgSerialB, msgTuid2)
		}
	}

	// tail without --follow: the last N, oldest of them first.
	out = a.mustOp(t, "messages", "tail", "--tenant", node.DevTenant, "--limit", "2", "-o", "json")
	var lines []msgLine
	for _, l := range strings.Split(strings.TrimSpace(out), "\n") {
		var m msgLine
		if err := json.Unmarshal([]byte(l), &m); err != nil {
			t.Fatalf("tail -o json line %q: %v", l, err)
		}
		lines = append(lines, m)
	}
	if len(lines) != 2 || lines[0].TsmID != 13100 || lines[1].Tuid != msgTuid2 {
		t.Fatalf("tail --limit 2: %+v, want the 13100 of %s then the message of %s", lines, msgTuid1, msgTuid2)
	}

	// -o yaml: one YAML document per line of the stream, the same as -o json.
	out = a.mustOp(t, "messages", "tail", "--tenant", node.DevTenant, "--limit", "2", "-o", "yaml")
	dec := yaml.NewDecoder(strings.NewReader(out))
	for i := 0; ; i++ {
		var doc map[string]any
		err := dec.Decode(&doc)
		if errors.Is(err, io.EOF) {
			if i != len(lines) {
				t.Fatalf("tail -o yaml: %d documents, want %d:\n%s", i, len(lines), out)
			}
			break
		}
		if err != nil {
			t.Fatalf("tail -o yaml: %v\n%s", err, out)
		}
		if i >= len(lines) || doc["gateway"] != lines[i].Gateway || doc["tsmTuid"] != lines[i].Tuid || doc["tsmId"] != lines[i].TsmID {
			t.Fatalf("tail -o yaml document %d: %v, want the line %+v of -o json", i, doc, lines)
		}
	}
}

func TestMessagesBadFilterIsUsageError(t *testing.T) {
	a := startAdminNode(t)
	for _, tc := range []struct {
		name string
		args []string
		want string
	}{
		{"list tsm-id not a number", []string{"messages", "list", "--tsm-id", "abc"}, "--tsm-id"},
		{"tail tsm-id out of range", []string{"messages", "tail", "--tsm-id", "12"}, "--tsm-id"},
		{"list bad from", []string{"messages", "list", "--from", "yesterday"}, "--from"},
		{"tail negative limit", []string{"rejected", "tail", "--limit", "-1"}, "--limit"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, _, err := a.op(t, append(tc.args, "--tenant", node.DevTenant)...)
			if !errors.Is(err, errUsage) || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("iotransit %s: %v, want a usage error naming %s", strings.Join(tc.args, " "), err, tc.want)
			}
		})
	}
}

func TestMessagesTailFollowReceivesLiveMessage(t *testing.T) {
	a := startAdminNode(t)
	up := integrationGateway(t, a, msgSerialA)
	publish(t, up, msgTuid1)
	tu.Eventually(t, 10*time.Second, 50*time.Millisecond, func() error {
		if out := a.mustOp(t, "messages", "list", "--tenant", node.DevTenant); !strings.Contains(out, msgTuid1) {
			return errors.New("the first message is not stored yet")
		}
		return nil
	})

	out, errOut, stop := follow(t, a, "messages", "tail", "--follow", "--limit", "1", "--gateway", msgSerialA, "--tenant", node.DevTenant)
	// The last message first; the stream resumes after it, so a message
	// published from now on is shown whether or not the stream is open yet.
	tu.Eventually(t, 10*time.Second, 20*time.Millisecond, func() error {
		if !strings.Contains(out.String(), msgTuid1) {
			return fmt.Errorf("tail shows %q (stderr %q), want the last message", out.String(), errOut.String())
		}
		return nil
	})
	publish(t, up, msgTuid2)
	tu.Eventually(t, 10*time.Second, 20*time.Millisecond, func() error {
		if !strings.Contains(out.String(), msgTuid2) {
			return fmt.Errorf("tail --follow shows %q (stderr %q), want the live message", out.String(), errOut.String())
		}
		return nil
	})
	stop()
	lines := strings.Split(strings.TrimSpace(out.String()), "\n")
	if len(lines) != 2 {
		t.Fatalf("tail --follow printed %d lines, want one per message:\n%s", len(lines), out.String())
	}
	if f := strings.Fields(lines[1]); len(f) < 5 || f[1] != msgSerialA || f[2] != msgTuid2 || f[3] != "12100" {
		t.Fatalf("live line %q: want time, %s, %s, 12100, body", lines[1], msgSerialA, msgTuid2)
	}
}

// follow runs iotransit args as the operator in the background until stop,
// which cancels it as Ctrl-C would and fails the test unless it then ends
// without an error.
func follow(t *testing.T, a *adminNode, args ...string) (out, errOut *tu.SyncBuffer, stop func()) {
	t.Helper()
	out, errOut = &tu.SyncBuffer{}, &tu.SyncBuffer{}
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	done := make(chan error, 1)
	go func() {
		done <- run(ctx, append(args, "--server", a.server, "--ca", a.caFile, "--key-file", a.keyFile), out, errOut)
	}()
	return out, errOut, func() {
		t.Helper()
		cancel()
		select {
		case err := <-done:
			if err != nil {
				t.Fatalf("iotransit %s ended with %v after Ctrl-C", strings.Join(args, " "), err)
			}
		case <-time.After(10 * time.Second * tu.Slowdown()):
			t.Fatalf("iotransit %s did not end after Ctrl-C", strings.Join(args, " "))
		}
	}
}

func TestRejectedTailFollowPollsNewRefusals(t *testing.T) {
	a := startAdminNode(t)
	up := integrationGateway(t, a, msgSerialA)
	refuse(t, up, msgTuid1)
	tu.Eventually(t, 10*time.Second, 50*time.Millisecond, func() error {
		if out := a.mustOp(t, "rejected", "list", "--tenant", node.DevTenant); !strings.Contains(out, msgTuid1) {
			return errors.New("the first refusal is not stored yet")
		}
		return nil
	})
	out, errOut, stop := follow(t, a, "rejected", "tail", "--follow", "--tenant", node.DevTenant, "-o", "json")
	wait := func(tuid string) {
		t.Helper()
		tu.Eventually(t, 15*time.Second, 50*time.Millisecond, func() error {
			if !strings.Contains(out.String(), tuid) {
				return fmt.Errorf("rejected tail --follow shows %q (stderr %q), want the refusal of %s", out.String(), errOut.String(), tuid)
			}
			return nil
		})
	}
	wait(msgTuid1) // the last ones first: the command has read the list
	refuse(t, up, msgTuid2)
	wait(msgTuid2) // then a new one, by polling
	// More than a page between two polls: every one is shown.
	const burst = api.DefaultLimit + 30
	bad := make([]string, burst)
	for i := range bad {
		bad[i] = fmt.Sprintf(`{"tsmId":12100,"tsmEv":10,"tsmTs":%d,"tsmTuid":"TSEN01BURST%06d","temp":20,"tsmCloudTs":1}`, time.Now().Unix(), i)
	}
	if _, err := up.Publish(context.Background(), []byte("["+strings.Join(bad, ",")+"]"), 1); err != nil {
		t.Fatal(err)
	}
	tu.Eventually(t, 20*time.Second, 50*time.Millisecond, func() error {
		n := 0
		for _, l := range strings.Split(out.String(), "\n") {
			if strings.Contains(l, "TSEN01BURST") {
				n++
			}
		}
		if n != burst {
			return fmt.Errorf("rejected tail --follow shows %d of a burst of %d refusals (stderr %q)", n, burst, errOut.String())
		}
		return nil
	})
	stop()
	lines := strings.Split(strings.TrimSpace(out.String()), "\n")
	if len(lines) != 2+burst {
		t.Fatalf("rejected tail --follow printed %d lines, want one per refusal (%d)", len(lines), 2+burst)
	}
	for i, l := range lines[2:] {
		if !strings.Contains(l, fmt.Sprintf(`"tsmTuid":"TSEN01BURST%06d"`, i)) {
			t.Fatalf("burst line %d %q: want the refusals oldest first", i, l)
		}
	}
	for i, tuid := range []string{msgTuid1, msgTuid2} {
		var r client.Rejected
		if err := json.Unmarshal([]byte(lines[i]), &r); err != nil || r.Tuid != tuid || r.Code != "thingsee.cloud_field" || r.Reason == "" {
			t.Fatalf("line %d %q (%v): want the cloud_field refusal of %s with its reason", i, lines[i], err, tuid)
		}
	}
}

func TestRejectedListShowsReason(t *testing.T) {
	a := startAdminNode(t)
	up := integrationGateway(t, a, msgSerialA)
	refuse(t, up, msgTuid1)
	var p client.Page[client.Rejected]
	tu.Eventually(t, 10*time.Second, 50*time.Millisecond, func() error {
		a.mustJSON(t, &p, "rejected", "list", "--tenant", node.DevTenant, "--gateway", msgSerialA)
		if len(p.Items) != 1 {
			return fmt.Errorf("rejected %+v, want one", p.Items)
		}
		return nil
	})
	if r := p.Items[0]; r.Code != "thingsee.cloud_field" || r.Reason == "" || r.Gateway != msgSerialA {
		t.Fatalf("rejected %+v: want thingsee.cloud_field with a reason, from %s", r, msgSerialA)
	}
	out := a.mustOp(t, "rejected", "list", "--tenant", node.DevTenant, "--code", "thingsee.cloud_field")
	wantLines(t, out, "CODE", "REASON", msgSerialA, "thingsee.cloud_field", p.Items[0].Reason)
	out = a.mustOp(t, "rejected", "tail", "--tenant", node.DevTenant, "--limit", "5")
	wantLines(t, out, "thingsee.cloud_field", p.Items[0].Reason)
	if out := a.mustOp(t, "rejected", "list", "--tenant", node.DevTenant, "--code", "thingsee.tuid_format"); strings.Contains(out, msgSerialA) {
		t.Fatalf("rejected list --code thingsee.tuid_format shows the cloud_field refusal:\n%s", out)
	}
}

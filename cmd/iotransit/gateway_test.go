package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/iotransit/iotransit/client"
	"github.com/iotransit/iotransit/internal/api"
	"github.com/iotransit/iotransit/internal/gateway"
	"github.com/iotransit/iotransit/internal/gwproto"
	"github.com/iotransit/iotransit/internal/node"
	tu "github.com/iotransit/iotransit/internal/testutil"
	"github.com/iotransit/iotransit/internal/testutil/nodetest"
)

const watchSerial = "TSGW06WTCH0000001"

// reportingGateway connects serial as an MQTT 5 gateway that collects the
// reports it gets on its down/errors and notes a disconnect.
type reportingGateway struct {
	up      *gateway.Uplink
	mu      sync.Mutex
	reports []gwproto.Report
	dropped string // why the session ended, "" while it lasts
}

func dialReporting(t *testing.T, a *adminNode, serial string) *reportingGateway {
	t.Helper()
	g := &reportingGateway{}
	up, err := nodetest.Dial(t, a.n, nodetest.Gateway(t, a.n, node.DevTenant, serial), serial, func(c *gateway.UplinkConfig) {
		c.OnReport = func(b []byte) {
			var r gwproto.Report
			err := json.Unmarshal(b, &r)
			g.mu.Lock()
			defer g.mu.Unlock()
			if err != nil {
				g.dropped = fmt.Sprintf("report %q is not JSON: %v", b, err)
				return
			}
			g.reports = append(g.reports, r)
		}
		c.OnDisconnect = func(reason byte, err error) {
			g.mu.Lock()
			defer g.mu.Unlock()
			g.dropped = fmt.Sprintf("reason %#x, %v", reason, err)
		}
	})
	if err != nil {
		t.Fatal(err)
	}
	g.up = up
	return g
}

// state returns the reports so far and why the session ended ("" while it
// lasts).
func (g *reportingGateway) state() ([]gwproto.Report, string) {
	g.mu.Lock()
	defer g.mu.Unlock()
	return append([]gwproto.Report(nil), g.reports...), g.dropped
}

// TestGatewayWatchShowsRejectionWithoutTakingOver: gateway watch runs while
// the gateway is connected; a message it publishes is refused; the watch
// prints the refusal with the code and reason the gateway got on its
// down/errors, and the gateway's MQTT session is not disturbed.
func TestGatewayWatchShowsRejectionWithoutTakingOver(t *testing.T) {
	a := startAdminNode(t)
	gw := dialReporting(t, a, watchSerial)
	publish(t, gw.up, msgTuid1) // an accepted message before the watch

	out, errOut, stop := follow(t, a, "gateway", "watch", watchSerial, "--tenant", node.DevTenant)
	wait := func(what string, want ...string) {
		t.Helper()
		tu.Eventually(t, 20*time.Second, 50*time.Millisecond, func() error {
			for _, l := range strings.Split(out.String(), "\n") {
				if containsAll(l, want...) {
					return nil
				}
			}
			return fmt.Errorf("gateway watch shows no line with %q (%s):\n%s\nstderr: %s", want, what, out.String(), errOut.String())
		})
	}
	wait("the state first", "gateway", "active, connected")
	wait("the connect, from the audit", "connected", "from 127.0.0.1:")
	wait("the message before the watch", "message", "tsmTuid "+msgTuid1+", tsmId 12100")

	refuse(t, gw.up, msgTuid2)
	var rep gwproto.ReportedRejection
	tu.Eventually(t, 10*time.Second, 20*time.Millisecond, func() error {
		reports, dropped := gw.state()
		if dropped != "" {
			return fmt.Errorf("the gateway's session ended: %s", dropped)
		}
		if len(reports) != 1 || len(reports[0].Rejected) != 1 {
			return fmt.Errorf("reports on down/errors: %+v, want one of one rejection", reports)
		}
		rep = reports[0].Rejected[0]
		return nil
	})
	wait("the refusal the gateway was told of", "rejected", "["+rep.Code+"]", rep.Reason, "tsmTuid "+msgTuid2)
	stop()
	t.Logf("gateway watch printed:\n%s", out.String())

	// The gateway was never knocked off: its session lasts and takes
	// another message.
	if _, dropped := gw.state(); dropped != "" {
		t.Fatalf("the gateway's session ended while it was watched: %s", dropped)
	}
	select {
	case <-gw.up.Done():
		t.Fatal("the gateway's MQTT client stopped while it was watched")
	default:
	}
	publish(t, gw.up, msgTuid1)
	if strings.Contains(out.String(), "disconnected") {
		t.Fatalf("gateway watch shows a disconnect:\n%s", out.String())
	}
	lines := strings.Split(strings.TrimSpace(out.String()), "\n")
	for _, l := range lines {
		if f := strings.Fields(l); len(f) < 3 || !strings.HasSuffix(f[0], "Z") {
			t.Fatalf("line %q: want time, kind, detail", l)
		}
	}
}

// TestGatewayWatchOnce: --once prints the recent events, oldest first, and
// exits; -o json prints one object a line; --since leaves older ones out.
func TestGatewayWatchOnce(t *testing.T) {
	a := startAdminNode(t)
	gw := dialReporting(t, a, watchSerial)
	// The audit entry of the connect is written when the log appends it,
	// which may be after a first upload: wait for it.
	tu.Eventually(t, 20*time.Second, 100*time.Millisecond, func() error {
		if out := a.mustOp(t, "gateway", "watch", watchSerial, "--once", "--tenant", node.DevTenant); !strings.Contains(out, "  connected ") {
			return fmt.Errorf("no connect in %q", out)
		}
		return nil
	})
	refuse(t, gw.up, msgTuid1)
	publish(t, gw.up, msgTuid2)
	var kinds []string
	tu.Eventually(t, 20*time.Second, 100*time.Millisecond, func() error {
		kinds = nil
		out := a.mustOp(t, "gateway", "watch", watchSerial, "--once", "--tenant", node.DevTenant, "-o", "json")
		for _, l := range strings.Split(strings.TrimSpace(out), "\n") {
			var ev watchEvent
			if err := json.Unmarshal([]byte(l), &ev); err != nil {
				t.Fatalf("gateway watch -o json line %q: %v", l, err)
			}
			kinds = append(kinds, ev.Kind)
			if ev.Kind == "rejected" && (ev.Rejected == nil || ev.Rejected.Tuid != msgTuid1) {
				t.Fatalf("rejected event %q: want the rejected message of %s", l, msgTuid1)
			}
		}
		if want := []string{"gateway", "connected", "rejected", "message"}; strings.Join(kinds, " ") != strings.Join(want, " ") {
			return fmt.Errorf("kinds %v, want %v", kinds, want)
		}
		return nil
	})
	if out := a.mustOp(t, "gateway", "watch", watchSerial, "--once", "--since", time.Now().Add(time.Hour).UTC().Format(time.RFC3339), "--tenant", node.DevTenant); strings.Count(strings.TrimSpace(out), "\n") != 0 || !strings.Contains(out, "gateway") {
		t.Fatalf("gateway watch --since an hour ahead: %q, want the state line only", out)
	}
	if _, _, err := a.op(t, "gateway", "watch", "TSGW06WTCH0000009", "--once", "--tenant", node.DevTenant); err == nil || !strings.Contains(err.Error(), "not_found") {
		t.Fatalf("gateway watch of an unknown gateway: %v, want not found", err)
	}

	// A key without audit:read sees the rest, and is told what it misses.
	var key client.APIKey
	a.mustJSON(t, &key, "apikey", "create", "--tenant", node.DevTenant, "--scope", "gateways:read", "--scope", "messages:read", "--name", "watcher")
	out, errOut, err := a.cli(t, "gateway", "watch", watchSerial, "--once", "--tenant", node.DevTenant, "--server", a.server, "--ca", a.caFile, "--key", key.Key)
	if err != nil || !containsAll(out, "rejected", "message") || strings.Contains(out, "connected  ") || !containsAll(errOut, "connections and audit entries not shown", "audit:read") {
		t.Fatalf("gateway watch without audit:read: %v\nstdout:\n%s\nstderr:\n%s", err, out, errOut)
	}
}

// containsAll reports whether s contains every one of subs.
func containsAll(s string, subs ...string) bool {
	for _, sub := range subs {
		if !strings.Contains(s, sub) {
			return false
		}
	}
	return true
}

// TestGatewayLabelSetsAndRemoves: gateway label sets some labels and
// removes others, and keeps the rest.
func TestGatewayLabelSetsAndRemoves(t *testing.T) {
	a := startAdminNode(t)
	a.mustOp(t, "gateway", "register", watchSerial, "--label", "site=hel", "--label", "floor=2", "--label", "room=a1", "--tenant", node.DevTenant)
	var g client.Gateway
	a.mustJSON(t, &g, "gateway", "label", watchSerial, "floor=3", "owner=ops", "--remove", "room", "--remove", "absent", "--tenant", node.DevTenant)
	if want := map[string]string{"site": "hel", "floor": "3", "owner": "ops"}; !maps.Equal(g.Labels, want) {
		t.Fatalf("labels after gateway label: %v, want %v", g.Labels, want)
	}
	out := a.mustOp(t, "gateway", "label", "--tenant", node.DevTenant, watchSerial, "--remove", "owner,floor")
	wantLines(t, out, "SERIAL", "LABELS", watchSerial, "site=hel")
	if strings.Contains(out, "owner") || strings.Contains(out, "floor") {
		t.Fatalf("gateway label --remove owner,floor still shows them:\n%s", out)
	}
	if got, ok := a.n.Registry().Gateway(node.DevTenant, watchSerial); !ok || !maps.Equal(got.Labels, map[string]string{"site": "hel"}) {
		t.Fatalf("stored labels %v (found %v), want site=hel only", got.Labels, ok)
	}

	for _, tc := range []struct {
		name string
		args []string
		want string
	}{
		{"no serial", nil, "takes at least 1 argument"},
		{"not key=value", []string{watchSerial, "site"}, `want key=value, got "site"`},
		{"nothing to do", []string{watchSerial}, "nothing to do"},
		{"set and removed", []string{watchSerial, "site=x", "--remove", "site"}, "both set and removed"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, _, err := a.op(t, append(append([]string{"gateway", "label"}, tc.args...), "--tenant", node.DevTenant)...)
			if !errors.Is(err, errUsage) || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("gateway label %v: %v, want a usage error with %q", tc.args, err, tc.want)
			}
		})
	}
	_, _, err := a.op(t, "gateway", "label", "TSGW06WTCH0000009", "a=b", "--tenant", node.DevTenant)
	wantProblem(t, err, "registry.gateway_not_found")

	// Labels given at the same time by several callers are all kept: the
	// change is one update on the server, not a read and a write.
	const callers = 12
	var wg sync.WaitGroup
	errs := make(chan error, callers)
	for i := range callers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if _, _, err := a.op(t, "gateway", "label", watchSerial, fmt.Sprintf("k%d=v", i), "--tenant", node.DevTenant); err != nil {
				errs <- err
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	got, _ := a.n.Registry().Gateway(node.DevTenant, watchSerial)
	for i := range callers {
		if got.Labels[fmt.Sprintf("k%d", i)] != "v" {
			t.Fatalf("after %d concurrent gateway label calls: labels %v, k%d lost", callers, got.Labels, i)
		}
	}
}

// TestEnrollPrintsWorkingPublishCommand: after enroll, the MQTT address
// (the API's host, on the port of the enrollment answer) and a
// mosquitto_pub command with the files just written; run verbatim, it
// stores a message of the gateway.
func TestEnrollPrintsWorkingPublishCommand(t *testing.T) {
	a := startAdminNode(t)
	const serial = "TSGW06ENRL0000002"
	a.mustOp(t, "gateway", "register", serial, "--tenant", node.DevTenant)
	var tok client.EnrollmentToken
	a.mustJSON(t, &tok, "token", "create", serial, "--tenant", node.DevTenant)
	dir := filepath.Join(t.TempDir(), "my gateway") // a space: the command quotes the paths
	out, errOut, err := a.cli(t, "enroll", "--server", a.server, "--ca", a.caFile, "--token", tok.Token, "--serial", serial, "--out", dir)
	if err != nil {
		t.Fatalf("enroll: %v\n%s", err, errOut)
	}
	wantLines(t, out, "MQTT:        "+a.n.MQTTAddr()+" ", "Publish a test message")
	var command string
	for _, l := range strings.Split(out, "\n") {
		if c := strings.TrimSpace(l); strings.HasPrefix(c, "mosquitto_pub ") {
			command = c
		}
	}
	if command == "" || !containsAll(command, "-i "+serial, "-t v1/gw/"+serial+"/up", filepath.Join(dir, "key.pem")) {
		t.Fatalf("enroll printed no publish command as %s with its files:\n%s", serial, out)
	}

	tu.RequirePeer(t, "mosquitto_pub")
	if msg, err := exec.Command("sh", "-c", command).CombinedOutput(); err != nil {
		t.Fatalf("the printed command %q: %v\n%s", command, err, msg)
	}
	var p client.Page[client.Message]
	a.mustJSON(t, &p, "messages", "list", "--gateway", serial, "--tenant", node.DevTenant)
	if len(p.Items) != 1 || p.Items[0].Gateway != serial {
		t.Fatalf("after the printed command: %+v, want one message of %s", p.Items, serial)
	}
}

// TestGatewayReadmeMosquittoRR runs the README's mosquitto_rr check
// verbatim (but for the MQTT port, a free one here) against a dev server
// whose data directory is ./data: one connection publishes and prints the
// report it gets on down/errors.
func TestGatewayReadmeMosquittoRR(t *testing.T) {
	tu.RequirePeer(t, "mosquitto_rr")
	readme, err := os.ReadFile("../../README.md")
	if err != nil {
		t.Fatal(err)
	}
	var block string
	for _, b := range strings.Split(string(readme), "```sh\n")[1:] {
		if b, _, _ = strings.Cut(b, "```"); strings.Contains(b, "mosquitto_rr ") {
			block = b
		}
	}
	if block == "" || !strings.Contains(block, "-p 8883 ") {
		t.Fatalf("README.md has no sh block with mosquitto_rr on port 8883:\n%s", block)
	}
	dir := t.TempDir()
	n := nodetest.Start(t, func(c *node.Config) { c.DataDir = filepath.Join(dir, "data") })
	_, port := node.LocalHostPort(n.MQTTAddr())
	cmd := exec.Command("sh", "-c", strings.Replace(block, "-p 8883 ", "-p "+port+" ", 1))
	cmd.Dir = dir
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("the README's mosquitto_rr: %v\n%s", err, out)
	}
	var rep gwproto.Report
	if err := json.Unmarshal(out, &rep); err != nil {
		t.Fatalf("mosquitto_rr printed %q, want the report: %v", out, err)
	}
	if len(rep.Rejected) != 1 || rep.Rejected[0].Code != "thingsee.cloud_field" || !strings.Contains(string(readme), rep.Rejected[0].Reason) {
		t.Fatalf("report %+v: want the cloud_field rejection the README shows", rep)
	}
}

// TestGatewayWatchSaysWhatItSkips: more new messages in one poll than a
// page are not all shown; the watch says so rather than skip them silently.
func TestGatewayWatchSaysWhatItSkips(t *testing.T) {
	a := startAdminNode(t)
	up := integrationGateway(t, a, watchSerial)
	publish(t, up, msgTuid1)
	out, errOut, stop := follow(t, a, "gateway", "watch", watchSerial, "--tenant", node.DevTenant)
	tu.Eventually(t, 20*time.Second, 50*time.Millisecond, func() error {
		if !strings.Contains(out.String(), "tsmTuid "+msgTuid1) {
			return fmt.Errorf("gateway watch shows %q (stderr %q), want the first message", out.String(), errOut.String())
		}
		return nil
	})
	msgs := make([]string, api.DefaultLimit+1) // one more than the server's default page
	for i := range msgs {
		msgs[i] = tu.Thingsee(msgTuid2, time.Now().Unix()-int64(i), 20)
	}
	publishRaw(t, up, "["+strings.Join(msgs, ",")+"]")
	tu.Eventually(t, 20*time.Second, 50*time.Millisecond, func() error {
		if !strings.Contains(out.String(), "skipped") {
			return fmt.Errorf("gateway watch shows no skipped line:\n%s", out.String())
		}
		return nil
	})
	stop()
	if n := strings.Count(out.String(), "tsmTuid "+msgTuid2); n != api.DefaultLimit {
		t.Fatalf("gateway watch shows %d of the %d new messages, want a page of %d", n, len(msgs), api.DefaultLimit)
	}
}

package main

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	loadgen "github.com/iotransit/iotransit/internal/bench"
	"github.com/iotransit/iotransit/internal/node"
	tu "github.com/iotransit/iotransit/internal/testutil"
	"github.com/iotransit/iotransit/internal/testutil/nodetest"
)

// runBenchCmd runs `iotransit bench args...` in-process.
func runBenchCmd(t *testing.T, args ...string) (stdout, stderr string, err error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	var out, errOut bytes.Buffer
	err = run(ctx, append([]string{"bench"}, args...), &out, &errOut)
	return out.String(), errOut.String(), err
}

// startDevServerArgs builds the binary and starts `iotransit serve --dev
// args...` (not in -short mode).
func startDevServerArgs(t *testing.T, args ...string) server {
	t.Helper()
	if testing.Short() {
		t.Skip("builds and runs the binary")
	}
	return server{nodetest.StartDevServer(t, buildBinary(t), "warn", args...)}
}

func decodeBenchReport(t *testing.T, stdout, stderr string) loadgen.Report {
	t.Helper()
	var rep loadgen.Report
	if err := json.Unmarshal([]byte(stdout), &rep); err != nil {
		t.Fatalf("decode JSON: %v\nstdout:\n%s\nstderr:\n%s", err, stdout, stderr)
	}
	return rep
}

// TestBenchIotransit is the smoke test: 3 gateways for a second against an
// in-process node; everything acknowledged is stored.
func TestBenchIotransit(t *testing.T) {
	stdout, stderr, err := runBenchCmd(t, "--gateways", "3", "--duration", "1s", "--warmup", "200ms", "-o", "json")
	if err != nil {
		t.Fatalf("bench: %v\n%s", err, stderr)
	}
	rep := decodeBenchReport(t, stdout, stderr)
	if len(rep.Results) != 1 {
		t.Fatalf("%d results, want 1", len(rep.Results))
	}
	r := rep.Results[0]
	if r.Name != "iotransit" || r.Result == nil {
		t.Fatalf("result %+v", r)
	}
	if r.Gateways != 3 || r.Mode != "closed-loop" || r.Payload != "typical" {
		t.Errorf("gateways %d, mode %s, payload %s", r.Gateways, r.Mode, r.Payload)
	}
	if r.Acked == 0 || r.Errors.Total != 0 {
		t.Fatalf("acked %d, errors %+v\n%s", r.Acked, r.Errors, stderr)
	}
	if r.Stored == nil || r.Stored.Stored != uint64(r.TotalMessagesAcked) || !r.Stored.OK || r.TotalMessagesAcked < r.Acked {
		t.Fatalf("stored %+v, acknowledged %d (measured %d)", r.Stored, r.TotalMessagesAcked, r.Acked)
	}
	if r.Stored.Duplicates != 0 || r.Stored.Rejected != 0 || r.Stored.Refused != 0 {
		t.Errorf("duplicates/rejected/refused: %+v", r.Stored)
	}
	if r.Latency.Count != int(r.Acked) || r.Latency.P50Ms <= 0 || r.Latency.P99Ms < r.Latency.P50Ms {
		t.Errorf("latency %+v", r.Latency)
	}
	if rep.GOMAXPROCS < 1 || rep.GoVersion == "" || !strings.Contains(rep.Command, "--gateways 3") {
		t.Errorf("context: %+v", rep)
	}
	if rep.Mode != loadgen.ModeInProcess {
		t.Errorf("mode %q: the in-process bench must say so", rep.Mode)
	}
}

// TestBenchMosquittoPeer runs the same load against mosquitto; skipped when
// it is not installed unless IOTRANSIT_REQUIRE_PEERS=1.
func TestBenchMosquittoPeer(t *testing.T) {
	tu.RequireMosquitto(t)
	stdout, stderr, err := runBenchCmd(t, "--gateways", "2", "--duration", "1s", "--warmup", "100ms", "--rate", "400", "--peer", "mosquitto")
	if err != nil {
		t.Fatalf("bench: %v\n%s", err, stderr)
	}
	for _, want := range []string{"mode:     in-process", "mosquitto (version 2.", "open loop at 400", "iotransit / mosquitto: throughput", "yes: "} {
		if !strings.Contains(stdout, want) {
			t.Errorf("table lacks %q:\n%s", want, stdout)
		}
	}
	if strings.Contains(stdout, "skipped") {
		t.Errorf("peer skipped:\n%s", stdout)
	}
	t.Log("\n" + stdout)

	stdout, stderr, err = runBenchCmd(t, "--gateways", "2", "--duration", "1s", "--warmup", "100ms", "--peer", "mosquitto", "-o", "json")
	if err != nil {
		t.Fatalf("bench: %v\n%s", err, stderr)
	}
	rep := decodeBenchReport(t, stdout, stderr)
	if len(rep.Results) != 2 || rep.Results[1].Result == nil {
		t.Fatalf("results: %s", stdout)
	}
	m := rep.Results[1]
	if m.Name != "mosquitto" || m.Acked == 0 || m.Errors.Total != 0 || m.Gateways != 2 {
		t.Fatalf("mosquitto: %+v", m.Result)
	}
	if rep.Ratio == nil || rep.Ratio.Throughput <= 0 {
		t.Errorf("ratio %+v", rep.Ratio)
	}
}

func TestBenchRefusesBadFlags(t *testing.T) {
	for _, args := range [][]string{
		{"--gateways", "0"},
		{"--duration", "0s"},
		{"--warmup", "-1s"},
		{"--rate", "-5"},
		{"--payload", "huge"},
		{"--fsync", "sometimes"},
		{"--peer", "emqx"},
		{"-o", "xml"},
		{"--max-inflight", "0"},
		{"--window", "0"},
		{"--window", "65536"},
		{"--forward", "mqtt", "--rate", "100"},
		{"--forward", "webhook"}, // no --rate
		{"--forward", "webhook", "--rate", "100", "--peer", "mosquitto"},
		{"--forward-concurrency", "-1"},
		{"--forward-concurrency", "33"},
		{"--forward-batch", "0"},
		{"--forward-batch", "1001"},
		{"--forward-wait", "5ms"},
		// The integration's settings without --forward: nothing would use them.
		{"--forward-batch", "50"},
		{"--forward-wait", "20ms"},
		{"--forward-concurrency", "2"},
		{"stray"},
	} {
		_, _, err := runBenchCmd(t, args...)
		if err == nil {
			t.Errorf("bench %v: no error", args)
			continue
		}
		if !strings.Contains(err.Error(), strings.TrimLeft(args[0], "-")) {
			t.Errorf("bench %v: error %q does not name the flag", args, err)
		}
	}
	// Every problem at once.
	_, _, err := runBenchCmd(t, "--gateways", "0", "--payload", "huge")
	if err == nil || !strings.Contains(err.Error(), "--gateways") || !strings.Contains(err.Error(), "--payload") {
		t.Errorf("error %v does not report both problems", err)
	}
}

func TestBenchFlagsFromEnvironment(t *testing.T) {
	t.Setenv("IOTRANSIT_PAYLOAD", "nonsense")
	_, _, err := runBenchCmd(t)
	if err == nil || !strings.Contains(err.Error(), "nonsense") {
		t.Errorf("IOTRANSIT_PAYLOAD not used: %v", err)
	}
}

func TestCommandLine(t *testing.T) {
	got := commandLine([]string{"--gateways", "50", "--duration=20s", "--tmp-dir", "/my dir", "it's"})
	want := `iotransit bench --gateways 50 --duration=20s --tmp-dir '/my dir' 'it'\''s'`
	if got != want {
		t.Errorf("commandLine = %s, want %s", got, want)
	}
}

// TestCommandLineHidesTheOperatorKey: the command a report shows (and
// reports are shared) never holds the operator key, however it was given;
// the key's file may be shown.
func TestCommandLineHidesTheOperatorKey(t *testing.T) {
	for _, tc := range []struct {
		name string
		args []string
		want string
	}{
		{"flag and value", []string{"--mqtt", "h:1", "--operator-key", "itop_s3cret", "--rate", "5"}, "iotransit bench --mqtt h:1 --operator-key REDACTED --rate 5"},
		{"with =", []string{"--operator-key=itop_s3cret"}, "iotransit bench --operator-key=REDACTED"},
		{"one dash", []string{"-operator-key", "itop_s3cret"}, "iotransit bench -operator-key REDACTED"},
		{"the file", []string{"--operator-key-file", "data/operator.key"}, "iotransit bench --operator-key-file data/operator.key"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := commandLine(tc.args); got != tc.want || strings.Contains(got, "s3cret") {
				t.Errorf("commandLine = %s, want %s", got, tc.want)
			}
		})
	}
}

// TestBenchForward is the forwarding smoke test: 3 gateways publish for a
// second at 200/s, then as fast as they can; the in-process node forwards
// every message to the in-process webhook receiver, signed.
func TestBenchForward(t *testing.T) {
	start := time.Now()
	stdout, stderr, err := runBenchCmd(t, "--forward", "webhook", "--gateways", "3", "--duration", "1s", "--warmup", "200ms", "--rate", "200", "-o", "json")
	if err != nil {
		t.Fatalf("bench: %v\n%s", err, stderr)
	}
	t.Logf("took %s", time.Since(start).Round(time.Millisecond))
	rep := decodeBenchReport(t, stdout, stderr)
	if len(rep.Results) != 2 {
		t.Fatalf("%d results, want the steady and the throughput phase", len(rep.Results))
	}
	for i, phase := range []string{"steady", "throughput"} {
		r := rep.Results[i]
		f := r.Forward
		if r.Result == nil || f == nil || f.Phase != phase {
			t.Fatalf("result %d: %+v", i, r)
		}
		if f.Published == 0 || f.Acked != f.Published || f.Arrived != f.Published || f.Missing != 0 {
			t.Errorf("%s: published %d, acked %d, arrived %d, missing %d\n%s", phase, f.Published, f.Acked, f.Arrived, f.Missing, stderr)
		}
		if f.Acked != r.TotalMessagesAcked {
			t.Errorf("%s: the trace saw %d messages acknowledged, the load %d", phase, f.Acked, r.TotalMessagesAcked)
		}
		if f.SignatureFailures != 0 || f.Unknown != 0 || f.BadRequests != 0 {
			t.Errorf("%s: signature failures %d, unknown %d, bad requests %d: %v", phase, f.SignatureFailures, f.Unknown, f.BadRequests, f.Samples)
		}
		if f.E2E.Count == 0 || f.E2E.P50Ms <= 0 || f.E2E.P99Ms < f.E2E.P50Ms || f.DeliveredPerSecond <= 0 {
			t.Errorf("%s: e2e %+v, delivered %.0f/s", phase, f.E2E, f.DeliveredPerSecond)
		}
		if f.Batches == 0 || f.MeanBatch < 1 || f.MaxBatch > 100 || f.BatchMaxMessages != 100 || f.BatchMaxWait != "50ms" {
			t.Errorf("%s: batches %d, mean %.1f, max %d (limit %d, %s)", phase, f.Batches, f.MeanBatch, f.MaxBatch, f.BatchMaxMessages, f.BatchMaxWait)
		}
		if f.AfterWait == nil || f.AfterWait.Backlog != 0 || f.AfterWait.State.Delivered != uint64(f.Arrived) {
			t.Errorf("%s: integration after the wait %+v, %d arrived", phase, f.AfterWait, f.Arrived)
		}
		if f.Duplicates != 0 {
			t.Logf("%s: %d duplicate deliveries (at-least-once)", phase, f.Duplicates)
		}
		if r.Stored == nil || !r.Stored.OK || r.Stored.Duplicates != 0 {
			t.Errorf("%s: stored %+v", phase, r.Stored)
		}
	}
	if r := rep.Results[0]; r.Mode != "open-loop" || r.TargetRate != 200 {
		t.Errorf("steady phase: mode %s at %g", r.Mode, r.TargetRate)
	}
	if r := rep.Results[1]; r.Mode != "closed-loop" {
		t.Errorf("throughput phase: mode %s", r.Mode)
	}

	// The table.
	stdout, stderr, err = runBenchCmd(t, "--forward", "webhook", "--gateways", "2", "--duration", "500ms", "--warmup", "100ms", "--rate", "100", "--forward-batch", "10", "--forward-concurrency", "2")
	if err != nil {
		t.Fatalf("bench: %v\n%s", err, stderr)
	}
	for _, want := range []string{"forward: delivered messages/s", "e2e latency p99", "batches of at most 10 messages", "signature failures", "0, after waiting"} {
		if !strings.Contains(stdout, want) {
			t.Errorf("table lacks %q:\n%s", want, stdout)
		}
	}
	if !regexp.MustCompile(`lanes \(delivery\.concurrency\) +2 +2\n`).MatchString(stdout) {
		t.Errorf("table does not show the 2 lanes asked for:\n%s", stdout)
	}
	if strings.Contains(stdout, "!!!") {
		t.Errorf("table reports a problem:\n%s", stdout)
	}
}

// TestBenchExternal measures a `serve --dev` process from outside: its
// gateways are provisioned through the API, the JSON has the figures the
// issue asks for and the stored check holds; a second run reuses the cached
// certificates (no new enrollment); --peer mosquitto adds the ratios.
func TestBenchExternal(t *testing.T) {
	s := startDevServerArgs(t, "--msg-rate", "1000000", "--msg-burst", "1000000")
	cache := t.TempDir()
	ext := []string{"--mqtt", s.MQTT, "--api", "https://" + s.API, "--ca", s.GatewayFile("ca.pem"),
		"--operator-key-file", filepath.Join(s.Dir, node.OperatorKeyFile), "--server-pid", strconv.Itoa(s.Cmd.Process.Pid),
		"--cache-dir", cache, "--tenant", "bench-ext", "--gateways", "3", "--duration", "1s", "--warmup", "200ms"}

	var first map[string]any
	t.Run("json", func(t *testing.T) {
		stdout, stderr, err := runBenchCmd(t, append(ext, "-o", "json")...)
		if err != nil {
			t.Fatalf("bench: %v\n%s\nserver:\n%s", err, stderr, s.Out)
		}
		if err := json.Unmarshal([]byte(stdout), &first); err != nil {
			t.Fatalf("%v\n%s", err, stdout)
		}
		checkExternalJSON(t, first, stdout)
		if p := first["provision"].(map[string]any); p["enrolled"] != 3.0 || p["reused"] != 0.0 {
			t.Errorf("provision %v", p)
		}
		if strings.Contains(stdout, "operator") && strings.Contains(stdout, "itop_") {
			t.Error("the report holds the operator key")
		}
	})
	t.Run("cache reused", func(t *testing.T) {
		stdout, stderr, err := runBenchCmd(t, ext...)
		if err != nil {
			t.Fatalf("bench: %v\n%s", err, stderr)
		}
		for _, want := range []string{"mode:     external", "3 reused from the cache, 0 enrolled", "yes: ", "server CPU per publish"} {
			if !strings.Contains(stdout, want) {
				t.Errorf("table lacks %q:\n%s", want, stdout)
			}
		}
		certs, err := s.Operator(t).ListCertificates(context.Background(), "bench-ext", loadgen.TenantSerials("bench-ext", 3)[2])
		if err != nil || len(certs) != 1 {
			t.Errorf("%d certificates (%v): want the one of the first run", len(certs), err)
		}
	})
	t.Run("peer mosquitto", func(t *testing.T) {
		tu.RequireMosquitto(t)
		stdout, stderr, err := runBenchCmd(t, append(ext, "--peer", "mosquitto", "--rate", "300", "-o", "json")...)
		if err != nil {
			t.Fatalf("bench: %v\n%s", err, stderr)
		}
		var rep map[string]any
		if err := json.Unmarshal([]byte(stdout), &rep); err != nil {
			t.Fatalf("%v\n%s", err, stdout)
		}
		checkExternalJSON(t, rep, stdout)
		peer, _ := rep["peer"].(map[string]any)
		if peer == nil || peer["system"] != "mosquitto" || peer["skipped"] != nil || peer["stored"] != nil {
			t.Fatalf("peer %v", peer)
		}
		if v, _ := peer["serverCpuPerMessageUs"].(float64); v <= 0 {
			t.Errorf("mosquitto CPU per message %v", peer["serverCpuPerMessageUs"])
		}
		ratio, _ := rep["ratio"].(map[string]any)
		for _, k := range []string{"throughput", "cpuPerMessage", "p50", "p99"} {
			if v, _ := ratio[k].(float64); v <= 0 {
				t.Errorf("ratio %s = %v in %v", k, ratio[k], ratio)
			}
		}
	})
}

// TestBenchExternalForward measures the forwarding of a `serve --dev`
// process from outside: the bench's receiver is trusted through the
// integration's caPem, every acknowledged message arrives in its device's
// order, and the figures agree with the stream's count.
func TestBenchExternalForward(t *testing.T) {
	s := startDevServerArgs(t, "--msg-rate", "1000000", "--msg-burst", "1000000")
	stdout, stderr, err := runBenchCmd(t, "--mqtt", s.MQTT, "--api", "https://"+s.API, "--ca", s.GatewayFile("ca.pem"),
		"--operator-key-file", filepath.Join(s.Dir, node.OperatorKeyFile), "--server-pid", strconv.Itoa(s.Cmd.Process.Pid),
		"--cache-dir", t.TempDir(), "--tenant", "bench-fwd", "--gateways", "3", "--rate", "150", "--duration", "1s", "--warmup", "200ms",
		"--forward", "webhook", "--forward-batch", "20", "--forward-wait", "10ms", "--forward-concurrency", "2", "--receiver-addr", "127.0.0.1:0", "-o", "json")
	if err != nil {
		t.Fatalf("bench: %v\n%s\nserver:\n%s", err, stderr, s.Out)
	}
	var rep loadgen.ExternalForwardReport
	if err := json.Unmarshal([]byte(stdout), &rep); err != nil {
		t.Fatalf("%v\n%s", err, stdout)
	}
	var raw map[string]any
	if err := json.Unmarshal([]byte(stdout), &raw); err != nil {
		t.Fatal(err)
	}
	checkExternalJSON(t, raw, stdout)
	fr, st := rep.Forward, rep.Stored
	if fr == nil || st == nil {
		t.Fatalf("no forward result or stored check:\n%s", stdout)
	}
	if fr.Published == 0 || fr.Acked != fr.Published || fr.Arrived != fr.Acked || fr.Missing != 0 || fr.Duplicates != 0 {
		t.Errorf("published %d, acked %d, arrived %d, missing %d, duplicates %d", fr.Published, fr.Acked, fr.Arrived, fr.Missing, fr.Duplicates)
	}
	if fr.OrderViolations != 0 || fr.SignatureFailures != 0 || fr.Unknown != 0 || fr.Concurrency != 2 || fr.MaxBatch > 20 {
		t.Errorf("order violations %d, signature failures %d, unknown %d, lanes %d, max batch %d", fr.OrderViolations, fr.SignatureFailures, fr.Unknown, fr.Concurrency, fr.MaxBatch)
	}
	if st.Delta != uint64(fr.Arrived) || st.Acked != fr.Acked {
		t.Errorf("the stream grew by %d for %d acknowledged, %d arrived", st.Delta, fr.Acked, fr.Arrived)
	}
	if fr.E2E.Count == 0 || fr.E2E.P99Ms < fr.E2E.P50Ms || fr.AfterWait == nil || fr.AfterWait.Backlog != 0 {
		t.Errorf("e2e %+v, integration after the wait %+v", fr.E2E, fr.AfterWait)
	}
	// The integration is the bench's, deleted at the end.
	list, err := s.Operator(t).ListIntegrations(context.Background(), "bench-fwd")
	if err != nil || len(list) != 0 {
		t.Errorf("integrations left: %v, %v", list, err)
	}
	if t.Failed() {
		t.Logf("report:\n%s", stdout)
	}
}

// checkExternalJSON checks the figures of an external bench's JSON.
func checkExternalJSON(t *testing.T, rep map[string]any, raw string) {
	t.Helper()
	if rep["mode"] != "external" || rep["system"] != "iotransit" {
		t.Errorf("mode %v, system %v", rep["mode"], rep["system"])
	}
	pos := func(k string, v any) {
		if f, _ := v.(float64); f <= 0 {
			t.Errorf("%s = %v, want > 0", k, v)
		}
	}
	pos("throughput", rep["throughput"])
	lat, _ := rep["latency"].(map[string]any)
	for _, k := range []string{"p50", "p90", "p99", "p999"} {
		pos("latency."+k, lat[k])
	}
	for _, k := range []string{"serverCpuPerMessageUs", "serverRssBytes"} {
		pos(k, rep[k])
	}
	if _, ok := rep["benchCpuCores"].(float64); !ok {
		t.Errorf("benchCpuCores missing")
	}
	errs, _ := rep["errors"].(map[string]any)
	for _, k := range []string{"total", "refused", "timeouts", "other", "connections_lost"} {
		if v, ok := errs[k].(float64); !ok || v != 0 {
			t.Errorf("errors.%s = %v", k, errs[k])
		}
	}
	st, _ := rep["stored"].(map[string]any)
	if st["ok"] != true || st["acked"] == 0.0 || st["delta"] != st["acked"] {
		t.Errorf("stored %v", st)
	}
	if t.Failed() {
		t.Logf("report:\n%s", raw)
	}
}

func TestBenchExternalRefusesBadFlags(t *testing.T) {
	key := filepath.Join(t.TempDir(), "key")
	if err := os.WriteFile(key, []byte("itop_x"), 0o600); err != nil {
		t.Fatal(err)
	}
	ok := []string{"--mqtt", "127.0.0.1:1", "--api", "https://127.0.0.1:2", "--ca", key, "--operator-key-file", key}
	for _, tc := range []struct {
		name string
		args []string
		want string
	}{
		{"api without mqtt", []string{"--api", "https://x:1"}, "--api"},
		{"ca without mqtt", []string{"--ca", key}, "--ca"},
		{"no api", []string{"--mqtt", "127.0.0.1:1", "--ca", key, "--operator-key-file", key}, "--api"},
		{"no ca", []string{"--mqtt", "127.0.0.1:1", "--api", "https://x:1", "--operator-key-file", key}, "--ca"},
		{"no key", []string{"--mqtt", "127.0.0.1:1", "--api", "https://x:1", "--ca", key}, "--operator-key"},
		{"http api", append(ok, "--api", "http://x:1"), "api"},
		{"bad mqtt", append(ok, "--mqtt", "nohost"), "--mqtt"},
		{"fsync", append(ok, "--fsync", "always"), "--fsync"},
		{"receiver without forward", append(ok, "--receiver-addr", "127.0.0.1:0"), "--receiver-addr"},
		{"receiver on a wildcard", append(ok, "--forward", "webhook", "--rate", "1", "--receiver-addr", "0.0.0.0:9000"), "--receiver-addr"},
		{"receiver without mqtt", []string{"--forward", "webhook", "--rate", "1", "--receiver-addr", "127.0.0.1:0"}, "--receiver-addr"},
		{"forward with storm", append(ok, "--forward", "webhook", "--rate", "1", "--storm", "5"), "--forward"},
		{"forward without rate", append(ok, "--forward", "webhook"), "--rate"},
		{"source", append(ok, "--source-addrs", "127.0.0.1,nope"), "nope"},
		{"empty tenant", append(ok, "--tenant", ""), "--tenant"},
		{"no such server process", append(ok, "--server-pid", "999999999"), "--server-pid"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, _, err := runBenchCmd(t, tc.args...)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("bench %v: error %v, want one naming %s", tc.args, err, tc.want)
			}
		})
	}
	// The admin commands' IOTRANSIT_TENANT does not send the bench's
	// gateways to a customer's tenant.
	t.Setenv("IOTRANSIT_TENANT", "acme")
	if _, _, err := runBenchCmd(t, ok...); err == nil || !strings.Contains(err.Error(), "IOTRANSIT_TENANT names tenant acme") {
		t.Errorf("a tenant from the environment: %v", err)
	}
}

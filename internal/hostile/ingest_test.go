package hostile_test

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"net"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/paho"

	"github.com/iotransit/iotransit/client"
	"github.com/iotransit/iotransit/internal/backbone/names"
	"github.com/iotransit/iotransit/internal/ingest"
	"github.com/iotransit/iotransit/internal/node"
	tu "github.com/iotransit/iotransit/internal/testutil"
	"github.com/iotransit/iotransit/internal/testutil/nodetest"
)

// The attacks on the gateway listener (issue 8, findings 1, 2 and 8):
// floods of refused connections must not grow the audit log or the server
// log beyond their budget, a certificate that only copies a tenant's CA key
// id must not write to that tenant's log, a real gateway in a reconnect
// loop must not flood its tenant's log, and the node must close while
// gateways come and go.

const (
	systemLog = "_system"
	flood     = 1000
)

// budget is the documented budget of one kind of connection event: at
// most Burst entries at once, PerMinute after, summaries included.
func budget(b ingest.Budget, elapsed time.Duration) int {
	return b.Burst + int(math.Ceil(b.PerMinute*elapsed.Minutes()))
}

// lineCounter counts the log records of a node by message, whatever the
// test log shows.
type lineCounter struct {
	mu    sync.Mutex
	lines map[string]int
}

func countLines(t *testing.T) (*lineCounter, *slog.Logger) {
	c := &lineCounter{lines: map[string]int{}}
	return c, slog.New(countingHandler{c, tu.Logger(t).Handler()})
}

// countingHandler counts every record into c and passes on to h those h
// wants.
type countingHandler struct {
	c *lineCounter
	h slog.Handler
}

func (s countingHandler) Enabled(context.Context, slog.Level) bool { return true }

func (s countingHandler) Handle(ctx context.Context, r slog.Record) error {
	s.c.mu.Lock()
	s.c.lines[r.Message]++
	s.c.mu.Unlock()
	if s.h.Enabled(ctx, r.Level) {
		return s.h.Handle(ctx, r)
	}
	return nil
}

func (s countingHandler) WithAttrs(as []slog.Attr) slog.Handler {
	return countingHandler{s.c, s.h.WithAttrs(as)}
}

func (s countingHandler) WithGroup(name string) slog.Handler {
	return countingHandler{s.c, s.h.WithGroup(name)}
}

// containing returns how many lines had a message containing part.
func (c *lineCounter) containing(part string) int {
	c.mu.Lock()
	defer c.mu.Unlock()
	n := 0
	for msg, k := range c.lines {
		if strings.Contains(msg, part) {
			n += k
		}
	}
	return n
}

// connectionEntries reads the ingest's entries of a tenant's audit log
// straight from its stream, and the stream's size in bytes.
func connectionEntries(t *testing.T, n *node.Node, tenant string) ([]client.AuditEntry, uint64) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	s, err := n.JetStream().Stream(ctx, names.AuditStream(tenant))
	if err != nil {
		t.Fatalf("audit stream of %s: %v", tenant, err)
	}
	info, err := s.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	var out []client.AuditEntry
	for seq := info.State.FirstSeq; seq <= info.State.LastSeq && info.State.Msgs > 0; seq++ {
		m, err := s.GetMsg(ctx, seq)
		if err != nil || m.Subject != names.AuditEntry(tenant) {
			continue
		}
		var e client.AuditEntry
		if err := json.Unmarshal(m.Data, &e); err != nil {
			t.Fatalf("entry %d: %v", seq, err)
		}
		if strings.HasPrefix(e.Action, "ingest.connection.") {
			out = append(out, e)
		}
	}
	return out, info.State.Bytes
}

// settledEntries waits until the node stopped adding connection entries
// to the tenant's log (its appender writes in the background) and has
// added at least one since before, and returns them.
func settledEntries(t *testing.T, n *node.Node, tenant string, before int) ([]client.AuditEntry, uint64) {
	t.Helper()
	var after []client.AuditEntry
	var bytes uint64
	tu.Eventually(t, 10*time.Second, 200*time.Millisecond, func() error {
		prev := len(after)
		after, bytes = connectionEntries(t, n, tenant)
		if len(after) != prev || len(after) == before {
			return errors.New("still writing")
		}
		return nil
	})
	return after, bytes
}

// counted returns how many events the entries stand for, by action and
// outcome: one for an entry of its own, the count of a summary.
func counted(t *testing.T, entries []client.AuditEntry) map[string]int {
	t.Helper()
	out := map[string]int{}
	for _, e := range entries {
		n := 1
		if c, ok := e.Detail["count"]; ok {
			var err error
			if n, err = strconv.Atoi(c); err != nil || n < 1 {
				t.Fatalf("entry %d: count %q", e.Seq, c)
			}
			if e.Detail["first"] == "" || e.Detail["last"] == "" {
				t.Errorf("summary %d has no time span: %v", e.Seq, e.Detail)
			}
		}
		out[e.Action+" "+e.Outcome] += n
	}
	return out
}

// refusals sums the ingest's refused connections by reason.
func refusals(t *testing.T, n *node.Node) map[string]float64 {
	t.Helper()
	mfs, err := n.Metrics().Gather()
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]float64{}
	for _, mf := range mfs {
		if mf.GetName() != "iotransit_ingest_connections_refused_total" {
			continue
		}
		for _, m := range mf.GetMetric() {
			for _, l := range m.GetLabel() {
				if l.GetName() == "reason" {
					out[l.GetValue()] += m.GetCounter().GetValue()
				}
			}
		}
	}
	return out
}

func total(m map[string]float64) int {
	n := 0.0
	for _, v := range m {
		n += v
	}
	return int(n)
}

// restart closes n (which writes the summaries still gathering) and starts
// a node on its data directory again, to read what the first one wrote.
func restart(t *testing.T, n *node.Node, dir string) *node.Node {
	t.Helper()
	n.Close()
	return nodetest.Start(t, func(c *node.Config) { c.DataDir = dir })
}

// parallel runs fn count times on a few goroutines.
func parallel(count int, fn func(i int)) {
	var next atomic.Int64
	var wg sync.WaitGroup
	for range 4 {
		wg.Go(func() {
			for i := int(next.Add(1)) - 1; i < count; i = int(next.Add(1)) - 1 {
				fn(i)
			}
		})
	}
	wg.Wait()
}

// TestHostileBareConnectFloodIsBudgeted: 1,000 TCP connections that close
// without a TLS handshake write at most the unauthenticated budget to the
// _system audit log and as many log lines; the summaries written at close
// account for every refusal, and the metrics count each.
func TestHostileBareConnectFloodIsBudgeted(t *testing.T) {
	dir := t.TempDir()
	lines, logger := countLines(t)
	n := nodetest.Start(t, func(c *node.Config) { c.DataDir, c.Logger = dir, logger })
	before, beforeBytes := connectionEntries(t, n, systemLog)
	start := time.Now()
	parallel(flood, func(int) {
		if c, err := net.Dial("tcp", n.MQTTAddr()); err == nil {
			c.Close()
		}
	})
	var refused map[string]float64
	tu.Eventually(t, 20*time.Second, 50*time.Millisecond, func() error {
		if refused = refusals(t, n); total(refused) < flood {
			return fmt.Errorf("%d of %d refusals counted", total(refused), flood)
		}
		return nil
	})
	elapsed := time.Since(start)
	b := ingest.DefaultConfig().Events.Unauthenticated
	max := budget(b, elapsed)
	after, afterBytes := settledEntries(t, n, systemLog, len(before))
	written := len(after) - len(before)
	t.Logf("%d bare connects in %s: %d audit entries (%d bytes of stream), %d log lines; refusals %v",
		flood, elapsed.Round(time.Millisecond), written, afterBytes-beforeBytes, lines.containing("gateway connection"), refused)
	if written > max {
		t.Errorf("%d entries in the _system audit log for %d refused connections, budget %d", written, flood, max)
	}
	if l := lines.containing("gateway connection"); l > max {
		t.Errorf("%d log lines for %d refused connections, budget %d", l, flood, max)
	}
	events := total(refused)
	if events != flood {
		t.Fatalf("refusals counted %v, want %d", refused, flood)
	}
	n = restart(t, n, dir)
	all, _ := connectionEntries(t, n, systemLog)
	sum := 0
	for k, v := range counted(t, all[len(before):]) {
		if !strings.HasPrefix(k, "ingest.connection.refused ") {
			t.Errorf("%d events %q from bare connects", v, k)
		}
		sum += v
	}
	if sum != events {
		t.Errorf("the _system log accounts for %d refusals, the metrics for %d", sum, events)
	}
}

// TestHostileForgedCertificateWritesNothingToTheTenant: 1,000 handshakes
// with certificates that copy tenant beta's CA name and key id (expired
// and not yet valid, the forms x509 reported before checking a signature)
// are unauthenticated refusals: nothing in beta's log, at most the
// unauthenticated budget in _system. A genuinely expired certificate of
// beta's CA is still refused as beta's.
func TestHostileForgedCertificateWritesNothingToTheTenant(t *testing.T) {
	const serial = "TSGW06BET00000001"
	n := nodetest.Start(t, nil)
	nodetest.Gateway(t, n, "beta", serial)
	short := nodetest.Enroll(t, n, "beta", serial, time.Second) // expired by the end of the flood
	ca, err := n.Registry().CA(context.Background(), "beta")
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	forged := []*tls.Certificate{
		tu.Forged(t, ca.Cert, serial, now.Add(-48*time.Hour), now.Add(-24*time.Hour)),
		tu.Forged(t, ca.Cert, serial, now.Add(24*time.Hour), now.Add(48*time.Hour)),
	}
	cfgs := []*tls.Config{nodetest.ClientTLS(t, n, forged[0]), nodetest.ClientTLS(t, n, forged[1])}
	betaBefore, _ := connectionEntries(t, n, "beta")
	sysBefore, _ := connectionEntries(t, n, systemLog)
	start := time.Now()
	parallel(flood, func(i int) { nodetest.Handshake(n.MQTTAddr(), cfgs[i%2]) })
	tu.Eventually(t, 20*time.Second, 50*time.Millisecond, func() error {
		if got := refusals(t, n)["unknown_ca"]; got < flood {
			return fmt.Errorf("%v unknown_ca refusals of %d (all: %v)", got, flood, refusals(t, n))
		}
		return nil
	})
	elapsed := time.Since(start)
	if r := refusals(t, n); r["expired"]+r["not_yet_valid"] != 0 {
		t.Errorf("forged certificates refused as beta's: %v", r)
	}
	max := budget(ingest.DefaultConfig().Events.Unauthenticated, elapsed)
	sysAfter, _ := settledEntries(t, n, systemLog, len(sysBefore))
	if written := len(sysAfter) - len(sysBefore); written > max {
		t.Errorf("%d _system entries for %d forged handshakes, budget %d", written, flood, max)
	}
	for _, e := range sysAfter[len(sysBefore):] {
		if e.Actor != "anonymous" || strings.Contains(e.Target, serial) {
			t.Errorf("an unauthenticated refusal names a gateway: %+v", e)
		}
	}
	if betaAfter, _ := connectionEntries(t, n, "beta"); len(betaAfter) != len(betaBefore) {
		t.Fatalf("forged certificates wrote %d entries to beta's log, e.g. %+v", len(betaAfter)-len(betaBefore), betaAfter[len(betaBefore)])
	}

	// Beta's own CA, expired: beta's refusal, in beta's log.
	time.Sleep(time.Until(short.Leaf.NotAfter.Add(time.Second)))
	nodetest.Handshake(n.MQTTAddr(), nodetest.ClientTLS(t, n, short))
	tu.Eventually(t, 10*time.Second, 50*time.Millisecond, func() error {
		after, _ := connectionEntries(t, n, "beta")
		for _, e := range after[len(betaBefore):] {
			if e.Action == "ingest.connection.refused" && e.Outcome == "expired" && e.Actor == "gateway:"+serial {
				return nil
			}
		}
		return errors.New("the genuinely expired certificate is not in beta's log")
	})
}

// TestHostileReconnectLoopIsBudgetedPerGateway: a real gateway that
// connects and disconnects 200 times writes at most its gateway budget to
// its tenant's log; the summaries account for every connect and
// disconnect.
func TestHostileReconnectLoopIsBudgetedPerGateway(t *testing.T) {
	const serial, loops = "TSGW06BET00000002", 200
	dir := t.TempDir()
	n := nodetest.Start(t, func(c *node.Config) { c.DataDir = dir })
	cert := nodetest.Gateway(t, n, "beta", serial)
	before, _ := connectionEntries(t, n, "beta")
	cfg := nodetest.ClientTLS(t, n, cert)
	start := time.Now()
	for range loops {
		conn, err := tls.Dial("tcp", n.MQTTAddr(), cfg)
		if err != nil {
			t.Fatal(err)
		}
		c := paho.NewClient(paho.ClientConfig{Conn: conn})
		cctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		if _, err := c.Connect(cctx, &paho.Connect{ClientID: serial, KeepAlive: 30, CleanStart: true}); err != nil {
			cancel()
			t.Fatal(err)
		}
		cancel()
		_ = c.Disconnect(&paho.Disconnect{})
		conn.Close()
	}
	api := nodetest.NewAPI(t, n)
	tu.Eventually(t, 10*time.Second, 50*time.Millisecond, func() error {
		g, err := api.Client.GetGateway(context.Background(), "beta", serial)
		if err != nil {
			return err
		}
		if g.Connected {
			return errors.New("still connected")
		}
		return nil
	})
	elapsed := time.Since(start)
	max := budget(ingest.DefaultConfig().Events.Gateway, elapsed)
	after, _ := settledEntries(t, n, "beta", len(before))
	if written := len(after) - len(before); written > max {
		t.Errorf("%d entries in beta's log for %d reconnects of one gateway, budget %d", written, loops, max)
	}
	n = restart(t, n, dir)
	all, _ := connectionEntries(t, n, "beta")
	got := counted(t, all[len(before):])
	if got["ingest.connection.connect ok"] != loops || got["ingest.connection.disconnect ok"] != loops {
		t.Errorf("beta's log accounts for %v, want %d connects and %d disconnects", got, loops, loops)
	}
}

// TestHostileNodeClosesUnderConnectionChurn: gateways connect and
// disconnect in a loop while the node closes; every close returns (mochi's
// own listener close could deadlock here, issue #488).
func TestHostileNodeClosesUnderConnectionChurn(t *testing.T) {
	for round := range 5 {
		n := nodetest.Start(t, nil)
		var cfgs []*tls.Config
		var serials []string
		for i := range 4 {
			serial := fmt.Sprintf("TSGW06CHU0000000%d", i+1)
			cfgs = append(cfgs, nodetest.ClientTLS(t, n, nodetest.Gateway(t, n, "churn", serial)))
			serials = append(serials, serial)
		}
		stop := make(chan struct{})
		var wg sync.WaitGroup
		var connects atomic.Int64
		for i := range cfgs {
			wg.Go(func() {
				for {
					select {
					case <-stop:
						return
					default:
					}
					if mqttChurn(n.MQTTAddr(), cfgs[i], serials[i]) {
						connects.Add(1)
					}
				}
			})
		}
		tu.Eventually(t, 10*time.Second, 10*time.Millisecond, func() error {
			if connects.Load() < 20 {
				return errors.New("the gateways are not churning yet")
			}
			return nil
		})
		closed := make(chan struct{})
		go func() { n.Close(); close(closed) }()
		select {
		case <-closed:
		case <-time.After(60 * time.Second * tu.Slowdown()):
			close(stop)
			buf := make([]byte, 4<<20)
			t.Fatalf("round %d: the node did not close within 60s; goroutines:\n%s", round, buf[:runtime.Stack(buf, true)])
		}
		close(stop)
		wg.Wait()
	}
}

// mqttChurn connects over MQTT 5 and disconnects at once; it reports
// whether the connection was accepted.
func mqttChurn(addr string, cfg *tls.Config, serial string) bool {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	d := tls.Dialer{Config: cfg}
	conn, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return false
	}
	defer conn.Close()
	c := paho.NewClient(paho.ClientConfig{Conn: conn})
	if ca, err := c.Connect(ctx, &paho.Connect{ClientID: serial, KeepAlive: 30, CleanStart: true}); err != nil || ca.ReasonCode != 0 {
		return false
	}
	_ = c.Disconnect(&paho.Disconnect{})
	return true
}

package hostile_test

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/iotransit/iotransit/client"
	"github.com/iotransit/iotransit/internal/backbone"
	"github.com/iotransit/iotransit/internal/backbone/names"
	"github.com/iotransit/iotransit/internal/node"
	"github.com/iotransit/iotransit/internal/pki"
	tu "github.com/iotransit/iotransit/internal/testutil"
	"github.com/iotransit/iotransit/internal/testutil/nodetest"
)

// TestHostileMeasureRefusedConnectionAudit measures, from outside the
// server's process, the audit entries and bytes and the log written per
// IOTRANSIT_MEASURE_N (default 10,000) refused connections: bare TCP
// connects, and handshakes with certificates forged from the dev tenant's
// CA key id. It runs the binary IOTRANSIT_MEASURE_BIN as `serve --dev`,
// once per attack on a new data directory, stops it (SIGTERM: the summaries
// still gathering are written), and reads the audit streams from the data
// directory. Build the binary of any commit to compare, e.g.
//
//	git worktree add /tmp/before <commit> && (cd /tmp/before && go build -o /tmp/before/iotransit ./cmd/iotransit)
//	IOTRANSIT_MEASURE_BIN=/tmp/before/iotransit go test ./internal/hostile -run TestHostileMeasure -v -count=1 -timeout 30m
func TestHostileMeasureRefusedConnectionAudit(t *testing.T) {
	bin := os.Getenv("IOTRANSIT_MEASURE_BIN")
	if bin == "" {
		t.Skip("set IOTRANSIT_MEASURE_BIN to an iotransit binary to measure")
	}
	count := 10000
	if s := os.Getenv("IOTRANSIT_MEASURE_N"); s != "" {
		var err error
		if count, err = strconv.Atoi(s); err != nil {
			t.Fatalf("IOTRANSIT_MEASURE_N=%q: %v", s, err)
		}
	}
	attacks := []struct {
		name string
		run  func(t *testing.T, s *measured)
	}{
		{name: "bare TCP connects", run: func(t *testing.T, s *measured) {
			// Each waits for the server to close its side, so that every
			// one is a failed handshake (not an overload refusal) on both
			// the old and the new binary.
			parallel(count, func(int) {
				c, err := net.Dial("tcp", s.MQTT)
				if err != nil {
					return
				}
				defer c.Close()
				_ = c.(*net.TCPConn).CloseWrite()
				_ = c.SetReadDeadline(time.Now().Add(10 * time.Second))
				_, _ = io.Copy(io.Discard, c)
			})
		}},
		{name: "forged-AKI handshakes", run: func(t *testing.T, s *measured) {
			leaf, err := pki.ParseCertPEM(s.file(t, "cert.pem"))
			if err != nil {
				t.Fatal(err)
			}
			pool := x509.NewCertPool()
			pool.AppendCertsFromPEM(s.file(t, "ca.pem"))
			claimed := &x509.Certificate{Subject: leaf.Issuer, SubjectKeyId: leaf.AuthorityKeyId}
			now := time.Now()
			var cfgs []*tls.Config
			for _, c := range []*tls.Certificate{
				tu.Forged(t, claimed, node.DevGateway, now.Add(-48*time.Hour), now.Add(-24*time.Hour)),
				tu.Forged(t, claimed, node.DevGateway, now.Add(24*time.Hour), now.Add(48*time.Hour)),
			} {
				cfgs = append(cfgs, &tls.Config{RootCAs: pool, ServerName: "127.0.0.1", Certificates: []tls.Certificate{*c}, MinVersion: tls.VersionTLS12})
			}
			parallel(count, func(i int) { nodetest.Handshake(s.MQTT, cfgs[i%2]) })
		}},
	}
	var report []string
	for _, a := range attacks {
		s := startMeasured(t, bin)
		sysBefore, devBefore := s.stopAndRead(t)
		s = s.start(t)
		logBefore := s.Out.Len()
		start := time.Now()
		a.run(t, s)
		took := time.Since(start)
		s.settle(t)
		logBytes, logLines := s.Out.Len()-logBefore, strings.Count(s.Out.String()[logBefore:], "\n")
		sysAfter, devAfter := s.stopAndRead(t)
		for _, l := range []struct {
			name          string
			before, after streamCount
		}{{"_system", sysBefore, sysAfter}, {"dev", devBefore, devAfter}} {
			line := fmt.Sprintf("%-22s %6d refused in %6s | %-8s +%6d connection entries (%5d summaries, %9d events counted) +%9d bytes of stream | server log +%6d lines %9d bytes",
				a.name, count, took.Round(time.Millisecond), l.name, l.after.entries-l.before.entries, l.after.summaries-l.before.summaries,
				l.after.counted-l.before.counted, l.after.bytes-l.before.bytes, logLines, logBytes)
			report = append(report, line)
			t.Log(line)
		}
	}
	fmt.Println(strings.Join(report, "\n"))
}

// measured is a separately started `iotransit serve --dev`.
type measured struct{ *nodetest.DevServer }

func startMeasured(t *testing.T, bin string) *measured {
	return &measured{nodetest.StartDevServer(t, bin, "info")}
}

func (s *measured) start(t *testing.T) *measured { return &measured{s.Restart(t)} }

func (s *measured) file(t *testing.T, name string) []byte {
	t.Helper()
	b, err := os.ReadFile(s.GatewayFile(name))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// settle waits until the server has stopped writing its audit streams
// (its appender works in the background).
func (s *measured) settle(t *testing.T) {
	t.Helper()
	size := func() int64 {
		var n int64
		_ = filepath.Walk(filepath.Join(s.Dir, "jetstream"), func(p string, fi os.FileInfo, err error) error {
			if err == nil && !fi.IsDir() && strings.Contains(p, "AUD_") {
				n += fi.Size()
			}
			return nil
		})
		return n
	}
	last, stable := size(), 0
	for stable < 10 {
		time.Sleep(200 * time.Millisecond)
		if now := size(); now != last {
			last, stable = now, 0
			continue
		}
		stable++
	}
}

// streamCount is what one audit stream holds of the ingest.
type streamCount struct {
	entries, summaries, counted int
	bytes                       uint64
}

// stopAndRead stops the server (SIGTERM, as an operator would) and reads
// the _system and dev audit streams from its data directory.
func (s *measured) stopAndRead(t *testing.T) (sys, dev streamCount) {
	t.Helper()
	if err := s.Stop(t, syscall.SIGTERM, 2*time.Minute); err != nil {
		t.Logf("server exit: %v", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	bb, err := backbone.Start(ctx, backbone.Config{DataDir: s.Dir, Replicas: 1}, tu.Logger(t))
	if err != nil {
		t.Fatal(err)
	}
	defer bb.Close()
	read := func(tenant string) streamCount {
		st, err := bb.JS.Stream(ctx, names.AuditStream(tenant))
		if err != nil {
			t.Fatal(err)
		}
		info, err := st.Info(ctx)
		if err != nil {
			t.Fatal(err)
		}
		c := streamCount{bytes: info.State.Bytes}
		for seq := info.State.FirstSeq; seq <= info.State.LastSeq && info.State.Msgs > 0; seq++ {
			m, err := st.GetMsg(ctx, seq)
			if err != nil || m.Subject != names.AuditEntry(tenant) {
				continue
			}
			var e client.AuditEntry
			if json.Unmarshal(m.Data, &e) != nil || !strings.HasPrefix(e.Action, "ingest.connection.") {
				continue
			}
			c.entries++
			n := 1
			if v, ok := e.Detail["count"]; ok {
				n, _ = strconv.Atoi(v)
				c.summaries++
			}
			c.counted += n
		}
		return c
	}
	return read("_system"), read(node.DevTenant)
}

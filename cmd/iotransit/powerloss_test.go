package main

import (
	"context"
	"crypto"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"slices"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/iotransit/iotransit/client"
	"github.com/iotransit/iotransit/internal/gateway"
	"github.com/iotransit/iotransit/internal/node"
	"github.com/iotransit/iotransit/internal/testutil"
	"github.com/iotransit/iotransit/internal/testutil/lazyfs"
	"github.com/iotransit/iotransit/internal/testutil/nodetest"
)

// TestServePowerLoss runs `serve` with its data directory on a lazy file
// system (internal/testutil/lazyfs: what was not fsynced is gone after a
// power loss), has several gateways publish pipelined until a number of
// PUBACKs came back, then cuts the power (SIGKILL to the server and every
// unsynced write dropped, at once), starts the server again on what
// survived, and compares what it stores with what was acknowledged; three
// rounds. With --fsync always nothing acknowledged may be missing
// (stored ⊇ acked). The control, --fsync default (acknowledged once
// written to the OS, fsynced by JetStream every two minutes), must lose
// acknowledged messages, or the simulation proves nothing.
func TestServePowerLoss(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs the binary")
	}
	lazyfs.MountForTest(t) // skips here when FUSE cannot be mounted, before the build
	bin := buildBinary(t)
	tests := []struct {
		name  string
		fsync string
		// loses: the control; some acknowledged message must be missing
		// after some round.
		loses bool
	}{
		{name: "fsync always keeps every acknowledged message", fsync: node.FsyncAlways},
		{name: "fsync default loses acknowledged messages", fsync: node.FsyncDefault, loses: true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			missing := powerLossRounds(t, bin, tc.fsync)
			switch {
			case !tc.loses && missing > 0:
				t.Errorf("--fsync %s: %d acknowledged messages lost in the power losses", tc.fsync, missing)
			case tc.loses && missing == 0:
				t.Errorf("--fsync %s: no acknowledged message lost in any power loss: the simulation shows nothing", tc.fsync)
			}
		})
	}
}

// Sizes of TestServePowerLoss: each round publishes at most perGateway
// messages from each gateway and cuts the power once cutAfter are
// acknowledged in all.
const (
	powerLossGateways   = 4
	powerLossRoundCount = 3
	powerLossPerGateway = 3000
	powerLossCutAfter   = 600
)

// powerLossRounds runs the rounds of TestServePowerLoss against a server
// started with --fsync mode and returns how many acknowledged messages
// were missing after the last round (every round's misses are logged).
func powerLossRounds(t *testing.T, bin, mode string) int {
	f := lazyfs.MountForTest(t)
	s := (&nodetest.DevServer{Bin: bin, Dir: f.Dir(), LogLevel: "warn",
		MQTT: fmt.Sprintf("127.0.0.1:%d", testutil.FreePort(t)), API: fmt.Sprintf("127.0.0.1:%d", testutil.FreePort(t)),
		Args: []string{"--fsync", mode, "--msg-rate", "1000000", "--msg-burst", "1000000"}}).Restart(t)
	certs := make([]*tls.Certificate, powerLossGateways)
	for g := range certs {
		certs[g] = enrollGateway(t, s, powerLossSerial(g))
	}
	if mode != node.FsyncAlways {
		// What setup wrote (keys, certificates, the registry) is on the
		// disk before the load starts, as the kernel's writeback would
		// have it on a node that has run for a while: the control's power
		// losses come under load, not before its gateways exist. With
		// --fsync always nothing is written back for the server: its setup
		// must survive the power loss as well.
		f.Sync()
	}

	base := time.Now().Add(-6 * time.Hour).Unix()
	acked := map[int]bool{}
	missing := 0
	for round := range powerLossRoundCount {
		got := publishUntilPowerLoss(t, s, f, certs, round, base)
		if ws, ok := s.Cmd.ProcessState.Sys().(syscall.WaitStatus); !ok || ws.Signal() != syscall.SIGKILL {
			t.Fatalf("round %d: server did not die of SIGKILL: %v", round, s.Cmd.ProcessState)
		}
		for _, i := range got {
			acked[i] = true
		}
		s = s.Restart(t)
		stored := storedMoveCounts(t, s)
		var lost []int
		for i := range acked {
			if !stored[i] {
				lost = append(lost, i)
			}
		}
		slices.Sort(lost)
		missing = len(lost)
		t.Logf("round %d (--fsync %s): %d acknowledged in the round, %d in all, %d stored, %d acknowledged and missing %v",
			round, mode, len(got), len(acked), len(stored), missing, lost[:min(len(lost), 5)])
	}
	return missing
}

func powerLossSerial(g int) string { return fmt.Sprintf("TSGW06PWR%08d", g+1) }

// enrollGateway registers serial with the dev tenant and enrolls a key for
// it through a CSR, as a gateway does; it returns the certificate.
func enrollGateway(t *testing.T, s *nodetest.DevServer, serial string) *tls.Certificate {
	t.Helper()
	token, op := s.EnrollmentToken(t, serial), s.Operator(t)
	return testutil.KeyPair(t, serial, func(_ crypto.Signer, csr []byte) ([]byte, error) {
		e, err := op.Enroll(context.Background(), token, csr)
		if err != nil {
			return nil, err
		}
		return []byte(e.Certificate), nil
	})
}

// publishUntilPowerLoss connects every gateway, has each publish its
// messages of the round pipelined (a window of publishes in flight, up to
// the server's Receive Maximum), cuts the power once powerLossCutAfter
// are acknowledged in all, and returns the acknowledged messages (their
// moveCount) once every connection is gone.
func publishUntilPowerLoss(t *testing.T, s *nodetest.DevServer, f *lazyfs.FS, certs []*tls.Certificate, round int, base int64) []int {
	t.Helper()
	caPEM, err := os.ReadFile(s.GatewayFile("ca.pem"))
	if err != nil {
		t.Fatal(err)
	}
	roots := x509.NewCertPool()
	if !roots.AppendCertsFromPEM(caPEM) {
		t.Fatal("no CA in ca.pem")
	}
	ups := make([]*gateway.Uplink, len(certs))
	for g, cert := range certs {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		ups[g], err = gateway.Dial(ctx, gateway.UplinkConfig{Addr: s.MQTT, Serial: powerLossSerial(g),
			TLS: &tls.Config{MinVersion: tls.VersionTLS12, RootCAs: roots, ServerName: "localhost", Certificates: []tls.Certificate{*cert}}})
		cancel()
		if err != nil {
			t.Fatalf("round %d: dial gateway %d: %v\nserver output:\n%s", round, g, err, s.Out)
		}
	}
	var (
		mu      sync.Mutex
		acked   []int
		refused []string
		count   atomic.Int64
		cut     = make(chan struct{})
		cutOnce sync.Once
		wg      sync.WaitGroup
	)
	for g, up := range ups {
		pending := make(chan struct {
			p *gateway.Pending
			i int
		}, 1024)
		wg.Go(func() { // the sender: publishes without waiting for PUBACKs
			defer close(pending)
			for k := range powerLossPerGateway {
				i := (round*powerLossGateways+g)*powerLossPerGateway + k
				msg := fmt.Sprintf(`{"tsmId":13100,"tsmEv":10,"tsmTs":%d,"tsmTuid":"TSPR04PWR%08d","moveCount":%d}`, base+int64(round*powerLossPerGateway+k), g+1, i)
				ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
				p, err := up.Send(ctx, []byte(msg))
				cancel()
				if err != nil {
					return // the connection died
				}
				pending <- struct {
					p *gateway.Pending
					i int
				}{p, i}
			}
		})
		wg.Go(func() { // the waiter: reads the PUBACKs in publish order
			for w := range pending {
				ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
				res, err := w.p.Wait(ctx)
				cancel()
				switch {
				case errors.Is(err, gateway.ErrNoAck), errors.Is(err, context.DeadlineExceeded):
					continue // not acknowledged: may or may not be stored
				case err != nil:
					continue
				case res.ReasonCode != 0:
					mu.Lock()
					refused = append(refused, fmt.Sprintf("message %d: reason 0x%02x %s", w.i, res.ReasonCode, res.Reason))
					mu.Unlock()
					continue
				}
				mu.Lock()
				acked = append(acked, w.i)
				mu.Unlock()
				if count.Add(1) == powerLossCutAfter {
					cutOnce.Do(func() { close(cut) })
				}
			}
		})
	}
	done := make(chan struct{})
	go func() { wg.Wait(); close(done) }()
	select {
	case <-cut:
	case <-done: // everything acknowledged before the count: cut anyway
	case <-time.After(60 * time.Second):
	}
	loss, err := f.PowerLoss(func() {
		_ = s.Cmd.Process.Signal(syscall.SIGKILL)
		_ = s.Cmd.Wait()
	})
	if err != nil {
		t.Fatalf("round %d: %v", round, err)
	}
	<-done
	for _, up := range ups {
		_ = up.Close()
	}
	for _, r := range refused {
		t.Errorf("round %d: %s", round, r)
	}
	if len(acked) < powerLossCutAfter {
		t.Fatalf("round %d: only %d publishes acknowledged before the power loss; server output:\n%s", round, len(acked), s.Out)
	}
	t.Logf("round %d: power cut after %d acknowledged; the disk lost %d bytes of %d files and %d names", round, len(acked), loss.Bytes, loss.Files, loss.Names)
	return acked
}

// storedMoveCounts lists every message the server stores in the dev
// tenant, oldest first, and returns their moveCount.
func storedMoveCounts(t *testing.T, s *nodetest.DevServer) map[int]bool {
	t.Helper()
	stored := map[int]bool{}
	op := s.Operator(t)
	q := client.MessageQuery{Limit: 1000, Oldest: true}
	for {
		p, err := op.ListMessages(context.Background(), node.DevTenant, q)
		if err != nil {
			t.Fatalf("messages: %v", err)
		}
		for _, it := range p.Items {
			var v struct{ MoveCount int }
			if err := json.Unmarshal(it.Message, &v); err != nil {
				t.Fatal(err)
			}
			stored[v.MoveCount] = true
		}
		if p.Next == "" || len(p.Items) == 0 {
			return stored
		}
		q.Cursor = p.Next
	}
}

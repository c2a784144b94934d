//go:build unix

package backbone_test

// Per-tenant NATS accounts: an experiment (issue 12, "where feasible each
// tenant's streams and buckets live in their own NATS account").
//
// Today every tenant's streams live in one account, kept apart by the
// subject names of the names catalogue. With one account per tenant, a
// connection of tenant A cannot name tenant B's streams or subjects at
// all, whatever a bug in subject handling builds. This file proves that
// property on the embedded server (TestTenantAccountsIsolateSubjects) and
// measures what it costs (BenchmarkTenantAccounts): the same acknowledged
// publishes spread over T tenants, once in one shared account and once in
// an account per tenant with a connection each, and the heap each setup
// holds. docs/ARCHITECTURE.md ("Tenant accounts") has the numbers and the
// decision.

import (
	"context"
	"errors"
	"fmt"
	"os"
	"runtime"
	"strconv"
	"syscall"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// accountsSetup is an embedded server with tenants, each either in its own
// account (a user and connection per tenant) or all in the global one.
type accountsSetup struct {
	srv *server.Server
	js  []jetstream.JetStream // per tenant (shared: the same one)
	ncs []*nats.Conn
}

func (s *accountsSetup) close() {
	for _, nc := range s.ncs {
		nc.Close()
	}
	s.srv.Shutdown()
	s.srv.WaitForShutdown()
}

func startAccounts(tb testing.TB, tenants int, perTenant bool) *accountsSetup {
	tb.Helper()
	opts := &server.Options{ServerName: "accounts", DontListen: true, JetStream: true, StoreDir: tb.TempDir(), NoSigs: true}
	if perTenant {
		for i := range tenants {
			acc := server.NewAccount(fmt.Sprintf("T%d", i))
			opts.Accounts = append(opts.Accounts, acc)
			opts.Users = append(opts.Users, &server.User{Username: fmt.Sprintf("t%d", i), Password: "pw", Account: acc})
		}
	}
	srv, err := server.NewServer(opts)
	if err != nil {
		tb.Fatal(err)
	}
	srv.Start()
	if !srv.ReadyForConnections(30 * time.Second) {
		tb.Fatal("server not ready")
	}
	s := &accountsSetup{srv: srv}
	tb.Cleanup(s.close)
	unlimited := map[string]server.JetStreamAccountLimits{"": {MaxMemory: -1, MaxStore: -1, MaxStreams: -1, MaxConsumers: -1}}
	connect := func(o ...nats.Option) jetstream.JetStream {
		nc, err := nats.Connect("", append(o, nats.InProcessServer(srv))...)
		if err != nil {
			tb.Fatal(err)
		}
		s.ncs = append(s.ncs, nc)
		js, err := jetstream.New(nc, jetstream.WithPublishAsyncMaxPending(1<<14))
		if err != nil {
			tb.Fatal(err)
		}
		return js
	}
	var shared jetstream.JetStream
	if !perTenant {
		shared = connect()
	}
	for i := range tenants {
		js := shared
		if perTenant {
			acc, err := srv.LookupAccount(fmt.Sprintf("T%d", i))
			if err != nil {
				tb.Fatal(err)
			}
			if err := acc.EnableJetStream(unlimited, nil); err != nil {
				tb.Fatal(err)
			}
			js = connect(nats.UserInfo(fmt.Sprintf("t%d", i), "pw"))
		}
		if _, err := js.CreateStream(context.Background(), jetstream.StreamConfig{
			Name: fmt.Sprintf("MSG_t%d", i), Subjects: []string{fmt.Sprintf("iot.t%d.msg.>", i)}, Storage: jetstream.FileStorage,
		}); err != nil {
			tb.Fatal(err)
		}
		s.js = append(s.js, js)
	}
	return s
}

// processCPU is the CPU time (user and system) this process has used: the
// embedded server and the publishers together, the same in both setups.
func processCPU(tb testing.TB) time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		tb.Fatal(err)
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// TestTenantAccountsIsolateSubjects: in an account of its own, a tenant's
// connection publishing to another tenant's subject reaches no stream (no
// acknowledgement), and cannot read, list or delete the other's stream;
// in the shared account the same wrong subject lands in the other tenant's
// stream, which is what subject handling alone must prevent today.
func TestTenantAccountsIsolateSubjects(t *testing.T) {
	ctx := context.Background()
	for _, perTenant := range []bool{false, true} {
		t.Run("perTenant="+strconv.FormatBool(perTenant), func(t *testing.T) {
			s := startAccounts(t, 2, perTenant)
			a := s.js[0]
			// Tenant 0's connection publishes to tenant 1's subject.
			pctx, cancel := context.WithTimeout(ctx, 2*time.Second)
			_, err := a.Publish(pctx, "iot.t1.msg.GW.TUID.1", []byte("stray"))
			cancel()
			info, ierr := s.js[1].Stream(ctx, "MSG_t1")
			if ierr != nil {
				t.Fatal(ierr)
			}
			n := info.CachedInfo().State.Msgs
			if perTenant {
				if err == nil || n != 0 {
					t.Errorf("a stray publish across accounts: err %v, tenant 1 holds %d", err, n)
				}
				if _, err := a.Stream(ctx, "MSG_t1"); !errors.Is(err, jetstream.ErrStreamNotFound) {
					t.Errorf("tenant 0 looks up tenant 1's stream: %v", err)
				}
				if err := a.DeleteStream(ctx, "MSG_t1"); err == nil {
					t.Error("tenant 0 deleted tenant 1's stream")
				}
			} else if err != nil || n != 1 {
				t.Errorf("shared account: the stray publish: err %v, tenant 1 holds %d (the shared account does not isolate)", err, n)
			}
		})
	}
}

// BenchmarkTenantAccounts publishes b.N messages of 200 bytes, acknowledged,
// spread round robin over IOTRANSIT_ACCOUNTS_TENANTS tenants (default 100),
// in one shared account and in an account per tenant. It reports the heap
// the setup holds (heap-MiB) as well as the time per message.
func BenchmarkTenantAccounts(b *testing.B) {
	tenants := 100
	if v, err := strconv.Atoi(os.Getenv("IOTRANSIT_ACCOUNTS_TENANTS")); err == nil && v > 0 {
		tenants = v
	}
	payload := make([]byte, 200)
	for _, perTenant := range []bool{false, true} {
		name := "shared"
		if perTenant {
			name = "perTenant"
		}
		b.Run(fmt.Sprintf("%s/tenants=%d", name, tenants), func(b *testing.B) {
			var before runtime.MemStats
			runtime.GC()
			runtime.ReadMemStats(&before)
			start := time.Now()
			s := startAccounts(b, tenants, perTenant)
			setup := time.Since(start)
			var after runtime.MemStats
			runtime.GC()
			runtime.ReadMemStats(&after)
			subjects := make([]string, tenants)
			for i := range subjects {
				subjects[i] = fmt.Sprintf("iot.t%d.msg.GW.TUID.1", i)
			}
			b.ResetTimer()
			cpu0 := processCPU(b)
			const window = 4096
			futures := make([]jetstream.PubAckFuture, 0, window)
			flush := func() {
				for _, f := range futures {
					select {
					case <-f.Ok():
					case err := <-f.Err():
						b.Fatal(err)
					}
				}
				futures = futures[:0]
			}
			for i := range b.N {
				t := i % tenants
				f, err := s.js[t].PublishAsync(subjects[t], payload)
				if err != nil {
					b.Fatal(err)
				}
				if futures = append(futures, f); len(futures) == window {
					flush()
				}
			}
			flush()
			b.ReportMetric(float64((processCPU(b)-cpu0).Microseconds())/float64(b.N), "cpu-µs/op")
			// After the loop: ResetTimer drops metrics reported before it.
			b.ReportMetric(float64(after.HeapInuse-min(before.HeapInuse, after.HeapInuse))/(1<<20), "heap-MiB")
			b.ReportMetric(setup.Seconds(), "setup-s")
		})
	}
}

package ingest_test

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/iotransit/iotransit/internal/gateway"
	"github.com/iotransit/iotransit/internal/node"
	tu "github.com/iotransit/iotransit/internal/testutil"
	"github.com/iotransit/iotransit/internal/testutil/nodetest"
)

// A reconnect storm (a few hundred gateways at once) goes through the
// handshake gate while a connected gateway keeps publishing: the live
// gateway keeps being acknowledged during the storm, and every storm
// gateway connects (a connection waits for its turn within its connect
// timeout instead of being refused).
func TestIngestReconnectStormLeavesLiveTrafficAcked(t *testing.T) {
	const storm = 300
	n := nodetest.Start(t, func(c *node.Config) {
		c.Ingest.MaxPendingPerAddress = 1024 // all from 127.0.0.1
		c.Ingest.HandshakeConcurrency = 1
		c.Ingest.ConnectTimeout = 30 * time.Second
	})
	live, err := nodetest.Dial(t, n, nodetest.Gateway(t, n, tenant, gwA), gwA, nil)
	if err != nil {
		t.Fatal(err)
	}
	certs := make([]*tls.Certificate, storm)
	serials := make([]string, storm)
	for i := range storm {
		serials[i] = fmt.Sprintf("TSGW06STM%08d", i)
		certs[i] = nodetest.Gateway(t, n, tenant, serials[i])
	}

	// The live gateway publishes every 20 ms until the storm is over.
	var (
		acked, failed atomic.Int64
		ackedInStorm  atomic.Int64
		inStorm       atomic.Bool
		slowest       atomic.Int64
		firstErr      atomic.Value
	)
	stop := make(chan struct{})
	var pub sync.WaitGroup
	pub.Go(func() {
		for i := 0; ; i++ {
			select {
			case <-stop:
				return
			case <-time.After(20 * time.Millisecond):
			}
			start := time.Now()
			pctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
			res, err := live.Publish(pctx, []byte(tu.Thingsee(sensor, time.Now().Unix(), float64(i))), 1)
			cancel()
			if err != nil || res.ReasonCode != 0 {
				failed.Add(1)
				firstErr.CompareAndSwap(nil, fmt.Sprintf("publish %d: %v, reason 0x%02x", i, err, res.ReasonCode))
				continue
			}
			acked.Add(1)
			if inStorm.Load() {
				ackedInStorm.Add(1)
			}
			for d, s := int64(time.Since(start)), slowest.Load(); d > s && !slowest.CompareAndSwap(s, d); s = slowest.Load() {
			}
		}
	})
	tu.Eventually(t, 10*time.Second, 20*time.Millisecond, func() error {
		if acked.Load() < 5 {
			return errors.New("the live gateway is not publishing yet")
		}
		return nil
	})

	inStorm.Store(true)
	start := time.Now()
	errs := make([]error, storm)
	ups := make([]*gateway.Uplink, storm)
	var wg sync.WaitGroup
	for i := range storm {
		wg.Go(func() {
			cfg := gateway.UplinkConfig{Addr: n.MQTTAddr(), Serial: serials[i], TLS: nodetest.ClientTLS(t, n, certs[i])}
			dctx, cancel := context.WithTimeout(context.Background(), 60*time.Second*tu.Slowdown())
			defer cancel()
			ups[i], errs[i] = gateway.Dial(dctx, cfg)
		})
	}
	wg.Wait()
	took := time.Since(start)
	inStorm.Store(false)
	time.Sleep(100 * time.Millisecond) // one more publish after the storm
	close(stop)
	pub.Wait()
	for _, u := range ups {
		if u != nil {
			defer u.Close()
		}
	}

	if err := errors.Join(errs...); err != nil {
		t.Errorf("storm gateways that did not connect: %v", err)
	}
	if f := failed.Load(); f > 0 {
		t.Errorf("the live gateway had %d failed publishes during the storm, first: %v", f, firstErr.Load())
	}
	if ackedInStorm.Load() == 0 {
		t.Errorf("the live gateway got no PUBACK during the %s storm", took)
	}
	t.Logf("storm of %d connects took %s; the live gateway had %d publishes acknowledged during it, the slowest in %s",
		storm, took, ackedInStorm.Load(), time.Duration(slowest.Load()))
	if got := tu.Counter(t, n.Metrics(), "iotransit_ingest_handshakes_total", map[string]string{"result": "ok"}); got < storm+1 {
		t.Errorf("iotransit_ingest_handshakes_total{result=ok} = %v, want at least %d", got, storm+1)
	}
	if got := tu.Counter(t, n.Metrics(), "iotransit_ingest_connections_accepted_total", nil); got < storm+1 {
		t.Errorf("iotransit_ingest_connections_accepted_total = %v, want at least %d", got, storm+1)
	}
}

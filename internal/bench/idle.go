package bench

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/mochi-mqtt/server/v2/packets"

	"github.com/iotransit/iotransit/client"
)

// The idle bench: many gateways connected to a server in another process
// and doing nothing, to tell what one connection costs the server
// (memory, goroutines), and how long connecting them takes. Each idle
// gateway is a bare MQTT 5 session over mutual TLS: CONNECT, CONNACK, then
// a PINGREQ now and then, no goroutine on the bench's side.

// IdleOptions say which server MeasureIdle measures and with how many idle
// gateways.
type IdleOptions struct {
	// Server is the server and how to provision its gateways (MQTTAddr,
	// APIURL, CAPEM, OperatorKey, ServerPID, SourceAddrs, CacheDir; Tenant
	// prefixes the tenants' names).
	Server ExternalOptions
	// Gateways is how many idle gateways connect.
	Gateways int
	// Tenants is how many tenants they are spread over (0: one for each
	// TenantGateways): the server bounds connections per tenant (serve
	// --max-conns-per-tenant, default 10,000), and each tenant gets an API
	// key of its own, with its own rate limit, to provision its gateways.
	Tenants int
	// Hold is how long the gateways stay connected, idle, before the
	// server's memory is read again.
	Hold time.Duration
	// ConnectParallel bounds the connections being made at once (default
	// 64).
	ConnectParallel int
	// Progress, when set, is told what the run is doing.
	Progress func(format string, args ...any)
}

// TenantGateways is how many gateways MeasureIdle and MeasureStorm put in
// one tenant by default.
const TenantGateways = 5000

// idleKeepalive is the idle gateways' MQTT keepalive, in seconds; they
// ping at half of it.
const idleKeepalive = 300

// ServerSample is what the bench reads of the server at one moment: its
// process (with its pid), its Go runtime and ingest series (from /metrics,
// with the operator key) and the kernel's TCP memory.
type ServerSample struct {
	RSSBytes       int64   `json:"rssBytes,omitempty"`
	HeapInuseBytes float64 `json:"heapInuseBytes,omitempty"`
	// HeapAllocBytes are the heap's objects (live, and garbage not yet
	// swept); HeapInuseBytes the spans that hold them.
	HeapAllocBytes  float64 `json:"heapAllocBytes,omitempty"`
	StackInuseBytes float64 `json:"stackInuseBytes,omitempty"`
	Goroutines      float64 `json:"goroutines,omitempty"`
	// GCs counts the server's garbage collections so far.
	GCs float64 `json:"gcs"`
	// ConnectionsAccepted counts the gateway sessions the server accepted
	// (iotransit_ingest_connections_accepted_total), Handshakes its TLS
	// handshakes that succeeded.
	ConnectionsAccepted float64 `json:"connectionsAccepted"`
	Handshakes          float64 `json:"handshakes"`
	// Refused counts the connections refused, by reason.
	Refused map[string]float64 `json:"refused,omitempty"`
	// KernelTCPBytes is the memory of all TCP sockets of the machine
	// (/proc/net/sockstat), not part of any process's RSS.
	KernelTCPBytes int64 `json:"kernelTcpBytes,omitempty"`
}

// IdleReport is what MeasureIdle measured.
type IdleReport struct {
	Header
	System   string `json:"system"`
	Addr     string `json:"addr"`
	Gateways int    `json:"gateways"`
	Tenants  int    `json:"tenants"`
	// Connected gateways got their CONNACK; Failed did not (Errors by
	// kind, Samples the first texts).
	Connected int              `json:"connected"`
	Failed    int              `json:"failed"`
	Errors    map[string]int64 `json:"errors,omitempty"`
	Samples   []string         `json:"errorSamples,omitempty"`
	// ConnectSeconds is the time to connect them all; ConnectLatency one
	// connection's, dial to CONNACK.
	ConnectSeconds float64        `json:"connectSeconds"`
	ConnectLatency LatencySummary `json:"connectLatency"`
	HoldSeconds    float64        `json:"holdSeconds"`
	// Alive are the gateways that answered a PINGREQ at the end of the
	// hold.
	Alive int `json:"alive"`
	// Before is read before the gateways connect, After at the end of the
	// hold.
	Before ServerSample `json:"before"`
	After  ServerSample `json:"after"`
	// PerConnection is After − Before divided by the connected gateways.
	PerConnection *IdlePerConnection `json:"perConnection,omitempty"`
	Provision     *ProvisionStats    `json:"provision,omitempty"`
}

// IdlePerConnection is what one idle connection costs the server.
type IdlePerConnection struct {
	// RSSBytes is the growth of the process's resident memory (needs the
	// server's pid); HeapStackBytes that of Go's heap in use plus its
	// goroutine stacks (from /metrics: it includes garbage not yet
	// collected); Goroutines the goroutines per connection.
	RSSBytes       float64 `json:"rssBytes,omitempty"`
	HeapStackBytes float64 `json:"heapStackBytes,omitempty"`
	Goroutines     float64 `json:"goroutines,omitempty"`
	KernelTCPBytes float64 `json:"kernelTcpBytes,omitempty"`
}

func (o *IdleOptions) defaults() error {
	if o.Gateways < 1 {
		return fmt.Errorf("bench: %d idle gateways: want at least 1", o.Gateways)
	}
	if o.Tenants <= 0 {
		o.Tenants = (o.Gateways + TenantGateways - 1) / TenantGateways
	}
	o.Tenants = min(o.Tenants, o.Gateways)
	if o.ConnectParallel <= 0 {
		o.ConnectParallel = 64
	}
	if err := checkOpenFiles(o.Gateways); err != nil {
		return err
	}
	if o.Progress == nil {
		o.Progress = func(string, ...any) {}
	}
	return nil
}

// MeasureIdle provisions the idle gateways through the API (over several
// tenants, each with its own API key, cached on disk), reads the server,
// connects them all, holds them idle for o.Hold, reads the server again,
// checks that each is still connected (PINGREQ) and disconnects them.
func MeasureIdle(ctx context.Context, h Header, o IdleOptions) (*IdleReport, error) {
	if err := o.defaults(); err != nil {
		return nil, err
	}
	s := o.Server
	op, err := operatorClient(s)
	if err != nil {
		return nil, err
	}
	defer op.Close()
	gws, prov, err := provisionTenants(ctx, op, s, "idle", o.Gateways, o.Tenants, o.Progress)
	if err != nil {
		return nil, err
	}
	rep := &IdleReport{Header: h, System: "iotransit", Addr: s.MQTTAddr, Gateways: o.Gateways, Tenants: o.Tenants, Provision: prov, Errors: map[string]int64{}}
	// Each reading is taken at the server's first garbage collection after
	// the provisioning, and after the hold (Go collects at least every two
	// minutes): the heap in use is then what is live, within the 2 seconds
	// of the wait's polling. Read at the hold's end instead, it held the
	// garbage made since the last collection, up to GOGC% of the live heap
	// (serve: 200%): at 3,000 connections it read 33 KiB per connection
	// where 20 were in use after a collection. Both waits are bounded by
	// the hold.
	if rep.Before, err = readServerAfterGC(ctx, op, s.ServerPID, min(o.Hold, gcPeriod), o.Progress); err != nil {
		return nil, err
	}
	o.Progress("server before: %s", rep.Before)

	o.Progress("connecting %d idle gateways to %s, %d at once", len(gws), s.MQTTAddr, o.ConnectParallel)
	start := time.Now()
	conns, lat := connectIdle(ctx, s.MQTTAddr, gws, o.ConnectParallel, rep, o.Progress)
	rep.ConnectSeconds = time.Since(start).Seconds()
	rep.ConnectLatency = Summarize(lat)
	defer closeIdle(conns)
	o.Progress("%d connected, %d failed in %.1fs; holding them for %s", rep.Connected, rep.Failed, rep.ConnectSeconds, o.Hold)

	held := time.Now()
	if o.Hold < gcPeriod {
		o.Progress("a hold shorter than %s may end before the server collects the connections' garbage: its heap then has some", gcPeriod)
	}
	if !holdIdle(ctx, conns, o.Hold) {
		return nil, ctx.Err()
	}
	rep.HoldSeconds = time.Since(held).Seconds()
	if rep.After, err = readServerAfterGC(ctx, op, s.ServerPID, min(o.Hold, gcPeriod), o.Progress); err != nil {
		return nil, err
	}
	o.Progress("server after: %s", rep.After)
	rep.Alive = pingIdle(conns, 10*time.Second)
	if n := float64(rep.Connected); n > 0 {
		b, a := rep.Before, rep.After
		pc := &IdlePerConnection{
			HeapStackBytes: (a.HeapInuseBytes + a.StackInuseBytes - b.HeapInuseBytes - b.StackInuseBytes) / n,
			Goroutines:     (a.Goroutines - b.Goroutines) / n,
			KernelTCPBytes: float64(a.KernelTCPBytes-b.KernelTCPBytes) / n,
		}
		if b.RSSBytes > 0 && a.RSSBytes > 0 {
			pc.RSSBytes = float64(a.RSSBytes-b.RSSBytes) / n
		}
		rep.PerConnection = pc
	}
	return rep, nil
}

// checkOpenFiles fails when this process may not open a file for each of
// n connections and some more: the bench would fail half way with "too
// many open files". The server needs as many (serve's own limit).
func checkOpenFiles(n int) error {
	if lim := openFileLimit(); lim > 0 && uint64(n)+256 > lim {
		return fmt.Errorf("bench: %d connections need about %d open files, and this process may open %d: raise the limit (as root with CAP_SYS_RESOURCE: ulimit -Hn, prlimit --nofile), for the server too", n, n+256, lim)
	}
	return nil
}

// operatorClient is the client of the server's API with the operator key.
func operatorClient(s ExternalOptions) (*client.Client, error) {
	op, _, err := NewAPIClient(s.APIURL, s.CAPEM, s.OperatorKey)
	if err != nil {
		return nil, fmt.Errorf("bench: %w", err)
	}
	return op, nil
}

// provisionTenants provisions n gateways over the given number of
// tenants, named after s.Tenant and kind. Registering a gateway is the
// operator's alone, and one credential may make 50 requests a second: 50k
// gateways would take the operator key 17 minutes to register. So the
// gateways are made as a factory makes them (the operator's batch of up to
// 1,000 in one request) and each tenant claims its own with an API key of
// its own, which then creates their enrollment tokens: each key has its own
// rate limit, and on a loopback API each tenant's requests leave from an
// address of their own, which has its own too. The serials a tenant
// claimed are kept beside their certificates (CacheDir), so a rerun reuses
// them. The connections are spread over s.SourceAddrs.
func provisionTenants(ctx context.Context, op *client.Client, s ExternalOptions, kind string, n, tenants int, progress func(string, ...any)) ([]Gateway, *ProvisionStats, error) {
	host, _, err := net.SplitHostPort(s.MQTTAddr)
	if err != nil {
		return nil, nil, fmt.Errorf("bench: MQTT address %q: %w", s.MQTTAddr, err)
	}
	per := (n + tenants - 1) / tenants
	total := &ProvisionStats{CacheDir: s.CacheDir}
	start := time.Now()
	type part struct {
		gws   []Gateway
		stats *ProvisionStats
		err   error
	}
	parts := make([]part, tenants)
	apiLocal := loopbackSources(s.APIURL, tenants+1)[1:] // the operator's requests leave from the first
	if len(apiLocal) == 0 {
		apiLocal = []net.Addr{nil}
	}
	var wg sync.WaitGroup
	for k := range tenants {
		count := min(per, n-k*per)
		if count <= 0 {
			continue
		}
		wg.Go(func() {
			name := fmt.Sprintf("%s-%s-%d", s.Tenant, kind, k+1)
			api, err := tenantClient(ctx, op, s, name, apiLocal[k%len(apiLocal)])
			if err != nil {
				parts[k].err = err
				return
			}
			defer api.Close()
			serials, err := claimGateways(ctx, op, api, s, name, count, progress)
			if err != nil {
				parts[k].err = err
				return
			}
			parts[k].gws, parts[k].stats, parts[k].err = ProvisionAPI(ctx, ProvisionConfig{
				API: api, Admin: op, Tenant: name, Serials: serials, Registered: true,
				CacheDir: s.CacheDir, CAPEM: s.CAPEM, ServerName: host, Progress: progress,
			})
		})
	}
	wg.Wait()
	gws := make([]Gateway, 0, n)
	for _, p := range parts {
		if p.err != nil {
			return nil, nil, p.err
		}
		if p.stats != nil {
			total.Enrolled += p.stats.Enrolled
			total.Reused += p.stats.Reused
		}
		gws = append(gws, p.gws...)
	}
	total.Seconds = time.Since(start).Seconds()
	progress("provisioned %d gateways over %d tenants in %.1fs: %d reused from the cache, %d enrolled", n, tenants, total.Seconds, total.Reused, total.Enrolled)
	src := s.SourceAddrs
	if src == nil {
		src = SourceAddrsFor(s.MQTTAddr, n)
	}
	if err := SpreadSources(gws, src); err != nil {
		return nil, nil, err
	}
	return gws, total, nil
}

// benchModel is the model of the gateways the factory makes for the idle
// and storm benches.
const benchModel = "TSGW06"

// claimGateways returns n serials of gateways the tenant holds: those it
// claimed in earlier runs (listed in the cache), and as many more as
// needed, made by the operator as a factory batch and claimed with the
// tenant's key (api). The list in the cache grows as they are claimed.
func claimGateways(ctx context.Context, op, api *client.Client, s ExternalOptions, tenant string, n int, progress func(string, ...any)) ([]string, error) {
	var list string
	var serials []string
	if s.CacheDir != "" {
		dir := filepath.Join(s.CacheDir, CacheKey(api.Server(), s.CAPEM), tenant)
		if err := os.MkdirAll(dir, 0o700); err != nil {
			return nil, fmt.Errorf("bench: certificate cache: %w", err)
		}
		list = filepath.Join(dir, "claimed")
		if b, err := os.ReadFile(list); err == nil {
			serials = strings.Fields(string(b))
		}
	}
	if len(serials) >= n {
		return serials[:n], nil
	}
	var f *os.File
	if list != "" {
		var err error
		if f, err = os.OpenFile(list, os.O_APPEND|os.O_CREATE|os.O_WRONLY, 0o600); err != nil {
			return nil, fmt.Errorf("bench: certificate cache: %w", err)
		}
		defer f.Close()
	}
	progress("tenant %s: claiming %d factory-made gateways", tenant, n-len(serials))
	var mu sync.Mutex
	for len(serials) < n {
		batch, err := op.ProvisionGateways(ctx, client.ProvisionGatewaysRequest{Model: benchModel, Count: min(n-len(serials), 1000)})
		if err != nil {
			return nil, fmt.Errorf("bench: factory batch for %s: %w", tenant, err)
		}
		errs := make([]error, len(batch.Gateways))
		sem := make(chan struct{}, 8)
		var wg sync.WaitGroup
		for i, g := range batch.Gateways {
			wg.Go(func() {
				sem <- struct{}{}
				defer func() { <-sem }()
				if _, err := api.ClaimGateway(ctx, tenant, client.ClaimGatewayRequest{Serial: g.Serial, ClaimCode: g.ClaimCode}); err != nil {
					errs[i] = fmt.Errorf("bench: claim %s for %s: %w", g.Serial, tenant, err)
					return
				}
				mu.Lock()
				defer mu.Unlock()
				serials = append(serials, g.Serial)
				if f != nil {
					if _, err := fmt.Fprintln(f, g.Serial); err != nil {
						errs[i] = fmt.Errorf("bench: certificate cache: %w", err)
					}
				}
			})
		}
		wg.Wait()
		if err := errors.Join(errs...); err != nil {
			return nil, err
		}
	}
	return serials, nil
}

// tenantClient creates the tenant (when absent) and an API key of it that
// may claim and enroll its gateways (for two hours), and returns a client
// of the API with that key whose connections leave from local.
func tenantClient(ctx context.Context, op *client.Client, s ExternalOptions, tenant string, local net.Addr) (*client.Client, error) {
	if _, err := op.CreateTenant(ctx, tenant); err != nil && !isConflict(err) {
		return nil, fmt.Errorf("bench: create tenant %s: %w", tenant, err)
	}
	key, err := op.CreateAPIKey(ctx, tenant, client.CreateAPIKeyRequest{Name: "iotransit bench", TTL: "2h0m0s",
		Scopes: []string{client.ScopeGatewaysRead, client.ScopeGatewaysWrite}})
	if err != nil {
		return nil, fmt.Errorf("bench: API key of tenant %s: %w", tenant, err)
	}
	c, _, err := NewAPIClientFrom(s.APIURL, s.CAPEM, key.Key, local)
	if err != nil {
		return nil, fmt.Errorf("bench: %w", err)
	}
	return c, nil
}

// loopbackSources returns n local addresses for connections to the API at
// apiURL: 127.0.0.1, 127.0.0.2, ... when it is a loopback IPv4 address
// (each has its own share of the API's per-address limit), else one nil
// (the system's choice).
func loopbackSources(apiURL string, n int) []net.Addr {
	u, err := client.ParseServerURL(apiURL)
	if err != nil {
		return []net.Addr{nil}
	}
	ip := net.ParseIP(u.Hostname())
	if u.Hostname() == "localhost" {
		ip = net.IPv4(127, 0, 0, 1)
	}
	if ip == nil || ip.To4() == nil || !ip.IsLoopback() {
		return []net.Addr{nil}
	}
	out := make([]net.Addr, min(n, 250))
	for i := range out {
		out[i] = &net.TCPAddr{IP: net.IPv4(127, 0, 0, byte(i+1))}
	}
	return out
}

// idleConn is one idle gateway's session.
type idleConn struct {
	c     *tls.Conn
	pings int // PINGREQs sent and not yet answered
}

// dialIdle connects one gateway and waits for its CONNACK.
func dialIdle(ctx context.Context, addr string, g Gateway) (*idleConn, error) {
	d := &net.Dialer{LocalAddr: g.LocalAddr, Timeout: 30 * time.Second}
	raw, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("dial: %w", err)
	}
	c := tls.Client(raw, g.TLS)
	if dl, ok := ctx.Deadline(); ok {
		_ = c.SetDeadline(dl)
	}
	if err := c.HandshakeContext(ctx); err != nil {
		c.Close()
		return nil, fmt.Errorf("tls: %w", err)
	}
	pk := packets.Packet{
		FixedHeader:     packets.FixedHeader{Type: packets.Connect},
		ProtocolVersion: 5,
		Connect: packets.ConnectParams{ProtocolName: []byte("MQTT"),
			Clean: true, ClientIdentifier: g.Serial, Keepalive: idleKeepalive},
	}
	var b bytes.Buffer
	if err := pk.ConnectEncode(&b); err != nil {
		c.Close()
		return nil, err
	}
	if _, err := c.Write(b.Bytes()); err != nil {
		c.Close()
		return nil, fmt.Errorf("connect: %w", err)
	}
	typ, body, err := readPacket(c)
	switch {
	case err != nil:
		c.Close()
		return nil, fmt.Errorf("connack: %w", err)
	case typ != packets.Connack || len(body) < 2:
		c.Close()
		return nil, fmt.Errorf("connack: got packet type %d", typ)
	case body[1] != 0:
		c.Close()
		return nil, fmt.Errorf("connack: refused, reason 0x%02x", body[1])
	}
	_ = c.SetDeadline(time.Time{})
	return &idleConn{c: c}, nil
}

// readPacket reads one MQTT packet: its type and its body.
func readPacket(r io.Reader) (byte, []byte, error) {
	br := bufio.NewReaderSize(r, 16)
	first, err := br.ReadByte()
	if err != nil {
		return 0, nil, err
	}
	n, _, err := packets.DecodeLength(br)
	if err != nil {
		return 0, nil, err
	}
	if n > 1<<16 {
		return 0, nil, fmt.Errorf("packet of %d bytes", n)
	}
	body := make([]byte, n)
	if _, err := io.ReadFull(br, body); err != nil {
		return 0, nil, err
	}
	if br.Buffered() > 0 {
		return 0, nil, errors.New("more than one packet")
	}
	return first >> 4, body, nil
}

// connErrorKind names what went wrong with a connection, for the report.
func connErrorKind(err error) string {
	var ne net.Error
	msg := err.Error()
	switch {
	case errors.As(err, &ne) && ne.Timeout(), errors.Is(err, context.DeadlineExceeded):
		return "timeout"
	case strings.HasPrefix(msg, "connack: refused"):
		return "connack_refused"
	case strings.Contains(msg, "reset by peer"), errors.Is(err, io.EOF), strings.Contains(msg, "broken pipe"):
		return "closed_by_server"
	case strings.HasPrefix(msg, "dial"):
		return "dial"
	case strings.HasPrefix(msg, "tls"):
		return "tls"
	}
	return "other"
}

// connectIdle connects every gateway, parallel at once; a connection the
// server closed before its CONNACK (refused for overload) is tried again,
// up to five times. It counts the outcome in rep and returns the
// connections (nil for a failed one) and the connect latencies.
func connectIdle(ctx context.Context, addr string, gws []Gateway, parallel int, rep *IdleReport, progress func(string, ...any)) ([]*idleConn, []time.Duration) {
	conns := make([]*idleConn, len(gws))
	lat := make([]time.Duration, len(gws))
	var mu sync.Mutex
	var done atomic.Int64
	stop := everyTwoSeconds(func() { progress("connecting: %d of %d", done.Load(), len(gws)) })
	defer stop()
	sem := make(chan struct{}, parallel)
	var wg sync.WaitGroup
	for i, g := range gws {
		wg.Go(func() {
			sem <- struct{}{}
			defer func() { <-sem; done.Add(1) }()
			var err error
			for attempt := range 5 {
				if attempt > 0 && !sleepCtx(ctx, backoff(attempt)) {
					break
				}
				t := time.Now()
				dctx, cancel := context.WithTimeout(ctx, 30*time.Second)
				conns[i], err = dialIdle(dctx, addr, g)
				cancel()
				if err == nil {
					lat[i] = time.Since(t)
					break
				}
				if kind := connErrorKind(err); kind != "closed_by_server" && kind != "timeout" {
					break
				}
			}
			if err != nil {
				mu.Lock()
				rep.Errors[connErrorKind(err)]++
				if len(rep.Samples) < maxSamples {
					rep.Samples = append(rep.Samples, g.Serial+": "+err.Error())
				}
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	out := lat[:0]
	for i, c := range conns {
		if c != nil {
			rep.Connected++
			out = append(out, lat[i])
		} else {
			rep.Failed++
		}
	}
	return conns, out
}

// backoff is the wait before attempt (from 1): 100 ms doubling, at most
// 5 s, with jitter.
func backoff(attempt int) time.Duration {
	d := min(100*time.Millisecond<<min(attempt-1, 6), 5*time.Second)
	return d/2 + rand.N(d/2+1)
}

// sleepCtx waits d; it reports false if ctx ended first.
func sleepCtx(ctx context.Context, d time.Duration) bool {
	return sleepUntil(ctx, time.Now().Add(d))
}

// everyTwoSeconds calls f every two seconds until the returned stop.
func everyTwoSeconds(f func()) (stop func()) {
	done := make(chan struct{})
	var wg sync.WaitGroup
	wg.Go(func() {
		t := time.NewTicker(2 * time.Second)
		defer t.Stop()
		for {
			select {
			case <-done:
				return
			case <-t.C:
				f()
			}
		}
	})
	return func() { close(done); wg.Wait() }
}

// holdIdle keeps the connections for d, each sending a PINGREQ at half
// its keepalive (its PINGRESP waits in the socket for pingIdle).
func holdIdle(ctx context.Context, conns []*idleConn, d time.Duration) bool {
	end := time.Now().Add(d)
	for {
		next := time.Now().Add(idleKeepalive / 2 * time.Second)
		if next.After(end) {
			return sleepUntil(ctx, end)
		}
		if !sleepUntil(ctx, next) {
			return false
		}
		for _, c := range conns {
			if c != nil && c.ping() == nil {
				c.pings++
			}
		}
	}
}

// ping sends a PINGREQ.
func (c *idleConn) ping() error {
	_ = c.c.SetWriteDeadline(time.Now().Add(5 * time.Second))
	_, err := c.c.Write([]byte{packets.Pingreq << 4, 0})
	return err
}

// pingIdle sends each connection a PINGREQ and counts those whose
// PINGRESPs (this one's and the hold's) all come back within wait.
func pingIdle(conns []*idleConn, wait time.Duration) int {
	var alive atomic.Int64
	deadline := time.Now().Add(wait)
	eachConn(conns, func(c *idleConn) {
		if c.ping() != nil {
			return
		}
		_ = c.c.SetReadDeadline(deadline)
		want := 2 * (c.pings + 1)
		got := make([]byte, want)
		if _, err := io.ReadFull(c.c, got); err != nil {
			return
		}
		for i := 0; i < want; i += 2 {
			if got[i] != packets.Pingresp<<4 || got[i+1] != 0 {
				return
			}
		}
		alive.Add(1)
	})
	return int(alive.Load())
}

// closeIdle ends every connection with a DISCONNECT.
func closeIdle(conns []*idleConn) {
	eachConn(conns, func(c *idleConn) {
		_ = c.c.SetWriteDeadline(time.Now().Add(time.Second))
		_, _ = c.c.Write([]byte{packets.Disconnect << 4, 0})
		_ = c.c.Close()
	})
}

// eachConn calls f with every connection (nil ones skipped), 256 at once.
func eachConn(conns []*idleConn, f func(c *idleConn)) {
	sem := make(chan struct{}, 256)
	var wg sync.WaitGroup
	for _, c := range conns {
		if c == nil {
			continue
		}
		wg.Go(func() {
			sem <- struct{}{}
			defer func() { <-sem }()
			f(c)
		})
	}
	wg.Wait()
}

// gcPeriod is a little more than the longest time Go's runtime goes
// without a collection (two minutes).
const gcPeriod = 130 * time.Second

// readServerAfterGC waits, at most wait, for the server's next garbage
// collection (go_gc_duration_seconds_count), and samples it.
func readServerAfterGC(ctx context.Context, op *client.Client, pid int, wait time.Duration, progress func(string, ...any)) (ServerSample, error) {
	first, err := readServer(ctx, op, pid)
	if err != nil || wait <= 0 {
		return first, err
	}
	progress("waiting (at most %s) for the server's next garbage collection", wait)
	end := time.Now().Add(wait)
	for time.Now().Before(end) {
		if !sleepCtx(ctx, 2*time.Second) {
			return first, ctx.Err()
		}
		s, err := readServer(ctx, op, pid)
		if err != nil {
			return s, err
		}
		if s.GCs > first.GCs {
			return s, nil
		}
	}
	return readServer(ctx, op, pid)
}

// readServer samples the server: its RSS (with pid), its /metrics (with
// the operator's client) and the kernel's TCP memory.
func readServer(ctx context.Context, op *client.Client, pid int) (ServerSample, error) {
	s := ServerSample{KernelTCPBytes: kernelTCPBytes()}
	if pid > 0 {
		s.RSSBytes = readRSS(pid)
	}
	a, err := op.Do(ctx, "GET", "/metrics", nil, nil)
	if err != nil {
		return s, fmt.Errorf("bench: the server's /metrics: %w", err)
	}
	m := parseMetrics(a.Body)
	s.HeapInuseBytes = m["go_memstats_heap_inuse_bytes"]
	s.StackInuseBytes = m["go_memstats_stack_inuse_bytes"]
	s.HeapAllocBytes = m["go_memstats_heap_alloc_bytes"]
	s.Goroutines = m["go_goroutines"]
	s.GCs = m["go_gc_duration_seconds_count"]
	s.ConnectionsAccepted = m["iotransit_ingest_connections_accepted_total"]
	s.Handshakes = m[`iotransit_ingest_handshakes_total{result="ok"}`]
	for k, v := range m {
		if reason, ok := strings.CutPrefix(k, `iotransit_ingest_connections_refused_total{reason="`); ok {
			if s.Refused == nil {
				s.Refused = map[string]float64{}
			}
			s.Refused[strings.TrimSuffix(reason, `"}`)] = v
		}
	}
	return s, nil
}

// String is the sample in one line.
func (s ServerSample) String() string {
	return fmt.Sprintf("RSS %s, heap in use %s (objects %s), stacks %s, %.0f goroutines, %.0f sessions accepted so far",
		mib(float64(s.RSSBytes)), mib(s.HeapInuseBytes), mib(s.HeapAllocBytes), mib(s.StackInuseBytes), s.Goroutines, s.ConnectionsAccepted)
}

func mib(b float64) string { return fmt.Sprintf("%.1f MiB", b/(1<<20)) }

// parseMetrics reads Prometheus' text format into series (name with its
// labels as written) and values; comments are skipped.
func parseMetrics(b []byte) map[string]float64 {
	m := map[string]float64{}
	for line := range strings.Lines(string(b)) {
		line = strings.TrimSpace(line)
		if line == "" || line[0] == '#' {
			continue
		}
		i := strings.LastIndexByte(line, ' ')
		if i < 0 {
			continue
		}
		if v, err := strconv.ParseFloat(line[i+1:], 64); err == nil {
			m[line[:i]] = v
		}
	}
	return m
}

// kernelTCPBytes is the memory of the machine's TCP sockets (the "mem"
// pages of /proc/net/sockstat), 0 where it cannot be read.
func kernelTCPBytes() int64 {
	b, err := os.ReadFile("/proc/net/sockstat")
	if err != nil {
		return 0
	}
	for line := range strings.Lines(string(b)) {
		rest, ok := strings.CutPrefix(line, "TCP:")
		if !ok {
			continue
		}
		f := strings.Fields(rest)
		for i := 0; i+1 < len(f); i += 2 {
			if f[i] == "mem" {
				pages, _ := strconv.ParseInt(f[i+1], 10, 64)
				return pages * int64(os.Getpagesize())
			}
		}
	}
	return 0
}

// WriteTable writes the report as text.
func (rep *IdleReport) WriteTable(w io.Writer) {
	rep.writeHead(w)
	fmt.Fprintf(w, "mode:     idle: %d gateways connected to %s over %d tenants and held idle %.0fs (the server is its own process)\n\n", rep.Gateways, rep.Addr, rep.Tenants, rep.HoldSeconds)
	fmt.Fprintf(w, "connected:        %d (failed %d%s), alive at the end %d\n", rep.Connected, rep.Failed, fmtErrors(rep.Errors), rep.Alive)
	fmt.Fprintf(w, "connect time:     %.1fs in all; one connection p50 %s, p99 %s, max %s\n", rep.ConnectSeconds, fmtMs(rep.ConnectLatency.P50Ms), fmtMs(rep.ConnectLatency.P99Ms), fmtMs(rep.ConnectLatency.MaxMs))
	fmt.Fprintf(w, "server before:    %s\n", rep.Before)
	fmt.Fprintf(w, "server after:     %s\n", rep.After)
	fmt.Fprintf(w, "sessions seen:    %.0f accepted by the server during the run\n", rep.After.ConnectionsAccepted-rep.Before.ConnectionsAccepted)
	if pc := rep.PerConnection; pc != nil {
		rss := "n/a (give --server-pid)"
		if pc.RSSBytes != 0 {
			rss = fmt.Sprintf("%.1f KiB", pc.RSSBytes/1024)
		}
		fmt.Fprintf(w, "per connection:   RSS %s, Go heap+stacks %.1f KiB, %.2f goroutines; kernel TCP %.1f KiB (not in RSS)\n", rss, pc.HeapStackBytes/1024, pc.Goroutines, pc.KernelTCPBytes/1024)
	}
	for _, s := range rep.Samples {
		fmt.Fprintf(w, "  error: %s\n", s)
	}
	if p := rep.Provision; p != nil {
		fmt.Fprintf(w, "\ngateways: %d reused from the cache, %d enrolled (%.1fs)\n", p.Reused, p.Enrolled, p.Seconds)
	}
}

// fmtErrors is ": kind n, ..." or "".
func fmtErrors(m map[string]int64) string {
	if len(m) == 0 {
		return ""
	}
	var parts []string
	for k, v := range m {
		parts = append(parts, fmt.Sprintf("%s %d", k, v))
	}
	return ": " + strings.Join(parts, ", ")
}

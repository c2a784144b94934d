package bench

import (
	"context"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"net"
	"net/http"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"text/tabwriter"
	"time"

	"github.com/iotransit/iotransit/client"
	"github.com/iotransit/iotransit/internal/gateway"
)

// The management API's costly reads, measured from outside
//
// MeasureAPIAbuse measures a running server (an "iotransit serve --dev"
// process, of this version or an older one: it only speaks the public API
// and MQTT): it fills the dev tenant with messages, rejected messages and
// audit entries, then measures the server process's CPU time (from
// /proc/<pid>/stat) per request of each costly read of issue 8's finding 5,
// and the latency of another tenant's GETs while one key asks for those
// reads at its allowed request rate.

// AbuseConfig is the shape of the measurement.
type AbuseConfig struct {
	// Server is the API's base URL; CAPEM verifies it; OperatorKey is the
	// operator credential.
	Server      string
	CAPEM       []byte
	OperatorKey string
	// MQTTAddr is the ingest's host:port; GatewayDir holds the dev
	// gateway's ca.pem, cert.pem and key.pem (serve --dev writes them).
	MQTTAddr   string
	GatewayDir string
	// Tenant and Gateway are the dev tenant and gateway (node.DevTenant,
	// node.DevGateway).
	Tenant, Gateway string
	// PID is the server's process, whose CPU time is measured.
	PID int
	// Messages, Rejected and AuditEntries are how many of each the tenant
	// holds before measuring (what is missing is added).
	Messages, Rejected, AuditEntries int
	// Requests is how many requests of each read are measured, each with
	// a key of its own (cheap reads go on for a second; a 429 stops them),
	// after a Pause that lets the tenant's read budget fill up again.
	Requests int
	Pause    time.Duration
	// AbuseRate is the requests per second of the abusing key (the
	// server's per-credential limit is 50); VictimRate the other tenant's
	// GETs per second; Window the length of each latency window (quiet,
	// then under abuse).
	AbuseRate, VictimRate float64
	Window                time.Duration
	// Progress, when set, is told what the run is doing.
	Progress func(format string, args ...any)
}

// AbuseReport is what MeasureAPIAbuse found.
type AbuseReport struct {
	Server string `json:"server"`
	PID    int    `json:"pid"`
	// Holding is what the tenant held when measuring: the newest message's
	// and rejected message's seq, and the audit log's entries.
	Holding struct {
		Messages     uint64 `json:"messages"`
		Rejected     uint64 `json:"rejected"`
		AuditEntries uint64 `json:"auditEntries"`
	} `json:"holding"`
	// FirstAuditFilterMs is the CPU time of the first audit list filtered
	// by actor (a server with the audit index builds it then, once).
	FirstAuditFilterMs float64    `json:"firstAuditFilterCpuMs"`
	Reads              []ReadCost `json:"reads"`
	// Quiet and Abused are the other tenant's GET latencies without and
	// with the abusing key.
	Quiet  VictimWindow `json:"quiet"`
	Abused VictimWindow `json:"abused"`
}

// ReadCost is the server CPU time per request of one read.
type ReadCost struct {
	Read     string         `json:"read"`
	Requests int            `json:"requests"`
	Statuses map[string]int `json:"statuses"`
	// Partial counts the answers that were partial pages.
	Partial  int     `json:"partial"`
	CPUMsPer float64 `json:"cpuMsPerRequest"`
	// Refused is set when a 429 stopped the read's requests.
	Refused bool `json:"refused"`
}

// VictimWindow is one latency window of the other tenant.
type VictimWindow struct {
	Latency LatencySummary `json:"latency"`
	Errors  int            `json:"errors"`
	// ServerCores is the server's CPU time per second in the window.
	ServerCores float64 `json:"serverCores"`
	// Abuser counts the abusing key's answers by status (abused window).
	Abuser map[string]int `json:"abuser,omitempty"`
}

// abuseSensor is the sensor whose messages the measurement stores.
const abuseSensor = "TSEN01ABU00000001"

// abuseRun holds what a measurement uses.
type abuseRun struct {
	cfg  AbuseConfig
	api  *client.Client
	tls  *tls.Config
	base string
	say  func(string, ...any)
}

// MeasureAPIAbuse fills the tenant and measures (see AbuseConfig).
func MeasureAPIAbuse(ctx context.Context, cfg AbuseConfig) (*AbuseReport, error) {
	if cfg.Progress == nil {
		cfg.Progress = func(string, ...any) {}
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(cfg.CAPEM) {
		return nil, errors.New("api-abuse: no certificate in the CA file")
	}
	c, err := client.New(client.Config{Server: cfg.Server, CAPEM: cfg.CAPEM, Credential: cfg.OperatorKey, Timeout: time.Minute})
	if err != nil {
		return nil, err
	}
	defer c.Close()
	r := &abuseRun{cfg: cfg, api: c, base: strings.TrimSuffix(cfg.Server, "/"), say: cfg.Progress,
		tls: &tls.Config{MinVersion: tls.VersionTLS12, RootCAs: pool}}
	rep := &AbuseReport{Server: cfg.Server, PID: cfg.PID}
	if err := r.fill(ctx, rep); err != nil {
		return nil, err
	}
	if err := r.reads(ctx, rep); err != nil {
		return nil, err
	}
	if err := r.victim(ctx, rep); err != nil {
		return nil, err
	}
	return rep, nil
}

// fill adds what the tenant lacks of messages, rejected messages and audit
// entries.
func (r *abuseRun) fill(ctx context.Context, rep *AbuseReport) error {
	cfg := r.cfg
	newest := func(list func() (uint64, error)) uint64 {
		n, err := list()
		if err != nil {
			return 0
		}
		return n
	}
	msgs := newest(func() (uint64, error) {
		p, err := r.api.ListMessages(ctx, cfg.Tenant, client.MessageQuery{Limit: 1})
		if err != nil || len(p.Items) == 0 {
			return 0, err
		}
		return p.Items[0].Seq, nil
	})
	rej := newest(func() (uint64, error) {
		p, err := r.api.ListRejected(ctx, cfg.Tenant, client.RejectedQuery{Limit: 1})
		if err != nil || len(p.Items) == 0 {
			return 0, err
		}
		return p.Items[0].Seq, nil
	})
	if int(msgs) < cfg.Messages || int(rej) < cfg.Rejected {
		if err := r.publish(ctx, max(cfg.Messages-int(msgs), 0), max(cfg.Rejected-int(rej), 0)); err != nil {
			return err
		}
	}
	rep.Holding.Messages = max(msgs, uint64(cfg.Messages))
	rep.Holding.Rejected = max(rej, uint64(cfg.Rejected))
	v, err := r.api.VerifyAudit(ctx, cfg.Tenant)
	if err != nil {
		return fmt.Errorf("api-abuse: count audit entries: %w", err)
	}
	if missing := cfg.AuditEntries - int(v.Entries); missing > 0 {
		if err := r.audit(ctx, missing); err != nil {
			return err
		}
		if v, err = r.api.VerifyAudit(ctx, cfg.Tenant); err != nil {
			return fmt.Errorf("api-abuse: count audit entries: %w", err)
		}
	}
	rep.Holding.AuditEntries = v.Entries
	return nil
}

// publish stores valid and invalid messages through the dev gateway, 100
// a publish.
func (r *abuseRun) publish(ctx context.Context, valid, invalid int) error {
	d := r.cfg.GatewayDir
	host, _, _ := net.SplitHostPort(r.cfg.MQTTAddr)
	tc, err := gateway.TLSFiles(filepath.Join(d, "cert.pem"), filepath.Join(d, "key.pem"), filepath.Join(d, "ca.pem"), host)
	if err != nil {
		return err
	}
	u, err := gateway.Dial(ctx, gateway.UplinkConfig{Addr: r.cfg.MQTTAddr, Serial: r.cfg.Gateway, TLS: tc})
	if err != nil {
		return fmt.Errorf("api-abuse: connect the dev gateway: %w", err)
	}
	defer u.Close()
	r.say("publishing %d messages and %d rejected ones", valid, invalid)
	ts := time.Now().Unix() - int64(valid)
	for _, kind := range []struct {
		n   int
		msg func(i int) string
	}{
		{valid, func(i int) string {
			return fmt.Sprintf(`{"tsmId":12100,"tsmEv":10,"tsmTs":%d,"tsmTuid":"%s","temp":21.5,"humd":40}`, ts+int64(i), abuseSensor)
		}},
		{invalid, func(i int) string { return fmt.Sprintf(`{"tsmId":12100,"tsmEv":10,"tsmTs":%d}`, ts+int64(i)) }},
	} {
		for i := 0; i < kind.n; i += 100 {
			var parts []string
			for j := i; j < min(i+100, kind.n); j++ {
				parts = append(parts, kind.msg(j))
			}
			for {
				res, err := u.Publish(ctx, []byte("["+strings.Join(parts, ",")+"]"), 1)
				if err != nil {
					return fmt.Errorf("api-abuse: publish: %w", err)
				}
				if res.ReasonCode != 0x97 { // quota exceeded: the gateway's rate
					break
				}
				time.Sleep(time.Second)
			}
		}
	}
	return nil
}

// audit adds n audit entries: gateway label changes, by 20 keys from 20
// loopback addresses, each within the API's request limits.
func (r *abuseRun) audit(ctx context.Context, n int) error {
	const workers = 20
	r.say("adding %d audit entries (gateway label changes)", n)
	var wg sync.WaitGroup
	errs := make([]error, workers)
	for w := range workers {
		serial := fmt.Sprintf("TSGW06ABU%08d", w+1)
		if _, err := r.api.RegisterGateway(ctx, r.cfg.Tenant, client.RegisterGatewayRequest{Serial: serial}); err != nil && !isProblem(err, "registry.gateway_exists") {
			return err
		}
		k, err := r.api.CreateAPIKey(ctx, r.cfg.Tenant, client.CreateAPIKeyRequest{Scopes: []string{client.ScopeGatewaysWrite}})
		if err != nil {
			return err
		}
		hc := r.httpClient(fmt.Sprintf("127.0.0.%d", 10+w))
		wg.Go(func() {
			tick := time.NewTicker(time.Second / 45)
			defer tick.Stop()
			for i := w; i < n; i += workers {
				<-tick.C
				body := fmt.Sprintf(`{"labels":{"n":"%d"}}`, i)
				for {
					st, wait, err := r.send(ctx, hc, "PATCH", "/v1/tenants/"+r.cfg.Tenant+"/gateways/"+serial, k.Key, body, nil)
					if err != nil {
						errs[w] = err
						return
					}
					if st != http.StatusTooManyRequests {
						break
					}
					time.Sleep(wait)
				}
			}
		})
	}
	wg.Wait()
	return errors.Join(errs...)
}

func isProblem(err error, code string) bool {
	var p *client.Problem
	return errors.As(err, &p) && p.Code == code
}

// httpClient returns an HTTPS client of the API whose connections come
// from the loopback address ip ("" for any).
func (r *abuseRun) httpClient(ip string) *http.Client {
	d := &net.Dialer{Timeout: 10 * time.Second}
	if ip != "" {
		d.LocalAddr = &net.TCPAddr{IP: net.ParseIP(ip)}
	}
	return &http.Client{Timeout: time.Minute, Transport: &http.Transport{DialContext: d.DialContext, TLSClientConfig: r.tls, MaxIdleConnsPerHost: 64}}
}

// send makes one request and returns its status and Retry-After; page,
// when set, receives the JSON answer of a 200.
func (r *abuseRun) send(ctx context.Context, hc *http.Client, method, path, key, body string, page any) (int, time.Duration, error) {
	var rd io.Reader
	if body != "" {
		rd = strings.NewReader(body)
	}
	req, err := http.NewRequestWithContext(ctx, method, r.base+path, rd)
	if err != nil {
		return 0, 0, err
	}
	req.Header.Set("Authorization", "Bearer "+key)
	if body != "" {
		req.Header.Set("Content-Type", "application/json")
	}
	if strings.Contains(path, "/stream") {
		nonce := make([]byte, 16)
		_, _ = rand.Read(nonce)
		req.Header.Set("Connection", "Upgrade")
		req.Header.Set("Upgrade", "websocket")
		req.Header.Set("Sec-WebSocket-Version", "13")
		req.Header.Set("Sec-WebSocket-Key", base64.StdEncoding.EncodeToString(nonce))
	}
	resp, err := hc.Do(req)
	if err != nil {
		return 0, 0, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return 0, 0, err
	}
	if page != nil && resp.StatusCode == http.StatusOK {
		_ = json.Unmarshal(b, page)
	}
	wait := time.Second
	if s, err := strconv.Atoi(resp.Header.Get("Retry-After")); err == nil {
		wait = time.Duration(s) * time.Second
	}
	return resp.StatusCode, wait, nil
}

// costlyReads are the reads of finding 5, on the tenant's data.
func (r *abuseRun) costlyReads() []struct{ name, path string } {
	t := "/v1/tenants/" + r.cfg.Tenant
	return []struct{ name, path string }{
		{"messages?limit=1000", t + "/messages?limit=1000"},
		{"stream?after=<missing key>", t + "/stream?after=" + abuseSensor + ":12100:1"},
		{"rejected?code=<no match>", t + "/rejected?code=thingsee.no_such_code"},
		{"audit?actor=nobody", t + "/audit?actor=nobody"},
	}
}

// readKey makes a key of the tenant that may read messages and the audit
// log.
func (r *abuseRun) readKey(ctx context.Context, tenant string, scopes ...string) (string, error) {
	if len(scopes) == 0 {
		scopes = []string{client.ScopeMessagesRead, client.ScopeAuditRead}
	}
	k, err := r.api.CreateAPIKey(ctx, tenant, client.CreateAPIKeyRequest{Scopes: scopes})
	if err != nil {
		return "", err
	}
	return k.Key, nil
}

// serverSeconds returns the server's CPU seconds between two snapshots
// taken wall apart (the clock ticks of /proc are per core).
func serverSeconds(a, b cpuSnapshot, wall time.Duration) float64 {
	u := usage(a, b, runtime.NumCPU())
	if u == nil {
		return 0
	}
	return u.Server * wall.Seconds()
}

// reads measures the server CPU time per request of each costly read:
// Requests requests, each with a key of its own, after a pause that lets
// the tenant's read budget (on a server that has one) fill up again, so
// that each request may read what one request may. A read so cheap that
// they took under 50 ms goes on for a second (or until refused) to be
// measured at all (/proc counts in 10 ms ticks).
func (r *abuseRun) reads(ctx context.Context, rep *AbuseReport) error {
	hc := r.httpClient("")
	for _, rd := range r.costlyReads() {
		keys := make([]string, r.cfg.Requests)
		for i := range keys {
			k, err := r.readKey(ctx, r.cfg.Tenant)
			if err != nil {
				return err
			}
			keys[i] = k
		}
		// One request first: connections, caches, and a server's audit
		// index (built by the first filtered list) are not what is measured.
		a, start := readCPU(r.cfg.PID), time.Now()
		if _, _, err := r.send(ctx, hc, "GET", rd.path, keys[0], "", nil); err != nil {
			return err
		}
		if strings.HasPrefix(rd.name, "audit") {
			rep.FirstAuditFilterMs = serverSeconds(a, readCPU(r.cfg.PID), time.Since(start)) * 1000
		}
		if !sleepUntil(ctx, time.Now().Add(r.cfg.Pause)) {
			return ctx.Err()
		}
		r.say("measuring %s", rd.name)
		cost := ReadCost{Read: rd.name, Statuses: map[string]int{}}
		a, start = readCPU(r.cfg.PID), time.Now()
		for {
			if cost.Requests >= r.cfg.Requests {
				cheap := serverSeconds(a, readCPU(r.cfg.PID), time.Since(start)) < 0.05
				if !cheap || time.Since(start) >= time.Second || cost.Requests >= 2000 {
					break
				}
			}
			var p struct {
				Partial bool `json:"partial"`
			}
			st, _, err := r.send(ctx, hc, "GET", rd.path, keys[cost.Requests%len(keys)], "", &p)
			if err != nil {
				return err
			}
			cost.Statuses[strconv.Itoa(st)]++
			if st == http.StatusTooManyRequests {
				cost.Refused = true
				break
			}
			cost.Requests++
			if p.Partial {
				cost.Partial++
			}
		}
		if cost.Requests > 0 {
			cost.CPUMsPer = serverSeconds(a, readCPU(r.cfg.PID), time.Since(start)) * 1000 / float64(cost.Requests)
		}
		rep.Reads = append(rep.Reads, cost)
	}
	return nil
}

// victim measures another tenant's GET latency, quiet and then while one
// key of the tenant asks for the costly reads at AbuseRate.
func (r *abuseRun) victim(ctx context.Context, rep *AbuseReport) error {
	const victimTenant = "abuse-victim"
	if _, err := r.api.CreateTenant(ctx, victimTenant); err != nil && !isProblem(err, "registry.tenant_exists") {
		return err
	}
	vkey, err := r.readKey(ctx, victimTenant, client.ScopeGatewaysRead)
	if err != nil {
		return err
	}
	akey, err := r.readKey(ctx, r.cfg.Tenant)
	if err != nil {
		return err
	}
	vc, ac := r.httpClient("127.0.0.201"), r.httpClient("127.0.0.202")
	for _, abused := range []bool{false, true} {
		w := &rep.Quiet
		if abused {
			w = &rep.Abused
			w.Abuser = map[string]int{}
		}
		r.say("victim latency, abused: %v", abused)
		wctx, cancel := context.WithTimeout(ctx, r.cfg.Window)
		var mu sync.Mutex
		var lat []time.Duration
		var wg sync.WaitGroup
		a := readCPU(r.cfg.PID)
		wg.Go(func() {
			every(wctx, r.cfg.VictimRate, func() {
				t0 := time.Now()
				st, _, err := r.send(context.Background(), vc, "GET", "/v1/tenants/"+victimTenant+"/gateways", vkey, "", nil)
				mu.Lock()
				defer mu.Unlock()
				if err != nil || st != http.StatusOK {
					w.Errors++
					return
				}
				lat = append(lat, time.Since(t0))
			})
		})
		if abused {
			reads := r.costlyReads()
			i := 0
			wg.Go(func() {
				every(wctx, r.cfg.AbuseRate, func() {
					mu.Lock()
					rd := reads[i%len(reads)]
					i++
					mu.Unlock()
					st, _, err := r.send(context.Background(), ac, "GET", rd.path, akey, "", nil)
					mu.Lock()
					defer mu.Unlock()
					if err != nil {
						w.Abuser["error"]++
						return
					}
					w.Abuser[strconv.Itoa(st)]++
				})
			})
		}
		wg.Wait()
		cancel()
		if u := usage(a, readCPU(r.cfg.PID), runtime.NumCPU()); u != nil {
			w.ServerCores = u.Server
		}
		w.Latency = Summarize(lat)
	}
	return nil
}

// every calls fn in a goroutine of its own rate times a second, on a fixed
// schedule (an open loop: a slow answer does not delay the next call),
// until ctx ends, and waits for the calls.
func every(ctx context.Context, rate float64, fn func()) {
	var wg sync.WaitGroup
	defer wg.Wait()
	interval := time.Duration(float64(time.Second) / rate)
	next := time.Now()
	for {
		if !sleepUntil(ctx, next) {
			return
		}
		wg.Go(fn)
		next = next.Add(interval)
	}
}

// WriteTable writes the report for people.
func (rep *AbuseReport) WriteTable(w io.Writer) error {
	fmt.Fprintf(w, "server %s (pid %d); tenant holds %d messages, %d rejected, %d audit entries\n\n",
		rep.Server, rep.PID, rep.Holding.Messages, rep.Holding.Rejected, rep.Holding.AuditEntries)
	tw := tabwriter.NewWriter(w, 2, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "READ\tREQUESTS\tANSWERS\tPARTIAL\tSERVER CPU MS/REQUEST")
	for _, c := range rep.Reads {
		var st []string
		for _, k := range slices.Sorted(maps.Keys(c.Statuses)) {
			st = append(st, fmt.Sprintf("%s×%d", k, c.Statuses[k]))
		}
		fmt.Fprintf(tw, "%s\t%d\t%s\t%d\t%.1f\n", c.Read, c.Requests, strings.Join(st, " "), c.Partial, c.CPUMsPer)
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	fmt.Fprintf(w, "(the first audit list by actor took %.0f ms of server CPU: an index catch-up, where there is one)\n\n", rep.FirstAuditFilterMs)
	tw = tabwriter.NewWriter(w, 2, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "OTHER TENANT'S GET\tREQUESTS\tERRORS\tP50 MS\tP99 MS\tMAX MS\tSERVER CPU (CORES)\tABUSING KEY'S ANSWERS")
	for _, v := range []struct {
		name string
		w    VictimWindow
	}{{"quiet", rep.Quiet}, {"under abuse", rep.Abused}} {
		var st []string
		for _, k := range slices.Sorted(maps.Keys(v.w.Abuser)) {
			st = append(st, fmt.Sprintf("%s×%d", k, v.w.Abuser[k]))
		}
		fmt.Fprintf(tw, "%s\t%d\t%d\t%.1f\t%.1f\t%.1f\t%.2f\t%s\n", v.name, v.w.Latency.Count, v.w.Errors,
			v.w.Latency.P50Ms, v.w.Latency.P99Ms, v.w.Latency.MaxMs, v.w.ServerCores, strings.Join(st, " "))
	}
	return tw.Flush()
}

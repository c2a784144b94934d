package bench

import (
	"bufio"
	"bytes"
	"context"
	"crypto"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/iotransit/iotransit/internal/gateway"
	"github.com/iotransit/iotransit/internal/pki"
)

// The storm bench's live gateways run in a process of their own (this
// executable again, told so by LiveChildEnv), so that their publish
// latency during a storm is the server's doing and not the storm's
// handshakes starving the bench's own goroutines. The parent sends the
// child a liveSpec as JSON on its standard input; the child connects the
// gateways, answers a liveReady line on its standard output, publishes
// until its standard input is closed, then writes a liveResult.

// LiveChildEnv, set to "1" in a process's environment, makes the bench
// command (and the test binaries of the bench) run as the live gateways
// of a storm bench: RunLiveChild.
const LiveChildEnv = "IOTRANSIT_BENCH_LIVE_CHILD"

// liveSpec is what the child is to do.
type liveSpec struct {
	Addr  string  `json:"addr"`
	CAPEM string  `json:"caPem"`
	Rate  float64 `json:"rate"`
	// Gateways are the live gateways with their keys: the child is this
	// bench, the pipe is its own.
	Gateways []liveGateway `json:"gateways"`
}

type liveGateway struct {
	Serial     string `json:"serial"`
	CertPEM    string `json:"certPem"`
	KeyPEM     string `json:"keyPem"`
	ServerName string `json:"serverName"`
	LocalAddr  string `json:"localAddr,omitempty"`
}

// liveReady says the child's gateways are connected and when their first
// publishes are due.
type liveReady struct {
	Start time.Time `json:"start"`
}

// liveResult is every live publish, by gateway.
type liveResult struct {
	Samples [][]liveSample `json:"samples"`
	Errors  int64          `json:"errors"`
	// ErrorSamples are the first failures' texts.
	ErrorSamples []string `json:"errorSamples,omitempty"`
}

// liveSample is one live publish: when it was due, its latency, and
// whether it was acknowledged.
type liveSample struct {
	Due time.Time     `json:"due"`
	Lat time.Duration `json:"lat"`
	OK  bool          `json:"ok"`
}

// newLiveSpec describes the gateways gws for the child.
func newLiveSpec(addr string, caPEM []byte, rate float64, gws []Gateway) (liveSpec, error) {
	spec := liveSpec{Addr: addr, CAPEM: string(caPEM), Rate: rate}
	for _, g := range gws {
		if len(g.TLS.Certificates) != 1 {
			return liveSpec{}, fmt.Errorf("bench: live gateway %s has %d certificates, want 1", g.Serial, len(g.TLS.Certificates))
		}
		c := g.TLS.Certificates[0]
		signer, ok := c.PrivateKey.(crypto.Signer)
		if !ok {
			return liveSpec{}, fmt.Errorf("bench: live gateway %s: the key is no signer", g.Serial)
		}
		keyPEM, err := pki.EncodeKeyPEM(signer)
		if err != nil {
			return liveSpec{}, err
		}
		var certPEM strings.Builder
		for _, der := range c.Certificate {
			certPEM.Write(pki.EncodeCertPEM(der))
		}
		lg := liveGateway{Serial: g.Serial, CertPEM: certPEM.String(), KeyPEM: string(keyPEM), ServerName: g.TLS.ServerName}
		if g.LocalAddr != nil {
			lg.LocalAddr = g.LocalAddr.String()
		}
		spec.Gateways = append(spec.Gateways, lg)
	}
	return spec, nil
}

// RunLiveChild is the live gateways' process of a storm bench: it reads
// the spec from in, connects, says it is ready on out, publishes until in
// ends (or ctx does), and writes the result to out.
func RunLiveChild(ctx context.Context, in io.Reader, out io.Writer) error {
	dec := json.NewDecoder(in)
	var spec liveSpec
	if err := dec.Decode(&spec); err != nil {
		return fmt.Errorf("bench live: read the spec: %w", err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM([]byte(spec.CAPEM)) {
		return errors.New("bench live: no CA in the spec")
	}
	ups := make([]*gateway.Uplink, 0, len(spec.Gateways))
	defer func() {
		for _, u := range ups {
			_ = u.Close()
		}
	}()
	for _, g := range spec.Gateways {
		cert, err := tls.X509KeyPair([]byte(g.CertPEM), []byte(g.KeyPEM))
		if err != nil {
			return fmt.Errorf("bench live: %s: %w", g.Serial, err)
		}
		cfg := gateway.UplinkConfig{Addr: spec.Addr, Serial: g.Serial, TLS: &tls.Config{
			MinVersion: tls.VersionTLS12, Certificates: []tls.Certificate{cert}, RootCAs: pool, ServerName: g.ServerName}}
		if g.LocalAddr != "" {
			if cfg.LocalAddr, err = net.ResolveTCPAddr("tcp", g.LocalAddr); err != nil {
				return fmt.Errorf("bench live: %s: %w", g.Serial, err)
			}
		}
		dctx, cancel := context.WithTimeout(ctx, 30*time.Second)
		u, err := gateway.Dial(dctx, cfg)
		cancel()
		if err != nil {
			return fmt.Errorf("bench live: connect live gateway %s: %w", g.Serial, err)
		}
		ups = append(ups, u)
	}
	liveCtx, stop := context.WithCancel(ctx)
	defer stop()
	go func() { // the end of the input is the end of the load
		_, _ = io.Copy(io.Discard, io.MultiReader(dec.Buffered(), in))
		stop()
	}()
	start := time.Now().Add(100 * time.Millisecond)
	enc := json.NewEncoder(out)
	if err := enc.Encode(liveReady{Start: start}); err != nil {
		return err
	}
	serials := make([]string, len(spec.Gateways))
	for i, g := range spec.Gateways {
		serials[i] = g.Serial
	}
	return enc.Encode(publishLive(liveCtx, ups, serials, spec.Rate, start))
}

// RunLiveChildIfAsked runs RunLiveChild and exits when LiveChildEnv says
// this process is the live gateways of a storm bench. The iotransit
// command needs no call (its bench command answers); a test binary whose
// tests run MeasureStorm calls it from an init function, since the storm
// bench starts its own executable.
func RunLiveChildIfAsked() {
	if os.Getenv(LiveChildEnv) != "1" {
		return
	}
	if err := RunLiveChild(context.Background(), os.Stdin, os.Stdout); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	os.Exit(0)
}

// publishLive publishes rate publishes per second in all over ups, one in
// flight each, on a fixed schedule from start, until ctx ends.
func publishLive(ctx context.Context, ups []*gateway.Uplink, serials []string, rate float64, start time.Time) *liveResult {
	res := &liveResult{Samples: make([][]liveSample, len(ups))}
	var errs atomic.Int64
	var mu sync.Mutex
	var wg sync.WaitGroup
	every := time.Duration(float64(len(ups)) / rate * float64(time.Second))
	for i, u := range ups {
		wg.Go(func() {
			gen := newPayloadGen(PayloadTypical, i, serials[i])
			first := start.Add(every * time.Duration(i) / time.Duration(len(ups)))
			for k := 0; ; k++ {
				due := first.Add(every * time.Duration(k))
				if !sleepUntil(ctx, due) {
					return
				}
				pctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 30*time.Second)
				r, err := u.Publish(pctx, gen.next(time.Now()), 1)
				cancel()
				ok := err == nil && r.ReasonCode < 0x80
				res.Samples[i] = append(res.Samples[i], liveSample{Due: due, Lat: time.Since(due), OK: ok})
				if !ok {
					errs.Add(1)
					mu.Lock()
					if len(res.ErrorSamples) < maxSamples {
						res.ErrorSamples = append(res.ErrorSamples, fmt.Sprintf("%s: %v, reason 0x%02x", serials[i], err, r.ReasonCode))
					}
					mu.Unlock()
				}
			}
		})
	}
	wg.Wait()
	res.Errors = errs.Load()
	return res
}

// liveProc is a running live child.
type liveProc struct {
	cmd   *exec.Cmd
	stdin io.WriteCloser
	out   *json.Decoder
	// stderr is read once the process has ended.
	stderr *bytes.Buffer
	// Start is when its first publishes were due.
	Start time.Time
}

// startLive starts exe (this executable when "") as the live child with
// spec and waits until its gateways are connected.
func startLive(ctx context.Context, exe string, spec liveSpec) (_ *liveProc, err error) {
	if exe == "" {
		if exe, err = os.Executable(); err != nil {
			return nil, fmt.Errorf("bench: the live gateways' process: %w", err)
		}
	}
	cmd := exec.Command(exe, "bench")
	cmd.Env = append(os.Environ(), LiveChildEnv+"=1")
	p := &liveProc{cmd: cmd, stderr: &bytes.Buffer{}}
	cmd.Stderr = p.stderr
	// Wait does not wait past this for the child's output to close (a
	// process of its own holding it after the child was killed).
	cmd.WaitDelay = 5 * time.Second
	if p.stdin, err = cmd.StdinPipe(); err != nil {
		return nil, err
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		return nil, err
	}
	p.out = json.NewDecoder(bufio.NewReader(stdout))
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("bench: start the live gateways' process %s: %w", exe, err)
	}
	defer func() {
		if err != nil {
			p.kill()
		}
	}()
	// The spec (a few kB a gateway) may not fit a pipe: it is written,
	// like the answer read, while ctx is watched.
	ready := make(chan error, 1)
	var r liveReady
	go func() {
		if err := json.NewEncoder(p.stdin).Encode(spec); err != nil {
			ready <- fmt.Errorf("send the spec: %w", err)
			return
		}
		ready <- p.out.Decode(&r)
	}()
	select {
	case err := <-ready:
		if err != nil {
			p.kill()
			return nil, fmt.Errorf("bench: the live gateways' process did not get ready: %w%s", err, p.log())
		}
	case <-ctx.Done():
		return nil, ctx.Err()
	}
	p.Start = r.Start
	return p, nil
}

// liveStopLimit bounds how long a live child may take to give its result
// once told to stop: its publishes in flight time out after 30 s.
const liveStopLimit = 45 * time.Second

// stop ends the child's load and returns what it measured. A child that
// gives no result within liveStopLimit, or before ctx ends, is killed.
func (p *liveProc) stop(ctx context.Context) (*liveResult, error) {
	_ = p.stdin.Close()
	var res liveResult
	decoded := make(chan error, 1)
	go func() { decoded <- p.out.Decode(&res) }()
	limit := time.NewTimer(liveStopLimit)
	defer limit.Stop()
	var err error
	select {
	case err = <-decoded:
	case <-ctx.Done():
		err = ctx.Err()
	case <-limit.C:
		err = fmt.Errorf("no result %s after the end of its load", liveStopLimit)
	}
	if err != nil {
		p.kill()
		return nil, fmt.Errorf("bench: the live gateways' process: %w%s", err, p.log())
	}
	if err := p.cmd.Wait(); err != nil {
		return nil, fmt.Errorf("bench: the live gateways' process: %w%s", err, p.log())
	}
	return &res, nil
}

// kill ends the child at once.
func (p *liveProc) kill() {
	if p.cmd.ProcessState == nil {
		_ = p.cmd.Process.Kill()
		_ = p.cmd.Wait()
	}
}

// log is what the ended child wrote on its standard error.
func (p *liveProc) log() string {
	if s := strings.TrimSpace(p.stderr.String()); s != "" {
		return "\n" + s
	}
	return ""
}

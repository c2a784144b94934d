package bench

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"maps"
	"net"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/iotransit/iotransit/internal/pki"
)

// ErrNoMosquitto is returned when the mosquitto binary is not installed.
var ErrNoMosquitto = errors.New("bench: mosquitto binary not found (install the Debian package mosquitto)")

// MosquittoBinary returns the path of the mosquitto broker: from $PATH, or
// /usr/sbin and /usr/local/sbin, where packages install it but which are not
// on every user's $PATH.
func MosquittoBinary() (string, error) {
	if p, err := exec.LookPath("mosquitto"); err == nil {
		return p, nil
	}
	for _, p := range []string{"/usr/sbin/mosquitto", "/usr/local/sbin/mosquitto"} {
		if st, err := os.Stat(p); err == nil && !st.IsDir() && st.Mode()&0o111 != 0 {
			return p, nil
		}
	}
	return "", ErrNoMosquitto
}

// Mosquitto is a running mosquitto broker: the reference peer. It listens on
// a free loopback port with TLS and requires a client certificate; its CA,
// server certificate and key are made at start in a temporary directory,
// and each gateway gets a client certificate from the same CA. Persistence
// is off and there is no ACL: it measures the MQTT and TLS path alone.
type Mosquitto struct {
	// Version is the broker's version line ("mosquitto version 2.0.11").
	Version string

	addr     string
	dir      string
	cmd      *exec.Cmd
	exited   chan struct{}
	waitErr  error
	log      *lockedBuffer
	gateways []Gateway
	once     sync.Once
}

// lockedBuffer is the broker's output.
type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.b.Len() > 1<<20 { // keep memory bounded if it logs a lot
		return len(p), nil
	}
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// StartMosquitto starts a broker for the gateways with these serials and
// waits until it accepts connections. Close stops it and removes its files.
func StartMosquitto(ctx context.Context, serials []string) (_ *Mosquitto, err error) {
	bin, err := MosquittoBinary()
	if err != nil {
		return nil, err
	}
	dir, err := os.MkdirTemp("", "iotransit-bench-mosquitto-")
	if err != nil {
		return nil, fmt.Errorf("bench: mosquitto directory: %w", err)
	}
	m := &Mosquitto{dir: dir, exited: make(chan struct{}), log: &lockedBuffer{}}
	defer func() {
		if err != nil {
			_ = m.Close()
		}
	}()
	m.Version = mosquittoVersion(ctx, bin)

	now := time.Now()
	ca, err := pki.NewCA("iotransit bench CA", 24*time.Hour, now)
	if err != nil {
		return nil, fmt.Errorf("bench: mosquitto CA: %w", err)
	}
	serverKey, err := pki.NewKey()
	if err != nil {
		return nil, fmt.Errorf("bench: mosquitto server key: %w", err)
	}
	_, serverPEM, err := ca.IssueServer(serverKey.Public(), []string{"127.0.0.1", "localhost"}, 24*time.Hour, now)
	if err != nil {
		return nil, fmt.Errorf("bench: mosquitto server certificate: %w", err)
	}
	serverKeyPEM, err := pki.EncodeKeyPEM(serverKey)
	if err != nil {
		return nil, fmt.Errorf("bench: mosquitto server key: %w", err)
	}
	pool := x509.NewCertPool()
	pool.AddCert(ca.Cert)
	for _, serial := range serials {
		cert, err := clientCertificate(ca, serial, now)
		if err != nil {
			return nil, err
		}
		m.gateways = append(m.gateways, Gateway{Serial: serial, TLS: &tls.Config{
			MinVersion: tls.VersionTLS12, Certificates: []tls.Certificate{*cert},
			RootCAs: pool, ServerName: "127.0.0.1",
		}})
	}

	port, err := freePort()
	if err != nil {
		return nil, err
	}
	m.addr = net.JoinHostPort("127.0.0.1", strconv.Itoa(port))
	files := map[string][]byte{"ca.pem": ca.CertPEM, "server.pem": serverPEM, "server-key.pem": serverKeyPEM}
	for name, b := range files {
		if err := os.WriteFile(filepath.Join(dir, name), b, 0o600); err != nil {
			return nil, fmt.Errorf("bench: write mosquitto %s: %w", name, err)
		}
	}
	stayRoot := false
	if os.Geteuid() == 0 {
		// As root, mosquitto switches to user mosquitto before it reads the
		// certificate files: hand them over, or stay root if there is no
		// such user.
		stayRoot = chownTo(dir, "mosquitto", append(slices.Collect(maps.Keys(files)), "")...) != nil
	}
	conf := mosquittoConfig(dir, port, stayRoot)
	confPath := filepath.Join(dir, "mosquitto.conf")
	if err := os.WriteFile(confPath, []byte(conf), 0o600); err != nil {
		return nil, fmt.Errorf("bench: write mosquitto.conf: %w", err)
	}

	m.cmd = exec.Command(bin, "-c", confPath)
	m.cmd.Dir = dir
	m.cmd.Stdout, m.cmd.Stderr = m.log, m.log
	m.cmd.SysProcAttr = peerSysProcAttr()
	if err := m.cmd.Start(); err != nil {
		return nil, fmt.Errorf("bench: start %s: %w", bin, err)
	}
	go func() {
		m.waitErr = m.cmd.Wait()
		close(m.exited)
	}()
	if err := m.waitReady(ctx, 10*time.Second); err != nil {
		return nil, err
	}
	return m, nil
}

// chownTo gives dir and the named files in it to the user.
func chownTo(dir, username string, names ...string) error {
	u, err := user.Lookup(username)
	if err != nil {
		return err
	}
	uid, err := strconv.Atoi(u.Uid)
	if err != nil {
		return err
	}
	gid, err := strconv.Atoi(u.Gid)
	if err != nil {
		return err
	}
	for _, name := range names {
		if err := os.Chown(filepath.Join(dir, name), uid, gid); err != nil {
			return err
		}
	}
	return nil
}

// mosquittoConfig is the broker configuration: one TLS listener on the
// loopback port that requires a client certificate from the bench CA and
// takes its CN as the user name; no persistence, no ACL. stayRoot keeps a
// broker started as root from switching to user mosquitto.
func mosquittoConfig(dir string, port int, stayRoot bool) string {
	var b strings.Builder
	if stayRoot {
		b.WriteString("user root\n")
	}
	fmt.Fprintf(&b, `persistence false
log_dest stderr
log_type error
log_type warning
log_timestamp true
connection_messages false
set_tcp_nodelay true
listener %d 127.0.0.1
cafile %s
certfile %s
keyfile %s
require_certificate true
use_identity_as_username true
allow_anonymous false
`, port, filepath.Join(dir, "ca.pem"), filepath.Join(dir, "server.pem"), filepath.Join(dir, "server-key.pem"))
	return b.String()
}

// clientCertificate issues a gateway's client certificate through a CSR, as
// the registry does.
func clientCertificate(ca *pki.CA, serial string, now time.Time) (*tls.Certificate, error) {
	key, err := pki.NewKey()
	if err != nil {
		return nil, fmt.Errorf("bench: key for %s: %w", serial, err)
	}
	csrPEM, err := pki.MakeCSR(key, serial)
	if err != nil {
		return nil, fmt.Errorf("bench: CSR for %s: %w", serial, err)
	}
	csr, err := pki.ParseCSR(csrPEM)
	if err != nil {
		return nil, fmt.Errorf("bench: CSR for %s: %w", serial, err)
	}
	cert, _, err := ca.SignClient(csr, serial, 24*time.Hour, now)
	if err != nil {
		return nil, fmt.Errorf("bench: certificate for %s: %w", serial, err)
	}
	return &tls.Certificate{Certificate: [][]byte{cert.Raw}, PrivateKey: key, Leaf: cert}, nil
}

// freePort returns a loopback TCP port that was free a moment ago.
func freePort() (int, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, fmt.Errorf("bench: find a free port: %w", err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port, nil
}

// mosquittoVersion returns the version line of `mosquitto -h` (which exits
// non-zero), or "mosquitto (version unknown)".
func mosquittoVersion(ctx context.Context, bin string) string {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	out, _ := exec.CommandContext(ctx, bin, "-h").CombinedOutput()
	for line := range strings.Lines(string(out)) {
		if strings.Contains(line, "version") {
			return strings.TrimSpace(line)
		}
	}
	return "mosquitto (version unknown)"
}

// waitReady polls the port until the broker completes a TLS handshake
// with the first gateway's certificate (a bare TCP probe would make it log
// an error), the process exits, or timeout passes.
func (m *Mosquitto) waitReady(ctx context.Context, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	var lastErr error
	for {
		var c net.Conn
		var err error
		d := &net.Dialer{Timeout: time.Second}
		if len(m.gateways) > 0 {
			c, err = tls.DialWithDialer(d, "tcp", m.addr, m.gateways[0].TLS)
		} else {
			c, err = d.DialContext(ctx, "tcp", m.addr)
		}
		if err == nil {
			c.Close()
			return nil
		}
		lastErr = err
		select {
		case <-m.exited:
			return fmt.Errorf("bench: mosquitto exited at start (%v): %s", m.waitErr, strings.TrimSpace(m.log.String()))
		case <-ctx.Done():
			return fmt.Errorf("bench: waiting for mosquitto: %w", ctx.Err())
		case <-time.After(20 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("bench: mosquitto not ready on %s after %s (%v): %s", m.addr, timeout, lastErr, strings.TrimSpace(m.log.String()))
		}
	}
}

// Addr returns the broker's host:port.
func (m *Mosquitto) Addr() string { return m.addr }

// Target returns the broker with its gateways as a load target.
func (m *Mosquitto) Target() Target {
	return Target{Name: "mosquitto", Addr: m.addr, Gateways: m.gateways, PID: m.cmd.Process.Pid}
}

// Log returns what the broker wrote (errors and warnings).
func (m *Mosquitto) Log() string { return m.log.String() }

// Exited is closed when the broker process has ended.
func (m *Mosquitto) Exited() <-chan struct{} { return m.exited }

// Close stops the broker (SIGTERM, then SIGKILL after 5 s) and removes its
// files. It is safe to call more than once.
func (m *Mosquitto) Close() error {
	var err error
	m.once.Do(func() {
		if m.cmd != nil && m.cmd.Process != nil {
			_ = m.cmd.Process.Signal(syscall.SIGTERM)
			select {
			case <-m.exited:
			case <-time.After(5 * time.Second):
				_ = m.cmd.Process.Kill()
				<-m.exited
				err = errors.New("bench: mosquitto did not stop on SIGTERM; killed")
			}
		}
		if rmErr := os.RemoveAll(m.dir); rmErr != nil && err == nil {
			err = fmt.Errorf("bench: remove mosquitto files: %w", rmErr)
		}
	})
	return err
}

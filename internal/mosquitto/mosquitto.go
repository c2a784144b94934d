// Package mosquitto runs a mosquitto broker as a child process: the peer
// broker that `iotransit bench --peer mosquitto` measures beside iotransit,
// and the customer broker of the MQTT integrations' tests (wrapped for
// tests by internal/forward/mqttout/mosquittotest). It finds the binary,
// writes the configuration and the TLS files into a private temporary
// directory, starts the broker as a user that can read them, waits until
// it accepts connections, captures what it logs, and stops it.
//
// Every broker has one TLS listener on a free loopback port with a server
// certificate from the caller's CA, and no persistence. Clients
// authenticate with a certificate from that CA (RequireCertificate, the
// common name being the user name), with a user name and password (Users),
// or not at all.
package mosquitto

import (
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/iotransit/iotransit/internal/pki"
)

// ErrNotFound is returned when the mosquitto binary is not installed.
var ErrNotFound = errors.New("mosquitto: binary not found (install the Debian package mosquitto)")

// LookPath returns the path of a mosquitto program (mosquitto,
// mosquitto_passwd): from $PATH, or from the directories packages install
// them to, /usr/sbin in particular, which is not on every user's $PATH.
func LookPath(name string) (string, error) {
	if p, err := exec.LookPath(name); err == nil {
		return p, nil
	}
	for _, d := range []string{"/usr/sbin", "/usr/local/sbin", "/usr/bin", "/usr/local/bin"} {
		p := filepath.Join(d, name)
		if st, err := os.Stat(p); err == nil && !st.IsDir() && st.Mode()&0o111 != 0 {
			return p, nil
		}
	}
	if name == "mosquitto" {
		return "", ErrNotFound
	}
	return "", fmt.Errorf("mosquitto: %s not found (install the Debian package mosquitto)", name)
}

// Config describes a broker.
type Config struct {
	// CA issues the broker's server certificate (for 127.0.0.1 and
	// localhost, valid for Validity) and, with RequireCertificate, is the
	// only issuer of client certificates the broker accepts.
	CA       *pki.CA
	Validity time.Duration
	// RequireCertificate asks every client for a certificate from CA and
	// takes its common name as the user name.
	RequireCertificate bool
	// Users are user names and their passwords (a password_file, made
	// with mosquitto_passwd). Without users and without
	// RequireCertificate, the broker allows anonymous clients.
	Users map[string]string
	// Options are more lines of the configuration, before the listener
	// (for example "log_type notice" or "set_tcp_nodelay true").
	Options []string
	// Probe is the client configuration of the readiness check: the broker
	// is ready when a TLS handshake with it completes. Without it, a TCP
	// connection is enough (a TLS probe without a client certificate would
	// make the broker log an error).
	Probe *tls.Config
	// DirPrefix starts the name of the temporary directory of the files.
	DirPrefix string
}

// Broker is a mosquitto process with its files. It may be stopped and
// started again on the same port.
type Broker struct {
	bin, dir, conf string
	port           int
	probe          *tls.Config
	// as is the user the broker runs as (nil: this process's).
	as *syscall.Credential

	mu      sync.Mutex
	cmd     *exec.Cmd
	exited  chan struct{}
	waitErr error
	log     *logBuffer
	once    sync.Once
}

// Start writes the broker's files into a new temporary directory, starts
// it and waits until it accepts connections. Close stops it and removes the
// files.
func Start(ctx context.Context, cfg Config) (_ *Broker, err error) {
	bin, err := LookPath("mosquitto")
	if err != nil {
		return nil, err
	}
	// Not below a private test directory: a broker started as root reads
	// its files as user mosquitto.
	dir, err := os.MkdirTemp("", cfg.DirPrefix)
	if err != nil {
		return nil, fmt.Errorf("mosquitto: directory: %w", err)
	}
	b := &Broker{bin: bin, dir: dir, probe: cfg.Probe}
	defer func() {
		if err != nil {
			_ = b.Close()
		}
	}()
	files, err := serverFiles(cfg)
	if err != nil {
		return nil, err
	}
	owned := []string{""} // the directory itself
	for name, data := range files {
		if err := os.WriteFile(filepath.Join(dir, name), data, 0o600); err != nil {
			return nil, fmt.Errorf("mosquitto: write %s: %w", name, err)
		}
		owned = append(owned, name)
	}
	if len(cfg.Users) > 0 {
		if err := passwordFile(filepath.Join(dir, "passwd"), cfg.Users); err != nil {
			return nil, err
		}
		owned = append(owned, "passwd")
	}
	stayRoot := false
	if os.Geteuid() == 0 {
		// As root, run the broker as user mosquitto from the start, owning
		// its files: mosquitto would switch to that user itself, but a
		// switch of user clears the parent-death signal, and a broker that
		// outlived a killed test would be left running. Without such a
		// user, it stays root.
		b.as, err = chownTo(dir, "mosquitto", owned...)
		stayRoot = err != nil
	}
	if b.port, err = freePort(); err != nil {
		return nil, err
	}
	b.conf = filepath.Join(dir, "mosquitto.conf")
	if err := os.WriteFile(b.conf, []byte(config(cfg, dir, b.port, stayRoot)), 0o644); err != nil {
		return nil, fmt.Errorf("mosquitto: write mosquitto.conf: %w", err)
	}
	if err := b.Restart(ctx); err != nil {
		return nil, err
	}
	return b, nil
}

// serverFiles returns the CA certificate and the broker's certificate and
// key, as PEM.
func serverFiles(cfg Config) (map[string][]byte, error) {
	if cfg.CA == nil {
		return nil, errors.New("mosquitto: a CA is required")
	}
	kp, err := cfg.CA.IssueServerKeyPair([]string{"127.0.0.1", "localhost"}, cfg.Validity, time.Now())
	if err != nil {
		return nil, fmt.Errorf("mosquitto: server certificate: %w", err)
	}
	certPEM, keyPEM, err := pki.KeyPairPEM(kp)
	if err != nil {
		return nil, fmt.Errorf("mosquitto: server certificate: %w", err)
	}
	return map[string][]byte{"ca.pem": cfg.CA.CertPEM, "server.pem": certPEM, "server-key.pem": keyPEM}, nil
}

// passwordFile makes the password file of users with mosquitto_passwd.
func passwordFile(path string, users map[string]string) error {
	bin, err := LookPath("mosquitto_passwd")
	if err != nil {
		return err
	}
	first := true
	for u, p := range users {
		args := []string{"-b", path, u, p}
		if first {
			args = []string{"-b", "-c", path, u, p}
			first = false
		}
		if out, err := exec.Command(bin, args...).CombinedOutput(); err != nil {
			return fmt.Errorf("mosquitto: mosquitto_passwd: %v: %s", err, out)
		}
	}
	return nil
}

// config is the broker's configuration. stayRoot keeps a broker started as
// root from switching to user mosquitto.
func config(cfg Config, dir string, port int, stayRoot bool) string {
	var b strings.Builder
	if stayRoot {
		b.WriteString("user root\n")
	}
	b.WriteString("persistence false\nlog_dest stderr\nlog_type error\nlog_type warning\n")
	for _, o := range cfg.Options {
		b.WriteString(o + "\n")
	}
	fmt.Fprintf(&b, "listener %d 127.0.0.1\ncafile %s\ncertfile %s\nkeyfile %s\n",
		port, filepath.Join(dir, "ca.pem"), filepath.Join(dir, "server.pem"), filepath.Join(dir, "server-key.pem"))
	if cfg.RequireCertificate {
		b.WriteString("require_certificate true\nuse_identity_as_username true\n")
	}
	fmt.Fprintf(&b, "allow_anonymous %t\n", len(cfg.Users) == 0 && !cfg.RequireCertificate)
	if len(cfg.Users) > 0 {
		fmt.Fprintf(&b, "password_file %s\n", filepath.Join(dir, "passwd"))
	}
	return b.String()
}

// chownTo gives dir and the named files in it to the user, and returns
// the user's credential.
func chownTo(dir, username string, names ...string) (*syscall.Credential, error) {
	u, err := user.Lookup(username)
	if err != nil {
		return nil, err
	}
	uid, err := strconv.ParseUint(u.Uid, 10, 32)
	if err != nil {
		return nil, err
	}
	gid, err := strconv.ParseUint(u.Gid, 10, 32)
	if err != nil {
		return nil, err
	}
	for _, name := range names {
		if err := os.Chown(filepath.Join(dir, name), int(uid), int(gid)); err != nil {
			return nil, err
		}
	}
	return &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid), NoSetGroups: true}, nil
}

// freePort returns a loopback TCP port that was free a moment ago.
func freePort() (int, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, fmt.Errorf("mosquitto: find a free port: %w", err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port, nil
}

// Restart starts the broker (again, on the same port, with a new log) and
// waits until it accepts connections.
func (b *Broker) Restart(ctx context.Context) error {
	b.mu.Lock()
	if b.cmd != nil {
		b.mu.Unlock()
		return errors.New("mosquitto: already running")
	}
	cmd := exec.Command(b.bin, "-c", b.conf)
	cmd.Dir = b.dir
	log := &logBuffer{}
	cmd.Stdout, cmd.Stderr = log, log
	cmd.SysProcAttr = sysProcAttr(b.as)
	if err := cmd.Start(); err != nil {
		b.mu.Unlock()
		return fmt.Errorf("mosquitto: start %s: %w", b.bin, err)
	}
	exited := make(chan struct{})
	b.cmd, b.exited, b.log, b.waitErr = cmd, exited, log, nil
	b.mu.Unlock()
	go func() {
		err := cmd.Wait()
		b.mu.Lock()
		b.waitErr = err
		b.mu.Unlock()
		close(exited)
	}()
	return b.waitReady(ctx, exited, 10*time.Second)
}

// waitReady polls the port until the broker accepts a connection (and
// completes a handshake with the probe, if any), the process exits, or
// timeout passes.
func (b *Broker) waitReady(ctx context.Context, exited <-chan struct{}, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for {
		var c net.Conn
		var err error
		d := &net.Dialer{Timeout: time.Second}
		if b.probe != nil {
			c, err = tls.DialWithDialer(d, "tcp", b.Addr(), b.probe)
		} else {
			c, err = d.DialContext(ctx, "tcp", b.Addr())
		}
		if err == nil {
			_ = c.Close()
			return nil
		}
		select {
		case <-exited:
			b.mu.Lock()
			waitErr := b.waitErr
			b.mu.Unlock()
			return fmt.Errorf("mosquitto: exited at start (%v): %s", waitErr, strings.TrimSpace(b.Log()))
		case <-ctx.Done():
			return fmt.Errorf("mosquitto: waiting for the broker: %w", ctx.Err())
		case <-time.After(20 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("mosquitto: not ready on %s after %s (%v): %s", b.Addr(), timeout, err, strings.TrimSpace(b.Log()))
		}
	}
}

// Addr returns the broker's 127.0.0.1:port.
func (b *Broker) Addr() string { return net.JoinHostPort("127.0.0.1", strconv.Itoa(b.port)) }

// Dir returns the directory of the broker's files (removed by Close).
func (b *Broker) Dir() string { return b.dir }

// Port returns the broker's loopback port.
func (b *Broker) Port() int { return b.port }

// PID returns the process id of the running broker (0 when stopped).
func (b *Broker) PID() int {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.cmd == nil {
		return 0
	}
	return b.cmd.Process.Pid
}

// Version returns the version line of `mosquitto -h` (which exits
// non-zero), or "mosquitto (version unknown)".
func (b *Broker) Version(ctx context.Context) string {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	out, _ := exec.CommandContext(ctx, b.bin, "-h").CombinedOutput()
	for line := range strings.Lines(string(out)) {
		if strings.Contains(line, "version") {
			return strings.TrimSpace(line)
		}
	}
	return "mosquitto (version unknown)"
}

// Log returns what the broker wrote since it was last started.
func (b *Broker) Log() string {
	b.mu.Lock()
	log := b.log
	b.mu.Unlock()
	if log == nil {
		return ""
	}
	return log.String()
}

// Exited is closed when the broker process started last has ended (nil
// before the first start).
func (b *Broker) Exited() <-chan struct{} {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.exited
}

// Stop stops the broker (SIGTERM, then SIGKILL after 5 s) and waits for it
// to exit; Restart starts it again. It reports a broker that had to be
// killed.
func (b *Broker) Stop() error {
	b.mu.Lock()
	cmd, exited := b.cmd, b.exited
	b.cmd = nil
	b.mu.Unlock()
	if cmd == nil {
		return nil
	}
	_ = cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-exited:
		return nil
	case <-time.After(5 * time.Second):
		_ = cmd.Process.Kill()
		<-exited
		return errors.New("mosquitto: did not stop on SIGTERM; killed")
	}
}

// Close stops the broker and removes its files. It is safe to call more
// than once.
func (b *Broker) Close() error {
	var err error
	b.once.Do(func() {
		err = b.Stop()
		if rmErr := os.RemoveAll(b.dir); rmErr != nil && err == nil {
			err = fmt.Errorf("mosquitto: remove files: %w", rmErr)
		}
	})
	return err
}

// logBuffer is the broker's output, bounded in case it logs a lot.
type logBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *logBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.b.Len() > 1<<20 {
		return len(p), nil
	}
	return l.b.Write(p)
}

func (l *logBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// Package mosquittotest runs a real mosquitto broker for the tests of the
// MQTT delivery targets (mqttout, awsiot): a TLS listener on a free
// loopback port with a CA minted at run time, either user name and
// password (password_file, allow_anonymous false) or mutual TLS
// (require_certificate, use_identity_as_username), and a paho subscriber
// that records what the broker delivers. It is imported only by tests.
//
// A test using it is skipped when mosquitto is not installed, and fails
// instead when IOTRANSIT_REQUIRE_PEERS=1 (CI).
package mosquittotest

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
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
	"testing"
	"time"

	mqtt "github.com/eclipse/paho.mqtt.golang"

	"github.com/iotransit/iotransit/internal/pki"
)

// Options choose how the broker authenticates clients.
type Options struct {
	// Users are user names and passwords (password_file); with none, and
	// without RequireCertificate, the broker allows anonymous clients.
	Users map[string]string
	// RequireCertificate asks every client for a certificate from the CA
	// and takes its common name as the user name.
	RequireCertificate bool
}

// Broker is a running mosquitto.
type Broker struct {
	// Port is the TLS listener's loopback port.
	Port int
	// CAPEM is the CA that issued the broker's certificate (and clients').
	CAPEM string

	t    testing.TB
	bin  string
	dir  string
	conf string
	ca   *pki.CA

	mu     sync.Mutex
	cmd    *exec.Cmd
	exited chan struct{}
	log    *bytes.Buffer
}

// require fails or skips the test for a missing peer.
func require(t testing.TB, what string, err error) {
	t.Helper()
	if os.Getenv("IOTRANSIT_REQUIRE_PEERS") == "1" {
		t.Fatalf("peer %s is required (IOTRANSIT_REQUIRE_PEERS=1) but not usable: %v", what, err)
	}
	t.Skipf("peer %s not installed: %v", what, err)
}

// lookPath finds a mosquitto binary on $PATH or in the sbin directories
// packages install to, which are not on every user's $PATH.
func lookPath(name string) (string, error) {
	if p, err := exec.LookPath(name); err == nil {
		return p, nil
	}
	for _, d := range []string{"/usr/sbin", "/usr/local/sbin", "/usr/bin", "/usr/local/bin"} {
		p := filepath.Join(d, name)
		if st, err := os.Stat(p); err == nil && !st.IsDir() && st.Mode()&0o111 != 0 {
			return p, nil
		}
	}
	return "", fmt.Errorf("%s not found (install the Debian package mosquitto)", name)
}

// Start starts a broker and stops it at cleanup.
func Start(t testing.TB, o Options) *Broker {
	t.Helper()
	bin, err := lookPath("mosquitto")
	if err != nil {
		require(t, "mosquitto", err)
	}
	// Not t.TempDir(): its parent is private to root, and a broker started
	// as root reads its files as user mosquitto.
	dir, err := os.MkdirTemp("", "iotransit-mosquittotest-")
	if err != nil {
		t.Fatal(err)
	}
	b := &Broker{t: t, bin: bin, dir: dir}
	t.Cleanup(func() {
		b.Stop()
		_ = os.RemoveAll(dir)
	})

	now := time.Now()
	b.ca, err = pki.NewCA("mosquittotest CA", time.Hour, now)
	if err != nil {
		t.Fatal(err)
	}
	b.CAPEM = string(b.ca.CertPEM)
	serverKey, err := pki.NewKey()
	if err != nil {
		t.Fatal(err)
	}
	_, serverPEM, err := b.ca.IssueServer(serverKey.Public(), []string{"127.0.0.1", "localhost"}, time.Hour, now)
	if err != nil {
		t.Fatal(err)
	}
	serverKeyPEM, err := pki.EncodeKeyPEM(serverKey)
	if err != nil {
		t.Fatal(err)
	}
	files := map[string][]byte{"ca.pem": b.ca.CertPEM, "server.pem": serverPEM, "server-key.pem": serverKeyPEM}
	for name, data := range files {
		if err := os.WriteFile(filepath.Join(dir, name), data, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	names := []string{"", "ca.pem", "server.pem", "server-key.pem"}
	if len(o.Users) > 0 {
		passwd, err := lookPath("mosquitto_passwd")
		if err != nil {
			require(t, "mosquitto_passwd", err)
		}
		pwFile := filepath.Join(dir, "passwd")
		first := true
		for u, p := range o.Users {
			args := []string{"-b", pwFile, u, p}
			if first {
				args = []string{"-b", "-c", pwFile, u, p}
				first = false
			}
			if out, err := exec.Command(passwd, args...).CombinedOutput(); err != nil {
				t.Fatalf("mosquitto_passwd: %v: %s", err, out)
			}
		}
		names = append(names, "passwd")
	}
	stayRoot := false
	if os.Geteuid() == 0 {
		// As root, mosquitto becomes user mosquitto before it reads its
		// files: hand them over, or stay root if there is no such user.
		stayRoot = chownTo(dir, "mosquitto", names...) != nil
	}

	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	b.Port = ln.Addr().(*net.TCPAddr).Port
	_ = ln.Close()

	var conf strings.Builder
	if stayRoot {
		conf.WriteString("user root\n")
	}
	fmt.Fprintf(&conf, `persistence false
log_dest stderr
log_type error
log_type warning
log_type notice
listener %d 127.0.0.1
cafile %s
certfile %s
keyfile %s
allow_anonymous %t
`, b.Port, filepath.Join(dir, "ca.pem"), filepath.Join(dir, "server.pem"), filepath.Join(dir, "server-key.pem"),
		len(o.Users) == 0 && !o.RequireCertificate)
	if o.RequireCertificate {
		conf.WriteString("require_certificate true\nuse_identity_as_username true\n")
	}
	if len(o.Users) > 0 {
		fmt.Fprintf(&conf, "password_file %s\n", filepath.Join(dir, "passwd"))
	}
	b.conf = filepath.Join(dir, "mosquitto.conf")
	if err := os.WriteFile(b.conf, []byte(conf.String()), 0o644); err != nil {
		t.Fatal(err)
	}
	b.Restart()
	return b
}

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

// Addr returns the broker's 127.0.0.1:port.
func (b *Broker) Addr() string { return net.JoinHostPort("127.0.0.1", strconv.Itoa(b.Port)) }

// URL returns the broker's mqtts:// URL.
func (b *Broker) URL() string { return "mqtts://" + b.Addr() }

// Log returns what the broker wrote.
func (b *Broker) Log() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.log == nil {
		return ""
	}
	return b.log.String()
}

type lockedWriter struct {
	mu *sync.Mutex
	b  *bytes.Buffer
}

func (w lockedWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.b.Write(p)
}

// Restart starts the broker (again, on the same port) and waits until it
// completes TLS handshakes.
func (b *Broker) Restart() {
	b.t.Helper()
	b.mu.Lock()
	if b.cmd != nil {
		b.mu.Unlock()
		b.t.Fatal("mosquittotest: broker already running")
	}
	b.log = &bytes.Buffer{}
	cmd := exec.Command(b.bin, "-c", b.conf)
	cmd.Dir = b.dir
	cmd.Stdout = lockedWriter{&b.mu, b.log}
	cmd.Stderr = cmd.Stdout
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		b.mu.Unlock()
		b.t.Fatalf("start mosquitto: %v", err)
	}
	exited := make(chan struct{})
	go func() {
		_ = cmd.Wait()
		close(exited)
	}()
	b.cmd, b.exited = cmd, exited
	b.mu.Unlock()

	// Ready when a TCP connection is accepted. (A TLS probe would need a
	// client certificate, and mosquitto logs every failed handshake.)
	deadline := time.Now().Add(10 * time.Second)
	for {
		c, err := net.DialTimeout("tcp", b.Addr(), time.Second)
		if err == nil {
			_ = c.Close()
			return
		}
		select {
		case <-exited:
			b.t.Fatalf("mosquitto exited at start: %s", b.Log())
		case <-time.After(20 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			b.t.Fatalf("mosquitto not ready on %s: %v: %s", b.Addr(), err, b.Log())
		}
	}
}

// Stop stops the broker (SIGTERM, then SIGKILL) and waits for it to exit;
// Restart starts it again.
func (b *Broker) Stop() {
	b.mu.Lock()
	cmd, exited := b.cmd, b.exited
	b.cmd = nil
	b.mu.Unlock()
	if cmd == nil {
		return
	}
	_ = cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-exited:
	case <-time.After(5 * time.Second):
		_ = cmd.Process.Kill()
		<-exited
	}
}

// ClientCert issues a client certificate with common name cn from the
// broker's CA, as PEM.
func (b *Broker) ClientCert(cn string) (certPEM, keyPEM string) {
	b.t.Helper()
	return IssueClient(b.t, b.ca, cn)
}

// IssueClient issues a client certificate with common name cn from ca, as
// PEM, through a CSR.
func IssueClient(t testing.TB, ca *pki.CA, cn string) (certPEM, keyPEM string) {
	t.Helper()
	key, err := pki.NewKey()
	if err != nil {
		t.Fatal(err)
	}
	csrPEM, err := pki.MakeCSR(key, cn)
	if err != nil {
		t.Fatal(err)
	}
	csr, err := pki.ParseCSR(csrPEM)
	if err != nil {
		t.Fatal(err)
	}
	_, certBytes, err := ca.SignClient(csr, cn, time.Hour, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	kp, err := pki.EncodeKeyPEM(key)
	if err != nil {
		t.Fatal(err)
	}
	return string(certBytes), string(kp)
}

// Message is what a subscriber received.
type Message struct {
	Topic   string
	Payload []byte
}

// Subscriber is a paho client subscribed to a topic filter at QoS 1.
type Subscriber struct {
	c  mqtt.Client
	ch chan Message
}

// Subscribe connects a subscriber (user name and password, or a client
// certificate) and subscribes to filter; it is ready when Subscribe
// returns (SUBACK received).
func (b *Broker) Subscribe(filter, username, password, certPEM, keyPEM string) *Subscriber {
	b.t.Helper()
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM([]byte(b.CAPEM))
	tc := &tls.Config{MinVersion: tls.VersionTLS12, RootCAs: pool, ServerName: "127.0.0.1"}
	if certPEM != "" {
		cert, err := tls.X509KeyPair([]byte(certPEM), []byte(keyPEM))
		if err != nil {
			b.t.Fatal(err)
		}
		tc.Certificates = []tls.Certificate{cert}
	}
	s := &Subscriber{ch: make(chan Message, 1000)}
	opts := mqtt.NewClientOptions().AddBroker("tls://" + b.Addr()).SetTLSConfig(tc).
		SetClientID("sub-" + rand.Text()[:12]).
		SetUsername(username).SetPassword(password).
		SetProtocolVersion(4).SetCleanSession(true).SetAutoReconnect(false).
		SetConnectTimeout(5 * time.Second).SetOrderMatters(true)
	s.c = mqtt.NewClient(opts)
	if tok := s.c.Connect(); !tok.WaitTimeout(5*time.Second) || tok.Error() != nil {
		b.t.Fatalf("subscriber connect: %v: %s", tok.Error(), b.Log())
	}
	b.t.Cleanup(func() { s.c.Disconnect(100) })
	tok := s.c.Subscribe(filter, 1, func(_ mqtt.Client, m mqtt.Message) {
		s.ch <- Message{Topic: m.Topic(), Payload: append([]byte(nil), m.Payload()...)}
	})
	if !tok.WaitTimeout(5*time.Second) || tok.Error() != nil {
		b.t.Fatalf("subscribe %s: %v", filter, tok.Error())
	}
	return s
}

// Next returns the next message, or an error after timeout.
func (s *Subscriber) Next(ctx context.Context, timeout time.Duration) (Message, error) {
	select {
	case m := <-s.ch:
		return m, nil
	case <-time.After(timeout):
		return Message{}, errors.New("mosquittotest: no message within " + timeout.String())
	case <-ctx.Done():
		return Message{}, ctx.Err()
	}
}

// None reports an error if a message arrives within d.
func (s *Subscriber) None(d time.Duration) error {
	select {
	case m := <-s.ch:
		return fmt.Errorf("mosquittotest: unexpected message on %s", m.Topic)
	case <-time.After(d):
		return nil
	}
}

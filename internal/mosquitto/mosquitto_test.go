package mosquitto_test

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/iotransit/iotransit/internal/mosquitto"
	"github.com/iotransit/iotransit/internal/pki"
	tu "github.com/iotransit/iotransit/internal/testutil"
)

// TestMosquittoRequiresCertificateAndRestarts: a broker with
// RequireCertificate completes a handshake only with a client certificate
// from its CA, comes back on the same port after Stop, and Close removes
// its files.
func TestMosquittoRequiresCertificateAndRestarts(t *testing.T) {
	ca, err := pki.NewCA("mosquitto test CA", time.Hour, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AddCert(ca.Cert)
	client := &tls.Config{MinVersion: tls.VersionTLS12, RootCAs: pool, ServerName: "127.0.0.1",
		Certificates: []tls.Certificate{*tu.SignWith(t, ca, "TSGW06DEV00000001", time.Now(), time.Hour)}}
	b := tu.Mosquitto(t, mosquitto.Config{CA: ca, Validity: time.Hour, RequireCertificate: true, Probe: client, DirPrefix: "iotransit-mosquitto-test-"})
	if v := b.Version(context.Background()); !strings.Contains(v, "mosquitto") {
		t.Errorf("version %q", v)
	}
	handshake := func(c *tls.Config) error {
		conn, err := tls.Dial("tcp", b.Addr(), c)
		if err != nil {
			return err
		}
		defer conn.Close()
		// TLS 1.3 reports a refused client certificate on the first read.
		_ = conn.SetReadDeadline(time.Now().Add(500 * time.Millisecond))
		_, err = conn.Read(make([]byte, 1))
		if ne, ok := err.(interface{ Timeout() bool }); ok && ne.Timeout() {
			return nil
		}
		return err
	}
	if err := handshake(client); err != nil {
		t.Fatalf("client with a certificate: %v\n%s", err, b.Log())
	}
	anonymous := client.Clone()
	anonymous.Certificates = nil
	if err := handshake(anonymous); err == nil {
		t.Fatal("a client without a certificate completed the handshake")
	}
	port, pid := b.Port(), b.PID()
	if err := b.Stop(); err != nil {
		t.Fatal(err)
	}
	select {
	case <-b.Exited():
	default:
		t.Fatal("broker still running after Stop")
	}
	if err := b.Restart(context.Background()); err != nil {
		t.Fatal(err)
	}
	if b.Port() != port || b.PID() == pid || handshake(client) != nil {
		t.Fatalf("restart: port %d (was %d), pid %d (was %d)", b.Port(), port, b.PID(), pid)
	}
	if err := b.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(b.Dir()); !os.IsNotExist(err) {
		t.Fatalf("files left in %s", b.Dir())
	}
}

// TestMosquittoStartsWithUsers: a broker with Users starts with its
// password file (made by mosquitto_passwd, read by the broker at start); a
// broker without a CA does not start.
func TestMosquittoStartsWithUsers(t *testing.T) {
	ca, err := pki.NewCA("mosquitto test CA", time.Hour, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	b := tu.Mosquitto(t, mosquitto.Config{CA: ca, Validity: time.Hour, Users: map[string]string{"iot": "pw"}})
	if _, err := os.Stat(filepath.Join(b.Dir(), "passwd")); err != nil {
		t.Fatalf("password file: %v", err)
	}
	if _, err := mosquitto.Start(context.Background(), mosquitto.Config{}); err == nil {
		t.Fatal("a broker without a CA started")
	}
}

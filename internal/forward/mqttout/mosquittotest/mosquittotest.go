// Package mosquittotest runs a real mosquitto broker for the tests of the
// MQTT delivery targets (mqttout, awsiot): the broker of internal/mosquitto
// (a TLS listener on a free loopback port with a CA minted at run time,
// either user name and password (password_file, allow_anonymous false) or
// mutual TLS (require_certificate, use_identity_as_username)), stopped at
// the test's cleanup, and a paho subscriber that records what the broker
// delivers. It is imported only by tests.
//
// A test using it is skipped when mosquitto is not installed, and fails
// instead when IOTRANSIT_REQUIRE_PEERS=1 (CI).
package mosquittotest

import (
	"context"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"testing"
	"time"

	mqtt "github.com/eclipse/paho.mqtt.golang"

	"github.com/iotransit/iotransit/internal/mosquitto"
	"github.com/iotransit/iotransit/internal/pki"
	"github.com/iotransit/iotransit/internal/testutil"
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

	t  testing.TB
	b  *mosquitto.Broker
	ca *pki.CA
}

// Start starts a broker and stops it at cleanup.
func Start(t testing.TB, o Options) *Broker {
	t.Helper()
	ca, err := pki.NewCA("mosquittotest CA", time.Hour, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	b := testutil.Mosquitto(t, mosquitto.Config{
		CA: ca, Validity: time.Hour, Users: o.Users, RequireCertificate: o.RequireCertificate,
		Options: []string{"log_type notice"}, DirPrefix: "iotransit-mosquittotest-",
	})
	return &Broker{Port: b.Port(), CAPEM: string(ca.CertPEM), t: t, b: b, ca: ca}
}

// Addr returns the broker's 127.0.0.1:port.
func (b *Broker) Addr() string { return b.b.Addr() }

// URL returns the broker's mqtts:// URL.
func (b *Broker) URL() string { return "mqtts://" + b.Addr() }

// Log returns what the broker wrote.
func (b *Broker) Log() string { return b.b.Log() }

// Restart starts the broker (again, on the same port) and waits until it
// accepts connections.
func (b *Broker) Restart() {
	b.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second*testutil.Slowdown())
	defer cancel()
	if err := b.b.Restart(ctx); err != nil {
		b.t.Fatal(err)
	}
}

// Stop stops the broker (SIGTERM, then SIGKILL) and waits for it to exit;
// Restart starts it again.
func (b *Broker) Stop() { _ = b.b.Stop() }

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
	return testutil.ClientCertPEM(t, ca, cn)
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

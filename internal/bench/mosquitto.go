package bench

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"time"

	"github.com/iotransit/iotransit/internal/mosquitto"
	"github.com/iotransit/iotransit/internal/pki"
)

// ErrNoMosquitto is returned when the mosquitto binary is not installed.
var ErrNoMosquitto = errors.New("bench: mosquitto binary not found (install the Debian package mosquitto)")

// MosquittoBinary returns the path of the mosquitto broker: from $PATH, or
// /usr/sbin and /usr/local/sbin, where packages install it but which are not
// on every user's $PATH.
func MosquittoBinary() (string, error) {
	p, err := mosquitto.LookPath("mosquitto")
	if err != nil {
		return "", ErrNoMosquitto
	}
	return p, nil
}

// Mosquitto is a running mosquitto broker: the reference peer. It listens on
// a free loopback port with TLS and requires a client certificate; its CA,
// server certificate and key are made at start in a temporary directory,
// and each gateway gets a client certificate from the same CA. Persistence
// is off and there is no ACL: it measures the MQTT and TLS path alone.
type Mosquitto struct {
	// Version is the broker's version line ("mosquitto version 2.0.11").
	Version string

	broker   *mosquitto.Broker
	dir      string
	gateways []Gateway
}

// mosquittoOptions are the bench broker's settings beyond the listener:
// quiet logs with timestamps, and Nagle off as iotransit has it.
var mosquittoOptions = []string{"log_timestamp true", "connection_messages false", "set_tcp_nodelay true"}

// StartMosquitto starts a broker for the gateways with these serials and
// waits until it accepts connections. Close stops it and removes its files.
func StartMosquitto(ctx context.Context, serials []string) (*Mosquitto, error) {
	if _, err := MosquittoBinary(); err != nil {
		return nil, err
	}
	now := time.Now()
	ca, err := pki.NewCA("iotransit bench CA", 24*time.Hour, now)
	if err != nil {
		return nil, fmt.Errorf("bench: mosquitto CA: %w", err)
	}
	pool := x509.NewCertPool()
	pool.AddCert(ca.Cert)
	m := &Mosquitto{}
	for _, serial := range serials {
		cert, err := ca.IssueClientKeyPair(serial, 24*time.Hour, now)
		if err != nil {
			return nil, fmt.Errorf("bench: certificate for %s: %w", serial, err)
		}
		m.gateways = append(m.gateways, Gateway{Serial: serial, TLS: &tls.Config{
			MinVersion: tls.VersionTLS12, Certificates: []tls.Certificate{*cert},
			RootCAs: pool, ServerName: "127.0.0.1",
		}})
	}
	cfg := mosquitto.Config{
		CA: ca, Validity: 24 * time.Hour, RequireCertificate: true, Options: mosquittoOptions,
		DirPrefix: "iotransit-bench-mosquitto-",
	}
	if len(m.gateways) > 0 {
		// A bare TCP probe would make the broker log an error.
		cfg.Probe = m.gateways[0].TLS
	}
	if m.broker, err = mosquitto.Start(ctx, cfg); err != nil {
		return nil, fmt.Errorf("bench: %w", err)
	}
	m.dir = m.broker.Dir()
	m.Version = m.broker.Version(ctx)
	return m, nil
}

// Addr returns the broker's host:port.
func (m *Mosquitto) Addr() string { return m.broker.Addr() }

// Target returns the broker with its gateways as a load target.
func (m *Mosquitto) Target() Target {
	return Target{Name: "mosquitto", Addr: m.broker.Addr(), Gateways: m.gateways, PID: m.broker.PID()}
}

// Log returns what the broker wrote (errors and warnings).
func (m *Mosquitto) Log() string { return m.broker.Log() }

// Exited is closed when the broker process has ended.
func (m *Mosquitto) Exited() <-chan struct{} { return m.broker.Exited() }

// Close stops the broker (SIGTERM, then SIGKILL after 5 s) and removes its
// files. It is safe to call more than once.
func (m *Mosquitto) Close() error {
	if err := m.broker.Close(); err != nil {
		return fmt.Errorf("bench: %w", err)
	}
	return nil
}

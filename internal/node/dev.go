package node

import (
	"context"
	"crypto"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/iotransit/iotransit/internal/audit"
	"github.com/iotransit/iotransit/internal/ingest"
	"github.com/iotransit/iotransit/internal/pki"
	"github.com/iotransit/iotransit/internal/securefile"
)

// The development bootstrap (--dev): a tenant, a gateway and the gateway's
// key and certificate files, so that one mosquitto_pub command publishes.

// DevTenant and DevGateway are what --dev creates.
const (
	DevTenant  = "dev"
	DevGateway = "TSGW06DEV00000001"
)

// DevGatewayDir returns where --dev writes the dev gateway's files.
func (n *Node) DevGatewayDir() string {
	return filepath.Join(n.cfg.DataDir, DevTenant, "gateways", DevGateway)
}

// devBootstrap creates (or reuses) tenant dev, gateway DevGateway, its key,
// CSR and certificate, and writes ca.pem, cert.pem and key.pem (0600).
func (n *Node) devBootstrap(ctx context.Context) error {
	if _, gone := n.reg.DeletedTenant(DevTenant); gone { // its id stays reserved
		n.log.Warn("tenant dev was deleted: dev mode starts without it and its gateway")
		return nil
	}
	record := func(tenant, action, target string) error {
		_, err := n.audit.Append(ctx, tenant, audit.Event{Actor: "system", Action: action, Target: target, Outcome: "ok", Detail: map[string]string{"by": "dev bootstrap"}})
		return err
	}
	if _, ok := n.reg.Tenant(DevTenant); !ok {
		if _, err := n.CreateTenant(ctx, DevTenant); err != nil {
			return err
		}
		if err := errors.Join(record(systemKeys, "registry.tenant.create", "tenant:"+DevTenant), record(DevTenant, "registry.tenant.create", "tenant:"+DevTenant)); err != nil {
			return err
		}
	}
	if _, ok := n.reg.Gateway(DevTenant, DevGateway); !ok {
		if _, err := n.reg.RegisterGateway(ctx, DevTenant, DevGateway); err != nil {
			return err
		}
		if err := record(DevTenant, "registry.gateway.register", "gateway:"+DevGateway); err != nil {
			return err
		}
	}
	dir := n.DevGatewayDir()
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return err
	}
	if err := securefile.WriteAtomic(filepath.Join(dir, "ca.pem"), n.serverCA, 0o644); err != nil {
		return err
	}
	if n.devCertUsable(dir) {
		return nil
	}
	var certPEM []byte
	kp, err := pki.NewKeyPair(DevGateway, func(_ crypto.Signer, csr []byte) ([]byte, error) {
		var err error
		certPEM, _, err = n.reg.IssueCertificate(ctx, DevTenant, DevGateway, csr, n.cfg.CertValidity)
		return certPEM, err
	})
	if err != nil {
		return err
	}
	if err := record(DevTenant, "pki.cert.issue", "gateway:"+DevGateway); err != nil {
		return err
	}
	_, keyPEM, err := pki.KeyPairPEM(kp)
	if err != nil {
		return err
	}
	if err := securefile.WriteAtomic(filepath.Join(dir, "key.pem"), keyPEM, 0o600); err != nil {
		return err
	}
	return securefile.WriteAtomic(filepath.Join(dir, "cert.pem"), certPEM, 0o644)
}

// devCertUsable reports whether the dev gateway's files hold a certificate
// the node would accept now.
func (n *Node) devCertUsable(dir string) bool {
	c, err := tls.LoadX509KeyPair(filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem"))
	if err != nil {
		return false
	}
	leaf, err := x509.ParseCertificate(c.Certificate[0])
	if err != nil {
		return false
	}
	_, err = n.reg.Authenticate([]*x509.Certificate{leaf}, time.Now().Add(24*time.Hour))
	return err == nil
}

// LocalHostPort splits addr with an unspecified host replaced by localhost.
func LocalHostPort(addr string) (string, string) {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return "localhost", addr
	}
	if host == "" || host == "0.0.0.0" || host == "::" {
		host = "localhost"
	}
	return host, port
}

// DevPublishCommand returns a mosquitto_pub command line that publishes one
// valid Thingsee message as the dev gateway.
func (n *Node) DevPublishCommand() string {
	host, port := LocalHostPort(n.MQTTAddr())
	return PublishCommand(host, port, n.DevGatewayDir(), DevGateway)
}

// PublishCommand returns a mosquitto_pub command line that publishes one
// valid Thingsee message to the MQTT listener host:port as gateway serial,
// with the files ca.pem, cert.pem and key.pem of dir (as --dev and
// iotransit enroll write them).
func PublishCommand(host, port, dir, serial string) string {
	msg := fmt.Sprintf(`{"tsmId":12100,"tsmEv":10,"tsmTs":%d,"tsmTuid":"TSEN01DEV00000042","temp":21.5,"humd":40.2,"airp":101325}`, time.Now().Unix())
	return fmt.Sprintf("mosquitto_pub -V mqttv5 -h %s -p %s --cafile %s --cert %s --key %s -i %s -t %s -q 1 -m '%s'",
		ShellWord(host), ShellWord(port), ShellWord(filepath.Join(dir, "ca.pem")), ShellWord(filepath.Join(dir, "cert.pem")),
		ShellWord(filepath.Join(dir, "key.pem")), serial, ingest.UpTopic(serial), msg)
}

// ShellWord quotes s for a POSIX shell when it holds anything but letters,
// digits and _ . / : @ % + = , - (a path with a space, say).
func ShellWord(s string) string {
	if s != "" && strings.Trim(s, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_./:@%+=,-") == "" {
		return s
	}
	return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'"
}

package main

import (
	"context"
	"crypto/tls"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"time"

	"github.com/iotransit/iotransit/client"
	"github.com/iotransit/iotransit/internal/cli"
	"github.com/iotransit/iotransit/internal/node"
	"github.com/iotransit/iotransit/internal/pki"
	"github.com/iotransit/iotransit/internal/securefile"
)

const enrollUsage = `Usage: iotransit enroll --server URL --token TOKEN --serial SERIAL --out DIR [flags]
  Make a P-256 key and a CSR here, spend the enrollment token on the CSR
  (POST /v1/enroll), and write DIR/key.pem (0600), DIR/cert.pem and
  DIR/ca.pem: a gateway's MQTT client identity. The private key never
  leaves this machine. It then prints the MQTT address (the --server host,
  on the port the server's answer names) and a mosquitto_pub command that
  publishes a test message with these files.

Flags:
`

// enroll is "iotransit enroll".
func enroll(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fset := newFlagSet("iotransit enroll", enrollUsage, stderr)
	conn := addConnFlags(fset, false, false)
	token := newSecretFlag(fset, "token", "the enrollment token from 'iotransit token create' (prefer --token-file)", "file holding the enrollment token")
	serial := fset.String("serial", "", "the gateway serial the token was made for (required)")
	out := fset.String("out", "", "directory to write key.pem, cert.pem and ca.pem to (required)")
	if helpAsked(fset, args, stdout) {
		return nil
	}
	pos, onCmdLine, err := parseArgs(fset, args)
	if err != nil {
		return err
	}
	if len(pos) > 0 {
		return usageError("enroll takes no arguments, got %q", pos[0])
	}
	if err := conn.checkOutput(); err != nil {
		return err
	}
	tok, err := token.Need(onCmdLine)
	if err != nil {
		return err
	}
	if *serial == "" {
		return usageError("enroll needs --serial (or IOTRANSIT_SERIAL)")
	}
	if *out == "" {
		return usageError("enroll needs --out DIR (or IOTRANSIT_OUT)")
	}
	paths := map[string]string{}
	for _, f := range []string{"key.pem", "cert.pem", "ca.pem"} {
		paths[f] = filepath.Join(*out, f)
	}
	if err := noneExists("enroll writes a new identity", paths["key.pem"], paths["cert.pem"], paths["ca.pem"]); err != nil {
		return err
	}
	api, err := conn.client("")
	if err != nil {
		return err
	}
	defer api.Close()

	key, err := pki.NewKey()
	if err != nil {
		return err
	}
	csr, err := pki.MakeCSR(key, *serial)
	if err != nil {
		return err
	}
	keyPEM, err := pki.EncodeKeyPEM(key)
	if err != nil {
		return err
	}
	// Do rather than Enroll: the checks below quote the request id.
	a, err := api.Do(ctx, http.MethodPost, "/v1/enroll", nil, client.EnrollRequest{Token: tok, CSR: string(csr)})
	if err != nil {
		return explain(err)
	}
	var res client.Enrollment
	if err := a.Decode(&res); err != nil {
		return err
	}
	// The certificate must be for this key: check it as a TLS client would.
	if _, err := tls.X509KeyPair([]byte(res.Certificate), keyPEM); err != nil {
		return fmt.Errorf("the certificate from the server does not match the key made here (request %s): %v", a.RequestID, err)
	}
	if _, err := pki.ParseCertsPEM([]byte(res.CA)); err != nil {
		return fmt.Errorf("the server CA in the answer is not a PEM certificate (request %s)", a.RequestID)
	}
	if err := os.MkdirAll(*out, 0o700); err != nil {
		return err
	}
	for _, f := range []struct {
		name string
		data []byte
		mode os.FileMode
	}{{"key.pem", keyPEM, 0o600}, {"cert.pem", []byte(res.Certificate), 0o644}, {"ca.pem", []byte(res.CA), 0o644}} {
		if err := securefile.WriteExcl(paths[f.name], f.data, f.mode); err != nil {
			return err
		}
	}
	if conn.output != cli.FormatTable {
		return cli.PrintData(stdout, conn.output, res)
	}
	fmt.Fprintf(stdout, "enrolled gateway %s of tenant %s: certificate %s valid until %s\n", res.Serial, res.Tenant, res.CertificateSerial, res.NotAfter.UTC().Format(time.RFC3339))
	host, port := mqttAddress(conn.server, res.MQTTPort)
	fmt.Fprintf(stdout, "  key:         %s (0600, made here, never sent)\n  certificate: %s\n  server CA:   %s\n  MQTT:        %s (mTLS with these files)\n  publish to:  %s\n",
		paths["key.pem"], paths["cert.pem"], paths["ca.pem"], net.JoinHostPort(host, port), res.UpTopic)
	fmt.Fprintf(stdout, "Publish a test message as the gateway (mosquitto-clients; it takes over the session of the gateway if that is connected):\n  %s\n",
		node.PublishCommand(host, port, *out, res.Serial))
	return nil
}

// defaultMQTTPort is the port of the MQTT listener when the enrollment
// answer does not say (a server older than its mqttPort).
const defaultMQTTPort = 8883

// mqttAddress is where a gateway enrolled through server connects: the
// API's host, on the port the enrollment answer names.
func mqttAddress(server string, port int) (string, string) {
	host := "localhost"
	if u, err := parseServerURL(server); err == nil && u.Hostname() != "" {
		host = u.Hostname()
	}
	if port == 0 {
		port = defaultMQTTPort
	}
	return host, strconv.Itoa(port)
}

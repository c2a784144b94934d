package main

import (
	"context"
	"crypto/tls"
	"errors"
	"flag"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/iotransit/iotransit/internal/pki"
	"github.com/iotransit/iotransit/internal/securefile"
)

type enrollJSON struct {
	Certificate string    `json:"certificate"`
	CA          string    `json:"ca"`
	Tenant      string    `json:"tenant"`
	Serial      string    `json:"serial"`
	CertSerial  string    `json:"certificateSerial"`
	NotAfter    time.Time `json:"notAfter"`
	UpTopic     string    `json:"upTopic"`
}

const enrollUsage = `Usage: iotransit enroll --server URL --token TOKEN --serial SERIAL --out DIR [flags]
  Make a P-256 key and a CSR here, spend the enrollment token on the CSR
  (POST /v1/enroll), and write DIR/key.pem (0600), DIR/cert.pem and
  DIR/ca.pem: a gateway's MQTT client identity. The private key never
  leaves this machine.

Flags:
`

// adminEnroll is "iotransit enroll".
func adminEnroll(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fset := flag.NewFlagSet("iotransit enroll", flag.ContinueOnError)
	fset.SetOutput(stderr)
	conn := addConnFlags(fset, false, false)
	token := fset.String("token", "", "the enrollment token from 'iotransit token create' (prefer --token-file)")
	tokenFile := fset.String("token-file", "", "file holding the enrollment token")
	serial := fset.String("serial", "", "the gateway serial the token was made for (required)")
	out := fset.String("out", "", "directory to write key.pem, cert.pem and ca.pem to (required)")
	fset.Usage = func() {
		fmt.Fprint(fset.Output(), enrollUsage)
		fset.PrintDefaults()
	}
	if len(args) > 0 && (args[0] == "help" || args[0] == "-h" || args[0] == "--help") {
		fset.SetOutput(stdout)
		fset.Usage()
		return nil
	}
	pos, onCmdLine, err := parseAdminFlags(fset, args)
	if err != nil {
		return err
	}
	if len(pos) > 0 {
		return usageError("enroll takes no arguments, got %q", pos[0])
	}
	if conn.output != "table" && conn.output != "json" {
		return usageError("-o %q: want table or json", conn.output)
	}
	tok, err := secretFrom(*token, *tokenFile, onCmdLine["token"], onCmdLine["token-file"], "token")
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
		p := filepath.Join(*out, f)
		if _, err := os.Lstat(p); err == nil {
			return fmt.Errorf("%s exists: enroll writes a new identity and will not overwrite one (choose another --out)", p)
		} else if !errors.Is(err, fs.ErrNotExist) {
			return err
		}
		paths[f] = p
	}
	api, err := newAPIClient(conn.server, conn.ca, "", conn.timeout)
	if err != nil {
		return err
	}

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
	a, err := api.call(ctx, "POST", "/v1/enroll", nil, map[string]string{"token": tok, "csr": string(csr)}, false)
	if err != nil {
		return err
	}
	var res enrollJSON
	if err := a.decode(&res); err != nil {
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
	if conn.output == "json" {
		return printJSON(stdout, a.Body)
	}
	fmt.Fprintf(stdout, "enrolled gateway %s of tenant %s: certificate %s valid until %s\n", res.Serial, res.Tenant, res.CertSerial, res.NotAfter.UTC().Format(time.RFC3339))
	fmt.Fprintf(stdout, "  key:         %s (0600, made here, never sent)\n  certificate: %s\n  server CA:   %s\n  publish to:  %s\n", paths["key.pem"], paths["cert.pem"], paths["ca.pem"], res.UpTopic)
	return nil
}

// secretFrom picks a secret given directly or in a file, the command line
// beating the environment.
func secretFrom(value, file string, valueOnCmdLine, fileOnCmdLine bool, name string) (string, error) {
	useFile := false
	switch {
	case valueOnCmdLine && fileOnCmdLine:
		return "", usageError("give --%s or --%s-file, not both", name, name)
	case valueOnCmdLine:
	case fileOnCmdLine:
		useFile = true
	case value != "" && file != "":
		return "", usageError("IOTRANSIT_%s and IOTRANSIT_%s_FILE are both set; set only one", strings.ToUpper(name), strings.ToUpper(name))
	default:
		useFile = file != ""
	}
	if !useFile {
		v := strings.TrimSpace(value)
		if v == "" {
			return "", usageError("give --%s-file or --%s (or IOTRANSIT_%s_FILE, IOTRANSIT_%s)", name, name, strings.ToUpper(name), strings.ToUpper(name))
		}
		return v, nil
	}
	b, err := os.ReadFile(file)
	if err != nil {
		return "", fmt.Errorf("--%s-file: %w", name, err)
	}
	v := strings.TrimSpace(string(b))
	if v == "" {
		return "", fmt.Errorf("--%s-file %s is empty", name, file)
	}
	return v, nil
}

package main

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/iotransit/iotransit/client"
	"github.com/iotransit/iotransit/internal/api"
	"github.com/iotransit/iotransit/internal/cli"
	"github.com/iotransit/iotransit/internal/node"
)

// The commands that call the HTTPS management API (tenant, gateway, token,
// apikey, audit, integration, enroll) do it through the public client
// package, so they work against a remote deployment. They share the
// connection flags below (and the login profile, login.go), the
// explanation of a failure to reach the server, and one output: -o table,
// or the API's answer as -o json or -o yaml.

var (
	// defaultServer is the API of a node on this machine.
	defaultServer = "https://" + net.JoinHostPort("localhost", listenerPort(node.DefaultConfig().APIAddr))
	// defaultTimeout bounds each request.
	defaultTimeout = client.DefaultTimeout
)

// The server's page sizes, for the help of --limit.
var (
	pageDefault = fmt.Sprintf("server default %d", api.DefaultLimit)
	pageLimits  = fmt.Sprintf("%s, at most %d", pageDefault, api.MaxLimit)
)

// listenerPort returns the port of a listener address such as ":8443".
func listenerPort(addr string) string {
	_, port, _ := net.SplitHostPort(addr)
	return port
}

// connFlagsHead heads the connection flags in a group's usage.
const connFlagsHead = `Connection flags of every command. Each can also be set by its environment
variable (--key-file is IOTRANSIT_KEY_FILE), and what neither sets comes from
the login profile (iotransit login):
`

// connFlags are the connection flags of every API command.
type connFlags struct {
	fs      *flag.FlagSet
	server  string
	ca      string
	caPEM   []byte      // the profile's CA, when --ca is not set
	key     *secretFlag // nil for enroll, whose credential is its token
	tenant  string
	profile string
	output  string
	timeout time.Duration
	// opCert and opCertKey are an operator's client certificate, the
	// second factor of an operator key (serve --admin-client-ca).
	opCert, opCertKey string
	// fromProfile is the credential of the profile, when neither --key nor
	// --key-file is set.
	fromProfile string
}

// addConnFlags defines the connection flags; withTenant adds --tenant,
// withKey the credential flags.
func addConnFlags(fs *flag.FlagSet, withTenant, withKey bool) *connFlags {
	c := &connFlags{fs: fs}
	fs.StringVar(&c.server, "server", defaultServer, "`URL` of the HTTPS API")
	fs.StringVar(&c.ca, "ca", "", "PEM `FILE` of the CA that verifies the server (default: the system's roots)")
	if withKey {
		c.key = newSecretFlag(fs, "key", "the bearer `credential`: operator key, API key or access token (prefer --key-file)",
			"`FILE` holding the bearer credential, e.g. data/"+node.OperatorKeyFile)
	}
	if withTenant {
		fs.StringVar(&c.tenant, "tenant", "", "the tenant `ID` of a tenant's command")
	}
	fs.StringVar(&c.profile, "profile", "", "the login profile `NAME` to use (default: the current one; see iotransit login list)")
	fs.StringVar(&c.output, "o", cli.FormatTable, cli.OutputUsage)
	fs.DurationVar(&c.timeout, "timeout", defaultTimeout, "deadline of each request")
	if withKey {
		fs.StringVar(&c.opCert, "operator-cert", "", "PEM `FILE` of the operator's client certificate, when the admin listener asks for one (serve --admin-client-ca)")
		fs.StringVar(&c.opCertKey, "operator-cert-key", "", "PEM `FILE` of that certificate's private key")
	}
	return c
}

// env is what an API command runs with.
type env struct {
	api    *client.Client
	caFile string
	tenant string
	// json is set for -o json and -o yaml: the answer is printed as data
	// (in output's format), not as a table.
	json   bool
	output string
	stdout io.Writer
	stderr io.Writer
	// onCmdLine names the flags given on the command line (secretFlag.get).
	onCmdLine map[string]bool
}

// itemCmd is a command on one item of the tenant, named by the argument
// arg: it shows the item that call answers.
func itemCmd[T any](name, arg, summary string, call func(c *client.Client, ctx context.Context, tenant, id string) (*T, error), table func(...T) func(io.Writer) error) command {
	return command{name: name, args: []string{arg}, summary: summary, tenant: true,
		run: func(ctx context.Context, e *env, args []string) error {
			v, err := call(e.api, ctx, e.tenant, args[0])
			if err != nil {
				return err
			}
			return e.show(v, table(*v))
		}}
}

// checkOutput checks -o.
func (c *connFlags) checkOutput() error { return cli.CheckFormat(c.output) }

// env checks the connection flags and builds the command's environment. A
// command of a tenant (needTenant) that no --tenant, IOTRANSIT_TENANT or
// profile gives one runs on the tenant of its credential, which the server
// tells (impliedTenant).
func (c *connFlags) env(ctx context.Context, onCmdLine map[string]bool, name string, needTenant bool, stdout, stderr io.Writer) (*env, error) {
	if err := c.checkOutput(); err != nil {
		return nil, err
	}
	if err := c.useProfile(); err != nil {
		return nil, err
	}
	key, err := c.key.Get(onCmdLine)
	if err == nil && key == "" {
		key = c.fromProfile
		if key == "" {
			_, err = c.key.Need(onCmdLine)
			err = fmt.Errorf("%w; or log in once: iotransit login --server URL --key-file FILE", err)
		}
	}
	if err != nil {
		return nil, err
	}
	cl, err := c.client(key)
	if err != nil {
		return nil, err
	}
	tenant := strings.TrimSpace(c.tenant)
	if needTenant && tenant == "" {
		if tenant, err = impliedTenant(ctx, cl, name); err != nil {
			cl.Close()
			return nil, err
		}
	}
	return &env{api: cl, caFile: c.ca, tenant: tenant, json: c.output != cli.FormatTable, output: c.output,
		stdout: stdout, stderr: stderr, onCmdLine: onCmdLine}, nil
}

// impliedTenant asks the server whose credential api sends (GET
// /v1/whoami), for the command name that has no --tenant: an API key or an
// access token implies its own tenant; the operator key, of every tenant,
// does not. A server too old to tell (404) gets the same usage error.
func impliedTenant(ctx context.Context, api *client.Client, name string) (string, error) {
	who, err := api.WhoAmI(ctx)
	var p *client.Problem
	switch {
	case errors.As(err, &p) && p.Status == http.StatusNotFound:
		return "", usageError("%s needs --tenant (or IOTRANSIT_TENANT, or a login profile with a tenant)", name)
	case err != nil:
		return "", explain(err)
	case who.Tenant == "":
		return "", usageError("%s needs --tenant (or IOTRANSIT_TENANT, or a login profile with a tenant): the operator key is of every tenant, so it implies none", name)
	}
	return who.Tenant, nil
}

// useProfile fills the connection flags that neither the command line nor
// the environment set from the login profile --profile names (or
// IOTRANSIT_PROFILE, else the current one): a flag beats its variable,
// which beats the profile, which beats the default. Without a profile
// nothing changes. A profile's CA and credential are only for its own
// server: with another --server, the current profile is left out, and
// one named is an error.
func (c *connFlags) useProfile() error {
	name, p, err := selectedProfile(c.profile)
	if err != nil || p == nil {
		return err
	}
	set := map[string]bool{}
	c.fs.Visit(func(f *flag.Flag) { set[f.Name] = true })
	if set["server"] && !sameServer(c.server, p.Server) {
		if c.profile != "" {
			return usageError("--server %s is not the server of profile %q (%s): a profile's credential goes to its own server only", c.server, name, p.Server)
		}
		return nil
	}
	c.server = p.Server
	if !set["ca"] {
		c.caPEM = []byte(p.CAPEM)
	}
	// The profile's tenant goes with its credential: a key given on the
	// command line or in the environment implies its own (env asks whoami).
	ownKey := set["key"] || set["key-file"]
	if !set["tenant"] && p.Tenant != "" && !ownKey {
		c.tenant = p.Tenant
	}
	if c.key != nil && !ownKey {
		c.fromProfile = p.Key
	}
	return nil
}

// client checks --server, --ca and --timeout and returns a client of the
// API that sends credential ("" for none). A command that does not call
// env (enroll) gets the profile's server and CA here.
func (c *connFlags) client(credential string) (*client.Client, error) {
	if c.key == nil {
		if err := c.useProfile(); err != nil {
			return nil, err
		}
	}
	if _, err := parseServerURL(c.server); err != nil {
		return nil, err
	}
	cfg := client.Config{Server: c.server, Credential: credential, Timeout: c.timeout, UserAgent: "iotransit-cli"}
	pem, what := c.caPEM, "the profile's CA"
	if c.ca != "" {
		var err error
		if pem, err = os.ReadFile(c.ca); err != nil {
			return nil, fmt.Errorf("--ca: %w", err)
		}
		what = "--ca " + c.ca
	}
	if len(pem) > 0 {
		cfg.RootCAs = x509.NewCertPool()
		if !cfg.RootCAs.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("%s: no PEM certificate in the file", what)
		}
	}
	if c.timeout <= 0 {
		return nil, errors.New("--timeout must be positive")
	}
	if (c.opCert == "") != (c.opCertKey == "") {
		return nil, usageError("--operator-cert and --operator-cert-key go together")
	}
	if c.opCert != "" {
		cert, err := tls.LoadX509KeyPair(c.opCert, c.opCertKey)
		if err != nil {
			return nil, fmt.Errorf("--operator-cert %s, --operator-cert-key %s: %w", c.opCert, c.opCertKey, err)
		}
		cfg.Certificate = &cert
	}
	return client.New(cfg)
}

// parseServerURL checks --server (client.ParseServerURL).
func parseServerURL(s string) (*url.URL, error) {
	if strings.TrimSpace(s) == "" {
		return nil, errors.New("--server is required (or IOTRANSIT_SERVER), e.g. " + defaultServer)
	}
	u, err := client.ParseServerURL(s)
	if err != nil {
		return nil, errors.New("--" + err.Error()) // "server ...": name the flag
	}
	return u, nil
}

// transportHints say which flag fixes a failure to reach the server.
var transportHints = map[client.TransportKind]string{
	client.TransportUnknownCA: "(give the CA file with --ca or IOTRANSIT_CA)",
	client.TransportTimeout:   "(--timeout)",
	client.TransportConnect:   "(is it running, and is --server right?)",
}

// hinted is an error with a hint of the command line after its message.
type hinted struct {
	err  error
	hint string
}

func (h *hinted) Error() string { return h.err.Error() + " " + h.hint }
func (h *hinted) Unwrap() error { return h.err }

// explain adds to a failure to reach the server (a *client.TransportError)
// the flag that fixes it; other errors, API refusals (*client.Problem)
// among them, are returned as they are.
func explain(err error) error {
	var te *client.TransportError
	if !errors.As(err, &te) || transportHints[te.Kind] == "" {
		return err
	}
	return &hinted{err: err, hint: transportHints[te.Kind]}
}

// show prints an answer as -o asks: as data, its JSON or YAML
// (cli.PrintData), or the table that table writes.
func (e *env) show(answer any, table func(w io.Writer) error) error {
	if e.json {
		return cli.PrintData(e.stdout, e.output, answer)
	}
	return table(e.stdout)
}

// done says in a table's stead that a command without an answer (a 204)
// did what it says; -o json prints nothing.
func (e *env) done(format string, args ...any) {
	if !e.json {
		fmt.Fprintf(e.stdout, format+"\n", args...)
	}
}

// nextPage tells on stderr, after a table, how to get the page after it
// (next is its cursor, "" at the end).
func (e *env) nextPage(what, flagName, next string) {
	if !e.json && next != "" {
		fmt.Fprintf(e.stderr, "more %s: add %s %s\n", what, flagName, next)
	}
}

// rows returns a table writer of items: the header, then a row per item.
func rows[T any](header []string, items []T, row func(T) []string) func(io.Writer) error {
	return func(w io.Writer) error {
		t := newTable(w, header...)
		for _, it := range items {
			t.row(row(it)...)
		}
		return t.flush()
	}
}

// table writes rows of cells through a tabwriter: an empty cell shows as
// "-", and control characters as spaces.
type table struct{ tw *tabwriter.Writer }

// newTable returns a table whose first row is header.
func newTable(w io.Writer, header ...string) *table {
	t := &table{tw: tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)}
	t.row(header...)
	return t
}

// row writes a row of cells.
func (t *table) row(cells ...string) {
	for i, c := range cells {
		if c == "" {
			cells[i] = "-"
		}
		cells[i] = strings.Map(func(r rune) rune {
			if r < 0x20 || r == 0x7f {
				return ' '
			}
			return r
		}, cells[i])
	}
	fmt.Fprintln(t.tw, strings.Join(cells, "\t"))
}

// flush writes the table out, its columns aligned.
func (t *table) flush() error { return t.tw.Flush() }

// fmtTime formats a time for a table: UTC to the second, "-" when unset.
func fmtTime(t *time.Time) string {
	if t == nil || t.IsZero() {
		return "-"
	}
	return t.UTC().Format(time.RFC3339)
}

// yesNo writes a boolean for a table.
func yesNo(b bool) string {
	if b {
		return "yes"
	}
	return "no"
}

// orDash writes s, or "-" when it is empty.
func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

// printSecret shows a secret the API returns only once.
func printSecret(w io.Writer, what, secret string) {
	fmt.Fprintf(w, "\n%s (shown only once; store it now, it cannot be shown again):\n\n  %s\n\n", what, secret)
}

package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/url"
	"strings"
	"text/tabwriter"
	"time"
)

// The admin subcommands (tenant, gateway, token, apikey, audit, integration)
// call the HTTPS management API, so they work against a remote deployment.
// Each one is a group of commands sharing the connection flags below.

// errUsage marks a command line that is wrong; the message says how.
var errUsage = errors.New("usage")

// usageError returns an error that wraps errUsage with a sentence.
func usageError(format string, args ...any) error {
	return fmt.Errorf("%w: "+format, append([]any{errUsage}, args...)...)
}

// connFlags are the connection flags of every admin command.
type connFlags struct {
	server  string
	ca      string
	key     string
	keyFile string
	tenant  string
	output  string
	timeout time.Duration
}

// addConnFlags defines the connection flags; withTenant adds --tenant,
// withKey the credential flags.
func addConnFlags(fs *flag.FlagSet, withTenant, withKey bool) *connFlags {
	c := &connFlags{}
	fs.StringVar(&c.server, "server", "https://localhost:8443", "URL of the HTTPS API")
	fs.StringVar(&c.ca, "ca", "", "PEM file of the CA that verifies the server (default: the system's roots)")
	if withKey {
		fs.StringVar(&c.key, "key", "", "the bearer credential: operator key, API key or access token (prefer --key-file)")
		fs.StringVar(&c.keyFile, "key-file", "", "file holding the bearer credential, e.g. data/operator.key")
	}
	if withTenant {
		fs.StringVar(&c.tenant, "tenant", "", "tenant id (required)")
	}
	fs.StringVar(&c.output, "o", "table", "output: table or json (the API's answer)")
	fs.DurationVar(&c.timeout, "timeout", 30*time.Second, "deadline of each request")
	return c
}

// adminEnv is what a command runs with.
type adminEnv struct {
	api    *apiClient
	caFile string
	tenant string
	json   bool
	stdout io.Writer
	stderr io.Writer
}

// tenantPath returns /v1/tenants/{tenant} followed by the escaped segments.
func (e *adminEnv) tenantPath(segs ...string) string {
	return "/v1/tenants/" + seg(e.tenant) + joinSegs(segs)
}

func joinSegs(segs []string) string {
	var b strings.Builder
	for _, s := range segs {
		b.WriteString("/" + s)
	}
	return b.String()
}

// seg escapes one path segment.
func seg(s string) string { return url.PathEscape(s) }

// adminCmd is one admin command, e.g. "gateway list".
type adminCmd struct {
	name     string
	args     []string // names of the positional arguments
	synopsis string   // the flags worth naming in the usage line
	summary  string
	// tenant says whether the command works in a tenant (--tenant).
	tenant bool
	// flags defines the command's own flags and returns its action.
	flags func(fs *flag.FlagSet) adminAction
}

// adminAction is what a command does once its flags are parsed.
type adminAction = func(ctx context.Context, e *adminEnv, args []string) error

// adminGroup is a command group, e.g. "gateway".
type adminGroup struct {
	name    string
	summary string
	cmds    []adminCmd
}

func (g *adminGroup) usage(w io.Writer) {
	fmt.Fprintf(w, "iotransit %s: %s\n\nUsage:\n", g.name, g.summary)
	for _, c := range g.cmds {
		fmt.Fprintf(w, "  %s\n      %s\n", c.line(g.name), c.summary)
	}
	fmt.Fprintf(w, `
Connection flags of every command (each also from its environment variable):
  --server URL     IOTRANSIT_SERVER    the HTTPS API (default https://localhost:8443)
  --ca FILE        IOTRANSIT_CA        CA that verifies the server (default: system roots)
  --key-file FILE  IOTRANSIT_KEY_FILE  file holding the bearer credential
  --key SECRET     IOTRANSIT_KEY       the bearer credential itself
  --tenant ID      IOTRANSIT_TENANT    the tenant of tenant-scoped commands
  -o table|json                        output format
  --timeout 30s                        deadline of each request

See: iotransit %s <command> -h
`, g.name)
}

func (c *adminCmd) line(group string) string {
	s := "iotransit " + group + " " + c.name
	for _, a := range c.args {
		s += " <" + a + ">"
	}
	if c.synopsis != "" {
		s += " " + c.synopsis
	}
	return s
}

// runAdmin runs a command of group g.
func runAdmin(ctx context.Context, g *adminGroup, args []string, stdout, stderr io.Writer) error {
	if len(args) == 0 {
		g.usage(stderr)
		return flag.ErrHelp
	}
	switch args[0] {
	case "help", "-h", "-help", "--help":
		g.usage(stdout)
		return nil
	}
	var cmd *adminCmd
	for i := range g.cmds {
		if g.cmds[i].name == args[0] {
			cmd = &g.cmds[i]
		}
	}
	if cmd == nil {
		g.usage(stderr)
		return fmt.Errorf("unknown %s command %q", g.name, args[0])
	}
	fs := flag.NewFlagSet("iotransit "+g.name+" "+cmd.name, flag.ContinueOnError)
	fs.SetOutput(stderr)
	conn := addConnFlags(fs, cmd.tenant, true)
	action := cmd.flags(fs)
	fs.Usage = func() {
		fmt.Fprintf(fs.Output(), "Usage: %s\n  %s\n\nFlags:\n", cmd.line(g.name), cmd.summary)
		fs.PrintDefaults()
	}
	pos, onCmdLine, err := parseAdminFlags(fs, args[1:])
	if err != nil {
		return err
	}
	if len(pos) != len(cmd.args) {
		return usageError("%s takes %d argument(s), got %d; usage: %s", fs.Name(), len(cmd.args), len(pos), cmd.line(g.name))
	}
	for i, a := range pos {
		if strings.TrimSpace(a) == "" {
			return usageError("%s: <%s> is empty", fs.Name(), cmd.args[i])
		}
	}
	e, err := conn.env(onCmdLine, fs.Name(), cmd.tenant, stdout, stderr)
	if err != nil {
		return err
	}
	return action(ctx, e, pos)
}

// parseAdminFlags parses args, letting flags and positional arguments mix
// ("gateway register SERIAL --label k=v"), then fills every flag not given
// from its IOTRANSIT_* environment variable (parseFlags). It returns the
// positional arguments and the flags given on the command line.
func parseAdminFlags(fs *flag.FlagSet, args []string) ([]string, map[string]bool, error) {
	var pos []string
	for {
		if err := fs.Parse(args); err != nil {
			return nil, nil, err
		}
		rest := fs.Args()
		if len(rest) == 0 {
			break
		}
		if n := len(args) - len(rest); n > 0 && args[n-1] == "--" {
			pos = append(pos, rest...)
			break
		}
		pos = append(pos, rest[0])
		args = rest[1:]
	}
	onCmdLine := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { onCmdLine[f.Name] = true })
	if err := parseFlags(fs, nil); err != nil {
		return nil, nil, err
	}
	return pos, onCmdLine, nil
}

// env checks the connection flags and builds the command's environment.
func (c *connFlags) env(onCmdLine map[string]bool, name string, needTenant bool, stdout, stderr io.Writer) (*adminEnv, error) {
	if c.output != "table" && c.output != "json" {
		return nil, usageError("-o %q: want table or json", c.output)
	}
	if needTenant && strings.TrimSpace(c.tenant) == "" {
		return nil, usageError("%s needs --tenant (or IOTRANSIT_TENANT)", name)
	}
	key, err := c.credential(onCmdLine)
	if err != nil {
		return nil, err
	}
	api, err := newAPIClient(c.server, c.ca, key, c.timeout)
	if err != nil {
		return nil, err
	}
	return &adminEnv{api: api, caFile: c.ca, tenant: strings.TrimSpace(c.tenant), json: c.output == "json", stdout: stdout, stderr: stderr}, nil
}

// credential picks the bearer credential: a flag given on the command line
// beats the environment; --key and --key-file at the same level is an
// error rather than a guess.
func (c *connFlags) credential(onCmdLine map[string]bool) (string, error) {
	return secretFrom(c.key, c.keyFile, onCmdLine["key"], onCmdLine["key-file"], "key")
}

// printJSON writes an API answer as indented JSON.
func printJSON(w io.Writer, body []byte) error {
	var buf bytes.Buffer
	if err := json.Indent(&buf, bytes.TrimSpace(body), "", "  "); err != nil {
		return fmt.Errorf("the server's answer is not JSON: %v", err)
	}
	buf.WriteByte('\n')
	_, err := w.Write(buf.Bytes())
	return err
}

// table writes rows under a header through a tabwriter.
type table struct{ tw *tabwriter.Writer }

func newTable(w io.Writer, header ...string) *table {
	t := &table{tw: tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)}
	t.row(header...)
	return t
}

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

func (t *table) flush() error { return t.tw.Flush() }

// fmtTime formats a time for a table: UTC to the second, "-" when unset.
func fmtTime(t *time.Time) string {
	if t == nil || t.IsZero() {
		return "-"
	}
	return t.UTC().Format(time.RFC3339)
}

// multiFlag is a flag that may be repeated; each value may also be a
// comma-separated list (which is how it comes from the environment).
type multiFlag []string

func (m *multiFlag) String() string { return strings.Join(*m, ",") }

func (m *multiFlag) Set(v string) error {
	for _, s := range strings.Split(v, ",") {
		if s = strings.TrimSpace(s); s != "" {
			*m = append(*m, s)
		}
	}
	return nil
}

// labelFlag is a repeatable key=value flag.
type labelFlag map[string]string

func (l labelFlag) String() string {
	var parts []string
	for k, v := range l {
		parts = append(parts, k+"="+v)
	}
	return strings.Join(parts, ",")
}

func (l labelFlag) Set(v string) error {
	k, val, ok := strings.Cut(v, "=")
	if !ok || strings.TrimSpace(k) == "" {
		return fmt.Errorf("want key=value, got %q", v)
	}
	l[strings.TrimSpace(k)] = val
	return nil
}

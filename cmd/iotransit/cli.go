package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"strings"
	"time"
)

// The command line's framework: the environment rule, flags and positional
// arguments, secrets, repeatable flags, command groups and the output of
// -o table|json. The commands themselves are in one file per group.

// errUsage marks a command line that is wrong; the message says how.
var errUsage = errors.New("usage")

// usageError returns an error that wraps errUsage with a sentence.
func usageError(format string, args ...any) error {
	return fmt.Errorf("%w: "+format, append([]any{errUsage}, args...)...)
}

// envVar is the environment variable of a flag: --data-dir is
// IOTRANSIT_DATA_DIR.
func envVar(flagName string) string {
	return "IOTRANSIT_" + strings.ToUpper(strings.ReplaceAll(flagName, "-", "_"))
}

// fillFromEnv sets every flag not given on the command line from its
// environment variable (envVar).
func fillFromEnv(fs *flag.FlagSet) error {
	set := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { set[f.Name] = true })
	var errs []error
	fs.VisitAll(func(f *flag.Flag) {
		if set[f.Name] {
			return
		}
		env := envVar(f.Name)
		if v, ok := os.LookupEnv(env); ok {
			if err := fs.Set(f.Name, v); err != nil {
				errs = append(errs, fmt.Errorf("%s: %w", env, err))
			}
		}
	})
	return errors.Join(errs...)
}

// parseFlags parses the flags of a command that takes no argument, then
// fills the others from the environment (fillFromEnv).
func parseFlags(fs *flag.FlagSet, args []string) error {
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("unexpected argument %q", fs.Arg(0))
	}
	return fillFromEnv(fs)
}

// parseArgs parses args, letting flags and positional arguments mix
// ("gateway register SERIAL --label k=v"; "--" ends the flags), then fills
// every flag not given from the environment (fillFromEnv). It returns the
// positional arguments and the flags given on the command line.
func parseArgs(fs *flag.FlagSet, args []string) ([]string, map[string]bool, error) {
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
	if err := fillFromEnv(fs); err != nil {
		return nil, nil, err
	}
	return pos, onCmdLine, nil
}

// wantsHelp reports whether args ask for a command's usage.
func wantsHelp(args []string) bool {
	return len(args) > 0 && (args[0] == "help" || args[0] == "-h" || args[0] == "--help")
}

// newFlagSet returns the flag set of a command that reports its mistakes
// on stderr; usage, when not "", is the text its usage prints before the
// flags (else the flag package's "Usage of NAME:").
func newFlagSet(name, usage string, stderr io.Writer) *flag.FlagSet {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.SetOutput(stderr)
	if usage != "" {
		fs.Usage = func() {
			fmt.Fprint(fs.Output(), usage)
			fs.PrintDefaults()
		}
	}
	return fs
}

// helpAsked prints the usage of fs on stdout when args ask for it
// (wantsHelp), and reports whether they did.
func helpAsked(fs *flag.FlagSet, args []string, stdout io.Writer) bool {
	if !wantsHelp(args) {
		return false
	}
	fs.SetOutput(stdout)
	fs.Usage()
	return true
}

// secretFlag is a secret given as --NAME or, better, in a file named by
// --NAME-file (a secret on the command line may land in the shell history),
// or through their variables IOTRANSIT_NAME and IOTRANSIT_NAME_FILE. Every
// secret of the command line (--key, --token, --secret, --password, ...)
// follows one precedence: a flag given on the command line beats the
// environment; --NAME and --NAME-file on the command line together are an
// error, and so are IOTRANSIT_NAME and IOTRANSIT_NAME_FILE both set (when
// neither flag is on the command line). White space around the secret is
// trimmed; a file must hold one.
type secretFlag struct {
	name        string
	value, file string
}

// newSecretFlag defines --name (usage) and --name-file (fileUsage).
func newSecretFlag(fs *flag.FlagSet, name, usage, fileUsage string) *secretFlag {
	s := &secretFlag{name: name}
	fs.StringVar(&s.value, name, "", usage)
	fs.StringVar(&s.file, name+"-file", "", fileUsage)
	return s
}

// get returns the secret, "" when none is given; onCmdLine names the flags
// given on the command line.
func (s *secretFlag) get(onCmdLine map[string]bool) (string, error) {
	useFile := false
	switch value, file := onCmdLine[s.name], onCmdLine[s.name+"-file"]; {
	case value && file:
		return "", usageError("give --%s or --%s-file, not both", s.name, s.name)
	case value:
	case file:
		useFile = true
	case s.value != "" && s.file != "":
		return "", usageError("%s and %s are both set; set only one", envVar(s.name), envVar(s.name+"-file"))
	default:
		useFile = s.file != ""
	}
	if !useFile {
		return strings.TrimSpace(s.value), nil
	}
	b, err := os.ReadFile(s.file)
	if err != nil {
		return "", fmt.Errorf("--%s-file: %w", s.name, err)
	}
	v := strings.TrimSpace(string(b))
	if v == "" {
		return "", fmt.Errorf("--%s-file %s is empty", s.name, s.file)
	}
	return v, nil
}

// need returns the secret, or a usage error when none is given.
func (s *secretFlag) need(onCmdLine map[string]bool) (string, error) {
	v, err := s.get(onCmdLine)
	if err == nil && v == "" {
		err = usageError("give --%s-file or --%s (or %s, %s)", s.name, s.name, envVar(s.name+"-file"), envVar(s.name))
	}
	return v, err
}

// listFlag is a flag holding a list. Each value is a comma-separated list,
// which is how a list comes from the environment. A repeatable flag adds
// each value to the list (--scope a --scope b); otherwise a value replaces
// the list, its default included.
type listFlag struct {
	list       *[]string
	repeatable bool
}

func (l listFlag) String() string {
	if l.list == nil {
		return ""
	}
	return strings.Join(*l.list, ",")
}

func (l listFlag) Set(v string) error {
	if !l.repeatable {
		*l.list = nil
	}
	for _, s := range strings.Split(v, ",") {
		if s = strings.TrimSpace(s); s != "" {
			*l.list = append(*l.list, s)
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

// newLogger returns a JSON logger at level.
func newLogger(w io.Writer, level string) (*slog.Logger, error) {
	var l slog.Level
	if err := l.UnmarshalText([]byte(level)); err != nil {
		return nil, fmt.Errorf("--log-level %q: want debug, info, warn or error", level)
	}
	return slog.New(slog.NewJSONHandler(w, &slog.HandlerOptions{Level: l})), nil
}

// shortDuration writes d without zero minutes and seconds: 24h, 1m, 10ms.
func shortDuration(d time.Duration) string {
	s := d.String()
	if strings.HasSuffix(s, "m0s") {
		s = strings.TrimSuffix(s, "0s")
	}
	if strings.HasSuffix(s, "h0m") {
		s = strings.TrimSuffix(s, "0m")
	}
	return s
}

// A command group is a word of the command line, e.g. "gateway", with its
// commands; each command calls the HTTPS API through the connection flags
// (conn.go).
type group struct {
	name    string
	summary string
	cmds    []command
}

// command is one command of a group, e.g. "gateway list".
type command struct {
	name     string
	args     []string // names of the positional arguments
	synopsis string   // the flags worth naming in the usage line
	summary  string
	// tenant says whether the command works in a tenant (--tenant).
	tenant bool
	// run is the action of a command without flags of its own; flags,
	// when set, defines them and returns the action instead.
	run   action
	flags func(fs *flag.FlagSet) action
	// main, when set, runs the command with its own flags instead (a
	// command that is not an API client, such as "gateway run").
	main func(ctx context.Context, args []string, stdout, stderr io.Writer) error
}

// action is what a command does once its flags are parsed.
type action = func(ctx context.Context, e *env, args []string) error

// usage writes the group's commands and the connection flags.
func (g *group) usage(w io.Writer) {
	fmt.Fprintf(w, "iotransit %s: %s\n\nUsage:\n", g.name, g.summary)
	for _, c := range g.cmds {
		fmt.Fprintf(w, "  %s\n      %s\n", c.line(g.name), c.summary)
	}
	fmt.Fprintf(w, `
Connection flags of every command (each also from its environment variable):
  --server URL     IOTRANSIT_SERVER    the HTTPS API (default %s)
  --ca FILE        IOTRANSIT_CA        CA that verifies the server (default: system roots)
  --key-file FILE  IOTRANSIT_KEY_FILE  file holding the bearer credential
  --key SECRET     IOTRANSIT_KEY       the bearer credential itself
  --tenant ID      IOTRANSIT_TENANT    the tenant of tenant-scoped commands
  -o table|json                        output format
  --timeout %-26s deadline of each request

See: iotransit %s <command> -h
`, defaultServer, shortDuration(defaultTimeout), g.name)
}

// line is the command's usage line: its words, arguments and synopsis.
func (c *command) line(group string) string {
	s := "iotransit " + group + " " + c.name
	for _, a := range c.args {
		s += " <" + a + ">"
	}
	if c.synopsis != "" {
		s += " " + c.synopsis
	}
	return s
}

// run runs a command of the group.
func (g *group) run(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	if len(args) == 0 {
		g.usage(stderr)
		return flag.ErrHelp
	}
	switch args[0] {
	case "help", "-h", "-help", "--help":
		g.usage(stdout)
		return nil
	}
	var cmd *command
	for i := range g.cmds {
		if g.cmds[i].name == args[0] {
			cmd = &g.cmds[i]
		}
	}
	if cmd == nil {
		g.usage(stderr)
		return fmt.Errorf("unknown %s command %q", g.name, args[0])
	}
	if cmd.main != nil {
		return cmd.main(ctx, args[1:], stdout, stderr)
	}
	fs := newFlagSet("iotransit "+g.name+" "+cmd.name, fmt.Sprintf("Usage: %s\n  %s\n\nFlags:\n", cmd.line(g.name), cmd.summary), stderr)
	conn := addConnFlags(fs, cmd.tenant, true)
	act := cmd.run
	if cmd.flags != nil {
		act = cmd.flags(fs)
	}
	pos, onCmdLine, err := parseArgs(fs, args[1:])
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
	defer e.api.Close()
	return explain(act(ctx, e, pos))
}

// noneExists checks that no file is at any of paths: a command that makes
// new secrets (what it does, why) never overwrites old ones.
func noneExists(why string, paths ...string) error {
	for _, p := range paths {
		if _, err := os.Lstat(p); err == nil {
			return fmt.Errorf("%s exists: %s and will not overwrite one (choose another --out)", p, why)
		} else if !errors.Is(err, os.ErrNotExist) {
			return err
		}
	}
	return nil
}

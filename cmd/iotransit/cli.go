package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"strings"
	"time"

	"github.com/iotransit/iotransit/internal/cli"
)

// The command line's framework: the environment rule, flags and positional
// arguments, secrets, repeatable flags, command groups and the output of
// -o table|json. The commands themselves are in one file per group.

// The command line's framework (package internal/cli), under the names the
// commands use.
var (
	errUsage      = cli.ErrUsage
	usageError    = cli.UsageError
	envVar        = cli.EnvVar
	parseFlags    = cli.ParseFlags
	parseArgs     = cli.ParseArgs
	wantsHelp     = cli.WantsHelp
	helpAsked     = cli.HelpAsked
	helpRequested = cli.HelpRequested
	newSecretFlag = cli.NewSecretFlag
	newLogger     = cli.NewLogger
)

// newFlagSet returns the flag set of the command name (cli.NewFlagSet),
// named in its usage as typed: "bench" is "iotransit bench".
func newFlagSet(name, usage string, stderr io.Writer) *flag.FlagSet {
	if !strings.HasPrefix(name, "iotransit ") {
		name = "iotransit " + name
	}
	return cli.NewFlagSet(name, usage, stderr)
}

// secretFlag is a secret given as a flag, a file or the environment
// (cli.SecretFlag).
type secretFlag = cli.SecretFlag

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

// Type names the value in help: --scope list.
func (l listFlag) Type() string { return "list" }

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

// Type names the value in help: --label key=value.
func (l labelFlag) Type() string { return "key=value" }

func (l labelFlag) Set(v string) error {
	k, val, ok := strings.Cut(v, "=")
	if !ok || strings.TrimSpace(k) == "" {
		return fmt.Errorf("want key=value, got %q", v)
	}
	l[strings.TrimSpace(k)] = val
	return nil
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
	name string
	args []string // names of the positional arguments
	// more says the command takes any number of arguments after args
	// (named by synopsis), e.g. "gateway label <serial> key=value...".
	more     bool
	synopsis string // the flags worth naming in the usage line
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
	names := make([]string, len(g.cmds))
	for i, c := range g.cmds {
		names[i] = c.name
	}
	cli.RecordCommands(w, names...)
	fmt.Fprintf(w, "iotransit %s: %s\n\nUsage:\n", g.name, g.summary)
	for _, c := range g.cmds {
		fmt.Fprintf(w, "  %s\n      %s\n", c.line(g.name), c.summary)
	}
	fmt.Fprint(w, "\n"+connFlagsHead)
	fs := flag.NewFlagSet("", flag.ContinueOnError)
	addConnFlags(fs, true, true)
	cli.PrintFlags(w, fs)
	fmt.Fprintf(w, "\nSee: iotransit %s <command> -h\n", g.name)
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

// usage writes the command's usage: its line, its own flags, then the
// connection flags (connNames).
func (c *command) usage(fs *flag.FlagSet, group string, connNames map[string]bool) {
	w := fs.Output()
	if r, ok := w.(cli.HelpRecorder); ok {
		r.RecordFlags(fs)
	}
	fmt.Fprintf(w, "Usage: %s\n  %s\n", c.line(group), c.summary)
	own := func(f *flag.Flag) bool { return !connNames[f.Name] }
	n := 0
	fs.VisitAll(func(f *flag.Flag) {
		if own(f) {
			n++
		}
	})
	if n > 0 {
		fmt.Fprint(w, "\nFlags:\n")
		cli.PrintFlagsOf(w, fs, own)
	}
	fmt.Fprint(w, "\nConnection flags (also from the environment, else the login profile):\n")
	cli.PrintFlagsOf(w, fs, func(f *flag.Flag) bool { return connNames[f.Name] })
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
	names := make([]string, len(g.cmds))
	for i := range g.cmds {
		names[i] = g.cmds[i].name
		if g.cmds[i].name == args[0] {
			cmd = &g.cmds[i]
		}
	}
	if cmd == nil {
		var u strings.Builder
		g.usage(&u)
		return unknownCommand(g.name+" command", args[0], names, u.String(), stderr)
	}
	if cmd.main != nil {
		return cmd.main(ctx, args[1:], stdout, stderr)
	}
	fs := newFlagSet("iotransit "+g.name+" "+cmd.name, "", stderr)
	conn := addConnFlags(fs, cmd.tenant, true)
	connNames := map[string]bool{}
	fs.VisitAll(func(f *flag.Flag) { connNames[f.Name] = true })
	// Before the command's flags, which may set a usage of their own.
	fs.Usage = func() { cmd.usage(fs, g.name, connNames) }
	act := cmd.run
	if cmd.flags != nil {
		act = cmd.flags(fs)
	}
	// The flags, for the completion, whatever usage the command prints.
	if r, ok := stdout.(cli.HelpRecorder); ok && helpRequested(args[1:]) {
		r.RecordFlags(fs)
	}
	pos, onCmdLine, err := parseArgs(fs, args[1:])
	if err != nil {
		return err
	}
	switch {
	case cmd.more && len(pos) < len(cmd.args):
		return usageError("%s takes at least %d argument(s), got %d; usage: %s", fs.Name(), len(cmd.args), len(pos), cmd.line(g.name))
	case !cmd.more && len(pos) != len(cmd.args):
		return usageError("%s takes %d argument(s), got %d; usage: %s", fs.Name(), len(cmd.args), len(pos), cmd.line(g.name))
	}
	for i, a := range pos[:len(cmd.args)] {
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

// positional parses the command line of a command that takes positional
// arguments and no flags of its own (name, with usage): it returns them, or
// nil and help when help was asked for (printed on stdout).
func positional(name, usage string, args []string, stdout, stderr io.Writer) (pos []string, help bool, err error) {
	fs := newFlagSet(name, usage, stderr)
	if helpAsked(fs, args, stdout) {
		return nil, true, nil
	}
	pos, _, err = parseArgs(fs, args)
	return pos, false, err
}

// help runs cmd for help its args ask for (helpRequested): its usage,
// which a flag set prints on its error output, goes to stdout, and the
// flag package's ErrHelp is success, so that -h exits 0 for every command.
func help(ctx context.Context, cmd func(ctx context.Context, args []string, stdout, stderr io.Writer) error, args []string, stdout io.Writer) error {
	if err := cmd(ctx, args, stdout, stdout); err != nil && !errors.Is(err, flag.ErrHelp) {
		return err
	}
	return nil
}

// unknownCommand is the error of a word that names none of names (what,
// e.g. "gateway command"; "" is "command"): with a suggestion when one is
// close (did you mean), else after the usage on stderr.
func unknownCommand(what, word string, names []string, usage string, stderr io.Writer) error {
	if cli.Suggest(word, names) == "" {
		fmt.Fprint(stderr, usage)
	}
	return cli.UnknownCommand(what, word, names)
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

// Package cli is the command line's framework shared by iotransit's
// commands (cmd/iotransit and the gateway's own binary,
// cmd/iotransit-gateway): the environment rule (--data-dir is
// IOTRANSIT_DATA_DIR), flags mixed with positional arguments, usage errors,
// help, secrets from a flag, a file or the environment with one precedence,
// and the JSON logger.
package cli

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"strings"
)

// ErrUsage marks a command line that is wrong; the message says how.
var ErrUsage = errors.New("usage")

// UsageError returns an error that wraps ErrUsage with a sentence.
func UsageError(format string, args ...any) error {
	return fmt.Errorf("%w: "+format, append([]any{ErrUsage}, args...)...)
}

// EnvVar is the environment variable of a flag: --data-dir is
// IOTRANSIT_DATA_DIR.
func EnvVar(flagName string) string {
	return "IOTRANSIT_" + strings.ToUpper(strings.ReplaceAll(flagName, "-", "_"))
}

// FillFromEnv sets every flag not given on the command line from its
// environment variable (EnvVar).
func FillFromEnv(fs *flag.FlagSet) error {
	set := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { set[f.Name] = true })
	var errs []error
	fs.VisitAll(func(f *flag.Flag) {
		if set[f.Name] {
			return
		}
		env := EnvVar(f.Name)
		if v, ok := os.LookupEnv(env); ok {
			if err := fs.Set(f.Name, v); err != nil {
				errs = append(errs, fmt.Errorf("%s: %w", env, err))
			}
		}
	})
	return errors.Join(errs...)
}

// ParseFlags parses the flags of a command that takes no argument, then
// fills the others from the environment (FillFromEnv).
func ParseFlags(fs *flag.FlagSet, args []string) error {
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("unexpected argument %q", fs.Arg(0))
	}
	return FillFromEnv(fs)
}

// ParseArgs parses args, letting flags and positional arguments mix
// ("gateway register SERIAL --label k=v"; "--" ends the flags), then fills
// every flag not given from the environment (FillFromEnv). It returns the
// positional arguments and the flags given on the command line.
func ParseArgs(fs *flag.FlagSet, args []string) ([]string, map[string]bool, error) {
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
	if err := FillFromEnv(fs); err != nil {
		return nil, nil, err
	}
	return pos, onCmdLine, nil
}

// WantsHelp reports whether args ask for a command's usage.
func WantsHelp(args []string) bool {
	return len(args) > 0 && (args[0] == "help" || args[0] == "-h" || args[0] == "--help")
}

// NewFlagSet returns the flag set of a command that reports its mistakes
// on stderr; usage, when not "", is the text its usage prints before the
// flags (else "Usage: NAME [flags]"). Its usage writes the flags in the
// one style of every command's help (PrintFlags).
func NewFlagSet(name, usage string, stderr io.Writer) *flag.FlagSet {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() { printUsage(fs, name, usage) }
	return fs
}

// HelpAsked prints the usage of fs on stdout when args ask for it
// (WantsHelp), and reports whether they did.
func HelpAsked(fs *flag.FlagSet, args []string, stdout io.Writer) bool {
	if !WantsHelp(args) {
		return false
	}
	fs.SetOutput(stdout)
	fs.Usage()
	return true
}

// SecretFlag is a secret given as --NAME or, better, in a file named by
// --NAME-file (a secret on the command line may land in the shell history),
// or through their variables IOTRANSIT_NAME and IOTRANSIT_NAME_FILE. Every
// secret of the command line (--key, --token, --secret, --password, ...)
// follows one precedence: a flag given on the command line beats the
// environment; --NAME and --NAME-file on the command line together are an
// error, and so are IOTRANSIT_NAME and IOTRANSIT_NAME_FILE both set (when
// neither flag is on the command line). White space around the secret is
// trimmed; a file must hold one.
type SecretFlag struct {
	name        string
	value, file string
}

// NewSecretFlag defines --name (usage) and --name-file (fileUsage).
func NewSecretFlag(fs *flag.FlagSet, name, usage, fileUsage string) *SecretFlag {
	s := &SecretFlag{name: name}
	fs.StringVar(&s.value, name, "", usage)
	fs.StringVar(&s.file, name+"-file", "", fileUsage)
	return s
}

// Get returns the secret, "" when none is given; onCmdLine names the flags
// given on the command line.
func (s *SecretFlag) Get(onCmdLine map[string]bool) (string, error) {
	useFile := false
	switch value, file := onCmdLine[s.name], onCmdLine[s.name+"-file"]; {
	case value && file:
		return "", UsageError("give --%s or --%s-file, not both", s.name, s.name)
	case value:
	case file:
		useFile = true
	case s.value != "" && s.file != "":
		return "", UsageError("%s and %s are both set; set only one", EnvVar(s.name), EnvVar(s.name+"-file"))
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

// Need returns the secret, or a usage error when none is given.
func (s *SecretFlag) Need(onCmdLine map[string]bool) (string, error) {
	v, err := s.Get(onCmdLine)
	if err == nil && v == "" {
		err = UsageError("give --%s-file or --%s (or %s, %s)", s.name, s.name, EnvVar(s.name+"-file"), EnvVar(s.name))
	}
	return v, err
}

// NewLogger returns a JSON logger at level.
func NewLogger(w io.Writer, level string) (*slog.Logger, error) {
	var l slog.Level
	if err := l.UnmarshalText([]byte(level)); err != nil {
		return nil, fmt.Errorf("--log-level %q: want debug, info, warn or error", level)
	}
	return slog.New(slog.NewJSONHandler(w, &slog.HandlerOptions{Level: l})), nil
}

// HelpRequested reports whether args ask for help anywhere among the flags:
// "help" as the first word, or -h, -help or --help before "--".
func HelpRequested(args []string) bool {
	if len(args) > 0 && args[0] == "help" {
		return true
	}
	for _, a := range args {
		switch a {
		case "--":
			return false
		case "-h", "-help", "--help":
			return true
		}
	}
	return false
}

// Suggest returns the candidate the mistyped word most likely meant: the
// only candidate it is a prefix of, else the nearest within an edit
// distance of 2 (the first in candidates' order on a tie); "" when none is
// close.
func Suggest(word string, candidates []string) string {
	if word == "" {
		return ""
	}
	var prefixed []string
	for _, c := range candidates {
		if strings.HasPrefix(c, word) {
			prefixed = append(prefixed, c)
		}
	}
	if len(prefixed) == 1 {
		return prefixed[0]
	}
	best, bestDist := "", 3
	for _, c := range candidates {
		if d := editDistance(word, c); d < bestDist {
			best, bestDist = c, d
		}
	}
	return best
}

// UnknownCommand is the error of a word that names no command ("unknown
// command %q"), with a did-you-mean suggestion when one is close (Suggest).
// what qualifies the word, e.g. "gateway command"; "" is "command".
func UnknownCommand(what, word string, candidates []string) error {
	if what == "" {
		what = "command"
	}
	if s := Suggest(word, candidates); s != "" {
		return fmt.Errorf("unknown %s %q; did you mean %q?", what, word, s)
	}
	return fmt.Errorf("unknown %s %q", what, word)
}

// editDistance is the Levenshtein distance of a and b, in bytes.
func editDistance(a, b string) int {
	prev := make([]int, len(b)+1)
	cur := make([]int, len(b)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(a); i++ {
		cur[0] = i
		for j := 1; j <= len(b); j++ {
			cost := 1
			if a[i-1] == b[j-1] {
				cost = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+cost)
		}
		prev, cur = cur, prev
	}
	return prev[len(b)]
}

package cli

import (
	"flag"
	"fmt"
	"io"
	"reflect"
	"strings"
)

// HelpWidth is the width help text is wrapped to. It is fixed, not the
// terminal's, so that help reads the same everywhere (and its golden files
// stay valid).
const HelpWidth = 80

// flagColumn is the widest flag column of PrintFlags: a longer flag puts
// its usage on the next line.
const flagColumn = 30

// A HelpRecorder is a help output that also wants what the help describes
// as data: the flag set a command's usage prints (RecordFlags) and the
// commands a group's usage lists (RecordCommands). The shell completion
// and the help tests walk the command line through it, so that a new
// command or flag is included without being listed again.
type HelpRecorder interface {
	io.Writer
	RecordFlags(fs *flag.FlagSet)
	RecordCommands(names ...string)
}

// RecordCommands gives names to w when w is a HelpRecorder: a group's
// usage calls it with its commands.
func RecordCommands(w io.Writer, names ...string) {
	if r, ok := w.(HelpRecorder); ok {
		r.RecordCommands(names...)
	}
}

// printUsage is the usage of every flag set of NewFlagSet: head (or a
// usage line of name), then the flags in PrintFlags' style.
func printUsage(fs *flag.FlagSet, name, head string) {
	w := fs.Output()
	if r, ok := w.(HelpRecorder); ok {
		r.RecordFlags(fs)
	}
	if head == "" {
		head = fmt.Sprintf("Usage: %s [flags]\n\nFlags:\n", name)
	}
	fmt.Fprint(w, head)
	PrintFlags(w, fs)
}

// FlagName is how help writes a flag: -o for a one-letter name, --name
// for the others (either form parses).
func FlagName(name string) string {
	if len(name) == 1 {
		return "-" + name
	}
	return "--" + name
}

// FlagPlaceholder is the word help writes after a flag for its value: a
// word in `backquotes` in its usage, else what its type says ("string",
// "duration", "int", ...; a flag.Value with a Type method names its own);
// "" for a boolean flag. usage is the usage without the backquotes.
func FlagPlaceholder(f *flag.Flag) (placeholder, usage string) {
	placeholder, usage = flag.UnquoteUsage(f)
	if placeholder == "value" {
		if t, ok := f.Value.(interface{ Type() string }); ok {
			placeholder = t.Type()
		}
	}
	return placeholder, usage
}

// PrintFlags writes the flags of fs by name, one style for every command:
// "--name type", then the usage and the default when it is not the zero
// value, wrapped at HelpWidth.
func PrintFlags(w io.Writer, fs *flag.FlagSet) { PrintFlagsOf(w, fs, nil) }

// PrintFlagsOf writes the flags of fs that keep keeps (nil: all) as
// PrintFlags does.
func PrintFlagsOf(w io.Writer, fs *flag.FlagSet, keep func(*flag.Flag) bool) {
	type line struct{ name, text string }
	var lines []line
	col := 0
	fs.VisitAll(func(f *flag.Flag) {
		if Hidden(f) || (keep != nil && !keep(f)) {
			return
		}
		ph, usage := FlagPlaceholder(f)
		name := FlagName(f.Name)
		if ph != "" {
			name += " " + ph
		}
		if !isZeroDefault(f) {
			def := f.DefValue
			if g, ok := f.Value.(flag.Getter); ok {
				if _, isString := g.Get().(string); isString {
					def = fmt.Sprintf("%q", def)
				}
			}
			usage += " (default " + def + ")"
		}
		if len(name) <= flagColumn {
			col = max(col, len(name))
		}
		lines = append(lines, line{name, usage})
	})
	indent := 2 + col + 2
	for _, l := range lines {
		text := wrap(l.text, HelpWidth-indent)
		pad := strings.Repeat(" ", indent)
		if len(l.name) > col {
			fmt.Fprintf(w, "  %s\n%s", l.name, pad)
		} else {
			fmt.Fprintf(w, "  %-*s  ", col, l.name)
		}
		fmt.Fprintln(w, strings.Join(text, "\n"+pad))
	}
}

// isZeroDefault reports whether a flag's default is its type's zero
// value, which help does not write (as the flag package does).
func isZeroDefault(f *flag.Flag) (zero bool) {
	defer func() {
		if recover() != nil {
			zero = f.DefValue == ""
		}
	}()
	t := reflect.TypeOf(f.Value)
	var z reflect.Value
	if t.Kind() == reflect.Pointer {
		z = reflect.New(t.Elem())
	} else {
		z = reflect.Zero(t)
	}
	v, ok := z.Interface().(flag.Value)
	if !ok {
		return f.DefValue == ""
	}
	return f.DefValue == v.String()
}

// wrap splits text into lines of at most width bytes, at spaces (a word
// longer than width gets a line of its own).
func wrap(text string, width int) []string {
	width = max(width, 20)
	var lines []string
	cur := ""
	for _, word := range strings.Fields(text) {
		switch {
		case cur == "":
			cur = word
		case len(cur)+1+len(word) <= width:
			cur += " " + word
		default:
			lines = append(lines, cur)
			cur = word
		}
	}
	return append(lines, cur)
}

// renamedFlag is a flag that was renamed: setting it fails with a
// sentence naming the new name.
type renamedFlag struct{ old, new, why string }

func (r renamedFlag) String() string { return "" }
func (r renamedFlag) Set(string) error {
	return UsageError("--%s is now --%s%s", r.old, r.new, r.why)
}

// Renamed defines the flag old of fs as renamed new: given, it is a usage
// error naming new (why, e.g. " (the CA of the target)", follows);
// help and completion do not show it (Hidden).
func Renamed(fs *flag.FlagSet, old, new, why string) {
	fs.Var(renamedFlag{old: old, new: new, why: why}, old, "renamed --"+new)
}

// Hidden says whether help and completion leave f out: a renamed flag.
func Hidden(f *flag.Flag) bool {
	_, ok := f.Value.(renamedFlag)
	return ok
}

package main

import (
	"bytes"
	"context"
	"flag"
	"fmt"
	"io"
	"maps"
	"regexp"
	"slices"
	"strings"

	"github.com/iotransit/iotransit/internal/cli"
)

// Shell completion, generated from the command line itself: the command
// tree is found by asking every command for its help through a
// cli.HelpRecorder, which a group's usage gives its commands and a flag
// set's usage its flags; a dispatcher that writes its own usage (mesh,
// firmware) is read for the "iotransit PATH word|word" lines it prints,
// each checked by asking for its help. A new command or flag is therefore
// completed without being listed here. The help golden tests walk the same
// tree.

// cmdNode is a command of the tree: a group's commands are its children;
// a command that runs has flags.
type cmdNode struct {
	path     []string // words after "iotransit"; none for the root
	children []*cmdNode
	flags    []flagSpec
}

// flagSpec is a flag as completion needs it.
type flagSpec struct {
	name  string // as typed: --name or -o
	value bool   // takes a value (not a boolean)
}

// maxDepth bounds the walk (iotransit mesh key create is 3 deep).
const maxDepth = 4

// helpRecorder takes a command's help and what the help describes.
type helpRecorder struct {
	bytes.Buffer
	fs   *flag.FlagSet
	cmds []string
}

func (r *helpRecorder) RecordFlags(fs *flag.FlagSet) {
	if r.fs == nil {
		r.fs = fs
	}
}

func (r *helpRecorder) RecordCommands(names ...string) { r.cmds = append(r.cmds, names...) }

var _ cli.HelpRecorder = (*helpRecorder)(nil)

// helpOf runs "iotransit PATH -h", which prints help and runs nothing.
func helpOf(ctx context.Context, path []string) (*helpRecorder, error) {
	r := &helpRecorder{}
	err := run(ctx, append(slices.Clone(path), "-h"), r, r)
	return r, err
}

// commandTree walks the commands of the command table.
func commandTree(ctx context.Context) *cmdNode {
	root := &cmdNode{}
	for _, name := range slices.Sorted(maps.Keys(commands)) {
		root.children = append(root.children, walkCommand(ctx, []string{name}))
	}
	return root
}

// walkCommand returns the node of path, whose help has been asked for.
func walkCommand(ctx context.Context, path []string) *cmdNode {
	n := &cmdNode{path: path}
	r, err := helpOf(ctx, path)
	if err != nil {
		return n
	}
	if r.fs != nil {
		r.fs.VisitAll(func(f *flag.Flag) {
			if cli.Hidden(f) {
				return
			}
			ph, _ := cli.FlagPlaceholder(f)
			n.flags = append(n.flags, flagSpec{name: cli.FlagName(f.Name), value: ph != ""})
		})
	}
	names := r.cmds
	if r.fs == nil {
		// "iotransit PATH word|word" in the help: the commands it names.
		re := regexp.MustCompile(`iotransit ` + regexp.QuoteMeta(strings.Join(path, " ")) + ` ([a-z][a-z0-9-]*(?:\|[a-z][a-z0-9-]*)*)`)
		for _, m := range re.FindAllStringSubmatch(r.String(), -1) {
			names = append(names, strings.Split(m[1], "|")...)
		}
	}
	if len(path) >= maxDepth {
		return n
	}
	seen := map[string]bool{}
	for _, name := range names {
		if seen[name] {
			continue
		}
		seen[name] = true
		sub := append(slices.Clone(path), name)
		if _, err := helpOf(ctx, sub); err != nil {
			continue // a word of the text, not a command
		}
		n.children = append(n.children, walkCommand(ctx, sub))
	}
	return n
}

// all returns the node and every node under it, depth first.
func (n *cmdNode) all() []*cmdNode {
	out := []*cmdNode{n}
	for _, c := range n.children {
		out = append(out, c.all()...)
	}
	return out
}

// key is the node's path as the scripts match it: "gateway list"; "" for
// the root.
func (n *cmdNode) key() string { return strings.Join(n.path, " ") }

// childNames are the names of the node's commands.
func (n *cmdNode) childNames() string {
	names := make([]string, len(n.children))
	for i, c := range n.children {
		names[i] = c.path[len(c.path)-1]
	}
	return strings.Join(names, " ")
}

// flagNames are the node's flags, with value: only those taking a value.
func (n *cmdNode) flagNames(valueOnly bool) string {
	var names []string
	for _, f := range n.flags {
		if !valueOnly || f.value {
			names = append(names, f.name)
		}
	}
	return strings.Join(names, " ")
}

const completionUsage = `Usage: iotransit completion bash|zsh|fish
  Print a script that completes iotransit's commands and flags in the shell:
    bash: source <(iotransit completion bash)       (in ~/.bashrc)
    zsh:  source <(iotransit completion zsh)        (in ~/.zshrc, after compinit)
    fish: iotransit completion fish > ~/.config/fish/completions/iotransit.fish
`

// The command table holds completion from here: completion walks the
// table, which would otherwise refer to itself.
func init() { commands["completion"] = completion }

// completion is "iotransit completion bash|zsh|fish".
func completion(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	pos, help, err := positional("iotransit completion", completionUsage, args, stdout, stderr)
	if help || err != nil {
		return err
	}
	if len(pos) != 1 {
		return usageError("completion takes the shell: bash, zsh or fish")
	}
	var write func(io.Writer, *cmdNode)
	switch pos[0] {
	case "bash":
		write = bashCompletion
	case "zsh":
		write = zshCompletion
	case "fish":
		write = fishCompletion
	default:
		return usageError("completion %q: want bash, zsh or fish", pos[0])
	}
	write(stdout, commandTree(ctx))
	return nil
}

// completionTables are the tables of the scripts: for a command's path,
// its commands, its flags and its flags that take a value.
var completionTables = []struct {
	name string
	list func(*cmdNode) string
}{
	{"children", (*cmdNode).childNames},
	{"flags", func(n *cmdNode) string { return n.flagNames(false) }},
	{"value_flags", func(n *cmdNode) string { return n.flagNames(true) }},
}

// shTables writes the shell functions _iotransit_children, _flags and
// _value_flags, which print what the command at the path "$1" has (sh
// case syntax, which bash and zsh read alike).
func shTables(w io.Writer, n *cmdNode) {
	for _, tb := range completionTables {
		fmt.Fprintf(w, "_iotransit_%s() {\n\tcase \"$1\" in\n", tb.name)
		for _, c := range n.all() {
			if l := tb.list(c); l != "" {
				fmt.Fprintf(w, "\t%q) echo %q ;;\n", c.key(), l)
			}
		}
		fmt.Fprint(w, "\tesac\n}\n\n")
	}
}

// bashCompletion writes the bash script.
func bashCompletion(w io.Writer, root *cmdNode) {
	fmt.Fprint(w, "# bash completion for iotransit; generated by: iotransit completion bash\n\n")
	shTables(w, root)
	fmt.Fprint(w, `_iotransit() {
	local cur=${COMP_WORDS[COMP_CWORD]} prev=${COMP_WORDS[COMP_CWORD-1]}
	local cmdpath="" i w
	for ((i = 1; i < COMP_CWORD; i++)); do
		w=${COMP_WORDS[i]}
		if [[ $w != -* && " $(_iotransit_children "$cmdpath") " == *" $w "* ]]; then
			cmdpath=${cmdpath:+$cmdpath }$w
		else
			break
		fi
	done
	COMPREPLY=()
	if [[ $COMP_CWORD -gt 1 && $prev == -* && " $(_iotransit_value_flags "$cmdpath") " == *" $prev "* ]]; then
		if [[ $prev == -o ]]; then
			COMPREPLY=($(compgen -W "table json yaml" -- "$cur"))
		else
			COMPREPLY=($(compgen -f -- "$cur"))
		fi
	elif [[ $cur == -* ]]; then
		COMPREPLY=($(compgen -W "$(_iotransit_flags "$cmdpath")" -- "$cur"))
	else
		COMPREPLY=($(compgen -W "$(_iotransit_children "$cmdpath")" -- "$cur"))
	fi
}

complete -o default -F _iotransit iotransit
`)
}

// zshCompletion writes the zsh script: source it, or put it on $fpath as
// _iotransit.
func zshCompletion(w io.Writer, root *cmdNode) {
	fmt.Fprint(w, "#compdef iotransit\n# zsh completion for iotransit; generated by: iotransit completion zsh\n\n")
	shTables(w, root)
	fmt.Fprint(w, `_iotransit() {
	local cmdpath="" i w
	for ((i = 2; i < CURRENT; i++)); do
		w=${words[i]}
		if [[ $w != -* && " $(_iotransit_children "$cmdpath") " == *" $w "* ]]; then
			cmdpath=${cmdpath:+$cmdpath }$w
		else
			break
		fi
	done
	local prev=${words[CURRENT-1]} cur=${words[CURRENT]}
	if (( CURRENT > 2 )) && [[ $prev == -* && " $(_iotransit_value_flags "$cmdpath") " == *" $prev "* ]]; then
		if [[ $prev == -o ]]; then
			compadd -- table json yaml
		else
			_files
		fi
	elif [[ $cur == -* ]]; then
		compadd -- ${=$(_iotransit_flags "$cmdpath")}
	else
		local kids=$(_iotransit_children "$cmdpath")
		if [[ -n $kids ]]; then
			compadd -- ${=kids}
		else
			_files
		fi
	fi
}

if [[ "${funcstack[1]}" == _iotransit ]]; then
	_iotransit "$@"
else
	compdef _iotransit iotransit
fi
`)
}

// fishCompletion writes the fish script.
func fishCompletion(w io.Writer, root *cmdNode) {
	fmt.Fprint(w, "# fish completion for iotransit; generated by: iotransit completion fish\n\n")
	for _, tb := range completionTables {
		fmt.Fprintf(w, "function __iotransit_%s\n    switch \"$argv[1]\"\n", tb.name)
		for _, c := range root.all() {
			if l := tb.list(c); l != "" {
				fmt.Fprintf(w, "        case '%s'\n            string split ' ' -- '%s'\n", c.key(), l)
			}
		}
		fmt.Fprint(w, "    end\nend\n\n")
	}
	fmt.Fprint(w, `function __iotransit_complete
    set -l words (commandline -opc)
    set -l prev $words[-1]
    set -e words[1]
    set -l cmdpath ''
    for w in $words
        if not string match -q -- '-*' $w; and contains -- $w (__iotransit_children "$cmdpath")
            set cmdpath (string trim -- "$cmdpath $w")
        else
            break
        end
    end
    set -l cur (commandline -ct)
    if string match -q -- '-*' $prev; and contains -- $prev (__iotransit_value_flags "$cmdpath")
        if test "$prev" = -o
            string split ' ' -- 'table json yaml'
        else
            __fish_complete_path $cur
        end
    else if string match -q -- '-*' $cur
        __iotransit_flags "$cmdpath"
    else
        __iotransit_children "$cmdpath"
    end
end

complete -c iotransit -f -a '(__iotransit_complete)'
`)
}

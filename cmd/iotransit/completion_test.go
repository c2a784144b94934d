package main

import (
	"context"
	"maps"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

// TestCompletionTree: the tree the completion is made from holds every
// command of the command table, the commands of groups and subgroups
// (found through their help), and each command's flags.
func TestCompletionTree(t *testing.T) {
	root := commandTree(context.Background())
	byKey := map[string]*cmdNode{}
	for _, n := range root.all() {
		byKey[n.key()] = n
	}
	for _, name := range slices.Sorted(maps.Keys(commands)) {
		if byKey[name] == nil {
			t.Errorf("the tree lacks the command %q", name)
		}
	}
	for key, flags := range map[string][]string{
		"gateway list":            {"--state", "--limit", "--tenant", "--profile", "-o"},
		"gateway run":             {"--data-dir", "--mesh-addr"},
		"mesh key create":         {"--tenant"},
		"firmware rollout create": {"--target"},
		"login":                   {"--profile", "--key-file"},
		"login list":              {"-o"},
		"serve":                   {"--data-dir", "--dev"},
	} {
		n := byKey[key]
		if n == nil {
			t.Errorf("the tree lacks %q", key)
			continue
		}
		have := strings.Fields(n.flagNames(false))
		for _, f := range flags {
			if !slices.Contains(have, f) {
				t.Errorf("%s: no flag %s among %v", key, f, have)
			}
		}
	}
	if v := byKey["serve"].flagNames(true); strings.Contains(v, "--dev") || !strings.Contains(v, "--data-dir") {
		t.Errorf("serve's flags with a value: %s", v)
	}
}

// TestCompletionBash sources the bash script in a real bash and completes
// as the shell would (COMP_WORDS, COMP_CWORD, then the function).
func TestCompletionBash(t *testing.T) {
	bash, err := exec.LookPath("bash")
	if err != nil {
		t.Skip("no bash")
	}
	script, _, err := runCLI(t, "completion", "bash")
	if err != nil {
		t.Fatal(err)
	}
	file := filepath.Join(t.TempDir(), "iotransit.bash")
	if err := os.WriteFile(file, []byte(script), 0o600); err != nil {
		t.Fatal(err)
	}
	files := t.TempDir()
	if err := os.WriteFile(filepath.Join(files, "ca.pem"), nil, 0o600); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name  string
		words []string // the last is the word being completed
		want  string   // COMPREPLY, sorted, space-separated
	}{
		{name: "group", words: []string{"iotransit", "gat"}, want: "gateway"},
		{name: "command", words: []string{"iotransit", "gateway", "l"}, want: "label list"},
		{name: "subgroup", words: []string{"iotransit", "mesh", "k"}, want: "key"},
		{name: "subgroup command", words: []string{"iotransit", "mesh", "key", "rot"}, want: "rotate"},
		{name: "flag", words: []string{"iotransit", "gateway", "list", "--st"}, want: "--state"},
		{name: "flag after flags", words: []string{"iotransit", "gateway", "list", "--tenant", "dev", "--prof"}, want: "--profile"},
		{name: "output", words: []string{"iotransit", "tenant", "list", "-o", "y"}, want: "yaml"},
		{name: "file value", words: []string{"iotransit", "tenant", "list", "--ca", files + "/c"}, want: files + "/ca.pem"},
		{name: "login", words: []string{"iotransit", "login", "u"}, want: "use"},
		{name: "shells", words: []string{"iotransit", "compl"}, want: "completion"},
		{name: "nothing", words: []string{"iotransit", "gateway", "frob"}, want: ""},
		{name: "renamed flag not offered", words: []string{"iotransit", "integration", "add", "--ca-"}, want: ""},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			cmd := exec.Command(bash, "--norc", "--noprofile", "-c",
				`source "$1"; shift; COMP_WORDS=("$@"); COMP_CWORD=$(( $# - 1 )); _iotransit; printf '%s\n' "${COMPREPLY[@]}" | sort | tr '\n' ' '`,
				"bash", file)
			cmd.Args = append(cmd.Args, tc.words...)
			out, err := cmd.CombinedOutput()
			if err != nil {
				t.Fatalf("bash: %v\n%s", err, out)
			}
			if got := strings.TrimSpace(string(out)); got != tc.want {
				t.Fatalf("completing %q: %q, want %q", strings.Join(tc.words, " "), got, tc.want)
			}
		})
	}
}

// TestCompletionShells: the zsh and fish scripts are generated and, where
// the shell is installed, pass its syntax check.
func TestCompletionShells(t *testing.T) {
	for _, tc := range []struct {
		name, shell, want string
		check             []string
	}{
		{name: "zsh", shell: "zsh", want: "compdef _iotransit iotransit", check: []string{"-n"}},
		{name: "fish", shell: "fish", want: "complete -c iotransit", check: []string{"--no-execute"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			script, _, err := runCLI(t, "completion", tc.shell)
			if err != nil || !strings.Contains(script, tc.want) || !strings.Contains(script, "'gateway list'") && !strings.Contains(script, `"gateway list"`) {
				t.Fatalf("completion %s: %v\n%s", tc.shell, err, script)
			}
			sh, err := exec.LookPath(tc.shell)
			if err != nil {
				t.Skipf("%s is not installed: generated, not syntax-checked", tc.shell)
			}
			file := filepath.Join(t.TempDir(), "iotransit."+tc.shell)
			if err := os.WriteFile(file, []byte(script), 0o600); err != nil {
				t.Fatal(err)
			}
			if out, err := exec.Command(sh, append(tc.check, file)...).CombinedOutput(); err != nil {
				t.Fatalf("%s %v: %v\n%s", tc.shell, tc.check, err, out)
			}
		})
	}
	if _, _, err := runCLI(t, "completion", "powershell"); err == nil || !strings.Contains(err.Error(), "want bash, zsh or fish") {
		t.Fatalf("completion powershell: %v", err)
	}
}

package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"maps"
	"os/exec"
	"reflect"
	"regexp"
	"slices"
	"strings"
	"testing"

	"github.com/iotransit/iotransit/internal/node"
	"github.com/iotransit/iotransit/internal/testutil/nodetest"
	"go.yaml.in/yaml/v3"
)

// TestCLIHelpEverywhere: -h of the top level, of every command of the
// command table and of every command their help names (found by walking
// the help texts, so a new command is covered) succeeds and prints a usage
// on stdout, nothing on stderr.
func TestCLIHelpEverywhere(t *testing.T) {
	seen := map[string]bool{}
	var walk func(path []string)
	walk = func(path []string) {
		key := strings.Join(path, " ")
		if seen[key] {
			return
		}
		seen[key] = true
		for _, h := range []string{"-h", "--help"} {
			out, errOut, err := runCLI(t, append(slices.Clone(path), h)...)
			if err != nil || errOut != "" || !strings.Contains(strings.ToLower(out), "usage") {
				t.Fatalf("iotransit %s %s: err %v, stderr %q, stdout:\n%s", key, h, err, errOut, out)
			}
			if h != "-h" || len(path) >= 3 {
				continue
			}
			// The commands this help names: "iotransit <path> word|word".
			re := regexp.MustCompile(`iotransit ` + regexp.QuoteMeta(key) + ` ([a-z][a-z0-9-]*(?:\|[a-z][a-z0-9-]*)*)`)
			for _, m := range re.FindAllStringSubmatch(out, -1) {
				for _, w := range strings.Split(m[1], "|") {
					walk(append(slices.Clone(path), w))
				}
			}
		}
	}
	for _, top := range [][]string{{"-h"}, {"--help"}, {"help"}} {
		out, errOut, err := runCLI(t, top...)
		if err != nil || errOut != "" || !strings.Contains(out, "Usage:") {
			t.Fatalf("iotransit %s: err %v, stderr %q", top[0], err, errOut)
		}
	}
	for _, name := range slices.Sorted(maps.Keys(commands)) {
		walk([]string{name})
	}
	t.Logf("help of %d commands", len(seen))
	// The walk must have reached the commands of groups, not only the groups.
	for _, want := range []string{"gateway list", "integration add", "mesh key create", "firmware rollout create", "gateway run"} {
		if !seen[want] {
			t.Errorf("the help walk did not reach %q (reached %d)", want, len(seen))
		}
	}
}

// TestCLIDidYouMean: a mistyped command or subcommand is refused with the
// command it most likely meant; a word near none gets the usage instead.
func TestCLIDidYouMean(t *testing.T) {
	tests := []struct {
		name      string
		args      []string
		want      string
		wantUsage bool
	}{
		{name: "command", args: []string{"gatway", "list"}, want: `unknown command "gatway"; did you mean "gateway"?`},
		{name: "command prefix", args: []string{"integ"}, want: `unknown command "integ"; did you mean "integration"?`},
		{name: "subcommand", args: []string{"gateway", "lst"}, want: `unknown gateway command "lst"; did you mean "list"?`},
		{name: "mesh subgroup", args: []string{"mesh", "kye", "list"}, want: `unknown mesh command "kye"; did you mean "key"?`},
		{name: "nested subcommand", args: []string{"firmware", "rollout", "craete"}, want: `did you mean "create"?`},
		{name: "nothing near", args: []string{"frobnicate"}, want: `unknown command "frobnicate"`, wantUsage: true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, errOut, err := runCLI(t, tc.args...)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("iotransit %s: %v; want %q", strings.Join(tc.args, " "), err, tc.want)
			}
			if tc.wantUsage != strings.Contains(errOut, "Usage:") || tc.wantUsage == strings.Contains(err.Error(), "did you mean") {
				t.Fatalf("iotransit %s: usage printed %v, error %v; want the usage %v", strings.Join(tc.args, " "), errOut != "", err, tc.wantUsage)
			}
		})
	}
}

// TestCLIVersion: --version and "version" print the version, the one set
// at link time (-ldflags -X main.version=...) when it is set.
func TestCLIVersion(t *testing.T) {
	for _, arg := range []string{"--version", "version"} {
		out, _, err := runCLI(t, arg)
		if err != nil || !strings.HasPrefix(out, "iotransit ") || strings.TrimSpace(strings.TrimPrefix(out, "iotransit ")) == "" {
			t.Fatalf("iotransit %s: %q, %v", arg, out, err)
		}
	}
	old := version
	t.Cleanup(func() { version = old })
	version = "v9.8.7"
	if out, _, err := runCLI(t, "--version"); err != nil || out != "iotransit v9.8.7\n" {
		t.Fatalf("with the version set: %q, %v", out, err)
	}
}

// TestCLIBinaryExitCodes: the built binary exits 0 for help and the
// version and 2 for a mistyped command, which it names.
func TestCLIBinaryExitCodes(t *testing.T) {
	bin := nodetest.BuildBinary(t)
	tests := []struct {
		name   string
		args   []string
		code   int
		stdout string // wanted in stdout
		stderr string // wanted in stderr
	}{
		{name: "help", args: []string{"-h"}, stdout: "Usage:"},
		{name: "group help", args: []string{"gateway", "-h"}, stdout: "iotransit gateway list"},
		{name: "command help", args: []string{"gateway", "list", "-h"}, stdout: "Usage: iotransit gateway list"},
		{name: "serve help", args: []string{"serve", "--help"}, stdout: "  --data-dir string"},
		{name: "version", args: []string{"--version"}, stdout: "iotransit "},
		{name: "typo", args: []string{"gatway", "list"}, code: 2, stderr: `did you mean "gateway"?`},
		{name: "no command", code: 2, stderr: "Usage:"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var out, errb bytes.Buffer
			cmd := exec.Command(bin, tc.args...)
			cmd.Stdout, cmd.Stderr = &out, &errb
			err := cmd.Run()
			code := 0
			var exit *exec.ExitError
			if errors.As(err, &exit) {
				code = exit.ExitCode()
			} else if err != nil {
				t.Fatal(err)
			}
			if code != tc.code || !strings.Contains(out.String(), tc.stdout) || !strings.Contains(errb.String(), tc.stderr) {
				t.Fatalf("iotransit %s: exit %d (want %d)\nstdout:\n%s\nstderr:\n%s", strings.Join(tc.args, " "), code, tc.code, out.String(), errb.String())
			}
		})
	}
}

// TestCLIOutputFormats: -o yaml prints the same document as -o json, with
// the API's field names (not Go's), for an item and for a page; any other
// format is refused before a request.
func TestCLIOutputFormats(t *testing.T) {
	a := startAdminNode(t)
	for _, args := range [][]string{
		{"tenant", "get", node.DevTenant},
		{"gateway", "list", "--tenant", node.DevTenant},
		{"gateway", "get", node.DevGateway, "--tenant", node.DevTenant},
	} {
		t.Run(strings.Join(args[:2], " "), func(t *testing.T) {
			var fromJSON, fromYAML any
			if err := json.Unmarshal([]byte(a.mustOp(t, append(args, "-o", "json")...)), &fromJSON); err != nil {
				t.Fatal(err)
			}
			out := a.mustOp(t, append(args, "-o", "yaml")...)
			if err := yaml.Unmarshal([]byte(out), &fromYAML); err != nil {
				t.Fatalf("-o yaml: %v\n%s", err, out)
			}
			// Through JSON, so that numbers compare alike.
			b, err := json.Marshal(fromYAML)
			if err != nil {
				t.Fatal(err)
			}
			fromYAML = nil
			if err := json.Unmarshal(b, &fromYAML); err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(fromJSON, fromYAML) {
				t.Fatalf("-o yaml differs from -o json:\n%s", out)
			}
			if strings.Contains(out, "CreatedAt:") || strings.Contains(out, `{"`) || !strings.Contains(out, "createdAt: ") {
				t.Fatalf("-o yaml is not block YAML with the API's names:\n%s", out)
			}
		})
	}
	if _, _, err := a.op(t, "tenant", "list", "-o", "xml"); err == nil || !strings.Contains(err.Error(), `-o "xml": want table, json or yaml`) {
		t.Fatalf("-o xml: %v", err)
	}
}

// TestUsageNamesEveryCommand checks that the top-level usage names every
// command of the tree: "iotransit gateway label" needs a line
// "iotransit gateway …|label|…".
func TestUsageNamesEveryCommand(t *testing.T) {
	var lines [][]string
	for _, l := range strings.Split(usage, "\n") {
		f := strings.Fields(l)
		if len(f) > 1 && f[0] == "iotransit" {
			lines = append(lines, f[1:])
		}
	}
	named := func(path []string) bool {
		for _, f := range lines {
			if len(f) < len(path) || !slices.Equal(f[:len(path)-1], path[:len(path)-1]) {
				continue
			}
			if slices.Contains(strings.Split(f[len(path)-1], "|"), path[len(path)-1]) {
				return true
			}
		}
		return false
	}
	for _, n := range commandTree(context.Background()).all() {
		if len(n.path) == 0 || (len(n.path) == 1 && n.path[0] == "help") {
			continue
		}
		if !named(n.path) {
			t.Errorf("the usage (main.go) does not name %q: add it to the line of iotransit %s", "iotransit "+n.key(), strings.Join(n.path[:max(len(n.path)-1, 1)], " "))
		}
	}
}

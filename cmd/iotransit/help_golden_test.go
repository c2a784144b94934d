package main

import (
	"bytes"
	"context"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/iotransit/iotransit/internal/gateway/agentcmd"
)

// updateHelp rewrites the help golden files.
var updateHelp = flag.Bool("update", false, "rewrite testdata/help/*.golden from the commands' help")

// helpGoldenDir holds a file per command: its -h.
var helpGoldenDir = filepath.Join("testdata", "help")

// updateHint is the command that accepts a change of help.
const updateHint = "go test ./cmd/iotransit -run TestHelpGolden -update"

// TestHelpGolden compares the help (-h) of the top level, of every group
// and of every command of the command tree (the one completion walks, so
// a new command is included), and of the gateway's own binary, with its
// golden file in testdata/help. A file without a command fails too. After
// a change of help that is meant, run: go test ./cmd/iotransit -run
// TestHelpGolden -update, and review the diff of testdata/help.
func TestHelpGolden(t *testing.T) {
	ctx := context.Background()
	got := map[string]string{} // file name: help
	for _, n := range commandTree(ctx).all() {
		out, errOut, err := runCLI(t, append(n.path, "-h")...)
		if err != nil || errOut != "" {
			t.Fatalf("iotransit %s -h: %v, stderr %q", n.key(), err, errOut)
		}
		name := "iotransit"
		if len(n.path) > 0 {
			name = strings.Join(n.path, "_")
		}
		got[name+".golden"] = out
	}
	var gw bytes.Buffer
	if err := agentcmd.Run(ctx, "iotransit-gateway", []string{"-h"}, &gw, &gw); err != nil {
		t.Fatalf("iotransit-gateway -h: %v", err)
	}
	got["iotransit-gateway.golden"] = gw.String()
	// One style: a flag of more than one letter is written --name, never
	// the flag package's -name.
	goStyle := regexp.MustCompile(`(?m)^\s+-[a-z][a-z0-9-]+( |$)`)
	for name, help := range got {
		if m := goStyle.FindString(help); m != "" {
			t.Errorf("the help of %s writes a flag as %q: want --name (cli.PrintFlags)", commandOf(name), strings.TrimSpace(m))
		}
	}

	if *updateHelp {
		if err := os.MkdirAll(helpGoldenDir, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	old, err := filepath.Glob(filepath.Join(helpGoldenDir, "*.golden"))
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range old {
		if _, ok := got[filepath.Base(f)]; ok {
			continue
		}
		if *updateHelp {
			if err := os.Remove(f); err != nil {
				t.Fatal(err)
			}
			continue
		}
		t.Errorf("%s is the help of no command; if the command is gone, run: %s", f, updateHint)
	}
	for name, help := range got {
		path := filepath.Join(helpGoldenDir, name)
		if *updateHelp {
			if err := os.WriteFile(path, []byte(help), 0o644); err != nil {
				t.Fatal(err)
			}
			continue
		}
		want, err := os.ReadFile(path)
		if err != nil {
			t.Errorf("%s: %v; to write it, run: %s", path, err, updateHint)
			continue
		}
		if string(want) != help {
			t.Errorf("the help of %s changed; if that is meant, run: %s\n%s", commandOf(name), updateHint, lineDiff(string(want), help))
		}
	}
}

// commandOf is the command line of a golden file's name.
func commandOf(name string) string {
	name = strings.TrimSuffix(name, ".golden")
	switch name {
	case "iotransit", "iotransit-gateway":
		return "`" + name + " -h`"
	}
	return "`iotransit " + strings.ReplaceAll(name, "_", " ") + " -h`"
}

// lineDiff lists the lines of want and got that differ, at most 20.
func lineDiff(want, got string) string {
	w, g := strings.Split(want, "\n"), strings.Split(got, "\n")
	var b strings.Builder
	n := 0
	for i := 0; i < max(len(w), len(g)) && n < 20; i++ {
		var wl, gl string
		if i < len(w) {
			wl = w[i]
		}
		if i < len(g) {
			gl = g[i]
		}
		if wl != gl {
			fmt.Fprintf(&b, "line %d:\n  golden: %q\n  now:    %q\n", i+1, wl, gl)
			n++
		}
	}
	return b.String()
}

package main

import (
	"flag"
	"os"
	"strings"
	"testing"
)

// TestCLISecretPrecedence: every secret comes from --x, --x-file or their
// variables by one rule (secretFlag).
func TestCLISecretPrecedence(t *testing.T) {
	file := writeTemp(t, "secret", " from-file\n")
	empty := writeTemp(t, "empty", "\n")
	tests := []struct {
		name          string
		args          []string
		value, inFile string // IOTRANSIT_KEY, IOTRANSIT_KEY_FILE
		want, err     string
	}{
		{name: "flag", args: []string{"--key", " v "}, want: "v"},
		{name: "file flag", args: []string{"--key-file", file}, want: "from-file"},
		{name: "variable", value: "from-env", want: "from-env"},
		{name: "file variable", inFile: file, want: "from-file"},
		{name: "flag beats the file variable", args: []string{"--key", "v"}, inFile: file, want: "v"},
		{name: "file flag beats the variable", args: []string{"--key-file", file}, value: "from-env", want: "from-file"},
		{name: "both flags", args: []string{"--key", "v", "--key-file", file}, err: "give --key or --key-file, not both"},
		{name: "both variables", value: "from-env", inFile: file, err: "IOTRANSIT_KEY and IOTRANSIT_KEY_FILE are both set"},
		{name: "empty file", args: []string{"--key-file", empty}, err: "is empty"},
		{name: "none", err: "give --key-file or --key (or IOTRANSIT_KEY_FILE, IOTRANSIT_KEY)"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Setenv("IOTRANSIT_KEY", tc.value)
			t.Setenv("IOTRANSIT_KEY_FILE", tc.inFile)
			fs := flag.NewFlagSet("t", flag.ContinueOnError)
			s := newSecretFlag(fs, "key", "", "")
			_, onCmdLine, err := parseArgs(fs, tc.args)
			if err != nil {
				t.Fatal(err)
			}
			got, err := s.Need(onCmdLine)
			if tc.err != "" {
				if err == nil || !strings.Contains(err.Error(), tc.err) {
					t.Fatalf("got %q, %v; want the error %q", got, err, tc.err)
				}
				return
			}
			if err != nil || got != tc.want {
				t.Fatalf("got %q, %v; want %q", got, err, tc.want)
			}
		})
	}
}

// TestCLIListFlag: a repeatable list adds each value, a list that is not
// replaces its default; both split commas, as the environment gives them.
func TestCLIListFlag(t *testing.T) {
	tests := []struct {
		name       string
		repeatable bool
		args       []string
		env        string
		want       string
	}{
		{name: "repeated", repeatable: true, args: []string{"--l", "a", "--l", "b, c"}, want: "a b c"},
		{name: "repeatable from the environment", repeatable: true, env: "a,,b", want: "a b"},
		{name: "replaced", args: []string{"--l", "a", "--l", "b,c"}, want: "b c"},
		{name: "default", want: "x"},
		{name: "default replaced from the environment", env: "y", want: "y"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Setenv("IOTRANSIT_L", tc.env)
			if tc.env == "" {
				os.Unsetenv("IOTRANSIT_L") // restored by Setenv's cleanup
			}
			list := []string{}
			if !tc.repeatable {
				list = []string{"x"}
			}
			fs := flag.NewFlagSet("t", flag.ContinueOnError)
			fs.Var(listFlag{list: &list, repeatable: tc.repeatable}, "l", "")
			if err := parseFlags(fs, tc.args); err != nil {
				t.Fatal(err)
			}
			if got := strings.Join(list, " "); got != tc.want {
				t.Fatalf("list %q, want %q", got, tc.want)
			}
		})
	}
}

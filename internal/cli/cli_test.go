package cli

import (
	"flag"
	"maps"
	"strings"
	"testing"
	"time"

	"go.yaml.in/yaml/v3"
)

// TestSuggest: a unique prefix or the nearest name within two edits is
// suggested; nothing is when no name is near or a prefix is ambiguous and
// far from all.
func TestSuggest(t *testing.T) {
	names := []string{"apikey", "audit", "gateway", "integration", "serve", "tenant", "token"}
	tests := []struct {
		name, word, want string
	}{
		{name: "one edit", word: "gatway", want: "gateway"},
		{name: "two edits", word: "tennat", want: "tenant"},
		{name: "unique prefix", word: "integ", want: "integration"},
		{name: "ambiguous prefix", word: "t", want: ""},
		{name: "three edits", word: "gtwy", want: ""},
		{name: "far", word: "frobnicate", want: ""},
		{name: "empty", word: "", want: ""},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if got := Suggest(tc.word, names); got != tc.want {
				t.Fatalf("Suggest(%q) = %q, want %q", tc.word, got, tc.want)
			}
		})
	}
}

// TestHelpRequested: -h anywhere among the flags, or "help" first, asks
// for help; after "--" it is an argument.
func TestHelpRequested(t *testing.T) {
	tests := []struct {
		name string
		args []string
		want bool
	}{
		{name: "first", args: []string{"-h"}, want: true},
		{name: "after an argument", args: []string{"S1", "--help"}, want: true},
		{name: "help word", args: []string{"help"}, want: true},
		{name: "after --", args: []string{"--", "-h"}, want: false},
		{name: "none", args: []string{"list", "--tenant", "t"}, want: false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if got := HelpRequested(tc.args); got != tc.want {
				t.Fatalf("HelpRequested(%q) = %v, want %v", tc.args, got, tc.want)
			}
		})
	}
}

// TestPrintFlags: every flag in one style, --name (a one-letter flag -o)
// with the word of its value, its usage and a default other than the
// zero value, wrapped at HelpWidth whatever the terminal.
func TestPrintFlags(t *testing.T) {
	fs := flag.NewFlagSet("t", flag.ContinueOnError)
	fs.String("server", "https://localhost:8443", "`URL` of the API")
	fs.String("o", "table", "output format")
	fs.Bool("follow", false, "stream new messages")
	fs.Int("limit", 0, "at most this many")
	fs.Duration("timeout", 30*time.Second, "deadline of each request")
	fs.String("fsync", "", strings.Repeat("a long usage that wraps ", 8))
	var b strings.Builder
	PrintFlags(&b, fs)
	got := b.String()
	lines := strings.Split(strings.TrimSuffix(got, "\n"), "\n")
	for _, l := range lines {
		if len(l) > HelpWidth {
			t.Errorf("line wider than %d: %q", HelpWidth, l)
		}
		if strings.HasPrefix(strings.TrimSpace(l), "-") && !strings.HasPrefix(strings.TrimSpace(l), "--") && !strings.HasPrefix(strings.TrimSpace(l), "-o ") {
			t.Errorf("a long flag in the single-dash form: %q", l)
		}
	}
	for _, want := range []string{
		"  --follow            stream new messages\n",
		"  --limit int         at most this many\n",
		"  -o string           output format (default \"table\")\n",
		"  --server URL        URL of the API (default \"https://localhost:8443\")\n",
		"  --timeout duration  deadline of each request (default 30s)\n",
		"  --fsync string      a long usage that wraps a long usage that wraps a long\n                      usage that wraps",
	} {
		if !strings.Contains(got, want) {
			t.Errorf("the help lacks %q:\n%s", want, got)
		}
	}
}

// TestNewFlagSetUsage: a command's usage prints its head, then the flags
// in PrintFlags' style, never the flag package's "-name" form.
func TestNewFlagSetUsage(t *testing.T) {
	var b strings.Builder
	fs := NewFlagSet("iotransit x", "Usage: iotransit x\n\nFlags:\n", &b)
	fs.String("data-dir", "data", "the data directory")
	if err := fs.Parse([]string{"-h"}); err != flag.ErrHelp {
		t.Fatalf("-h: %v", err)
	}
	want := "Usage: iotransit x\n\nFlags:\n  --data-dir string  the data directory (default \"data\")\n"
	if b.String() != want {
		t.Fatalf("usage:\n%q\nwant\n%q", b.String(), want)
	}
}

// TestPrintData: -o json is the indented JSON; -o yaml has the JSON's
// field names in its order, quotes strings that would read as another
// type, and keeps multi-line strings.
func TestPrintData(t *testing.T) {
	type answer struct {
		SerialNumber string            `json:"serial"`
		Count        int               `json:"count"`
		Flag         string            `json:"flag"`
		Digits       string            `json:"digits"`
		PEM          string            `json:"caPem"`
		Labels       map[string]string `json:"labels"`
		Items        []string          `json:"items"`
		Empty        []string          `json:"empty"`
	}
	v := answer{SerialNumber: "S1", Count: 3, Flag: "yes", Digits: "0123", PEM: "-----BEGIN-----\nabc\n-----END-----\n",
		Labels: map[string]string{"site": "a"}, Items: []string{"x", "y", "no"}, Empty: []string{}}
	var y strings.Builder
	if err := PrintData(&y, FormatYAML, v); err != nil {
		t.Fatal(err)
	}
	want := `serial: S1
count: 3
flag: "yes"
digits: "0123"
caPem: |
  -----BEGIN-----
  abc
  -----END-----
labels:
  site: a
items:
  - x
  - "y"
  - "no"
empty: []
`
	if y.String() != want {
		t.Fatalf("yaml:\n%s\nwant:\n%s", y.String(), want)
	}
	var j strings.Builder
	if err := PrintData(&j, FormatJSON, v); err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(j.String(), "{\n  \"serial\": \"S1\",\n") {
		t.Fatalf("json:\n%s", j.String())
	}
	for _, f := range []string{"table", "json", "yaml"} {
		if err := CheckFormat(f); err != nil {
			t.Errorf("CheckFormat(%q): %v", f, err)
		}
	}
	if err := CheckFormat("xml"); err == nil || !strings.Contains(err.Error(), "want table, json or yaml") {
		t.Errorf("CheckFormat(xml): %v", err)
	}
}

// TestPrintDataYAMLReadsBack: every string -o yaml writes reads back as
// the same string, those a YAML reader takes for another type or refuses
// in plain or block style among them (a gateway's label or payload may
// hold any of them).
func TestPrintDataYAMLReadsBack(t *testing.T) {
	tests := []struct{ name, s string }{
		{name: "hex", s: "0x10"},
		{name: "exponent", s: "1e3"},
		{name: "null", s: "null"},
		{name: "tilde", s: "~"},
		{name: "long number", s: "12345678901234567890"},
		{name: "next line", s: "x\u0085y"},
		{name: "delete", s: "a\x7fb"},
		{name: "C1 control", s: "a\u009bb"},
		{name: "noncharacter", s: "\ufffe"},
		{name: "lines after a tab", s: "\tx\ny"},
		{name: "lines", s: "a\nb\n"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			for _, v := range []map[string]string{{"k": tt.s}, {tt.s: "v"}} {
				var y strings.Builder
				if err := PrintData(&y, FormatYAML, v); err != nil {
					t.Fatalf("PrintData(%q): %v", v, err)
				}
				var got map[string]string
				if err := yaml.Unmarshal([]byte(y.String()), &got); err != nil {
					t.Fatalf("read back %q: %v\n%s", v, err, y.String())
				}
				if !maps.Equal(got, v) {
					t.Fatalf("read back %q, want %q\n%s", got, v, y.String())
				}
			}
		})
	}
}

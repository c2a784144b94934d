package cli

import (
	"testing"
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

package cli

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"strings"

	"go.yaml.in/yaml/v3"
)

// The output formats of -o.
const (
	FormatTable = "table"
	FormatJSON  = "json"
	FormatYAML  = "yaml"
)

// OutputUsage is the usage of -o.
const OutputUsage = "output `FORMAT`: table, json or yaml (json and yaml: the answer as data, with the API's field names)"

// CheckFormat checks the value of -o.
func CheckFormat(format string) error {
	switch format {
	case FormatTable, FormatJSON, FormatYAML:
		return nil
	}
	return UsageError("-o %q: want table, json or yaml", format)
}

// PrintData writes v as format asks: indented JSON, or YAML with the
// same field names and order as the JSON (v goes through its JSON, so the
// YAML is the API's answer too, not Go's field names).
func PrintData(w io.Writer, format string, v any) error {
	b, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		return err
	}
	switch format {
	case FormatJSON:
	case FormatYAML:
		if b, err = JSONToYAML(b); err != nil {
			return err
		}
	default:
		return fmt.Errorf("cannot print data as %q", format)
	}
	if len(b) > 0 && b[len(b)-1] != '\n' {
		b = append(b, '\n')
	}
	_, err = w.Write(b)
	return err
}

// JSONToYAML turns a JSON document into YAML in block style, keeping its
// keys' order; a string that would read as another type in YAML (such as
// "yes" or "12") is quoted.
func JSONToYAML(doc []byte) ([]byte, error) {
	var n yaml.Node
	if err := yaml.Unmarshal(escapeForYAML(doc), &n); err != nil {
		return nil, fmt.Errorf("yaml: %w", err)
	}
	blockStyle(&n)
	var b bytes.Buffer
	enc := yaml.NewEncoder(&b)
	enc.SetIndent(2)
	if err := enc.Encode(&n); err != nil {
		return nil, fmt.Errorf("yaml: %w", err)
	}
	if err := enc.Close(); err != nil {
		return nil, fmt.Errorf("yaml: %w", err)
	}
	return b.Bytes(), nil
}

// escapeForYAML escapes in a JSON document the characters that JSON keeps
// raw in its strings but a YAML reader refuses (DEL, the C1 controls,
// U+FFFE, U+FFFF) or reads as a line break (U+0085): outside its strings
// a JSON document is ASCII, so only strings change, and YAML reads the
// \u escape of a double-quoted string as JSON does.
func escapeForYAML(doc []byte) []byte {
	var b bytes.Buffer
	for _, r := range string(doc) {
		if r == 0x7f || r >= 0x80 && r <= 0x9f || r == 0xfffe || r == 0xffff {
			fmt.Fprintf(&b, "\\u%04x", r)
			continue
		}
		b.WriteRune(r)
	}
	return b.Bytes()
}

// blockStyle clears the flow and quoting styles the JSON gave the nodes,
// so that the encoder writes block YAML, and quotes a string that a YAML
// reader could take for something else (plainIsString).
func blockStyle(n *yaml.Node) {
	n.Style = 0
	if n.Kind == yaml.ScalarNode && n.Tag == "!!str" && !plainIsString(n.Value) {
		n.Style = yaml.DoubleQuotedStyle
	}
	for _, c := range n.Content {
		blockStyle(c)
	}
}

// oldBools are the booleans of YAML 1.1, which some readers still apply.
var oldBools = map[string]bool{
	"y": true, "Y": true, "yes": true, "Yes": true, "YES": true, "n": true, "N": true, "no": true, "No": true, "NO": true,
	"on": true, "On": true, "ON": true, "off": true, "Off": true, "OFF": true,
}

// plainIsString reports whether s, unquoted, reads back as the string s.
// A string of several lines is left to the encoder, which writes it as a
// literal block.
func plainIsString(s string) bool {
	if strings.Contains(s, "\n") {
		return blockReadsBack(s)
	}
	if s == "" || oldBools[s] {
		return false
	}
	var v any
	if err := yaml.Unmarshal([]byte(s), &v); err != nil {
		return false
	}
	got, ok := v.(string)
	return ok && got == s
}

// blockReadsBack reports whether s, a string of several lines, reads back
// as itself in the style the encoder writes it (a literal block, which
// cannot hold every string: a line that starts with a tab, for one).
func blockReadsBack(s string) bool {
	b, err := yaml.Marshal(s)
	if err != nil {
		return false
	}
	var got string
	return yaml.Unmarshal(b, &got) == nil && got == s
}

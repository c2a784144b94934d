package cli

import (
	"encoding/json"
	"fmt"
	"io"

	"go.yaml.in/yaml/v3"
)

// The output formats of -o.
const (
	FormatTable = "table"
	FormatJSON  = "json"
	FormatYAML  = "yaml"
)

// OutputUsage is the usage of -o.
const OutputUsage = "output: table, json or yaml (json and yaml: the API's answer)"

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
	if err := yaml.Unmarshal(doc, &n); err != nil {
		return nil, fmt.Errorf("yaml: %w", err)
	}
	blockStyle(&n)
	return yaml.Marshal(&n)
}

// blockStyle clears the flow and quoting styles the JSON gave the nodes,
// so that the encoder writes block YAML and quotes only where needed.
func blockStyle(n *yaml.Node) {
	n.Style = 0
	for _, c := range n.Content {
		blockStyle(c)
	}
}

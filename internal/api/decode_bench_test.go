package api

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/iotransit/iotransit/client"
)

// benchBodies are request bodies of about 64 KiB (the default MaxBody) of
// the shapes that cost most to check for repeated keys: an object of many
// keys, a long array of numbers, and one long string.
func benchBodies() []struct {
	name string
	body []byte
	into func() any
} {
	var labels strings.Builder
	labels.WriteString(`{"labels":{`)
	for i := 0; labels.Len() < 64<<10-32; i++ {
		if i > 0 {
			labels.WriteByte(',')
		}
		fmt.Fprintf(&labels, `"label%05d":"value %d"`, i, i)
	}
	labels.WriteString(`}}`)
	var seqs strings.Builder
	seqs.WriteString(`{"seqs":[`)
	for i := 1; seqs.Len() < 64<<10-16; i++ {
		if i > 1 {
			seqs.WriteByte(',')
		}
		fmt.Fprint(&seqs, 1000000+i)
	}
	seqs.WriteString(`]}`)
	pem := `{"overlap":"` + strings.Repeat("A", 64<<10-16) + `"}`
	return []struct {
		name string
		body []byte
		into func() any
	}{
		{"labels", []byte(labels.String()), func() any { return &client.UpdateGatewayRequest{} }},
		{"seqs", []byte(seqs.String()), func() any { return &client.RedriveRequest{} }},
		{"string", []byte(pem), func() any { return &client.RotateSecretRequest{} }},
	}
}

// BenchmarkDecodeJSON64KiB measures, per body shape, the decoder alone
// (decode), the check for repeated keys (duplicateKey) and the whole
// strict decoding of a request (decodeJSON). The file only uses names that
// exist before the check was rewritten, so copied into an older checkout it
// measures that one too.
func BenchmarkDecodeJSON64KiB(b *testing.B) {
	for _, bb := range benchBodies() {
		b.Run(bb.name+"/decode", func(b *testing.B) {
			b.SetBytes(int64(len(bb.body)))
			for b.Loop() {
				dec := json.NewDecoder(bytes.NewReader(bb.body))
				dec.DisallowUnknownFields()
				if err := dec.Decode(bb.into()); err != nil {
					b.Fatal(err)
				}
			}
		})
		b.Run(bb.name+"/duplicateKey", func(b *testing.B) {
			b.SetBytes(int64(len(bb.body)))
			for b.Loop() {
				if k, dup := duplicateKey(bb.body); dup {
					b.Fatalf("duplicate %q", k)
				}
			}
		})
		b.Run(bb.name+"/decodeJSON", func(b *testing.B) {
			b.SetBytes(int64(len(bb.body)))
			for b.Loop() {
				r := httptest.NewRequest("POST", "/x", bytes.NewReader(bb.body))
				r.Header.Set("Content-Type", "application/json")
				if err := decodeJSON(httptest.NewRecorder(), r, 64<<10, bb.into(), false); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

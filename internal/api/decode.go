package api

import (
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"mime"
	"net/http"
	"strings"
	"unicode"

	"github.com/iotransit/iotransit/internal/fault"
)

// Faults of request decoding.
var (
	ErrJSON        = fault.Define("api.json_invalid", fault.InvalidArgument, "the request body is not valid JSON for this route")
	ErrBodyTooBig  = fault.Define("api.body_too_large", fault.TooLarge, "the request body is too large")
	ErrContentType = fault.Define("api.content_type", fault.UnsupportedMedia, "the request body must be application/json")
)

// decodeJSON reads the body into v strictly: application/json only, at most
// max bytes, no unknown fields, no key twice in one object, exactly one
// JSON value. A missing or empty body decodes as {} when allowEmpty.
func decodeJSON(w http.ResponseWriter, r *http.Request, max int64, v any, allowEmpty bool) error {
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, max))
	if err != nil {
		var mbe *http.MaxBytesError
		if errors.As(err, &mbe) {
			return ErrBodyTooBig.WithDetail("at most %d bytes", max)
		}
		return ErrJSON.WithDetail("the body could not be read")
	}
	if len(bytes.TrimSpace(body)) == 0 {
		if allowEmpty {
			return nil
		}
		return ErrJSON.WithDetail("a JSON object is required")
	}
	if err := checkContentType(r); err != nil {
		return err
	}
	if key, dup := duplicateKey(body); dup {
		return ErrJSON.WithDetail("duplicate key %s: name each member once", quote(key))
	}
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return ErrJSON.WithDetail("%s", describeJSONError(err))
	}
	if dec.More() {
		return ErrJSON.WithDetail("trailing data after the JSON value")
	}
	if _, err := dec.Token(); !errors.Is(err, io.EOF) {
		return ErrJSON.WithDetail("trailing data after the JSON value")
	}
	return nil
}

// duplicateKey reports the first key that an object of the body's first
// JSON value names twice. Go's decoder would keep the last value, and it
// matches struct fields regardless of case ("serial", "Serial" and
// "ſerial" with a long s all fill one field), so two keys count as the
// same when they are equal under Unicode case folding, as encoding/json
// folds them. Malformed JSON is left to the decoder, which says where it
// breaks.
func duplicateKey(body []byte) (string, bool) {
	type frame struct {
		object, wantKey bool
		keys            map[string]struct{}
	}
	dec := json.NewDecoder(bytes.NewReader(body))
	var stack []frame
	for {
		tok, err := dec.Token()
		if err != nil {
			return "", false
		}
		if n := len(stack); n > 0 && stack[n-1].object && stack[n-1].wantKey {
			top := &stack[n-1]
			if k, ok := tok.(string); ok {
				f := foldKey(k)
				if _, seen := top.keys[f]; seen {
					return k, true
				}
				top.keys[f] = struct{}{}
				top.wantKey = false
				continue
			}
		}
		switch tok {
		case json.Delim('{'):
			stack = append(stack, frame{object: true, wantKey: true, keys: map[string]struct{}{}})
			continue
		case json.Delim('['):
			stack = append(stack, frame{})
			continue
		case json.Delim('}'), json.Delim(']'):
			stack = stack[:len(stack)-1]
		}
		// A value ended: its object (if any) expects a key again.
		if len(stack) == 0 {
			return "", false
		}
		if top := &stack[len(stack)-1]; top.object {
			top.wantKey = true
		}
	}
}

// foldKey maps each letter of k to the smallest letter of its Unicode
// case-folding orbit, so that keys equal under folding map to one string.
func foldKey(k string) string {
	return strings.Map(func(r rune) rune {
		least := r
		for f := unicode.SimpleFold(r); f != r; f = unicode.SimpleFold(f) {
			least = min(least, f)
		}
		return least
	}, k)
}

func checkContentType(r *http.Request) error {
	mt, _, err := mime.ParseMediaType(r.Header.Get("Content-Type"))
	if err != nil || mt != "application/json" {
		return ErrContentType.New()
	}
	return nil
}

// describeJSONError turns a decoding error into a public sentence that
// names the field or offset, without Go type names.
func describeJSONError(err error) string {
	var se *json.SyntaxError
	var te *json.UnmarshalTypeError
	switch {
	case errors.As(err, &se):
		return "malformed JSON at byte " + itoa(se.Offset)
	case errors.As(err, &te):
		if te.Field != "" {
			return "field " + quote(te.Field) + " has the wrong type"
		}
		return "the body has the wrong type: a JSON object is required"
	case errors.Is(err, io.ErrUnexpectedEOF):
		return "the JSON value is incomplete"
	}
	if f, ok := strings.CutPrefix(err.Error(), "json: unknown field "); ok {
		return "unknown field " + quote(strings.Trim(f, `"`))
	}
	return "the body is not valid JSON"
}

func quote(s string) string {
	if len(s) > 64 {
		s = s[:64]
	}
	b, _ := json.Marshal(s)
	return string(b)
}

func itoa(n int64) string {
	b, _ := json.Marshal(n)
	return string(b)
}

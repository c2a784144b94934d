package api

import (
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"mime"
	"net/http"
	"slices"
	"strings"
	"sync"
	"unicode"
	"unicode/utf8"

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
	// Only a body the decoder accepted is checked for repeated keys: a
	// malformed one is not parsed twice.
	if key, dup := duplicateKey(body); dup {
		return ErrJSON.WithDetail("duplicate key %s: name each member once", quote(key))
	}
	return nil
}

// duplicateKey reports the first key, in the body's order, that an object
// of body names twice. Go's decoder would keep the last value, and it
// matches struct fields regardless of case ("serial", "Serial" and
// "ſerial" with a long s all fill one field), so two keys count as the
// same when they are equal under Unicode case folding, as encoding/json
// folds them.
//
// body must be one valid JSON value (decodeJSON calls it once the decoder
// has accepted the body, so a malformed body is parsed once): it is walked
// once, byte by byte, without decoding values. A key is kept as its offsets
// in body; only a key with an escape or a non-ASCII byte is decoded and
// folded into a string of its own. An object's keys are compared when it
// ends, sorted in place, so a large object costs n log n comparisons, not
// a map. On input that is not valid JSON it reports no key, and never
// panics.
func duplicateKey(body []byte) (string, bool) {
	sc := keyScans.Get().(*keyScan)
	defer sc.release()
	return sc.scan(body)
}

// keyRef is one key of an object being walked.
type keyRef struct {
	start, end int    // the key's bytes between its quotes, body[start:end]
	plain      bool   // ASCII without escapes: folded, it is its upper case
	key, fold  string // decoded and folded, when not plain
}

// keyScan is the state of one duplicateKey walk, pooled: a walk of a large
// body allocates nothing once its slices have grown.
type keyScan struct {
	body   []byte
	keys   []keyRef // the keys of the objects open, outermost first
	frames []int    // per open container: -1 an array, else where its keys start in keys
	found  bool
	first  keyRef // the earliest repeated key so far
}

var keyScans = sync.Pool{New: func() any { return new(keyScan) }}

// release clears the walk (its references to the body and to decoded keys)
// and returns it to the pool; an unusually large one is dropped.
func (sc *keyScan) release() {
	clear(sc.keys[:cap(sc.keys)])
	*sc = keyScan{keys: sc.keys[:0], frames: sc.frames[:0]}
	if cap(sc.keys) <= 1<<14 && cap(sc.frames) <= 1<<14 {
		keyScans.Put(sc)
	}
}

func (sc *keyScan) scan(body []byte) (string, bool) {
	sc.body = body
	wantKey := false // the next string is a key
	for i := 0; i < len(body); i++ {
		switch body[i] {
		case '{':
			sc.frames = append(sc.frames, len(sc.keys))
			wantKey = true
		case '[':
			sc.frames = append(sc.frames, -1)
			wantKey = false
		case '}', ']':
			n := len(sc.frames)
			if n == 0 {
				return "", false
			}
			if start := sc.frames[n-1]; start >= 0 {
				sc.closeObject(sc.keys[start:])
				sc.keys = sc.keys[:start]
			}
			sc.frames = sc.frames[:n-1]
			wantKey = false
		case ',':
			wantKey = len(sc.frames) > 0 && sc.frames[len(sc.frames)-1] >= 0
		case ':':
			wantKey = false
		case '"':
			end, plain := stringEnd(body, i+1)
			if wantKey {
				k := keyRef{start: i + 1, end: end, plain: plain}
				if !plain {
					var ok bool
					if k.key, ok = unquote(body[i:min(end+1, len(body))]); !ok {
						return "", false
					}
					k.fold = foldKey(k.key)
				}
				sc.keys = append(sc.keys, k)
				wantKey = false
			}
			i = end
		}
	}
	if !sc.found {
		return "", false
	}
	if sc.first.plain {
		return string(body[sc.first.start:sc.first.end]), true
	}
	return sc.first.key, true
}

// unquote decodes a JSON string with the decoder's own unquoting: escapes,
// surrogates and invalid UTF-8 come out as it sees them.
func unquote(quoted []byte) (string, bool) {
	var s string
	return s, json.Unmarshal(quoted, &s) == nil
}

// stringEnd returns the index of the quote that ends the string whose
// content starts at i (len(body) if none does), and whether the content is
// plain: ASCII without escapes.
func stringEnd(body []byte, i int) (int, bool) {
	plain := true
	for ; i < len(body); i++ {
		switch c := body[i]; {
		case c == '"':
			return i, plain
		case c == '\\':
			plain = false
			i++
		case c >= utf8.RuneSelf:
			plain = false
		}
	}
	return len(body), plain
}

// closeObject compares the keys of an object that ended: sorted by folded
// key, then by place, a key equal to the one before it repeats a key named
// earlier in the object.
func (sc *keyScan) closeObject(keys []keyRef) {
	if len(keys) < 2 {
		return
	}
	slices.SortFunc(keys, func(a, b keyRef) int {
		if c := sc.compare(&a, &b); c != 0 {
			return c
		}
		return a.start - b.start
	})
	for i := 1; i < len(keys); i++ {
		if sc.compare(&keys[i-1], &keys[i]) == 0 && (!sc.found || keys[i].start < sc.first.start) {
			sc.found, sc.first = true, keys[i]
		}
	}
}

// compare orders two keys by their folded bytes.
func (sc *keyScan) compare(a, b *keyRef) int {
	la, lb := sc.foldedLen(a), sc.foldedLen(b)
	for i := range min(la, lb) {
		if x, y := sc.foldedAt(a, i), sc.foldedAt(b, i); x != y {
			return int(x) - int(y)
		}
	}
	return la - lb
}

func (sc *keyScan) foldedLen(k *keyRef) int {
	if k.plain {
		return k.end - k.start
	}
	return len(k.fold)
}

// foldedAt is byte i of k folded: for a plain key its ASCII upper case,
// which is what foldKey makes of ASCII (the capital is the least letter of
// each ASCII letter's folding orbit).
func (sc *keyScan) foldedAt(k *keyRef, i int) byte {
	if !k.plain {
		return k.fold[i]
	}
	c := sc.body[k.start+i]
	if 'a' <= c && c <= 'z' {
		c -= 'a' - 'A'
	}
	return c
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

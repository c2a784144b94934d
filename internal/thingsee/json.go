package thingsee

import (
	"errors"
	"math"
	"strconv"
	"strings"
	"unicode"
	"unicode/utf8"
)

// jkind is the JSON type of a decoded value.
type jkind uint8

const (
	jString jkind = iota + 1
	jNumber
	jBool
	jNull
	jObject
	jArray
)

// jval is one decoded JSON value. Numbers keep their exact text, so no
// precision is lost before a field's own rule reads them; nested arrays and
// objects become trees (heartbeats and dist need them, and unknown tsmIds
// may carry any).
type jval struct {
	kind    jkind
	s       string // string value, number text, or "true"/"false"
	elems   []jval
	members []member
}

// member is one key and value of an object, in document order.
type member struct {
	key string
	val jval
}

// typeName describes the JSON type of v with its article, for reasons.
func (v *jval) typeName() string {
	switch v.kind {
	case jString:
		return "a string"
	case jNumber:
		return "a number"
	case jBool:
		return "a boolean"
	case jNull:
		return "null"
	case jObject:
		return "an object"
	case jArray:
		return "an array"
	}
	return "an unknown value"
}

// show renders v for a reason: numbers as their text, strings quoted, both
// clipped to maxEcho bytes of input; other types by their type name.
func (v *jval) show() string {
	switch v.kind {
	case jNumber:
		return clip(v.s)
	case jString:
		return quote(v.s)
	case jBool:
		return v.s
	}
	return v.typeName()
}

// dupKeyError reports a repeated key inside a nested object.
type dupKeyError struct {
	key string // the repeated key
	top string // the top-level member holding the nested object
}

// Error names the repeated key.
func (e *dupKeyError) Error() string { return "duplicate key " + e.key }

// hasKey reports whether ms already holds key. Nested objects in Thingsee
// messages are small (heartbeat entries have two keys), so a linear scan is
// cheaper than a map.
func hasKey(ms []member, key string) bool {
	for i := range ms {
		if ms[i].key == key {
			return true
		}
	}
	return false
}

// firstFoldDuplicate returns the index of the first key that equals an
// earlier key, exactly or under Unicode simple case folding (as
// strings.EqualFold and encoding/json's struct field matching see it), and
// the index of that earlier key. It returns -1, -1 when keys are unique.
func firstFoldDuplicate(ms []member) (int, int) {
	allASCII := true
	for i := range ms {
		if !isASCII(ms[i].key) {
			allASCII = false
			break
		}
	}
	if len(ms) > 32 {
		seen := make(map[string]int, len(ms))
		for j := range ms {
			f := foldKey(ms[j].key)
			if i, ok := seen[f]; ok {
				return j, i
			}
			seen[f] = j
		}
		return -1, -1
	}
	for j := 1; j < len(ms); j++ {
		kj := ms[j].key
		for i := range j {
			ki := ms[i].key
			if allASCII && len(ki) != len(kj) {
				continue
			}
			if strings.EqualFold(ki, kj) {
				return j, i
			}
		}
	}
	return -1, -1
}

func isASCII(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] >= utf8.RuneSelf {
			return false
		}
	}
	return true
}

// foldKey maps s to a canonical form such that foldKey(a) == foldKey(b)
// exactly when strings.EqualFold(a, b): every rune becomes the smallest rune
// of its simple-folding orbit.
func foldKey(s string) string {
	var b strings.Builder
	b.Grow(len(s))
	for _, r := range s {
		m := r
		for f := unicode.SimpleFold(r); f != r; f = unicode.SimpleFold(f) {
			if f < m {
				m = f
			}
		}
		b.WriteRune(m)
	}
	return b.String()
}

// intStatus is the outcome of parsing a JSON number as an integer.
type intStatus uint8

const (
	intOK          intStatus = iota
	intNotIntegral           // has a non-zero fraction
	intOverflow              // integral but outside int64
)

// parseJSONInt parses the JSON number text n as an exact integer. A fraction
// or exponent is allowed only when the value is integral (12.0, 1.2e3); the
// check is done on the decimal digits, never through float64, so no
// precision is lost and 1.0000000000000000001 is not mistaken for 1.
func parseJSONInt(n string) (int64, intStatus) {
	if !strings.ContainsAny(n, ".eE") {
		v, err := strconv.ParseInt(n, 10, 64)
		if err != nil {
			return 0, intOverflow
		}
		return v, intOK
	}
	neg := false
	s := n
	if s != "" && s[0] == '-' {
		neg = true
		s = s[1:]
	}
	// Split into integer digits, fraction digits and exponent.
	end := strings.IndexAny(s, "eE")
	expPart := ""
	if end >= 0 {
		expPart = s[end+1:]
		s = s[:end]
	}
	intPart, fracPart := s, ""
	if dot := strings.IndexByte(s, '.'); dot >= 0 {
		intPart, fracPart = s[:dot], s[dot+1:]
	}
	exp := 0
	if expPart != "" {
		expNeg := false
		switch expPart[0] {
		case '-':
			expNeg = true
			expPart = expPart[1:]
		case '+':
			expPart = expPart[1:]
		}
		expPart = strings.TrimLeft(expPart, "0")
		if len(expPart) > 9 {
			exp = 1e9 // beyond anything a 16 KiB message can balance out
		} else if expPart != "" {
			e, err := strconv.Atoi(expPart)
			if err != nil {
				return 0, intNotIntegral
			}
			exp = e
		}
		if expNeg {
			exp = -exp
		}
	}
	// The value is 0.D × 10^p, where D is the digit string.
	digits := intPart + fracPart
	p := len(intPart) + exp
	trimmed := strings.TrimLeft(digits, "0")
	p -= len(digits) - len(trimmed)
	trimmed = strings.TrimRight(trimmed, "0")
	if trimmed == "" {
		return 0, intOK
	}
	if p < len(trimmed) {
		return 0, intNotIntegral
	}
	if p > 19 {
		return 0, intOverflow
	}
	var buf [21]byte
	b := buf[:0]
	if neg {
		b = append(b, '-')
	}
	b = append(b, trimmed...)
	for range p - len(trimmed) {
		b = append(b, '0')
	}
	v, err := strconv.ParseInt(string(b), 10, 64)
	if err != nil {
		return 0, intOverflow
	}
	return v, intOK
}

// parseJSONFloat parses the JSON number text n; ok is false when the value
// is not finite in float64 (for example 1e400).
func parseJSONFloat(n string) (float64, bool) {
	f, err := strconv.ParseFloat(n, 64)
	if math.IsInf(f, 0) || math.IsNaN(f) {
		return 0, false
	}
	if err != nil {
		var ne *strconv.NumError
		if errors.As(err, &ne) && ne.Err == strconv.ErrRange {
			return f, true // underflow to a tiny or zero value
		}
		return 0, false
	}
	return f, true
}

// maxEcho is the most bytes of one input value a Reason may hold.
const maxEcho = 64

// clip returns at most maxEcho bytes of s (cut at a rune boundary, with
// "..." appended when cut), with every non-printable or invalid rune
// replaced by '?', so reasons are bounded and safe to log.
func clip(s string) string {
	cut := false
	if len(s) > maxEcho {
		n := maxEcho
		for n > 0 && !utf8.RuneStart(s[n]) {
			n--
		}
		s = s[:n]
		cut = true
	}
	clean := true
	for _, r := range s {
		if r == utf8.RuneError || !unicode.IsPrint(r) {
			clean = false
			break
		}
	}
	if clean && !cut {
		return s
	}
	var b strings.Builder
	b.Grow(len(s) + 3)
	for _, r := range s {
		if r == utf8.RuneError || !unicode.IsPrint(r) {
			b.WriteByte('?')
		} else {
			b.WriteRune(r)
		}
	}
	if cut {
		b.WriteString("...")
	}
	return b.String()
}

// quote returns clip(s) in double quotes, for reasons. It does not escape
// (clip already removed control characters), so the quoted form stays as
// short as the clipped input.
func quote(s string) string { return `"` + clip(s) + `"` }

// isSpace reports whether c is JSON insignificant whitespace (RFC 8259 §2).
func isSpace(c byte) bool { return c == ' ' || c == '\t' || c == '\n' || c == '\r' }

// skipSpace returns the index of the first non-whitespace byte of p at or
// after i.
func skipSpace(p []byte, i int) int {
	for i < len(p) && isSpace(p[i]) {
		i++
	}
	return i
}

// jsonText is the payload as bytes or as the walker's string copy.
type jsonText interface{ ~[]byte | ~string }

// valueEnd returns the index just past the JSON value starting at p[i]. p
// must already be known to be valid JSON; the loops are still bounded by
// len(p). It keeps no stack: nesting of any depth costs one linear pass.
func valueEnd[T jsonText](p T, i int) int {
	if i >= len(p) {
		return len(p)
	}
	switch p[i] {
	case '"':
		return stringEnd(p, i)
	case '{', '[':
		return containerEnd(p, i+1)
	default:
		j := i
		for j < len(p) && !isSpace(p[j]) && p[j] != ',' && p[j] != ']' && p[j] != '}' {
			j++
		}
		return j
	}
}

// containerEnd returns the index just past the object or array that p[i]
// lies in (i being between its values, not inside a string), scanning only
// what is left of it: a walk that gives up on a container at every level
// of its nesting still reads each byte once.
func containerEnd[T jsonText](p T, i int) int {
	depth := 1
	for j := i; j < len(p); j++ {
		switch p[j] {
		case '"':
			j = stringEnd(p, j) - 1
		case '{', '[':
			depth++
		case '}', ']':
			depth--
			if depth == 0 {
				return j + 1
			}
		}
	}
	return len(p)
}

// stringEnd returns the index just past the JSON string starting at p[i].
func stringEnd[T jsonText](p T, i int) int {
	for j := i + 1; j < len(p); j++ {
		switch p[j] {
		case '\\':
			j++
		case '"':
			return j + 1
		}
	}
	return len(p)
}

// span is a half-open byte range of the payload.
type span struct{ start, end int }

// splitArray appends to spans the spans of the elements of the JSON array
// that starts at p[i] == '['. It stops after limit+1 elements, so the
// caller can refuse an oversized array without scanning all of it into
// memory.
func splitArray(p []byte, i, limit int, spans []span) []span {
	j := skipSpace(p, i+1)
	if j < len(p) && p[j] == ']' {
		return spans
	}
	for j < len(p) {
		e := valueEnd(p, j)
		spans = append(spans, span{j, e})
		if len(spans) > limit {
			return spans
		}
		j = skipSpace(p, e)
		if j >= len(p) || p[j] != ',' {
			break
		}
		j = skipSpace(p, j+1)
	}
	return spans
}

// describeFirstByte names the JSON type that starts with c, for reasons.
func describeFirstByte(c byte) string {
	switch c {
	case '{':
		return "an object"
	case '[':
		return "an array"
	case '"':
		return "a string"
	case 't', 'f':
		return "a boolean"
	case 'n':
		return "null"
	}
	return "a number"
}

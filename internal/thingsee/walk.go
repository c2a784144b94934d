package thingsee

import (
	"encoding/json"
	"strings"
	"unsafe"
)

// The walker below is a token walk like json.Decoder.Token, without its cost
// (Decoder.Token took about 20 µs and 150 allocations per 12100 message,
// mostly boxing tokens and building scanner errors to find where numbers
// end). It runs on bytes utf8.Valid has accepted. It checks syntax as well
// as structure (strings without raw control characters, numbers by the
// JSON grammar, literals, commas and colons), so that a walk that reads a
// whole object without an error proves it is JSON: Validate then needs no
// json.Valid pass for it (the fuzz target checks that such a walk never
// accepts what json.Valid refuses). Anything else (a broken limit, whose
// skipping checks no syntax; a repeated nested key) leaves the judgement to
// json.Valid. It never indexes out of range, and reports errMalformed
// instead of guessing. Strings with escape sequences are unquoted by
// encoding/json itself, so both read every string the same way
// (reference_test.go walks with Decoder.Token and the fuzz target compares
// the two).
//
// The walker also checks the structural limits (limits.go) as it goes, so
// they cost no second pass. Its recursion is bounded by limits.depth: a
// value nested deeper is skipped by valueEnd, which keeps no stack. Once a
// limit is broken it skips the rest of every open container (containerEnd)
// and every later nested value, and keeps only the header fields, so a
// hostile message costs one linear scan and no tree.

// errMalformed means the walker met bytes that are not JSON.
var errMalformed = &walkError{"malformed JSON"}

// walkError is an error of the walker.
type walkError struct{ msg string }

// Error returns the message.
func (e *walkError) Error() string { return e.msg }

// walker reads JSON values from src (one message's bytes viewed as a string,
// so keys and values are substrings of it and cost no allocation).
type walker struct {
	src   string
	i     int
	lim   *limits
	depth int         // level of the innermost open object or array
	keys  int         // keys read so far, in all objects
	bad   *limitError // the first limit broken, nil while none is
}

// fail records a broken limit of a value unless one already is.
func (w *walker) fail(code, reason string) {
	if w.bad == nil {
		w.bad = &limitError{code: code, reason: reason, nested: true}
	}
}

// failKey records a broken limit of a key unless one already is. A key of
// the message object itself is not nested: it is the field.
func (w *walker) failKey(code, reason string) {
	if w.bad == nil {
		w.bad = &limitError{code: code, reason: reason, nested: w.depth > 1}
	}
}

// failWhole records a broken limit of the message as a whole.
func (w *walker) failWhole(code, reason string) {
	if w.bad == nil {
		w.bad = &limitError{code: code, reason: reason, whole: true}
	}
}

// walkObject reads the top-level members of the object in raw, in document
// order, within the structural limits lim. Nested objects must not repeat a
// key (a *dupKeyError says which); top-level repetitions are left to
// firstFoldDuplicate, which also sees keys that differ only in case. When a
// limit is broken it returns the header fields (headerOf) it read, for the
// rejection, with a *limitError (the first limit broken).
//
// The strings it returns alias raw (no copy: a message's raw bytes are a
// copy owned by its Result, never modified, and they stay alive as long
// as any of its strings), so raw must not change afterwards. members is
// appended to, so a caller can hand it a buffer on its stack. n is how many
// bytes of raw it read: when the error is nil and n is len(raw), raw is one
// JSON object and nothing else.
func walkObject(raw []byte, lim *limits, members []member) (_ []member, n int, _ error) {
	w := walker{src: unsafe.String(unsafe.SliceData(raw), len(raw)), lim: lim, depth: 1}
	w.space()
	if !w.consume('{') {
		return nil, w.i, errMalformed
	}
	w.space()
	if w.consume('}') {
		return members, w.i, nil
	}
	for {
		key, err := w.key()
		if err != nil {
			return nil, w.i, err
		}
		if len(members) == lim.objectKeys {
			w.failWhole(CodeTooManyKeys, reasonObjectKeys(lim.objectKeys, true))
		}
		val, err := w.value()
		if err != nil {
			if de, ok := err.(*dupKeyError); ok && de.top == "" {
				de.top = key
			}
			return nil, w.i, err
		}
		if w.bad != nil {
			w.bad.place(key)
		}
		if w.bad == nil || headerOf(key) >= 0 {
			members = append(members, member{key: key, val: val})
		}
		w.space()
		if w.consume(',') {
			w.space()
			continue
		}
		if w.consume('}') {
			if w.bad != nil {
				return members, w.i, w.bad
			}
			return members, w.i, nil
		}
		return nil, w.i, errMalformed
	}
}

func (w *walker) space() {
	for w.i < len(w.src) {
		switch w.src[w.i] {
		case ' ', '\t', '\n', '\r':
			w.i++
		default:
			return
		}
	}
}

// consume advances past c when it is the next byte.
func (w *walker) consume(c byte) bool {
	if w.i < len(w.src) && w.src[w.i] == c {
		w.i++
		return true
	}
	return false
}

// key reads an object key and the colon after it, and checks it against
// the limits on keys.
func (w *walker) key() (string, error) {
	if w.i >= len(w.src) || w.src[w.i] != '"' {
		return "", errMalformed
	}
	k, flaw, err := w.str()
	if err != nil {
		return "", err
	}
	w.keys++
	if w.bad == nil {
		switch {
		case w.keys > w.lim.keys:
			w.failWhole(CodeTooManyKeys, reasonKeys(w.lim.keys))
		case len(k) > w.lim.keyBytes:
			w.failKey(CodeKeyTooLong, reasonKeyTooLong(k, w.lim.keyBytes))
		case flaw.surrogate != 0:
			w.failKey(CodeKeyInvalid, reasonKeySurrogate(k, flaw.surrogate))
		default:
			if r := badKeyRune(k); r >= 0 {
				w.failKey(CodeKeyInvalid, reasonKeyRune(k, r))
			}
		}
	}
	w.space()
	if !w.consume(':') {
		return "", errMalformed
	}
	w.space()
	return k, nil
}

// str reads the string starting at src[i] == '"' and returns its value
// and, when it has escapes, what in them is not valid text.
func (w *walker) str() (string, textFlaw, error) {
	start := w.i
	escaped := false
	for j := start + 1; j < len(w.src); j++ {
		switch c := w.src[j]; {
		case c < 0x20: // a control character must be escaped
			return "", textFlaw{}, errMalformed
		case c == '\\':
			escaped = true
			j++
		case c == '"':
			w.i = j + 1
			if !escaped {
				return w.src[start+1 : j], textFlaw{}, nil
			}
			var s string
			if err := json.Unmarshal([]byte(w.src[start:j+1]), &s); err != nil {
				return "", textFlaw{}, errMalformed
			}
			return s, escapeFlaws(w.src[start+1 : j]), nil
		}
	}
	return "", textFlaw{}, errMalformed
}

// value reads the value starting at src[i].
func (w *walker) value() (jval, error) {
	if w.i >= len(w.src) {
		return jval{}, errMalformed
	}
	switch c := w.src[w.i]; c {
	case '"':
		s, flaw, err := w.str()
		if w.bad == nil {
			switch {
			case len(s) > w.lim.stringBytes:
				w.fail(CodeStringTooLong, reasonStringTooLong(len(s), w.lim.stringBytes))
			case flaw.surrogate != 0:
				w.fail(CodeStringInvalid, reasonStringSurrogate(flaw.surrogate))
			case flaw.nul:
				w.fail(CodeStringInvalid, reasonStringNUL)
			}
		}
		return jval{kind: jString, s: s}, err
	case '{', '[':
		if w.bad != nil || w.depth >= w.lim.depth {
			// Too deep, or a limit is broken already: skipped without
			// recursion, read as empty.
			if w.bad == nil {
				w.fail(CodeTooDeep, reasonTooDeep(w.lim.depth))
			}
			w.i = valueEnd(w.src, w.i)
			if c == '{' {
				return jval{kind: jObject}, nil
			}
			return jval{kind: jArray}, nil
		}
		w.depth++
		var v jval
		var err error
		if c == '{' {
			v, err = w.object()
		} else {
			v, err = w.array()
		}
		w.depth--
		return v, err
	case 't':
		return w.literal("true", jval{kind: jBool, s: "true"})
	case 'f':
		return w.literal("false", jval{kind: jBool, s: "false"})
	case 'n':
		return w.literal("null", jval{kind: jNull})
	default:
		if c != '-' && (c < '0' || c > '9') {
			return jval{}, errMalformed
		}
		j := w.i + 1
		for j < len(w.src) && strings.IndexByte("0123456789.eE+-", w.src[j]) >= 0 {
			j++
		}
		v := jval{kind: jNumber, s: w.src[w.i:j]}
		if !validNumber(v.s) {
			return jval{}, errMalformed
		}
		if n := j - w.i; n > w.lim.numberBytes && w.bad == nil {
			w.fail(CodeNumberTooLong, reasonNumberTooLong(n, w.lim.numberBytes))
		}
		w.i = j
		return v, nil
	}
}

func (w *walker) literal(lit string, v jval) (jval, error) {
	if !strings.HasPrefix(w.src[w.i:], lit) {
		return jval{}, errMalformed
	}
	w.i += len(lit)
	return v, nil
}

// object reads a nested object; its keys must be unique. Once a limit is
// broken the rest of it is skipped.
func (w *walker) object() (jval, error) {
	w.i++ // '{'
	v := jval{kind: jObject}
	w.space()
	if w.consume('}') {
		return v, nil
	}
	// Small objects (heartbeat entries have two keys) are checked for
	// repeated keys by a linear scan; large ones switch to a set, so a
	// crafted object with thousands of keys costs linear time.
	var seen map[string]struct{}
	for {
		key, err := w.key()
		if err != nil {
			return jval{}, err
		}
		if len(v.members) == w.lim.objectKeys {
			w.fail(CodeTooManyKeys, reasonObjectKeys(w.lim.objectKeys, false))
		}
		if w.bad != nil {
			w.i = containerEnd(w.src, w.i)
			return v, nil
		}
		if len(v.members) == 16 {
			seen = make(map[string]struct{}, 32)
			for _, m := range v.members {
				seen[m.key] = struct{}{}
			}
		}
		dup := false
		if seen != nil {
			_, dup = seen[key]
			seen[key] = struct{}{}
		} else {
			dup = hasKey(v.members, key)
		}
		if dup {
			return jval{}, &dupKeyError{key: key}
		}
		e, err := w.value()
		if err != nil {
			return jval{}, err
		}
		v.members = append(v.members, member{key: key, val: e})
		w.space()
		if w.consume(',') {
			w.space()
			continue
		}
		if w.consume('}') {
			return v, nil
		}
		return jval{}, errMalformed
	}
}

// array reads a nested array. Once a limit is broken the rest of it is
// skipped.
func (w *walker) array() (jval, error) {
	w.i++ // '['
	v := jval{kind: jArray}
	w.space()
	if w.consume(']') {
		return v, nil
	}
	for {
		e, err := w.value()
		if err != nil {
			return jval{}, err
		}
		v.elems = append(v.elems, e)
		if len(v.elems) == w.lim.arrayElems+1 {
			w.fail(CodeArrayTooLong, reasonArray(w.lim.arrayElems))
		}
		if w.bad != nil {
			w.i = containerEnd(w.src, w.i)
			return v, nil
		}
		w.space()
		if w.consume(',') {
			w.space()
			continue
		}
		if w.consume(']') {
			return v, nil
		}
		return jval{}, errMalformed
	}
}

// validNumber reports whether s is a JSON number (RFC 8259 §6):
// -?(0|[1-9][0-9]*)(.[0-9]+)?([eE][+-]?[0-9]+)?
func validNumber(s string) bool {
	i := 0
	digits := func() int {
		d := i
		for i < len(s) && s[i] >= '0' && s[i] <= '9' {
			i++
		}
		return i - d
	}
	if i < len(s) && s[i] == '-' {
		i++
	}
	switch {
	case i < len(s) && s[i] == '0':
		i++
	case digits() == 0:
		return false
	}
	if i < len(s) && s[i] == '.' {
		i++
		if digits() == 0 {
			return false
		}
	}
	if i < len(s) && (s[i] == 'e' || s[i] == 'E') {
		i++
		if i < len(s) && (s[i] == '+' || s[i] == '-') {
			i++
		}
		if digits() == 0 {
			return false
		}
	}
	return i == len(s)
}

package thingsee

import (
	"encoding/json"
	"strings"
)

// The walker below is a token walk like json.Decoder.Token, without its cost
// (Decoder.Token took about 20 µs and 150 allocations per 12100 message,
// mostly boxing tokens and building scanner errors to find where numbers
// end). It only ever runs on bytes that json.Valid and utf8.Valid have
// accepted, so it checks structure, not syntax; it still never indexes out
// of range, and reports errMalformed instead of guessing. Strings with escape
// sequences are unquoted by encoding/json itself, so both read every string
// the same way (reference_test.go walks with Decoder.Token and the fuzz
// target compares the two).

// errMalformed means the walker met bytes json.Valid should have refused.
var errMalformed = &walkError{"malformed JSON"}

// walkError is an error of the walker.
type walkError struct{ msg string }

// Error returns the message.
func (e *walkError) Error() string { return e.msg }

// walker reads JSON values from src (a string copy of one message, so keys
// and values are substrings of it and cost no allocation).
type walker struct {
	src string
	i   int
}

// walkObject reads the top-level members of the object in raw, in document
// order. Nested objects must not repeat a key (a *dupKeyError says which);
// top-level repetitions are left to firstFoldDuplicate, which also sees
// keys that differ only in case.
func walkObject(raw []byte) ([]member, error) {
	w := walker{src: string(raw)}
	w.space()
	if !w.consume('{') {
		return nil, errMalformed
	}
	members := make([]member, 0, 16)
	w.space()
	if w.consume('}') {
		return members, nil
	}
	for {
		key, err := w.key()
		if err != nil {
			return nil, err
		}
		val, err := w.value()
		if err != nil {
			if de, ok := err.(*dupKeyError); ok && de.top == "" {
				de.top = key
			}
			return nil, err
		}
		members = append(members, member{key: key, val: val})
		w.space()
		if w.consume(',') {
			w.space()
			continue
		}
		if w.consume('}') {
			return members, nil
		}
		return nil, errMalformed
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

// key reads an object key and the colon after it.
func (w *walker) key() (string, error) {
	if w.i >= len(w.src) || w.src[w.i] != '"' {
		return "", errMalformed
	}
	k, err := w.str()
	if err != nil {
		return "", err
	}
	w.space()
	if !w.consume(':') {
		return "", errMalformed
	}
	w.space()
	return k, nil
}

// str reads the string starting at src[i] == '"' and returns its value.
func (w *walker) str() (string, error) {
	start := w.i
	escaped := false
	for j := start + 1; j < len(w.src); j++ {
		switch w.src[j] {
		case '\\':
			escaped = true
			j++
		case '"':
			w.i = j + 1
			if !escaped {
				return w.src[start+1 : j], nil
			}
			var s string
			if err := json.Unmarshal([]byte(w.src[start:j+1]), &s); err != nil {
				return "", errMalformed
			}
			return s, nil
		}
	}
	return "", errMalformed
}

// value reads the value starting at src[i].
func (w *walker) value() (jval, error) {
	if w.i >= len(w.src) {
		return jval{}, errMalformed
	}
	switch c := w.src[w.i]; c {
	case '"':
		s, err := w.str()
		return jval{kind: jString, s: s}, err
	case '{':
		return w.object()
	case '[':
		return w.array()
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

// object reads a nested object; its keys must be unique.
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

// array reads a nested array.
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

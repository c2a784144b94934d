package thingsee

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"reflect"
	"slices"
	"strings"
	"testing"
)

// The production walker (walk.go) is a minimal tokenizer over bytes that
// json.Valid has already accepted. This file keeps a walker built on
// encoding/json's Decoder.Token as the reference: the tests and the fuzz
// target require both to read every message identically.

var errBadToken = errors.New("unexpected JSON token")

// refReadValue is the reference walker built on json.Decoder.Token: it reads one complete value from dec, which must be set to
// UseNumber. Keys of nested objects must be unique (exact comparison).
func refReadValue(dec *json.Decoder) (jval, error) {
	tok, err := dec.Token()
	if err != nil {
		return jval{}, err
	}
	switch t := tok.(type) {
	case string:
		return jval{kind: jString, s: t}, nil
	case json.Number:
		return jval{kind: jNumber, s: string(t)}, nil
	case bool:
		if t {
			return jval{kind: jBool, s: "true"}, nil
		}
		return jval{kind: jBool, s: "false"}, nil
	case nil:
		return jval{kind: jNull}, nil
	case json.Delim:
		switch t {
		case '[':
			v := jval{kind: jArray}
			for dec.More() {
				e, err := refReadValue(dec)
				if err != nil {
					return jval{}, err
				}
				v.elems = append(v.elems, e)
			}
			if _, err := dec.Token(); err != nil {
				return jval{}, err
			}
			return v, nil
		case '{':
			v := jval{kind: jObject}
			for dec.More() {
				kt, err := dec.Token()
				if err != nil {
					return jval{}, err
				}
				key, ok := kt.(string)
				if !ok {
					return jval{}, errBadToken
				}
				if hasKey(v.members, key) {
					return jval{}, &dupKeyError{key: key}
				}
				e, err := refReadValue(dec)
				if err != nil {
					return jval{}, err
				}
				v.members = append(v.members, member{key: key, val: e})
			}
			if _, err := dec.Token(); err != nil {
				return jval{}, err
			}
			return v, nil
		}
	}
	return jval{}, errBadToken
}

// refWalkObject is the json.Decoder.Token reference for walkObject: it reads
// the top-level members of the object in raw, in document order. Nested objects must not repeat a key; top-level repetitions are
// left to firstFoldDuplicate.
func refWalkObject(raw []byte) ([]member, error) {
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.UseNumber()
	tok, err := dec.Token()
	if err != nil {
		return nil, err
	}
	if d, ok := tok.(json.Delim); !ok || d != '{' {
		return nil, errBadToken
	}
	members := make([]member, 0, 16)
	for dec.More() {
		kt, err := dec.Token()
		if err != nil {
			return nil, err
		}
		key, ok := kt.(string)
		if !ok {
			return nil, errBadToken
		}
		val, err := refReadValue(dec)
		if err != nil {
			if de, ok := err.(*dupKeyError); ok {
				de.top = key
			}
			return nil, err
		}
		members = append(members, member{key: key, val: val})
	}
	if _, err := dec.Token(); err != nil {
		return nil, err
	}
	return members, nil
}

// sameWalk reports whether walkObject and the Decoder.Token reference read
// raw identically: the same members, or the same duplicate-key error. The
// walker runs without size limits; past text it refuses (unpaired
// surrogates, NUL) it must still read the header fields as the reference
// does.
func sameWalk(raw []byte) (bool, string) {
	got, _, gerr := walkObject(raw, &unlimited, []member{})
	want, werr := refWalkObject(raw)
	if _, ok := gerr.(*limitError); ok {
		// Text the walker refuses (unpaired surrogates, NUL): past it, it
		// keeps the header fields only, and their scalars must read as the
		// reference reads them. A nested repeated key past it is not seen.
		if _, dup := werr.(*dupKeyError); dup {
			return true, ""
		}
		if werr != nil {
			return false, fmt.Sprintf("errors differ: walker %v, reference %v", gerr, werr)
		}
		next := 0 // members are matched in document order
		for _, g := range got {
			i := slices.IndexFunc(want[next:], func(m member) bool { return m.key == g.key })
			if i >= 0 {
				i += next
				next = i + 1
			}
			// Objects and arrays past the refused text are skipped or cut.
			container := g.val.kind == jObject || g.val.kind == jArray
			if i < 0 || !reflect.DeepEqual(g, want[i]) && !(container && g.val.kind == want[i].val.kind) {
				return false, fmt.Sprintf("past a refused text, walker read %+v, reference read %+v", g, want)
			}
		}
		return true, ""
	}
	if gerr != nil || werr != nil {
		gd, gok := gerr.(*dupKeyError)
		wd, wok := werr.(*dupKeyError)
		if gok && wok && *gd == *wd {
			return true, ""
		}
		return false, fmt.Sprintf("errors differ: walker %v, reference %v", gerr, werr)
	}
	if !reflect.DeepEqual(got, want) {
		return false, fmt.Sprintf("walker read %+v, reference read %+v", got, want)
	}
	return true, ""
}

func TestThingseeWalkerMatchesDecoder(t *testing.T) {
	tests := []struct {
		name string
		raw  string
	}{
		{name: "empty object", raw: `{}`},
		{name: "whitespace everywhere", raw: " {\n\t\"a\" :\r 1 , \"b\":[ ] ,\"c\" : { } } "},
		{name: "scalars", raw: `{"s":"x","n":-0.5e+10,"t":true,"f":false,"z":null}`},
		{name: "escapes", raw: `{"q":"a\"b\\c\/d\b\f\n\r\t","u":"\u00e9\u20ac"}`},
		{name: "surrogate pair", raw: `{"emoji":"\ud83d\ude00"}`},
		{name: "lone surrogate", raw: `{"x":"\ud800","y":"\udc00z"}`},
		{name: "escaped key", raw: `{"te\u006dp":1,"\"":2}`},
		{name: "raw non-ASCII", raw: `{"é":"€","k":"日本"}`},
		{name: "nested", raw: `{"a":[1,[2,[3,{"b":{"c":[]}}]]],"d":{"e":{"f":null}}}`},
		{name: "nested duplicate", raw: `{"a":{"b":1,"b":2}}`},
		{name: "deep nested duplicate", raw: `{"a":[{"x":1},{"y":[{"z":1,"z":1}]}]}`},
		{name: "top-level duplicate is kept for firstFoldDuplicate", raw: `{"a":1,"a":2}`},
		{name: "numbers", raw: `{"a":0,"b":-0,"c":1E5,"d":1e-5,"e":123456789012345678901234567890}`},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if !json.Valid([]byte(tc.raw)) {
				t.Fatalf("test input is not valid JSON")
			}
			if ok, diff := sameWalk([]byte(tc.raw)); !ok {
				t.Error(diff)
			}
		})
	}
	for i, ex := range loadExamples(t, localExamples) {
		if ok, diff := sameWalk(ex.Message); !ok {
			t.Errorf("example %d: %s", i, diff)
		}
	}
}

func TestThingseeWalkerLargeNestedObject(t *testing.T) {
	var b strings.Builder
	b.WriteString(`{"x":{`)
	for i := range 3000 {
		if i > 0 {
			b.WriteByte(',')
		}
		fmt.Fprintf(&b, `"k%d":%d`, i, i)
	}
	unique := b.String() + `}}`
	if ok, diff := sameWalk([]byte(unique)); !ok {
		t.Fatal(diff)
	}
	dupAt := map[int]bool{3: true, 16: true, 17: true, 2999: true}
	for n := range dupAt {
		raw := b.String() + fmt.Sprintf(`,"k%d":0}}`, n)
		_, _, err := walkObject([]byte(raw), &unlimited, nil)
		if de, ok := err.(*dupKeyError); !ok || de.key != fmt.Sprintf("k%d", n) || de.top != "x" {
			t.Errorf("repeat of k%d: got %v, want a duplicate key error", n, err)
		}
	}
}

// unlimited are structural limits no valid JSON reaches (encoding/json
// refuses nesting beyond 10,000 levels), for comparing the walkers alone.
var unlimited = limits{depth: 1 << 30, objectKeys: 1 << 30, keys: 1 << 30, arrayElems: 1 << 30,
	keyBytes: 1 << 30, stringBytes: 1 << 30, numberBytes: 1 << 30}

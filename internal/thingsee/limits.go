package thingsee

import (
	"fmt"
	"unicode"
	"unicode/utf8"
)

// The structural limits hold for every message whatever its tsmId, so that
// a message of a tsmId without a schema (only its header is checked) cannot
// carry shapes a receiver chokes on: nesting thousands deep, unpaired
// surrogates or NUL in keys and strings, huge objects, arrays, keys,
// strings or numbers. The walker (walk.go) checks them as it reads each
// message, in the same single pass; README.md lists them.

// limits are a Validator's structural limits (Options.Max*).
type limits struct {
	depth       int // nesting levels, the message object being level 1
	objectKeys  int // keys per object
	keys        int // keys per message, all objects together
	arrayElems  int // elements per array
	keyBytes    int // bytes per key, unescaped
	stringBytes int // bytes per string value, unescaped
	numberBytes int // characters per number, as written
}

// newLimits returns the limits of o, with defaults for zero or negative
// fields and the depth capped at MaxMaxDepth.
func newLimits(o Options) limits {
	or := func(v, def int) int {
		if v <= 0 {
			return def
		}
		return v
	}
	return limits{
		depth:       min(or(o.MaxDepth, DefaultMaxDepth), MaxMaxDepth),
		objectKeys:  or(o.MaxObjectKeys, DefaultMaxObjectKeys),
		keys:        or(o.MaxKeys, DefaultMaxKeys),
		arrayElems:  or(o.MaxArrayElements, DefaultMaxArrayElements),
		keyBytes:    or(o.MaxKeyBytes, DefaultMaxKeyBytes),
		stringBytes: or(o.MaxStringBytes, DefaultMaxStringBytes),
		numberBytes: or(o.MaxNumberBytes, DefaultMaxNumberBytes),
	}
}

// limitError is the first structural limit a message breaks. The walk goes
// on past it (skipping, without recursion, what is nested too deep), so the
// message's header is still read for the rejection.
type limitError struct {
	code   string
	reason string
	// field is the top-level key the problem is in ("" when it is the
	// whole message's); walkObject sets it.
	field string
	// nested means the problem lies inside a top-level member's value: the
	// reason gets that member's key as its prefix.
	nested bool
	// whole means the problem is the message's as a whole (too many keys
	// in all or in the message object itself): it names no field.
	whole bool
	// placed is set once walkObject has named the field.
	placed bool
}

// Error returns the reason.
func (e *limitError) Error() string { return e.reason }

// place names the top-level member key that holds the problem, once.
func (e *limitError) place(key string) {
	if e.placed {
		return
	}
	e.placed = true
	if e.whole {
		return
	}
	e.field = clip(key)
	if e.nested {
		e.reason = e.field + ": " + e.reason
	}
}

// textFlaw is what makes an escaped JSON string not valid Unicode text.
type textFlaw struct {
	// surrogate is the first \u escape of an unpaired UTF-16 surrogate
	// (U+D800..U+DFFF), 0 when there is none. encoding/json and most
	// decoders turn it into U+FFFD; strict ones refuse the whole document.
	surrogate rune
	// nul reports a \u0000 escape.
	nul bool
}

// escapeFlaws scans the body of a JSON string (between its quotes, escapes
// not yet resolved, already known valid) for unpaired surrogate escapes
// and NUL escapes. A raw NUL or surrogate cannot occur: JSON forbids raw
// control characters and utf8.Valid refuses encoded surrogates.
func escapeFlaws(s string) textFlaw {
	var f textFlaw
	for i := 0; i < len(s); i++ {
		if s[i] != '\\' {
			continue
		}
		i++ // the escaped character; an escaped backslash is skipped whole
		if i >= len(s) || s[i] != 'u' {
			continue
		}
		r := hex4(s, i+1)
		if r < 0 {
			continue
		}
		i += 4
		switch {
		case r == 0:
			f.nul = true
		case r >= 0xD800 && r < 0xDC00:
			if i+6 < len(s) && s[i+1] == '\\' && s[i+2] == 'u' {
				if lo := hex4(s, i+3); lo >= 0xDC00 && lo <= 0xDFFF {
					i += 6 // a pair: one character
					continue
				}
			}
			if f.surrogate == 0 {
				f.surrogate = r
			}
		case r >= 0xDC00 && r <= 0xDFFF:
			if f.surrogate == 0 {
				f.surrogate = r
			}
		}
	}
	return f
}

// hex4 returns the value of the 4 hex digits at s[i:], or -1.
func hex4(s string, i int) rune {
	if i+4 > len(s) {
		return -1
	}
	var r rune
	for j := i; j < i+4; j++ {
		c := s[j]
		switch {
		case c >= '0' && c <= '9':
			c -= '0'
		case c >= 'a' && c <= 'f':
			c -= 'a' - 10
		case c >= 'A' && c <= 'F':
			c -= 'A' - 10
		default:
			return -1
		}
		r = r<<4 | rune(c)
	}
	return r
}

// badKeyRune returns the first rune of key that a key must not hold: a
// control character (Cc: C0, DEL, C1), a format character (Cf: bidirectional
// overrides, zero-width characters, the byte order mark, ...), or a line or
// paragraph separator. It returns -1 when there is none.
func badKeyRune(key string) rune {
	for i := 0; i < len(key); i++ {
		c := key[i]
		if c < 0x20 || c == 0x7F {
			return rune(c)
		}
		if c >= utf8.RuneSelf {
			for _, r := range key[i:] {
				if unicode.Is(unicode.Cc, r) || unicode.Is(unicode.Cf, r) || r == '\u2028' || r == '\u2029' {
					return r
				}
			}
			return -1
		}
	}
	return -1
}

// runeClass names the class of a refused key rune, for reasons.
func runeClass(r rune) string {
	switch {
	case unicode.Is(unicode.Cc, r):
		return "control character"
	case unicode.Is(unicode.Cf, r):
		return "format character"
	}
	return "separator"
}

// The reasons of the structural limits. A nested problem gets the
// top-level key as its prefix (limitError.place).

func reasonTooDeep(limit int) string {
	return fmt.Sprintf("nesting is deeper than the limit of %d levels", limit)
}

func reasonObjectKeys(limit int, top bool) string {
	if top {
		return fmt.Sprintf("the message holds more than %d keys, the limit per object", limit)
	}
	return fmt.Sprintf("an object holds more than %d keys, the limit per object", limit)
}

func reasonKeys(limit int) string {
	return fmt.Sprintf("the message holds more than %d keys in all its objects, the limit per message", limit)
}

func reasonArray(limit int) string {
	return fmt.Sprintf("an array holds more than %d elements, the limit per array", limit)
}

func reasonKeyTooLong(key string, limit int) string {
	return fmt.Sprintf("the key %s is %d bytes long; the limit is %d bytes", quote(key), len(key), limit)
}

func reasonKeySurrogate(key string, r rune) string {
	return fmt.Sprintf(`the key %s holds an unpaired UTF-16 surrogate \u%04x, which is not a character; keys must be valid Unicode`, quote(key), r)
}

func reasonKeyRune(key string, r rune) string {
	return fmt.Sprintf("the key %s holds the %s U+%04X; keys must not hold control or format characters", quote(key), runeClass(r), r)
}

func reasonStringTooLong(n, limit int) string {
	return fmt.Sprintf("a string is %d bytes long; the limit is %d bytes", n, limit)
}

func reasonStringSurrogate(r rune) string {
	return fmt.Sprintf(`a string holds an unpaired UTF-16 surrogate \u%04x, which is not a character; strings must be valid Unicode`, r)
}

const reasonStringNUL = `a string holds a NUL character (\u0000), which many receivers cannot store`

func reasonNumberTooLong(n, limit int) string {
	return fmt.Sprintf("a number is %d characters long; the limit is %d", n, limit)
}

// nestingDepth returns the deepest nesting of objects and arrays in p (a
// payload that may be invalid JSON), reading strings as JSON does. It keeps
// no stack, so any depth costs one linear pass; Validate uses it to name a
// payload that encoding/json refused for its depth.
func nestingDepth(p []byte) int {
	depth, deepest := 0, 0
	for i := 0; i < len(p); i++ {
		switch p[i] {
		case '"':
			i = stringEnd(p, i) - 1
		case '{', '[':
			depth++
			deepest = max(deepest, depth)
		case '}', ']':
			depth--
		}
	}
	return deepest
}

// Structural reports whether code is the rejection of a structural limit
// (depth, sizes, characters): such a message is not fit to be handed on as
// JSON, even to the tenant's own listing.
func Structural(code string) bool {
	switch code {
	case CodeTooDeep, CodeTooManyKeys, CodeArrayTooLong, CodeKeyTooLong, CodeKeyInvalid,
		CodeStringTooLong, CodeStringInvalid, CodeNumberTooLong:
		return true
	}
	return false
}

package api

import (
	"bytes"
	"encoding/json"
	"math/rand/v2"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/iotransit/iotransit/client"
)

// TestAPIDecodeRefusesDuplicateKeys: a body that names a member twice (at
// any depth, or in two spellings that the decoder would both take for one
// field) is refused with a sentence naming the key, instead of the last
// value silently winning.
func TestAPIDecodeRefusesDuplicateKeys(t *testing.T) {
	cases := []struct {
		name, body string
		wantErr    string // "" accepts
	}{
		{"distinct keys", `{"serial":"TSGW06ACM00000001","labels":{"a":"1","b":"2"}}`, ""},
		{"same key in sibling objects", `{"serial":"TSGW06ACM00000001","labels":{"a":"1"}}`, ""},
		{"top-level duplicate", `{"serial":"TSGW06ACM00000001","serial":"TSGW06ACM00000002"}`, `duplicate key "serial"`},
		{"nested duplicate", `{"serial":"TSGW06ACM00000001","labels":{"a":"1","a":"2"}}`, `duplicate key "a"`},
		{"duplicate in another spelling", `{"serial":"TSGW06ACM00000001","Serial":"TSGW06ACM00000002"}`, `duplicate key "Serial"`},
		{"duplicate by Unicode case folding", `{"serial":"TSGW06ACM00000001","ſerial":"TSGW06ACM00000002"}`, `duplicate key "ſerial"`},
		{"escaped duplicate", `{"serial":"TSGW06ACM00000001","\u0073erial":"TSGW06ACM00000002"}`, `duplicate key "serial"`},
		{"duplicate after a nested object", `{"labels":{"x":"1"},"serial":"A","labels":{}}`, `duplicate key "labels"`},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			r := httptest.NewRequest("POST", "/x", bytes.NewReader([]byte(tc.body)))
			r.Header.Set("Content-Type", "application/json")
			var v client.RegisterGatewayRequest
			err := decodeJSON(httptest.NewRecorder(), r, 4096, &v, false)
			switch {
			case tc.wantErr == "" && err != nil:
				t.Fatalf("refused: %v", err)
			case tc.wantErr != "" && err == nil:
				t.Fatalf("accepted %s as %+v", tc.body, v)
			case tc.wantErr != "":
				if !ErrJSON.Is(err) || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("refusal %v, want api.json_invalid with %q", err, tc.wantErr)
				}
			}
		})
	}
}

// duplicateKeyByTokens is the check for repeated keys as first written, on
// the decoder's tokens, with a map per object: slow, but plainly right. The
// single pass of duplicateKey must agree with it on every valid body.
func duplicateKeyByTokens(body []byte) (string, bool) {
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
		if len(stack) == 0 {
			return "", false
		}
		if top := &stack[len(stack)-1]; top.object {
			top.wantKey = true
		}
	}
}

// TestAPIDuplicateKeyAgreesWithTheTokenWalk: the single pass finds the
// same first repeated key as a walk of the decoder's tokens, on bodies
// written to catch a scanner out (keys in strings, escapes, case folding,
// nesting, a repeat in an outer object before one in an inner object) and
// on generated bodies.
func TestAPIDuplicateKeyAgreesWithTheTokenWalk(t *testing.T) {
	bodies := []string{
		`{}`, `[]`, `"x"`, `1`, `{"a":1}`, `{"a":1,"a":2}`, `{"a":1,"A":2}`, `{"k":1,"\u212a":2}`,
		`{"a":"{\"a\":1,\"a\":2}"}`, `{"a\"":1,"a\"":2}`, `{"a\\":1,"a\\\\":2}`, `{"\u0061":1,"a":2}`,
		`{"a":1,"b":{"c":1,"c":2},"a":3}`, `{"a":{"c":1,"c":2},"a":3}`, `{"a":[{"x":1},{"x":1}],"b":[{"y":1,"Y":2}]}`,
		`{"ſ":1,"S":2}`, `{"é":1,"É":2}`, `{"\ud800":1,"\udfff":2}`, "{\"\xff\":1,\"\xfe\":2}", `{"":1,"":2}`,
		`{"ab":1,"a":2,"b":3,"AB":4}`, ` { "a" : [ 1 , { "b" : 2 , "B" : 3 } ] , "a" : 4 } `,
		`[{"a":1},{"a":1,"b":{"a":1,"a":1}},{"z":1,"Z":1}]`,
	}
	rng := rand.New(rand.NewPCG(8, 8))
	names := []string{"a", "A", "b", "ab", "aB", "ſ", "s", "S", `\u0073`, "k", "\u212a", "é", "É", `\"`, "x y"}
	var gen func(depth int) string
	gen = func(depth int) string {
		switch n := rng.IntN(6); {
		case depth > 3 || n < 2:
			return []string{`1`, `"a"`, `null`, `"{\"a\":1}"`, `true`}[rng.IntN(5)]
		case n < 4:
			var parts []string
			for range rng.IntN(5) {
				parts = append(parts, `"`+names[rng.IntN(len(names))]+`":`+gen(depth+1))
			}
			return "{" + strings.Join(parts, ",") + "}"
		default:
			var parts []string
			for range rng.IntN(4) {
				parts = append(parts, gen(depth+1))
			}
			return "[" + strings.Join(parts, " , ") + "]"
		}
	}
	for range 3000 {
		bodies = append(bodies, gen(0))
	}
	dups := 0
	for _, b := range bodies {
		if !json.Valid([]byte(b)) {
			t.Fatalf("not valid JSON: %s", b)
		}
		wantKey, want := duplicateKeyByTokens([]byte(b))
		gotKey, got := duplicateKey([]byte(b))
		if got != want || gotKey != wantKey {
			t.Errorf("%s: got %q %v, want %q %v", b, gotKey, got, wantKey, want)
		}
		if want {
			dups++
		}
	}
	if dups < 100 || dups > len(bodies)-100 {
		t.Errorf("%d of %d bodies have a repeated key: the cases do not test both answers", dups, len(bodies))
	}
}

package api

import (
	"bytes"
	"encoding/json"
	"net/http/httptest"
	"testing"

	"github.com/iotransit/iotransit/client"
	"github.com/iotransit/iotransit/internal/fault"
)

// FuzzDecodeJSON feeds arbitrary bodies to the strict decoder for every
// request type: it never panics, refuses with a client fault (never an
// internal one) whose detail is bounded, and accepts only a single JSON
// object without unknown fields and without a key named twice.
func FuzzDecodeJSON(f *testing.F) {
	for _, s := range []string{
		`{"id":"acme"}`, `{"serial":"TSGW06DEV00000042","labels":{"a":"b"}}`, `{"scopes":["messages:read"],"ttl":"24h"}`,
		`{"token":"iet_x","csr":"-----BEGIN"}`, `{"id":"a"} {}`, `{"id":`, `[]`, `null`, `{"unknown":1}`, "\xff\xfe", `{"labels":null}`,
		`{"id":"a","id":"b"}`, `{"scopes":[1,2]}`, `   `, `{"ttl":"1e400h"}`,
		`{"id":"a","ID":"b"}`, `{"serial":"a","ſerial":"b"}`, `{"serial":"a","labels":{"k":"1","k":"2"}}`,
		`{"labels":{"k":{"x":1}},"labels":null}`, `{"scopes":[{"a":1,"a":2}]}`, `{"\u0069d":"a","id":"b"}`,
	} {
		f.Add([]byte(s), uint8(0))
	}
	f.Fuzz(func(t *testing.T, body []byte, kind uint8) {
		targets := []func() any{
			func() any { return &client.CreateTenantRequest{} },
			func() any { return &client.RegisterGatewayRequest{} },
			func() any { return &client.UpdateGatewayRequest{} },
			func() any { return &client.CreateEnrollmentTokenRequest{} },
			func() any { return &client.CreateAPIKeyRequest{} },
			func() any { return &client.CreateOAuth2ClientRequest{} },
			func() any { return &client.EnrollRequest{} },
			func() any { return &client.ReenrollRequest{} },
		}
		v := targets[int(kind)%len(targets)]()
		r := httptest.NewRequest("POST", "/x", bytes.NewReader(body))
		r.Header.Set("Content-Type", "application/json")
		w := httptest.NewRecorder()
		err := decodeJSON(w, r, 4096, v, false)
		if err == nil {
			var obj map[string]json.RawMessage
			if json.Unmarshal(bytes.TrimSpace(body), &obj) != nil {
				t.Fatalf("accepted a body that is not one JSON object: %q", body)
			}
			if keys, kept := countKeys(t, body); keys != kept {
				t.Fatalf("accepted a body that names a key twice (%d keys, %d distinct): %q", keys, kept, body)
			}
			return
		}
		fe, ok := fault.As(err)
		if !ok {
			t.Fatalf("not a fault: %v", err)
		}
		switch fe.Kind() {
		case fault.InvalidArgument, fault.TooLarge, fault.UnsupportedMedia:
		default:
			t.Fatalf("refusal of kind %v: %v", fe.Kind(), err)
		}
		if len(fe.PublicMessage()) > 300 {
			t.Fatalf("public message too long: %q", fe.PublicMessage())
		}
	})
}

// countKeys counts the object keys of body as written and as a generic
// decoder keeps them (a key named twice collapses there).
func countKeys(t *testing.T, body []byte) (written, kept int) {
	dec := json.NewDecoder(bytes.NewReader(body))
	var value func() int
	value = func() int {
		tok, err := dec.Token()
		if err != nil {
			t.Fatalf("tokens of an accepted body: %v", err)
		}
		n := 0
		switch tok {
		case json.Delim('{'):
			for dec.More() {
				if _, err := dec.Token(); err != nil {
					t.Fatalf("key of an accepted body: %v", err)
				}
				n += 1 + value()
			}
			_, _ = dec.Token()
		case json.Delim('['):
			for dec.More() {
				n += value()
			}
			_, _ = dec.Token()
		}
		return n
	}
	written = value()
	var v any
	if err := json.Unmarshal(body, &v); err != nil {
		t.Fatalf("decode accepted body: %v", err)
	}
	var walk func(any)
	walk = func(v any) {
		switch x := v.(type) {
		case map[string]any:
			kept += len(x)
			for _, e := range x {
				walk(e)
			}
		case []any:
			for _, e := range x {
				walk(e)
			}
		}
	}
	walk(v)
	return written, kept
}

// FuzzDuplicateKey: on every valid JSON body the single pass of
// duplicateKey names the same first repeated key as the walk of the
// decoder's tokens; on any other body it does not panic.
func FuzzDuplicateKey(f *testing.F) {
	for _, s := range []string{
		`{"a":1,"a":2}`, `{"a":{"b":1,"B":2},"a":3}`, `{"\u0073":1,"ſ":2}`, `[{"x":"}"},{"x":"{"}]`, `{"a\"":1}`, `{"a":`, `}}]]`,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		gotKey, got := duplicateKey(body)
		if !json.Valid(body) {
			return
		}
		if wantKey, want := duplicateKeyByTokens(body); got != want || gotKey != wantKey {
			t.Fatalf("%q: got %q %v, want %q %v", body, gotKey, got, wantKey, want)
		}
	})
}

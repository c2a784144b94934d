package thingsee

import (
	"bytes"
	"encoding/json"
	"strings"
	"testing"
	"time"
	"unicode/utf8"
)

// FuzzValidate checks invariants of Validate on arbitrary payloads: it never
// panics; every rejection has a code and a bounded reason; every accepted
// message is valid JSON that encoding/json reads the same way we did, and
// normalises to valid JSON without duplicate keys; and the outcomes cover
// every element of an array payload exactly once.
func FuzzValidate(f *testing.F) {
	for _, ex := range loadExamples(f, localExamples) {
		gw := exampleGateway(f, ex.Message)
		f.Add([]byte(ex.Message), gw)
		f.Add(withRealBody(f, ex.Message, defaultUploader), defaultUploader)
		f.Add([]byte("["+string(ex.Message)+", "+string(ex.Message)+"]"), gw)
	}
	for _, s := range []string{
		"[" + weather("") + "," + msg(13100, 10, `"moveCount":1`) + ", 7, [], {}]",
		weather(`"tsmGw":"` + testGateway + `"`),
		msg(11200, 10, heartbeats(2)),
		msg(17201, 10, `"dist":[[1,2,3,4],[1,2,3,4],[1,2,3,4],[1,2,3,4]]`),
		`{"tsmId":1110,"tsmEv":18,"tsmTuid":"` + testTuid + `","batl":40}`,
		msg(1220, 10, `"x":1,"X":2`),
		weather(`"te\u006dp":1`),
		`[]`, `[[]]`, `{}`, ` `, `"x"`, `{"a":1}{}`,
	} {
		f.Add([]byte(s), testGateway)
	}
	v := NewValidator(Options{
		Now:             func() time.Time { return time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC) },
		MaxMessages:     8,
		MaxMessageBytes: 4096,
	})
	f.Fuzz(func(t *testing.T, payload []byte, gateway string) {
		res := v.Validate(payload, gateway)
		for i := range res.Rejected {
			checkRejection(t, &res.Rejected[i])
		}
		for _, m := range res.Accepted {
			checkAccepted(t, m, gateway)
		}

		start := skipSpace(payload, 0)
		if json.Valid(payload) && utf8.Valid(payload) {
			compareWalkers(t, payload[start:])
		}
		switch {
		case len(res.Rejected) == 1 && res.Rejected[0].Index == -1:
			if len(res.Accepted) != 0 {
				t.Fatalf("payload refused but messages accepted: %+v", res)
			}
			if json.Valid(payload) && utf8.Valid(payload) && payload[start] == '{' {
				t.Fatalf("a valid object was refused as a payload: %+v", res.Rejected[0])
			}
		case !json.Valid(payload) || !utf8.Valid(payload):
			t.Fatalf("invalid JSON %q was not refused: %+v", payload, res)
		case payload[start] == '[':
			var elems []json.RawMessage
			if err := json.Unmarshal(payload, &elems); err != nil {
				t.Fatalf("valid array does not unmarshal: %v", err)
			}
			covered := make([]int, len(elems))
			for _, m := range res.Accepted {
				covered[m.Index]++
				if !bytes.Equal(m.Raw, elems[m.Index]) {
					t.Fatalf("element %d: Raw %q, want %q", m.Index, m.Raw, elems[m.Index])
				}
			}
			for _, r := range res.Rejected {
				covered[r.Index]++
			}
			for i, n := range covered {
				if n != 1 {
					t.Fatalf("element %d has %d outcomes: %+v", i, n, res)
				}
			}
		default:
			if n := len(res.Accepted) + len(res.Rejected); n != 1 {
				t.Fatalf("single object has %d outcomes", n)
			}
		}
	})
}

// compareWalkers requires walkObject and the Decoder.Token reference to
// read the object v, or every object element of the array v, identically.
func compareWalkers(t *testing.T, v []byte) {
	t.Helper()
	var objs []json.RawMessage
	switch v[0] {
	case '{':
		objs = append(objs, v)
	case '[':
		if err := json.Unmarshal(v, &objs); err != nil {
			t.Fatalf("valid array does not unmarshal: %v", err)
		}
	}
	for _, o := range objs {
		if o[0] != '{' {
			continue
		}
		if ok, diff := sameWalk(o); !ok {
			t.Fatalf("object %q: %s", o, diff)
		}
	}
}

// checkAccepted asserts what holds for every accepted message: encoding/json
// reads its header as Validate did (no parser differential), and Normalize
// yields valid JSON without duplicate keys.
func checkAccepted(t *testing.T, m Message, gateway string) {
	t.Helper()
	var h struct {
		TsmID   json.Number `json:"tsmId"`
		TsmEv   json.Number `json:"tsmEv"`
		TsmTuid string      `json:"tsmTuid"`
		TsmGw   *string     `json:"tsmGw"`
		TsmTs   json.Number `json:"tsmTs"`
	}
	dec := json.NewDecoder(bytes.NewReader(m.Raw))
	dec.UseNumber()
	if err := dec.Decode(&h); err != nil {
		t.Fatalf("accepted Raw %q does not decode: %v", m.Raw, err)
	}
	id, _ := parseJSONInt(string(h.TsmID))
	ev, _ := parseJSONInt(string(h.TsmEv))
	if int(id) != m.TsmID || int(ev) != m.TsmEv || h.TsmTuid != m.Tuid || string(h.TsmTs) != m.TsRaw {
		t.Fatalf("encoding/json reads %+v from %q, Validate read %+v", h, m.Raw, m)
	}
	if h.TsmGw != nil && *h.TsmGw != gateway {
		t.Fatalf("accepted tsmGw %q from gateway %q", *h.TsmGw, gateway)
	}
	if !ValidTUID(m.Tuid) {
		t.Fatalf("accepted malformed tuid %q", m.Tuid)
	}
	out := m.Normalize(CloudFields{ReceivedAt: time.Unix(1764273600, 5e6), Gateway: gateway, DeploymentGroupID: "prfi00x"})
	if _, err := objectKeys(out); err != nil {
		t.Fatalf("Normalize(%q) = %q: %v", m.Raw, out, err)
	}
	if !bytes.HasPrefix(out, m.Raw[:strings.LastIndexByte(string(m.Raw), '}')]) {
		t.Fatalf("Normalize(%q) = %q does not keep the original bytes", m.Raw, out)
	}
}

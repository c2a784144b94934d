package thingsee

import (
	"bytes"
	"encoding/json"
	"os"
	"strings"
	"testing"
	"time"
)

const (
	// sharedExamples is the source of truth beside the repository; it is
	// absent on a clean clone of the repository alone.
	sharedExamples = "../../../shared/testdata/thingsee/examples.json"
	// localExamples is the copy kept in the repository.
	localExamples = "testdata/examples.json"
	// defaultUploader uploads examples that carry no tsmGw.
	defaultUploader = "TSGW06DEV00000001"
)

// example is one entry of examples.json.
type example struct {
	Source    string          `json:"source"`
	Expect    string          `json:"expect"`
	Why       string          `json:"why"`
	Message   json.RawMessage `json:"message"`
	BodyValid bool            `json:"bodyValid"`
}

func loadExamples(tb testing.TB, path string) []example {
	tb.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		tb.Fatalf("read examples: %v", err)
	}
	var exs []example
	if err := json.Unmarshal(b, &exs); err != nil {
		tb.Fatalf("parse %s: %v", path, err)
	}
	if len(exs) == 0 {
		tb.Fatalf("%s holds no examples", path)
	}
	return exs
}

// exampleGateway is the gateway an example is uploaded as: the one named in
// its tsmGw, or defaultUploader when it has none.
func exampleGateway(tb testing.TB, msg json.RawMessage) string {
	tb.Helper()
	var h struct {
		TsmGw *string `json:"tsmGw"`
	}
	if err := json.Unmarshal(msg, &h); err != nil {
		tb.Fatalf("parse message: %v", err)
	}
	if h.TsmGw != nil {
		return *h.TsmGw
	}
	return defaultUploader
}

// expectedCode derives the rejection code an example's `why` describes.
func expectedCode(why string) string {
	switch {
	case strings.Contains(why, "placeholder tsmTuid"):
		return CodeTuidFormat
	case strings.Contains(why, "downlink command"):
		return CodeDownlinkField
	case strings.Contains(why, "header is missing"):
		return CodeFieldMissing
	}
	return ""
}

// withRealBody returns msg with tsmTuid (when present) replaced by a valid
// 17-character TUID of the same model prefix, and tsmGw (when present) set to
// uploader. Placeholder TUIDs without a model prefix get the R&D prefix
// XXXX00.
func withRealBody(tb testing.TB, msg json.RawMessage, uploader string) []byte {
	tb.Helper()
	dec := json.NewDecoder(bytes.NewReader(msg))
	dec.UseNumber() // keep numbers exact
	var m map[string]any
	if err := dec.Decode(&m); err != nil {
		tb.Fatalf("parse message: %v", err)
	}
	if tuid, ok := m["tsmTuid"].(string); ok {
		prefix := "XXXX00"
		if len(tuid) >= 6 && ValidTUID(tuid[:6]+"BODY0000001") {
			prefix = tuid[:6]
		}
		m["tsmTuid"] = prefix + "BODY0000001"
	}
	if _, ok := m["tsmGw"]; ok {
		m["tsmGw"] = uploader
	}
	b, err := json.Marshal(m)
	if err != nil {
		tb.Fatalf("marshal: %v", err)
	}
	return b
}

func TestThingseeExamples(t *testing.T) {
	for _, src := range []struct {
		name, path string
	}{
		{name: "repository copy", path: localExamples},
		{name: "shared", path: sharedExamples},
	} {
		t.Run(src.name, func(t *testing.T) {
			if _, err := os.Stat(src.path); src.path == sharedExamples && os.IsNotExist(err) {
				t.Skip("shared testdata is not beside the repository")
			}
			runExamples(t, loadExamples(t, src.path))
		})
	}
}

func runExamples(t *testing.T, exs []example) {
	live := NewValidator(Options{}) // the real clock
	// One bodyValid example has tsmTs 1892603998 (2029-12-22): the body
	// checks run with the clock at 2030-01-01 so that body is judged on its
	// properties, not on when the test runs. TestThingseeRejectsFarFutureTs
	// proves the real clock refuses it.
	at2030 := NewValidator(Options{Now: func() time.Time { return time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC) }})
	for i, ex := range exs {
		t.Run(strings.TrimPrefix(ex.Source, "https://")+"#"+itoa(i), func(t *testing.T) {
			gw := exampleGateway(t, ex.Message)
			res := live.Validate(ex.Message, gw)
			if n := len(res.Accepted) + len(res.Rejected); n != 1 {
				t.Fatalf("got %d outcomes for one object, want 1: %+v", n, res)
			}
			switch ex.Expect {
			case "accept":
				if len(res.Accepted) != 1 {
					t.Fatalf("want accept (%s), got rejection %+v", ex.Why, res.Rejected[0])
				}
				if !bytes.Equal(res.Accepted[0].Raw, ex.Message) {
					t.Errorf("Raw = %s, want the message bytes as uploaded", res.Accepted[0].Raw)
				}
			case "reject":
				if len(res.Rejected) != 1 {
					t.Fatalf("want reject (%s), got accept", ex.Why)
				}
				r := res.Rejected[0]
				if want := expectedCode(ex.Why); want != "" && r.Code != want {
					t.Errorf("Code = %s (%s), want %s because %s", r.Code, r.Reason, want, ex.Why)
				}
				if r.Index != 0 || r.Reason == "" {
					t.Errorf("rejection %+v: want Index 0 and a reason", r)
				}
			default:
				t.Fatalf("unknown expect %q", ex.Expect)
			}

			body := withRealBody(t, ex.Message, defaultUploader)
			bres := at2030.Validate(body, defaultUploader)
			if got := len(bres.Accepted) == 1; got != ex.BodyValid {
				t.Errorf("body %s: accepted = %v, want bodyValid %v; rejections %+v", body, got, ex.BodyValid, bres.Rejected)
			}
		})
	}
}

// TestThingseeExamplesCopyIsCurrent keeps testdata/examples.json equal to
// the shared file when both are present.
func TestThingseeExamplesCopyIsCurrent(t *testing.T) {
	shared, err := os.ReadFile(sharedExamples)
	if os.IsNotExist(err) {
		t.Skip("shared testdata is not beside the repository")
	}
	if err != nil {
		t.Fatal(err)
	}
	local, err := os.ReadFile(localExamples)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(shared, local) {
		t.Errorf("%s differs from %s; copy it again", localExamples, sharedExamples)
	}
}

func TestThingseeRejectsFarFutureTs(t *testing.T) {
	v := NewValidator(Options{}) // the real clock
	future := time.Now().Add(time.Hour).Unix()
	msg := []byte(`{"tsmId":1110,"tsmEv":10,"batl":50,"tsmTuid":"TSPR04BODY0000001","tsmTs":` + itoa(int(future)) + `}`)
	res := v.Validate(msg, defaultUploader)
	if len(res.Rejected) != 1 || res.Rejected[0].Code != CodeTsFuture || res.Rejected[0].Field != "tsmTs" {
		t.Fatalf("tsmTs one hour ahead: got %+v, want %s on tsmTs", res, CodeTsFuture)
	}

	// The 2029 documentation example, with a real TUID, is refused by the
	// real clock for as long as 2029-12-22 lies in the future.
	ts2029 := time.Unix(1892603998, 0)
	if time.Now().Add(DefaultMaxFutureSkew).After(ts2029) {
		t.Skip("the real clock has passed 2029-12-22")
	}
	for _, ex := range loadExamples(t, localExamples) {
		if !bytes.Contains(ex.Message, []byte("1892603998")) {
			continue
		}
		res := v.Validate(withRealBody(t, ex.Message, defaultUploader), defaultUploader)
		if len(res.Rejected) != 1 || res.Rejected[0].Code != CodeTsFuture {
			t.Errorf("2029 example with the real clock: got %+v, want %s", res, CodeTsFuture)
		}
		return
	}
	t.Fatal("no example with tsmTs 1892603998")
}

func itoa(i int) string {
	b, _ := json.Marshal(i)
	return string(b)
}

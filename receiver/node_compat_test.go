package receiver_test

import (
	"bytes"
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/iotransit/iotransit/internal/forward"
	"github.com/iotransit/iotransit/internal/thingsee"
	"github.com/iotransit/iotransit/receiver"
)

// TestReceiverRefusesAnEmptyKey checks that a Verifier made from an
// empty key (an unset environment variable, an ignored ParseSecret error)
// does not accept deliveries anyone can sign: HMAC with an empty key is no
// secret, so Verify must fail closed.
func TestReceiverRefusesAnEmptyKey(t *testing.T) {
	now := time.Unix(1_700_000_000, 0)
	ts := strconv.FormatInt(now.Unix(), 10)
	body := []byte(`[{"tsmId":12100,"tsmTs":1,"tsmTuid":"TSEN01ABC12345678"}]`)
	tests := []struct {
		name string
		key  []byte
	}{
		{name: "empty", key: []byte{}},
		{name: "nil", key: nil},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			v := receiver.NewVerifierKeys(tc.key)
			forged := receiver.Sign("msg_forged", now, body, []byte{}) // anyone can compute this
			err := v.VerifyAt(body, headers("msg_forged", ts, forged), now)
			if !errors.Is(err, receiver.ErrSignature) {
				t.Fatalf("a delivery signed with the empty key: %v, want ErrSignature", err)
			}
		})
	}
}

// TestReceiverDecodesEveryMessageTheNodeAccepts checks that a batch
// of messages the node accepted and delivers decodes: the node accepts an
// integral tsmId or tsmEv written with a fraction or an exponent (12.0,
// 1.2e3) and delivers its bytes unchanged, so DecodeBatch refusing one
// such message makes Handler answer 400 to the whole batch, which the node
// then retries until maxAge and dead-letters with every other message of
// it: one gateway's message stalls its tenant's webhook.
func TestReceiverDecodesEveryMessageTheNodeAccepts(t *testing.T) {
	now := time.Unix(1_800_000_000, 0)
	v := thingsee.NewValidator(thingsee.Options{Now: func() time.Time { return now }})
	tests := []struct {
		name    string
		id, ev  string
		wantKey string
	}{
		{name: "plain integers", id: "99100", ev: "10", wantKey: "TSEN01ABC12345678:99100:1700000000"},
		{name: "tsmId with a fraction", id: "99100.0", ev: "10", wantKey: "TSEN01ABC12345678:99100:1700000000"},
		{name: "tsmId with an exponent", id: "9.91e4", ev: "10", wantKey: "TSEN01ABC12345678:99100:1700000000"},
		{name: "tsmEv with an exponent", id: "99100", ev: "1e1", wantKey: "TSEN01ABC12345678:99100:1700000000"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			payload := `{"tsmId":` + tc.id + `,"tsmEv":` + tc.ev + `,"tsmTuid":"TSEN01ABC12345678","tsmTs":1700000000}`
			res := v.Validate([]byte(payload), "TSGW06ACM00000001")
			if len(res.Accepted) != 1 {
				t.Fatalf("the node refuses %s (%+v): not a case", payload, res.Rejected)
			}
			body := res.Accepted[0].Normalize(thingsee.CloudFields{ReceivedAt: now, Gateway: "TSGW06ACM00000001"})
			msgs, err := receiver.DecodeBatch(append(append([]byte("["), body...), ']'))
			if err != nil {
				t.Fatalf("a batch of a message the node accepted and delivers (%s): %v", body, err)
			}
			if got := msgs[0].Key(); got != tc.wantKey {
				t.Errorf("Key %q, want %q", got, tc.wantKey)
			}
		})
	}
}

// TestReceiverHandlerTakesWholeNumbersInAnyForm checks the consequence
// at the Handler: a signed batch whose second message has tsmEv 1e1 (which
// the node accepts as 10) is taken (204), not refused whole (400).
func TestReceiverHandlerTakesWholeNumbersInAnyForm(t *testing.T) {
	secret, key := newSecret(t)
	body := []byte(`[{"tsmId":12100,"tsmEv":10,"tsmTuid":"TSEN01ABC12345678","tsmTs":1700000000},` +
		`{"tsmId":12100,"tsmEv":1e1,"tsmTuid":"TSEN01ABC12345679","tsmTs":1700000000}]`)
	now := time.Now()
	var got int
	h := &receiver.Handler{Verifier: newVerifier(t, secret), Deliver: func(_ context.Context, d *receiver.Delivery) error {
		got = len(d.Messages)
		return nil
	}}
	r := httptest.NewRequest(http.MethodPost, "/hook", bytes.NewReader(body))
	r.Header = headers("msg_1", strconv.FormatInt(now.Unix(), 10), receiver.Sign("msg_1", now, body, key))
	w := httptest.NewRecorder()
	h.ServeHTTP(w, r)
	if w.Code != http.StatusNoContent || got != 2 {
		t.Fatalf("status %d (%s), %d messages delivered; want 204 and 2", w.Code, strings.TrimSpace(w.Body.String()), got)
	}
}

// TestReceiverTakesTheNodesLargestBatch ties Handler's default body limit
// to the node's largest batch: MaxMaxMessages messages of the largest size
// the validator accepts, each with the members the cloud adds (a generous
// 512 bytes), the array's punctuation and the HPKE framing. A batch the
// node may send must never be refused as too large (it would stall the
// integration until its max age).
func TestReceiverTakesTheNodesLargestBatch(t *testing.T) {
	largest := int64(forward.MaxMaxMessages)*int64(thingsee.DefaultMaxMessageBytes+512+1) + 1<<10
	if largest > receiver.DefaultMaxBody {
		t.Fatalf("the node's largest batch is %d bytes, DefaultMaxBody %d", largest, receiver.DefaultMaxBody)
	}
}

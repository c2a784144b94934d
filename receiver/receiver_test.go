package receiver_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	standardwebhooks "github.com/standard-webhooks/standard-webhooks/libraries/go"

	"github.com/iotransit/iotransit/internal/forward"
	"github.com/iotransit/iotransit/internal/forward/egress"
	"github.com/iotransit/iotransit/internal/forward/seal"
	"github.com/iotransit/iotransit/internal/forward/webhook"
	"github.com/iotransit/iotransit/receiver"
)

// The test vector of the Standard Webhooks specification and its reference
// libraries.
const (
	specSecret    = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
	specID        = "msg_p5jXN8AQM9LWM0D4loKWxJek"
	specTimestamp = "1614265330"
	specSignature = "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="
	specBody      = `{"test": 2432232314}`
)

// specNow is a minute after the vector was signed.
var specNow = time.Unix(1614265330, 0).Add(time.Minute)

func headers(id, ts, sig string) http.Header {
	h := http.Header{}
	for k, v := range map[string]string{receiver.HeaderID: id, receiver.HeaderTimestamp: ts, receiver.HeaderSignature: sig} {
		if v != "" {
			h.Set(k, v)
		}
	}
	return h
}

func newVerifier(t *testing.T, secrets ...string) *receiver.Verifier {
	t.Helper()
	v, err := receiver.NewVerifier(secrets...)
	if err != nil {
		t.Fatal(err)
	}
	return v
}

func newSecret(t *testing.T) (string, []byte) {
	t.Helper()
	k := make([]byte, 32)
	if _, err := rand.Read(k); err != nil {
		t.Fatal(err)
	}
	return "whsec_" + base64.StdEncoding.EncodeToString(k), k
}

// TestReceiverVerifySpecVector verifies the specification's example and
// refuses every alteration of it with the matching error.
func TestReceiverVerifySpecVector(t *testing.T) {
	v := newVerifier(t, specSecret)
	if err := v.VerifyAt([]byte(specBody), headers(specID, specTimestamp, specSignature), specNow); err != nil {
		t.Fatalf("the specification's example: %v", err)
	}
	other, _ := newSecret(t)
	tests := []struct {
		name     string
		verifier *receiver.Verifier
		id, ts   string
		sig      string
		body     string
		now      time.Time
		want     error
	}{
		{name: "tampered body", id: specID, ts: specTimestamp, sig: specSignature, body: `{"test": 2432232315}`, now: specNow, want: receiver.ErrSignature},
		{name: "other id", id: "msg_other", ts: specTimestamp, sig: specSignature, body: specBody, now: specNow, want: receiver.ErrSignature},
		{name: "other timestamp", id: specID, ts: "1614265331", sig: specSignature, body: specBody, now: specNow, want: receiver.ErrSignature},
		{name: "too old", id: specID, ts: specTimestamp, sig: specSignature, body: specBody, now: specNow.Add(5 * time.Minute), want: receiver.ErrTimestamp},
		{name: "from the future", id: specID, ts: specTimestamp, sig: specSignature, body: specBody, now: specNow.Add(-7 * time.Minute), want: receiver.ErrTimestamp},
		{name: "timestamp not a number", id: specID, ts: "yesterday", sig: specSignature, body: specBody, now: specNow, want: receiver.ErrTimestamp},
		{name: "no v1 entry", id: specID, ts: specTimestamp, sig: "v2," + strings.TrimPrefix(specSignature, "v1,"), body: specBody, now: specNow, want: receiver.ErrSignature},
		{name: "truncated signature", id: specID, ts: specTimestamp, sig: specSignature[:len(specSignature)-2], body: specBody, now: specNow, want: receiver.ErrSignature},
		{name: "no signature", id: specID, ts: specTimestamp, body: specBody, now: specNow, want: receiver.ErrMissingHeader},
		{name: "no id", ts: specTimestamp, sig: specSignature, body: specBody, now: specNow, want: receiver.ErrMissingHeader},
		{name: "no timestamp", id: specID, sig: specSignature, body: specBody, now: specNow, want: receiver.ErrMissingHeader},
		{name: "another secret", verifier: newVerifier(t, other), id: specID, ts: specTimestamp, sig: specSignature, body: specBody, now: specNow, want: receiver.ErrSignature},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			vv := v
			if tc.verifier != nil {
				vv = tc.verifier
			}
			err := vv.VerifyAt([]byte(tc.body), headers(tc.id, tc.ts, tc.sig), tc.now)
			if !errors.Is(err, tc.want) {
				t.Fatalf("VerifyAt = %v, want %v", err, tc.want)
			}
		})
	}
}

// TestReceiverVerifyTolerance accepts a timestamp within the tolerance on
// either side and honours a tolerance of the caller's.
func TestReceiverVerifyTolerance(t *testing.T) {
	v := newVerifier(t, specSecret)
	at := time.Unix(1614265330, 0)
	for _, d := range []time.Duration{-5 * time.Minute, 5 * time.Minute} {
		if err := v.VerifyAt([]byte(specBody), headers(specID, specTimestamp, specSignature), at.Add(d)); err != nil {
			t.Errorf("%s away: %v", d, err)
		}
	}
	v.Tolerance = time.Minute
	if err := v.VerifyAt([]byte(specBody), headers(specID, specTimestamp, specSignature), at.Add(2*time.Minute)); !errors.Is(err, receiver.ErrTimestamp) {
		t.Errorf("2 minutes away with a tolerance of 1: %v", err)
	}
}

// TestReceiverVerifyRotation accepts a request during a secret rotation:
// signed with both secrets (as the node does during the overlap) for a
// receiver that knows one of them, or with one for a receiver that knows
// both.
func TestReceiverVerifyRotation(t *testing.T) {
	oldSecret, oldKey := newSecret(t)
	newSecretValue, newKey := newSecret(t)
	body := []byte(`[{"tsmId":12100}]`)
	now := time.Now()
	ts := strconv.FormatInt(now.Unix(), 10)
	tests := []struct {
		name    string
		secrets []string
		signed  [][]byte
		ok      bool
	}{
		{name: "receiver knows the old, both sign", secrets: []string{oldSecret}, signed: [][]byte{newKey, oldKey}, ok: true},
		{name: "receiver knows the new, both sign", secrets: []string{newSecretValue}, signed: [][]byte{newKey, oldKey}, ok: true},
		{name: "receiver knows both, the new signs", secrets: []string{oldSecret, newSecretValue}, signed: [][]byte{newKey}, ok: true},
		{name: "receiver knows the new, the old signs", secrets: []string{newSecretValue}, signed: [][]byte{oldKey}, ok: false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			sig := receiver.Sign("msg_rot", now, body, tc.signed...)
			err := newVerifier(t, tc.secrets...).VerifyAt(body, headers("msg_rot", ts, sig), now)
			if tc.ok && err != nil || !tc.ok && !errors.Is(err, receiver.ErrSignature) {
				t.Fatalf("VerifyAt = %v, want ok %t", err, tc.ok)
			}
		})
	}
}

// TestReceiverVerifyAgreesWithReferenceAndNode cross-checks the signature
// with the Standard Webhooks reference library and with the node's signer,
// both ways, on random bodies.
func TestReceiverVerifyAgreesWithReferenceAndNode(t *testing.T) {
	secret, key := newSecret(t)
	ref, err := standardwebhooks.NewWebhook(secret)
	if err != nil {
		t.Fatal(err)
	}
	v := newVerifier(t, secret)
	for i := range 20 {
		body := make([]byte, i*37)
		_, _ = rand.Read(body)
		id := fmt.Sprintf("msg_%d", i)
		now := time.Now()
		ts := strconv.FormatInt(now.Unix(), 10)

		refSig, err := ref.Sign(id, now, body)
		if err != nil {
			t.Fatal(err)
		}
		if err := v.Verify(body, headers(id, ts, refSig)); err != nil {
			t.Fatalf("the reference library's signature does not verify: %v", err)
		}
		nodeSig := webhook.Sign([][]byte{key}, id, now, body)
		if err := v.Verify(body, headers(id, ts, nodeSig)); err != nil {
			t.Fatalf("the node's signature does not verify: %v", err)
		}
		ours := receiver.Sign(id, now, body, key)
		if ours != nodeSig || ours != refSig {
			t.Fatalf("Sign = %q, the node signs %q, the reference %q", ours, nodeSig, refSig)
		}
		if err := ref.Verify(body, headers(id, ts, ours)); err != nil {
			t.Fatalf("the reference library refuses Sign's signature: %v", err)
		}
		body = append(body, 'x')
		if err := v.Verify(body, headers(id, ts, nodeSig)); !errors.Is(err, receiver.ErrSignature) {
			t.Fatalf("a tampered body verified: %v", err)
		}
		if err := ref.Verify(body, headers(id, ts, ours)); err == nil {
			t.Fatal("the reference library verified a tampered body")
		}
	}
}

// TestReceiverParseSecret refuses what is not whsec_ and base64.
func TestReceiverParseSecret(t *testing.T) {
	tests := []struct {
		name, secret string
		ok           bool
	}{
		{name: "the specification's", secret: specSecret, ok: true},
		{name: "no prefix", secret: strings.TrimPrefix(specSecret, "whsec_")},
		{name: "not base64", secret: "whsec_!!!"},
		{name: "empty key", secret: "whsec_"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			k, err := receiver.ParseSecret(tc.secret)
			if tc.ok != (err == nil) || tc.ok && len(k) != 24 {
				t.Fatalf("ParseSecret(%q) = %d bytes, %v", tc.secret, len(k), err)
			}
			if _, err := receiver.NewVerifier(tc.secret); tc.ok != (err == nil) {
				t.Fatalf("NewVerifier(%q) = %v", tc.secret, err)
			}
		})
	}
	if _, err := receiver.NewVerifier(); err == nil {
		t.Error("a verifier without a secret was made")
	}
}

// TestReceiverOpensWhatTheNodeSeals round-trips through the node's sealer
// (internal/forward/seal) and the receiver's opener, and refuses bodies
// sealed to another key, altered, or not sealed.
func TestReceiverOpensWhatTheNodeSeals(t *testing.T) {
	privPEM, pubPEM, err := seal.GenerateKey()
	if err != nil {
		t.Fatal(err)
	}
	s, err := seal.ParsePublicKey(pubPEM)
	if err != nil {
		t.Fatal(err)
	}
	o, err := receiver.ParsePrivateKey(privPEM)
	if err != nil {
		t.Fatal(err)
	}
	if o.KeyID() != s.KeyID() {
		t.Fatalf("key ids differ: opener %s, sealer %s", o.KeyID(), s.KeyID())
	}
	plain := []byte(`[{"tsmId":12100,"tsmTuid":"TSEN01ABC12345678","tsmTs":1520416221}]`)
	sealed, err := s.Seal(plain)
	if err != nil {
		t.Fatal(err)
	}
	if len(sealed) != len(plain)+receiver.Overhead {
		t.Errorf("sealed %d bytes into %d, want %d", len(plain), len(sealed), len(plain)+receiver.Overhead)
	}
	got, err := o.Open(sealed)
	if err != nil || !bytes.Equal(got, plain) {
		t.Fatalf("Open = %q, %v", got, err)
	}
	if id, err := receiver.PayloadKeyID(sealed); err != nil || id != o.KeyID() {
		t.Errorf("PayloadKeyID = %s, %v; want %s", id, err, o.KeyID())
	}

	otherPriv, _, _ := receiver.GenerateKey()
	other, err := receiver.ParsePrivateKey(otherPriv)
	if err != nil {
		t.Fatal(err)
	}
	altered := bytes.Clone(sealed)
	altered[len(altered)-1] ^= 1
	tests := []struct {
		name   string
		opener *receiver.Opener
		input  []byte
		want   error
	}{
		{name: "another key", opener: other, input: sealed, want: receiver.ErrNotForThisKey},
		{name: "altered", opener: o, input: altered, want: receiver.ErrNotForThisKey},
		{name: "plain JSON", opener: o, input: plain, want: receiver.ErrMalformed},
		{name: "truncated", opener: o, input: sealed[:30], want: receiver.ErrMalformed},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if got, err := tc.opener.Open(tc.input); !errors.Is(err, tc.want) || got != nil {
				t.Fatalf("Open = %q, %v; want %v", got, err, tc.want)
			}
		})
	}
}

// TestReceiverParsePrivateKeyRefusals says what is wrong with a key.
func TestReceiverParsePrivateKeyRefusals(t *testing.T) {
	_, pubPEM, _ := receiver.GenerateKey()
	tests := []struct {
		name, pem, want string
	}{
		{name: "no PEM", pem: "not a key", want: "no PEM block found"},
		{name: "a public key", pem: string(pubPEM), want: "this is a public key"},
		{name: "another block", pem: string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: []byte{1}})), want: `got "CERTIFICATE"`},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, err := receiver.ParsePrivateKey([]byte(tc.pem))
			var ke *receiver.KeyError
			if !errors.As(err, &ke) || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("ParsePrivateKey = %v, want a *KeyError saying %q", err, tc.want)
			}
		})
	}
}

// TestReceiverMessageKey gives Thingsee's de-duplication key with tsmTs in
// the exact text it came in, and keeps each message as delivered.
func TestReceiverMessageKey(t *testing.T) {
	body := []byte(`[
		{"tsmId":12100,"tsmEv":10,"temp":21.3,"tsmTs":1520416221,"tsmTuid":"TSEN01ABC12345678","tsmCloudTs":1520416221.123,"tsmGw":"TSGW06ABC12345678"},
		{"tsmTuid":"TSPR04ABC12345678","tsmTs":1520416221.50,"tsmId":13100,"moveCount":12}
	]`)
	msgs, err := receiver.DecodeBatch(body)
	if err != nil {
		t.Fatal(err)
	}
	want := []string{"TSEN01ABC12345678:12100:1520416221", "TSPR04ABC12345678:13100:1520416221.50"}
	if len(msgs) != len(want) {
		t.Fatalf("%d messages, want %d", len(msgs), len(want))
	}
	for i, m := range msgs {
		if m.Key() != want[i] {
			t.Errorf("message %d: Key() = %q, want %q", i, m.Key(), want[i])
		}
	}
	if msgs[0].TsmCloudTs.String() != "1520416221.123" || msgs[0].TsmGw != "TSGW06ABC12345678" || msgs[0].TsmEv != 10 {
		t.Errorf("envelope of message 0: %+v", msgs[0])
	}
	if !strings.Contains(string(msgs[1].Raw), `"moveCount":12`) {
		t.Errorf("message 1 lost its measurements: %s", msgs[1].Raw)
	}
	again, err := json.Marshal(msgs)
	if err != nil {
		t.Fatal(err)
	}
	var compact bytes.Buffer
	_ = json.Compact(&compact, body)
	if string(again) != compact.String() {
		t.Errorf("marshalled again:\n%s\nwant\n%s", again, compact.String())
	}

	for _, bad := range []string{``, `{"tsmId":1}`, `[1,2]`, `[{"tsmId":"x"}]`, `[{"tsmId":1}`} {
		if _, err := receiver.DecodeBatch([]byte(bad)); err == nil {
			t.Errorf("DecodeBatch(%q) accepted", bad)
		}
	}
}

// collector is a Deliver func that keeps what it got.
type collector struct {
	mu   sync.Mutex
	got  []*receiver.Delivery
	fail error
}

func (c *collector) deliver(_ context.Context, d *receiver.Delivery) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.fail != nil {
		return c.fail
	}
	c.got = append(c.got, d)
	return nil
}

func (c *collector) failWith(err error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.fail = err
}

func (c *collector) deliveries() []*receiver.Delivery {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]*receiver.Delivery(nil), c.got...)
}

// TestReceiverHandlerTakesTheNodesDeliveries runs the node's webhook target
// (signing, and sealing when the integration has a key) against a Handler
// over real HTTPS: the batch arrives verified, opened and decoded, and a
// refusing Deliver makes the delivery fail so the node retries.
func TestReceiverHandlerTakesTheNodesDeliveries(t *testing.T) {
	privPEM, pubPEM, _ := seal.GenerateKey()
	sealer, _ := seal.ParsePublicKey(pubPEM)
	opener, _ := receiver.ParsePrivateKey(privPEM)
	batch := &forward.Batch{ID: "msg_0123456789abcdef01234567", Tenant: "acme", Integration: "hook", Attempt: 1, Messages: []forward.Message{
		{Seq: 1, ID: "m1", Body: []byte(`{"tsmId":12100,"tsmEv":10,"temp":21.3,"tsmTs":1520416221,"tsmTuid":"TSEN01ABC12345678","tsmCloudTs":1520416221.123}`)},
		{Seq: 2, ID: "m2", Body: []byte(`{"tsmId":13100,"tsmEv":10,"moveCount":12,"tsmTs":1520416222,"tsmTuid":"TSPR04ABC12345678","tsmCloudTs":1520416222.5}`)},
	}}
	tests := []struct {
		name   string
		sealer forward.Sealer
		opener *receiver.Opener
	}{
		{name: "plain"},
		{name: "sealed", sealer: sealer, opener: opener},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			secret, _ := newSecret(t)
			c := &collector{}
			h := &receiver.Handler{Verifier: newVerifier(t, secret), Opener: tc.opener, Deliver: c.deliver}
			srv := httptest.NewTLSServer(h)
			defer srv.Close()
			caPEM := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: srv.Certificate().Raw})
			tg, err := webhook.New(context.Background(), webhook.Config{
				URL: srv.URL + "/hook", Secrets: []webhook.Secret{{Value: secret}}, TLS: egress.TLSOptions{CAPEM: string(caPEM)},
				Sealer: tc.sealer, Policy: egress.Policy{AllowPrivate: true},
			})
			if err != nil {
				t.Fatal(err)
			}
			defer tg.Close()
			if err := tg.Deliver(context.Background(), batch); err != nil {
				t.Fatalf("Deliver: %v", err)
			}
			got := c.deliveries()
			if len(got) != 1 {
				t.Fatalf("%d deliveries, want 1", len(got))
			}
			d := got[0]
			if d.ID != batch.ID || d.Sealed != (tc.sealer != nil) || !bytes.Equal(d.Body, batch.JSON()) {
				t.Errorf("delivery %q sealed %t body %s", d.ID, d.Sealed, d.Body)
			}
			if len(d.Messages) != 2 || d.Messages[1].Key() != "TSPR04ABC12345678:13100:1520416222" {
				t.Errorf("messages: %+v", d.Messages)
			}
			c.failWith(errors.New("database down"))
			if err := tg.Deliver(context.Background(), batch); err == nil || !strings.Contains(err.Error(), "HTTP 500") {
				t.Errorf("a refusing Deliver: %v, want an HTTP 500 delivery error", err)
			}
		})
	}
}

// TestReceiverHandlerRefusals answers each bad request with its status and
// never calls Deliver.
func TestReceiverHandlerRefusals(t *testing.T) {
	secret, key := newSecret(t)
	privPEM, pubPEM, _ := receiver.GenerateKey()
	sealer, _ := receiver.ParsePublicKey(pubPEM)
	opener, _ := receiver.ParsePrivateKey(privPEM)
	good := []byte(`[{"tsmId":12100,"tsmTs":1,"tsmTuid":"TSEN01ABC12345678"}]`)
	sealedGood, _ := sealer.Seal(good)
	now := time.Now()
	signed := func(body []byte) http.Header {
		return headers("msg_1", strconv.FormatInt(now.Unix(), 10), receiver.Sign("msg_1", now, body, key))
	}
	tests := []struct {
		name   string
		method string
		opener *receiver.Opener
		header http.Header
		body   []byte
		status int
	}{
		{name: "GET", method: http.MethodGet, header: signed(good), body: good, status: http.StatusMethodNotAllowed},
		{name: "unsigned", header: http.Header{}, body: good, status: http.StatusUnauthorized},
		{name: "forged", header: signed([]byte("[]")), body: good, status: http.StatusUnauthorized},
		{name: "not a batch", header: signed([]byte(`{"a":1}`)), body: []byte(`{"a":1}`), status: http.StatusBadRequest},
		{name: "too large", header: signed(bytes.Repeat([]byte(" "), 2048)), body: bytes.Repeat([]byte(" "), 2048), status: http.StatusRequestEntityTooLarge},
		{name: "sealed without a key", header: sealedHeader(signed(sealedGood)), body: sealedGood, status: http.StatusBadRequest},
		{name: "plain to a sealed receiver", opener: opener, header: signed(good), body: good, status: http.StatusBadRequest},
		{name: "sealed to another key", opener: otherOpener(t), header: sealedHeader(signed(sealedGood)), body: sealedGood, status: http.StatusBadRequest},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			c := &collector{}
			h := &receiver.Handler{Verifier: newVerifier(t, secret), Opener: tc.opener, MaxBody: 1024, Deliver: c.deliver}
			method := tc.method
			if method == "" {
				method = http.MethodPost
			}
			r := httptest.NewRequest(method, "/hook", bytes.NewReader(tc.body))
			r.Header = tc.header
			w := httptest.NewRecorder()
			h.ServeHTTP(w, r)
			if w.Code != tc.status {
				b, _ := io.ReadAll(w.Body)
				t.Fatalf("status %d (%s), want %d", w.Code, b, tc.status)
			}
			if n := len(c.deliveries()); n != 0 {
				t.Fatalf("Deliver called %d times", n)
			}
		})
	}
}

func sealedHeader(h http.Header) http.Header {
	h.Set(receiver.HeaderEncryption, "hpke")
	return h
}

func otherOpener(t *testing.T) *receiver.Opener {
	t.Helper()
	priv, _, err := receiver.GenerateKey()
	if err != nil {
		t.Fatal(err)
	}
	o, err := receiver.ParsePrivateKey(priv)
	if err != nil {
		t.Fatal(err)
	}
	return o
}

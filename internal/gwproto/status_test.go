package gwproto_test

import (
	"bytes"
	"crypto/ecdh"
	"encoding/base64"
	"errors"
	"strings"
	"testing"

	"github.com/iotransit/iotransit/internal/gwproto"
	"github.com/iotransit/iotransit/receiver"
)

func newKey(t *testing.T) *ecdh.PrivateKey {
	t.Helper()
	k, err := ecdh.X25519().GenerateKey(nil)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

func TestParseStatus(t *testing.T) {
	pub := base64.StdEncoding.EncodeToString(newKey(t).PublicKey().Bytes())
	tests := []struct {
		name    string
		payload string
		wantErr string
	}{
		{name: "full", payload: `{"agentVersion":"1.0","firmwareVersion":"2.1","slot":"b","queueDepth":3,"queueDropped":1,"mesh":{"accepted":10,"dropped":{"replay":2}},"keyDeliveryKey":"` + pub + `","time":"2026-12-07T10:00:00Z"}`},
		{name: "minimal", payload: `{"agentVersion":"1.0","queueDepth":0,"queueDropped":0,"mesh":{"accepted":0},"time":"2026-12-07T10:00:00Z"}`},
		{name: "unknown field", payload: `{"agentVersion":"1.0","extra":1}`, wantErr: "unknown field"},
		{name: "not json", payload: `nope`, wantErr: "invalid"},
		{name: "trailing data", payload: `{"agentVersion":"1.0"} {}`, wantErr: "after the JSON"},
		{name: "bad slot", payload: `{"slot":"c"}`, wantErr: "slot"},
		{name: "negative depth", payload: `{"queueDepth":-1}`, wantErr: "negative"},
		{name: "unknown drop reason", payload: `{"mesh":{"accepted":1,"dropped":{"cosmic_rays":1}}}`, wantErr: "unknown reason"},
		{name: "short key", payload: `{"keyDeliveryKey":"AAAA"}`, wantErr: "keyDeliveryKey"},
		{name: "low-order key", payload: `{"keyDeliveryKey":"` + base64.StdEncoding.EncodeToString(make([]byte, 32)) + `"}`, wantErr: "keyDeliveryKey"},
		{name: "oversized", payload: `{"agentVersion":"` + strings.Repeat("x", gwproto.MaxStatusBytes) + `"}`, wantErr: "at most"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := gwproto.ParseStatus([]byte(tt.payload))
			switch {
			case tt.wantErr == "" && err != nil:
				t.Fatalf("ParseStatus: %v", err)
			case tt.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tt.wantErr)):
				t.Fatalf("ParseStatus error %v, want one containing %q", err, tt.wantErr)
			}
		})
	}
}

func TestSealedKeysOpenOnlyWithTheGatewaysKey(t *testing.T) {
	a, b := newKey(t), newKey(t)
	plain := []byte(`{"networkId":1,"version":1,"keys":[]}`)
	sealed, err := gwproto.SealKeys(a.PublicKey().Bytes(), plain)
	if err != nil {
		t.Fatal(err)
	}
	if bytes.Contains(sealed, plain) {
		t.Fatal("the sealed payload contains the plaintext")
	}
	got, err := gwproto.OpenKeys(a, sealed)
	if err != nil || !bytes.Equal(got, plain) {
		t.Fatalf("OpenKeys with A's key = %q, %v", got, err)
	}
	if _, err := gwproto.OpenKeys(b, sealed); !errors.Is(err, receiver.ErrNotForThisKey) {
		t.Fatalf("OpenKeys with B's key: %v, want ErrNotForThisKey", err)
	}
	if _, err := gwproto.SealKeys(make([]byte, 31), plain); err == nil {
		t.Fatal("SealKeys took a 31-byte key")
	}
}

// BenchmarkSealKeys is the cloud's cost per gateway of a key delivery: one
// HPKE seal of a two-epoch key set.
func BenchmarkSealKeys(b *testing.B) {
	k, err := ecdh.X25519().GenerateKey(nil)
	if err != nil {
		b.Fatal(err)
	}
	plain := []byte(`{"networkId":11259375,"version":3,"keys":[{"epoch":2,"key":"AAECAwQFBgcICQoLDA0ODw==","notAfter":"2026-12-08T10:00:00Z"},{"epoch":3,"key":"EBESExQVFhcYGRobHB0eHw=="}]}`)
	pub := k.PublicKey().Bytes()
	b.ReportAllocs()
	for b.Loop() {
		if _, err := gwproto.SealKeys(pub, plain); err != nil {
			b.Fatal(err)
		}
	}
}

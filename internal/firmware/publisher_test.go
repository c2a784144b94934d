package firmware_test

import (
	"crypto/ed25519"
	"encoding/hex"
	"encoding/json"
	"testing"
	"time"

	"github.com/sigstore/sigstore/pkg/signature"
	"github.com/theupdateframework/go-tuf/v2/metadata"

	"github.com/iotransit/iotransit/client"
	"github.com/iotransit/iotransit/internal/firmware"
	"github.com/iotransit/iotransit/internal/firmware/firmwaretest"
	"github.com/iotransit/iotransit/internal/gwproto"
)

// signedTargets returns targets metadata holding the target of image for
// TSGW06 version, signed by key (unsigned when key is nil).
func signedTargets(t *testing.T, image []byte, version string, key ed25519.PrivateKey) []byte {
	t.Helper()
	m := metadata.Targets(time.Now().AddDate(0, 1, 0).UTC().Truncate(time.Second))
	name := gwproto.FirmwareTarget("TSGW06", version)
	tf, err := metadata.TargetFile().FromBytes(name, image, "sha256")
	if err != nil {
		t.Fatal(err)
	}
	custom, _ := json.Marshal(gwproto.FirmwareCustom{Version: version, Model: "TSGW06"})
	raw := json.RawMessage(custom)
	tf.Custom = &raw
	m.Signed.Targets[name] = tf
	if key != nil {
		s, err := signature.LoadED25519Signer(key)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := m.Sign(s); err != nil {
			t.Fatal(err)
		}
	}
	b, err := m.ToBytes(false)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// TestPublisherSignsOnlyTargetsItSignedBefore: the publisher takes the
// current targets from the server and signs the next version with the
// offline targets key. A server that is compromised (the online keys'
// home) must not get a target of its own signed that way: current targets
// not signed by the targets key are refused.
func TestPublisherSignsOnlyTargetsItSignedBefore(t *testing.T) {
	tk := ed25519.NewKeyFromSeed(make([]byte, ed25519.SeedSize))
	_, evil, _ := ed25519.GenerateKey(nil)
	exp := time.Now().AddDate(0, 1, 0)
	good := signedTargets(t, []byte("firmware 1.0.0"), "1.0.0", tk)
	// The server's own target, in metadata whose signature no longer
	// covers it, or signed by a key of its own.
	var injected map[string]any
	if err := json.Unmarshal(good, &injected); err != nil {
		t.Fatal(err)
	}
	other := signedTargets(t, []byte("evil image"), "9.9.9", nil)
	var o map[string]any
	_ = json.Unmarshal(other, &o)
	injected["signed"].(map[string]any)["targets"].(map[string]any)["TSGW06-9.9.9"] =
		o["signed"].(map[string]any)["targets"].(map[string]any)["TSGW06-9.9.9"]
	tampered, _ := json.Marshal(injected)
	tests := []struct {
		name    string
		current []byte
		ok      bool
	}{
		{name: "signed by the targets key", current: good, ok: true},
		{name: "a target added after the signature", current: tampered},
		{name: "signed by another key", current: signedTargets(t, []byte("evil image"), "9.9.9", evil)},
		{name: "unsigned", current: other},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := firmware.AddTarget(tt.current, []byte("firmware 1.1.0"), "TSGW06", "1.1.0", exp, tk)
			if (err == nil) != tt.ok {
				t.Errorf("AddTarget: err = %v, want ok %v", err, tt.ok)
			}
			_, err = firmware.Resign(tt.current, exp, tk)
			if (err == nil) != tt.ok {
				t.Errorf("Resign: err = %v, want ok %v", err, tt.ok)
			}
		})
	}
}

// onlineKey returns a TUF key as the server lists its online keys.
func onlineKey(t *testing.T) client.TUFKey {
	t.Helper()
	pub, _, _ := ed25519.GenerateKey(nil)
	k, err := metadata.KeyFromPublicKey(pub)
	if err != nil {
		t.Fatal(err)
	}
	id, _ := k.ID()
	return client.TUFKey{KeyID: id, KeyType: k.Type, Scheme: k.Scheme, KeyVal: client.TUFKeyValue{Public: hex.EncodeToString(pub)}}
}

// TestPublisherRotatesOnlyARootItsKeySigned: rotate-root takes the current
// root from the server, reads the targets key to follow from it, and signs
// the next root with the current root key. A root the current root key
// did not sign (a compromised server's own, naming its own targets key) is
// refused.
func TestPublisherRotatesOnlyARootItsKeySigned(t *testing.T) {
	rk, tk := firmwaretest.Key(t), firmwaretest.Key(t)
	evilRoot, evilTargets := firmwaretest.Key(t), firmwaretest.Key(t)
	online := client.FirmwareOnlineKeys{Snapshot: onlineKey(t), Timestamp: onlineKey(t)}
	exp := time.Now().AddDate(1, 0, 0)
	good, _, err := firmware.NewRepository(rk, tk, online, exp, exp)
	if err != nil {
		t.Fatal(err)
	}
	evil, _, err := firmware.NewRepository(evilRoot, evilTargets, online, exp, exp)
	if err != nil {
		t.Fatal(err)
	}
	newRoot := firmwaretest.Key(t)
	tests := []struct {
		name    string
		current []byte
		ok      bool
	}{
		{name: "signed by the current root key", current: good, ok: true},
		{name: "signed by another key", current: evil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := firmware.NextRoot(tt.current, rk, newRoot, tk.Public().(ed25519.PublicKey), exp)
			if (err == nil) != tt.ok {
				t.Errorf("NextRoot: err = %v, want ok %v", err, tt.ok)
			}
		})
	}
}

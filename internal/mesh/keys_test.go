package mesh_test

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/iotransit/iotransit/internal/mesh"
)

// b64 is the base64 of keyBytes(epoch).
func b64(epoch byte) string {
	switch epoch {
	case 1:
		return "EREREREREREREREREREREQ=="
	case 2:
		return "EhISEhISEhISEhISEhISEg=="
	}
	panic("no key")
}

func TestMeshParseKeySet(t *testing.T) {
	for _, tc := range []struct {
		name    string
		json    string
		wantErr string
	}{
		{"current and previous", `{"networkId":11259171,"version":2,"keys":[{"epoch":2,"key":"` + b64(2) + `"},{"epoch":1,"key":"` + b64(1) + `","notAfter":"2026-09-01T13:00:00Z"}]}`, ""},
		{"current only", `{"networkId":1,"version":1,"keys":[{"epoch":1,"key":"` + b64(1) + `"}]}`, ""},
		{"no network", `{"networkId":0,"version":1,"keys":[{"epoch":1,"key":"` + b64(1) + `"}]}`, "networkId 0"},
		{"no keys", `{"networkId":1,"version":1,"keys":[]}`, "no keys"},
		{"epoch 0", `{"networkId":1,"version":1,"keys":[{"epoch":0,"key":"` + b64(1) + `"}]}`, "epoch 0"},
		{"short key", `{"networkId":1,"version":1,"keys":[{"epoch":1,"key":"AAEC"}]}`, "16 bytes"},
		{"unset key", `{"networkId":1,"version":1,"keys":[{"epoch":1,"key":"/////////////////////w=="}]}`, "unset"},
		{"epoch twice", `{"networkId":1,"version":1,"keys":[{"epoch":1,"key":"` + b64(1) + `"},{"epoch":1,"key":"` + b64(2) + `","notAfter":"2026-09-01T13:00:00Z"}]}`, "twice"},
		{"two current keys", `{"networkId":1,"version":1,"keys":[{"epoch":2,"key":"` + b64(2) + `"},{"epoch":1,"key":"` + b64(1) + `"}]}`, "exactly one"},
		{"the current key not the newest", `{"networkId":1,"version":1,"keys":[{"epoch":1,"key":"` + b64(1) + `"},{"epoch":2,"key":"` + b64(2) + `","notAfter":"2026-09-01T13:00:00Z"}]}`, "exactly one"},
		{"unknown field", `{"networkId":1,"version":1,"keys":[{"epoch":1,"key":"` + b64(1) + `"}],"netId":2}`, "unknown field"},
		{"trailing data", `{"networkId":1,"version":1,"keys":[{"epoch":1,"key":"` + b64(1) + `"}]} {}`, "after the JSON"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ks, err := mesh.ParseKeySet([]byte(tc.json))
			if tc.wantErr == "" {
				if err != nil {
					t.Fatal(err)
				}
				if _, k, err := ks.Current(); err != nil || k == nil {
					t.Fatalf("Current: %v", err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
				t.Fatalf("ParseKeySet: %v, want an error with %q", err, tc.wantErr)
			}
		})
	}
}

func TestMeshKeyFileRoundTripAndMode(t *testing.T) {
	graceEnd := time.Date(2026, 9, 1, 13, 0, 0, 0, time.UTC)
	ks := mesh.KeySet{NetworkID: 7, Version: 4, Keys: []mesh.EpochKey{
		{Epoch: 2, Key: keyBytes(2)}, {Epoch: 1, Key: keyBytes(1), NotAfter: &graceEnd},
	}}
	b, err := ks.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(b), `"key": "`+b64(2)+`"`) || !strings.Contains(string(b), `"notAfter": "2026-09-01T13:00:00Z"`) {
		t.Fatalf("key file:\n%s", b)
	}
	path := filepath.Join(t.TempDir(), "mesh-keys.json")
	if err := os.WriteFile(path, b, 0o600); err != nil {
		t.Fatal(err)
	}
	got, err := mesh.ReadKeyFile(path)
	if err != nil {
		t.Fatal(err)
	}
	epoch, _, err := got.Current()
	if err != nil || epoch != 2 || got.NetworkID != 7 || got.Version != 4 || !got.Keys[1].NotAfter.Equal(graceEnd) {
		t.Fatalf("read %+v, current %d, %v", got, epoch, err)
	}
	if err := os.Chmod(path, 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := mesh.ReadKeyFile(path); err == nil || !strings.Contains(err.Error(), "0600") {
		t.Fatalf("a key file readable by others: %v", err)
	}
	if _, err := (&mesh.KeySet{NetworkID: 7}).Marshal(); err == nil {
		t.Fatal("Marshal wrote an invalid set")
	}
}

package pkcs11tok_test

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/iotransit/iotransit/internal/pkcs11tok"
)

var testErrors = pkcs11tok.Errors{Prefix: "test"}

// TestValidate: every missing setting is named at once, with the caller's
// prefix and the flag that sets it.
func TestValidate(t *testing.T) {
	for _, tc := range []struct {
		name string
		cfg  pkcs11tok.Config
		want []string
	}{
		{name: "complete", cfg: pkcs11tok.Config{Module: "m", Token: "t", PINFile: "p"}},
		{name: "empty", want: []string{"test: a PKCS#11 module path is required (--pkcs11-module)", "token label is required (--pkcs11-token)", "PIN file is required (--pkcs11-pin-file)"}},
		{name: "no token", cfg: pkcs11tok.Config{Module: "m", PINFile: "p"}, want: []string{"test: a PKCS#11 token label is required"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := tc.cfg.Validate(testErrors)
			if (err != nil) != (len(tc.want) > 0) {
				t.Fatalf("Validate: %v, want an error naming %q", err, tc.want)
			}
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("%v does not say %q", err, w)
				}
			}
		})
	}
}

// TestReadPIN: the PIN comes without its line end from a private file; a
// missing, shared or empty file is refused without showing the PIN.
func TestReadPIN(t *testing.T) {
	dir := t.TempDir()
	write := func(name, content string, mode os.FileMode) string {
		path := filepath.Join(dir, name)
		if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
		if err := os.Chmod(path, mode); err != nil {
			t.Fatal(err)
		}
		return path
	}
	for _, tc := range []struct {
		name    string
		path    string
		want    string
		wantErr string
	}{
		{name: "private", path: write("private", "4321\r\n", 0o600), want: "4321"},
		{name: "missing", path: filepath.Join(dir, "missing"), wantErr: "test: PIN file"},
		{name: "group readable", path: write("group", "4321\n", 0o640), wantErr: "0600"},
		{name: "empty", path: write("empty", "\n", 0o600), wantErr: "is empty"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			pin, err := pkcs11tok.ReadPIN(testErrors, tc.path)
			if tc.wantErr == "" {
				if err != nil || pin != tc.want {
					t.Fatalf("ReadPIN: %q, %v; want %q", pin, err, tc.want)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
				t.Fatalf("ReadPIN: %q, %v; want an error saying %q", pin, err, tc.wantErr)
			}
			if strings.Contains(err.Error(), "4321") {
				t.Fatalf("%v shows the PIN", err)
			}
		})
	}
}

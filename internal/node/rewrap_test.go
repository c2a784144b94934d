package node_test

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/iotransit/iotransit/internal/kms"
	"github.com/iotransit/iotransit/internal/node"
	"github.com/iotransit/iotransit/internal/testutil"
	"github.com/iotransit/iotransit/internal/testutil/nodetest"
)

// TestNodeRewrapFileToPKCS11: a node's keys move from its root key file
// to a root key generated in a SoftHSM2 token, either at the start of a
// node given the token and the old file as --previous-root-key-file, or
// offline (iotransit kms rewrap on the stopped node's data dir). Then the
// old file is deleted, and with the token alone every tenant's data reads
// back: stored messages, integration secrets, CA keys, and the platform's
// own secrets (the node starts with the same server CA).
func TestNodeRewrapFileToPKCS11(t *testing.T) {
	for _, tc := range []struct {
		name    string
		offline bool
	}{
		{name: "at start"},
		{name: "offline", offline: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			module, pin := testutil.SoftHSMTokens(t, "iotransit")
			dir, keyDir := t.TempDir(), t.TempDir()
			oldFile := filepath.Join(keyDir, "root.key")
			fileCfg := node.KMSConfig{RootKeyFile: oldFile}
			n := mustStartAt(t, dir, fileCfg)
			data := []*tenantData{
				writeData(t, n, "acme", []float64{11.5, 12.75}, "kms-secret-acme"),
				writeData(t, n, "globex", []float64{13.25}, "kms-secret-globex"),
			}
			if _, err := nodetest.NewAPI(t, n).Client.RotateKMSKey(context.Background(), "acme"); err != nil {
				t.Fatal(err)
			}
			sendMessages(t, n, data[0], []float64{14.5})
			data[0].temps = append(data[0].temps, 14.5)
			serverCA := string(n.ServerCAPEM())
			n.Close()

			hsm := node.KMSConfig{Provider: node.KMSPKCS11, PKCS11: kms.PKCS11Config{Module: module, Token: "iotransit", PINFile: pin}}
			moving := hsm
			moving.Previous = &fileCfg
			if tc.offline {
				moved, rootID, err := node.Rewrap(context.Background(), node.RewrapConfig{DataDir: dir, KMS: moving}, testutil.Logger(t))
				if err != nil {
					t.Fatal(err)
				}
				// acme: 2 versions; globex, dev, _system: 1 each; the root check.
				if moved != 6 || !strings.HasPrefix(rootID, "pkcs11:") {
					t.Fatalf("rewrap moved %d keys under %s, want 6 under pkcs11:…", moved, rootID)
				}
			} else {
				n = mustStartAt(t, dir, moving)
				n.Close()
			}
			if err := os.Remove(oldFile); err != nil {
				t.Fatal(err)
			}
			n = mustStartAt(t, dir, hsm)
			if string(n.ServerCAPEM()) != serverCA {
				t.Error("the node made a new server CA: the platform's secrets did not read back")
			}
			for _, d := range data {
				checkData(t, n, d)
				st, err := nodetest.NewAPI(t, n).Client.KMSStatus(context.Background(), d.tenant)
				if err != nil {
					t.Fatal(err)
				}
				for _, v := range st.Versions {
					if v.RootKeyID != st.RootKeyID || !strings.HasPrefix(v.RootKeyID, "pkcs11:") {
						t.Errorf("%s version %d is under %s, want the token's %s", d.tenant, v.Version, v.RootKeyID, st.RootKeyID)
					}
				}
			}
			n.Close()
			// The old root alone no longer opens the data (restored from a
			// copy kept, say, in a backup).
			if _, err := kms.OpenFileRoot(oldFile, true); err != nil {
				t.Fatal(err)
			}
			if _, err := startAt(t, dir, fileCfg); !errors.Is(err, kms.ErrWrongRoot) {
				t.Fatalf("start with a file root after the move: %v, want ErrWrongRoot", err)
			}
		})
	}
}

// TestNodePKCS11StartErrors: a node refuses to start on a token it cannot
// use, saying why.
func TestNodePKCS11StartErrors(t *testing.T) {
	module, pin := testutil.SoftHSMTokens(t, "iotransit")
	badPIN := testutil.SoftHSMWrongPINFile(t)
	for _, tc := range []struct {
		name    string
		cfg     node.KMSConfig
		wantErr error
		want    string
	}{
		{name: "unknown provider", cfg: node.KMSConfig{Provider: "vault"}, want: `--kms-provider "vault"`},
		{name: "pkcs11 without settings", cfg: node.KMSConfig{Provider: node.KMSPKCS11}, want: "--pkcs11-module"},
		{name: "missing module", cfg: node.KMSConfig{Provider: node.KMSPKCS11, PKCS11: kms.PKCS11Config{Module: "/nonexistent/lib.so", Token: "iotransit", PINFile: pin}}, want: "/nonexistent/lib.so"},
		{name: "token not found", cfg: node.KMSConfig{Provider: node.KMSPKCS11, PKCS11: kms.PKCS11Config{Module: module, Token: "other", PINFile: pin}}, wantErr: kms.ErrTokenNotFound},
		{name: "wrong PIN", cfg: node.KMSConfig{Provider: node.KMSPKCS11, PKCS11: kms.PKCS11Config{Module: module, Token: "iotransit", PINFile: badPIN}}, wantErr: kms.ErrWrongPIN},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := startAt(t, t.TempDir(), tc.cfg)
			if err == nil {
				t.Fatal("started")
			}
			if tc.wantErr != nil && !errors.Is(err, tc.wantErr) {
				t.Fatalf("%v, want %v", err, tc.wantErr)
			}
			if !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("%v does not say %q", err, tc.want)
			}
		})
	}
}

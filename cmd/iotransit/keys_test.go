package main

import (
	"bytes"
	"context"
	"encoding/base64"
	"errors"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/iotransit/iotransit/internal/forward/seal"
)

// runCLI runs the command line in-process.
func runCLI(t *testing.T, args ...string) (stdout, stderr string, err error) {
	t.Helper()
	var o, e bytes.Buffer
	err = run(context.Background(), args, &o, &e)
	return o.String(), e.String(), err
}

// keygenIn runs "keygen --out dir" and returns its key id.
func keygenIn(t *testing.T, dir string) string {
	t.Helper()
	out, _, err := runCLI(t, "keygen", "--out", dir)
	if err != nil {
		t.Fatalf("keygen: %v", err)
	}
	m := regexp.MustCompile(`key id ([0-9a-f]{16})\n`).FindStringSubmatch(out)
	if m == nil {
		t.Fatalf("keygen printed no key id:\n%s", out)
	}
	return m[1]
}

// sealTo seals plaintext to the public key in dir/public.pem, as an
// integration does, and writes it to a file.
func sealTo(t *testing.T, dir string, plaintext []byte) string {
	t.Helper()
	pub, err := os.ReadFile(filepath.Join(dir, "public.pem"))
	if err != nil {
		t.Fatal(err)
	}
	s, err := seal.ParsePublicKey(pub)
	if err != nil {
		t.Fatal(err)
	}
	sealed, err := s.Seal(plaintext)
	if err != nil {
		t.Fatal(err)
	}
	p := filepath.Join(t.TempDir(), "payload.bin")
	if err := os.WriteFile(p, sealed, 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

func wantMode(t *testing.T, path string, want os.FileMode) {
	t.Helper()
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if got := fi.Mode().Perm(); got != want {
		t.Errorf("%s: mode %#o, want %#o", path, got, want)
	}
}

func TestKeygenThenDecryptRoundTrip(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "keys")
	out, _, err := runCLI(t, "keygen", "--out", dir)
	if err != nil {
		t.Fatal(err)
	}
	priv, pub := filepath.Join(dir, "private.pem"), filepath.Join(dir, "public.pem")
	wantMode(t, priv, 0o600)
	wantMode(t, pub, 0o644)
	pubPEM, err := os.ReadFile(pub)
	if err != nil {
		t.Fatal(err)
	}
	s, err := seal.ParsePublicKey(pubPEM)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(out, "key id "+s.KeyID()) || !strings.Contains(out, string(pubPEM)) {
		t.Errorf("keygen output lacks the key id %s or the public PEM:\n%s", s.KeyID(), out)
	}
	if strings.Contains(out, "PRIVATE KEY") {
		t.Errorf("keygen printed the private key:\n%s", out)
	}

	msg := []byte(`[{"tsmId":12100,"tsmTs":1700000000,"tsmTuid":"TSPR04","temp":21.5}]` + "\x00\xff binary too")
	payload := sealTo(t, dir, msg)

	t.Run("to stdout", func(t *testing.T) {
		got, _, err := runCLI(t, "decrypt", "--key", priv, "--in", payload)
		if err != nil || got != string(msg) {
			t.Fatalf("decrypt = %q, %v; want %q", got, err, msg)
		}
	})
	t.Run("from stdin", func(t *testing.T) {
		sealed, err := os.ReadFile(payload)
		if err != nil {
			t.Fatal(err)
		}
		old := decryptStdin
		decryptStdin = bytes.NewReader(sealed)
		t.Cleanup(func() { decryptStdin = old })
		got, _, err := runCLI(t, "decrypt", "--key", priv)
		if err != nil || got != string(msg) {
			t.Fatalf("decrypt = %q, %v; want %q", got, err, msg)
		}
	})
	t.Run("to a file", func(t *testing.T) {
		dst := filepath.Join(t.TempDir(), "plain.json")
		stdout, _, err := runCLI(t, "decrypt", "--key", priv, "--in", payload, "--out", dst)
		if err != nil || stdout != "" {
			t.Fatalf("decrypt: %q, %v", stdout, err)
		}
		got, err := os.ReadFile(dst)
		if err != nil || !bytes.Equal(got, msg) {
			t.Fatalf("--out holds %q, %v", got, err)
		}
		wantMode(t, dst, 0o600)
		if _, _, err := runCLI(t, "decrypt", "--key", priv, "--in", payload, "--out", dst); err == nil {
			t.Error("decrypt overwrote an existing --out file")
		}
	})
}

func TestKeygenRefusesOverwrite(t *testing.T) {
	dir := t.TempDir()
	keygenIn(t, dir)
	priv := filepath.Join(dir, "private.pem")
	before, err := os.ReadFile(priv)
	if err != nil {
		t.Fatal(err)
	}
	_, _, err = runCLI(t, "keygen", "--out", dir)
	if err == nil || !strings.Contains(err.Error(), "private.pem exists") {
		t.Fatalf("second keygen: %v, want a refusal naming private.pem", err)
	}
	after, err := os.ReadFile(priv)
	if err != nil || !bytes.Equal(before, after) {
		t.Fatal("the private key changed")
	}

	// A lone public.pem is not overwritten either, and no private key is left.
	dir2 := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir2, "public.pem"), []byte("mine"), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, _, err := runCLI(t, "keygen", "--out", dir2); err == nil || !strings.Contains(err.Error(), "public.pem exists") {
		t.Fatalf("keygen over public.pem: %v", err)
	}
	if _, err := os.Stat(filepath.Join(dir2, "private.pem")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("private.pem after a refused keygen: %v", err)
	}
	if _, _, err := runCLI(t, "keygen"); !errors.Is(err, errUsage) {
		t.Errorf("keygen without --out: %v, want a usage error", err)
	}
}

func TestKeygenOutFromEnvironment(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "k")
	t.Setenv("IOTRANSIT_OUT", dir)
	if _, _, err := runCLI(t, "keygen"); err != nil {
		t.Fatal(err)
	}
	wantMode(t, filepath.Join(dir, "private.pem"), 0o600)
}

func TestDecryptWrongKeyNamesBothKeys(t *testing.T) {
	a, b := t.TempDir(), t.TempDir()
	idA, idB := keygenIn(t, a), keygenIn(t, b)
	payload := sealTo(t, a, []byte("for A only"))
	stdout, _, err := runCLI(t, "decrypt", "--key", filepath.Join(b, "private.pem"), "--in", payload)
	want := "decrypt: the payload was not sealed to this key (key id " + idB + ", payload for " + idA + ")"
	if err == nil || err.Error() != want || stdout != "" {
		t.Fatalf("decrypt with the wrong key: stdout %q, err %v; want %q", stdout, err, want)
	}
}

func TestDecryptAlteredPayload(t *testing.T) {
	dir := t.TempDir()
	id := keygenIn(t, dir)
	payload := sealTo(t, dir, []byte("do not touch"))
	b, err := os.ReadFile(payload)
	if err != nil {
		t.Fatal(err)
	}
	b[len(b)-1] ^= 1
	if err := os.WriteFile(payload, b, 0o644); err != nil {
		t.Fatal(err)
	}
	stdout, _, err := runCLI(t, "decrypt", "--key", filepath.Join(dir, "private.pem"), "--in", payload)
	if err == nil || !strings.Contains(err.Error(), "key id "+id+") but does not decrypt with it: it was altered or damaged") || stdout != "" {
		t.Fatalf("decrypt of an altered payload: stdout %q, err %v", stdout, err)
	}
}

func TestDecryptMalformedInput(t *testing.T) {
	dir := t.TempDir()
	keygenIn(t, dir)
	priv := filepath.Join(dir, "private.pem")
	sealed, err := os.ReadFile(sealTo(t, dir, []byte("x")))
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name  string
		input []byte
		want  string
	}{
		{"json", []byte(`[{"tsmId":1}]`), `decrypt: the input is not a payload sealed by iotransit (it does not start with "IOTH")`},
		{"empty", nil, `decrypt: the input is not a payload sealed by iotransit (it does not start with "IOTH")`},
		{"truncated", sealed[:30], `decrypt: the input is not a payload sealed by iotransit (truncated: 30 bytes, at least 67 needed)`},
		{"base64", []byte(base64.StdEncoding.EncodeToString(sealed) + "\n"), "it looks base64-encoded: decode it first (base64 -d)"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := filepath.Join(t.TempDir(), "in")
			if err := os.WriteFile(p, tc.input, 0o644); err != nil {
				t.Fatal(err)
			}
			stdout, _, err := runCLI(t, "decrypt", "--key", priv, "--in", p)
			if err == nil || !strings.Contains(err.Error(), tc.want) || stdout != "" {
				t.Fatalf("stdout %q, err %v; want %q", stdout, err, tc.want)
			}
		})
	}
}

func TestDecryptRefusesInputOver64MiB(t *testing.T) {
	dir := t.TempDir()
	keygenIn(t, dir)
	priv := filepath.Join(dir, "private.pem")

	big := filepath.Join(t.TempDir(), "big")
	f, err := os.Create(big)
	if err != nil {
		t.Fatal(err)
	}
	if err := f.Truncate(64<<20 + 1); err != nil { // sparse
		t.Fatal(err)
	}
	f.Close()
	_, _, err = runCLI(t, "decrypt", "--key", priv, "--in", big)
	if err == nil || !strings.Contains(err.Error(), "big is larger than 64 MiB, the most a sealed payload can be here") {
		t.Fatalf("decrypt --in of 64 MiB + 1: %v", err)
	}

	if testing.Short() {
		return // reading 64 MiB from stdin takes seconds under -race
	}
	old := decryptStdin
	decryptStdin = io.LimitReader(zeros{}, 64<<20+1)
	t.Cleanup(func() { decryptStdin = old })
	_, _, err = runCLI(t, "decrypt", "--key", priv)
	if err == nil || !strings.Contains(err.Error(), "stdin is larger than 64 MiB") {
		t.Fatalf("decrypt of 64 MiB + 1 on stdin: %v", err)
	}
}

type zeros struct{}

func (zeros) Read(p []byte) (int, error) {
	clear(p)
	return len(p), nil
}

func TestDecryptKeyErrors(t *testing.T) {
	dir := t.TempDir()
	keygenIn(t, dir)
	payload := sealTo(t, dir, []byte("x"))

	_, _, err := runCLI(t, "decrypt", "--key", filepath.Join(dir, "public.pem"), "--in", payload)
	if err == nil || !strings.Contains(err.Error(), "seal.key_invalid") || !strings.Contains(err.Error(), "this is a public key") {
		t.Errorf("decrypt --key public.pem: %v", err)
	}
	_, _, err = runCLI(t, "decrypt", "--key", filepath.Join(dir, "nosuch.pem"), "--in", payload)
	if err == nil || !strings.Contains(err.Error(), "nosuch.pem") {
		t.Errorf("decrypt --key nosuch.pem: %v", err)
	}
	// IOTRANSIT_KEY is the API credential: decrypt must neither use it as a
	// key file nor print it.
	t.Setenv("IOTRANSIT_KEY", "s3cret-operator-key")
	_, _, err = runCLI(t, "decrypt", "--in", payload)
	if !errors.Is(err, errUsage) || strings.Contains(err.Error(), "s3cret") {
		t.Errorf("decrypt without --key: %v, want a usage error", err)
	}
}

// TestDecryptBinaryExitsNonZero runs the built binary with the wrong key.
func TestDecryptBinaryExitsNonZero(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the binary")
	}
	a, b := t.TempDir(), t.TempDir()
	idA, idB := keygenIn(t, a), keygenIn(t, b)
	payload := sealTo(t, a, []byte("for A only"))
	bin := buildBinary(t)
	cmd := exec.Command(bin, "decrypt", "--key", filepath.Join(b, "private.pem"), "--in", payload)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	var ee *exec.ExitError
	if !errors.As(err, &ee) || ee.ExitCode() == 0 {
		t.Fatalf("exit: %v", err)
	}
	want := "iotransit: decrypt: the payload was not sealed to this key (key id " + idB + ", payload for " + idA + ")\n"
	if stderr.String() != want || stdout.Len() != 0 {
		t.Fatalf("stdout %q, stderr %q; want stderr %q", stdout.String(), stderr.String(), want)
	}
}

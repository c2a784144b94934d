package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"

	"github.com/iotransit/iotransit/internal/forward/seal"
	"github.com/iotransit/iotransit/internal/securefile"
)

// Payload encryption on the customer's side: "iotransit keygen" makes the
// key pair whose public half an integration seals payloads to (HPKE; the format
// is documented in the public receiver package), "iotransit decrypt" opens what arrives.

const keygenUsage = `Usage: iotransit keygen --out DIR
  Make an X25519 key pair for payload encryption (HPKE, RFC 9180) and write
  DIR/private.pem (0600: keep it, it never leaves this machine) and
  DIR/public.pem (0644: paste it into the integration). Existing files are
  never overwritten. Prints the key id and the public key.

Flags:
`

const decryptUsage = `Usage: iotransit decrypt --key private.pem [--in FILE] [--out FILE]
  Open a payload that an integration sealed to your public key (HPKE,
  RFC 9180, X25519/HKDF-SHA256/AES-256-GCM; the wire format is documented in
  the receiver package). Reads stdin and writes stdout unless --in or --out
  are given; --out never overwrites an existing file. Input is limited to
  64 MiB. These flags have no IOTRANSIT_* environment fallback:
  IOTRANSIT_KEY is the API credential and IOTRANSIT_OUT a directory.

Flags:
`

// maxSealedInput bounds what decrypt reads.
const maxSealedInput = 64 << 20

// maxKeyFile bounds a key file (a PEM X25519 key is about 120 bytes).
const maxKeyFile = 64 << 10

// decryptStdin is what decrypt reads without --in (tests replace it).
var decryptStdin io.Reader = os.Stdin

// keygen is "iotransit keygen".
func keygen(_ context.Context, args []string, stdout, stderr io.Writer) error {
	fset := newFlagSet("iotransit keygen", keygenUsage, stderr)
	out := fset.String("out", "", "directory to write private.pem and public.pem to (required)")
	if helpAsked(fset, args, stdout) {
		return nil
	}
	if err := parseFlags(fset, args); err != nil {
		return err
	}
	if *out == "" {
		return usageError("keygen needs --out DIR (or IOTRANSIT_OUT)")
	}
	privPath := filepath.Join(*out, "private.pem")
	pubPath := filepath.Join(*out, "public.pem")
	if err := noneExists("keygen makes a new key pair", privPath, pubPath); err != nil {
		return fmt.Errorf("keygen: %w", err)
	}
	privPEM, pubPEM, err := seal.GenerateKey()
	if err != nil {
		return fmt.Errorf("keygen: %w", err)
	}
	s, err := seal.ParsePublicKey(pubPEM)
	if err != nil {
		return fmt.Errorf("keygen: %w", err)
	}
	if err := os.MkdirAll(*out, 0o700); err != nil {
		return fmt.Errorf("keygen: %w", err)
	}
	if err := writeKeyFile(privPath, privPEM, 0o600); err != nil {
		return fmt.Errorf("keygen: %w", err)
	}
	if err := writeKeyFile(pubPath, pubPEM, 0o644); err != nil {
		// Leave no half pair behind.
		os.Remove(privPath)
		return fmt.Errorf("keygen: %w", err)
	}
	fmt.Fprintf(stdout, "made an X25519 key pair for payload encryption, key id %s\n", s.KeyID())
	fmt.Fprintf(stdout, "  private key: %s (0600, made here: keep it; iotransit decrypt --key %s opens payloads)\n", privPath, privPath)
	fmt.Fprintf(stdout, "  public key:  %s\n", pubPath)
	fmt.Fprintf(stdout, "Paste this public key into the integration's payload encryption key:\n%s", pubPEM)
	return nil
}

// writeKeyFile writes a file that must not exist yet and sets its mode
// exactly (whatever the umask).
func writeKeyFile(path string, data []byte, mode os.FileMode) error {
	if err := securefile.WriteExcl(path, data, mode); err != nil {
		return err
	}
	return os.Chmod(path, mode)
}

// decrypt is "iotransit decrypt".
func decrypt(_ context.Context, args []string, stdout, stderr io.Writer) error {
	fset := newFlagSet("iotransit decrypt", decryptUsage, stderr)
	keyPath := fset.String("key", "", "PEM file of the X25519 private key from 'iotransit keygen' (required)")
	in := fset.String("in", "", "file to read the sealed payload from (default: stdin)")
	out := fset.String("out", "", "file to write the opened payload to, which must not exist (default: stdout)")
	if helpAsked(fset, args, stdout) {
		return nil
	}
	// Not parseFlags: IOTRANSIT_KEY and IOTRANSIT_OUT mean other things.
	if err := fset.Parse(args); err != nil {
		return err
	}
	if fset.NArg() > 0 {
		return usageError("decrypt takes no arguments, got %q (use --in FILE)", fset.Arg(0))
	}
	if *keyPath == "" {
		return usageError("decrypt needs --key private.pem")
	}
	keyPEM, err := readLimited(*keyPath, nil, maxKeyFile, "a key file")
	if err != nil {
		return fmt.Errorf("decrypt: --key: %w", err)
	}
	o, err := seal.ParsePrivateKey(keyPEM)
	if err != nil {
		return fmt.Errorf("decrypt: --key %s: %w", *keyPath, err)
	}
	sealed, err := readLimited(*in, decryptStdin, maxSealedInput, "a sealed payload")
	if err != nil {
		return fmt.Errorf("decrypt: %w", err)
	}
	plain, err := o.Open(sealed)
	if err != nil {
		return fmt.Errorf("decrypt: %s", openFailure(o, sealed, err))
	}
	if *out == "" {
		_, err := stdout.Write(plain)
		return err
	}
	if err := securefile.WriteExcl(*out, plain, 0o600); err != nil {
		return fmt.Errorf("decrypt: --out: %w", err)
	}
	return nil
}

// openFailure explains why a payload did not open, in a sentence.
func openFailure(o *seal.Opener, sealed []byte, err error) string {
	switch {
	case errors.Is(err, seal.ErrNotForThisKey):
		payloadID, _ := seal.PayloadKeyID(sealed)
		if payloadID != o.KeyID() {
			return fmt.Sprintf("the payload was not sealed to this key (key id %s, payload for %s)", o.KeyID(), payloadID)
		}
		return fmt.Sprintf("the payload names this key (key id %s) but does not decrypt with it: it was altered or damaged after sealing", o.KeyID())
	case errors.Is(err, seal.ErrMalformed):
		why := strings.TrimPrefix(strings.TrimPrefix(err.Error(), seal.ErrMalformed.Error()), ": ")
		msg := fmt.Sprintf("the input is not a payload sealed by iotransit (%s)", why)
		if bytes.HasPrefix(bytes.TrimSpace(sealed), []byte("SU9USA")) {
			msg += "; it looks base64-encoded: decode it first (base64 -d)"
		}
		return msg
	default:
		return err.Error()
	}
}

// readLimited reads the file at path (r if path is empty), refusing more
// than limit bytes, which is the most what can be.
func readLimited(path string, r io.Reader, limit int64, what string) ([]byte, error) {
	name := "stdin"
	if path != "" {
		f, err := os.Open(path)
		if err != nil {
			return nil, err
		}
		defer f.Close()
		if fi, err := f.Stat(); err == nil && fi.Mode().IsRegular() && fi.Size() > limit {
			return nil, tooLarge(path, limit, what)
		}
		r, name = f, path
	}
	b, err := io.ReadAll(io.LimitReader(r, limit+1))
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", name, err)
	}
	if int64(len(b)) > limit {
		return nil, tooLarge(name, limit, what)
	}
	return b, nil
}

func tooLarge(name string, limit int64, what string) error {
	size := fmt.Sprintf("%d KiB", limit>>10)
	if limit >= 1<<20 {
		size = fmt.Sprintf("%d MiB", limit>>20)
	}
	return fmt.Errorf("%s is larger than %s, the most %s can be here", name, size, what)
}

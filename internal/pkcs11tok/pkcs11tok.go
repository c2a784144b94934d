// Package pkcs11tok holds what the node's root key (internal/kms) and the
// gateway's keys (internal/gateway/keystore) share about a PKCS#11 token:
// the settings that reach it and their check, the private PIN file, the
// reasons a token refuses to open, and the attributes of a key generated
// in the token that can never leave it. Each caller keeps its own errors
// and message prefix and passes them in.
package pkcs11tok

import (
	"errors"
	"fmt"
	"io/fs"
	"strings"

	"github.com/iotransit/iotransit/internal/securefile"
)

// ErrNotKept reports a key that was imported, could be exported or is
// usable without the PIN.
var ErrNotKept = errors.New("a key that was imported, could be exported or is usable without the PIN is refused")

// Config is how a program reaches a token.
type Config struct {
	// Module is the path of the PKCS#11 library (--pkcs11-module).
	Module string
	// Token is the label of the token (--pkcs11-token).
	Token string
	// PINFile holds the user PIN (--pkcs11-pin-file); it must not be
	// readable by group or others.
	PINFile string
}

// Errors are the caller's own: the prefix of its messages ("kms") and the
// sentinels a refused PIN and a missing token wrap.
type Errors struct {
	Prefix        string
	WrongPIN      error
	TokenNotFound error
}

// Validate reports every missing setting of c at once, each message
// starting with e.Prefix.
func (c Config) Validate(e Errors) error {
	var errs []error
	for _, s := range []struct{ value, what, flag string }{
		{c.Module, "module path", "--pkcs11-module"},
		{c.Token, "token label", "--pkcs11-token"},
		{c.PINFile, "PIN file", "--pkcs11-pin-file"},
	} {
		if s.value == "" {
			errs = append(errs, fmt.Errorf("%s: a PKCS#11 %s is required (%s)", e.Prefix, s.what, s.flag))
		}
	}
	return errors.Join(errs...)
}

// ReadPIN returns the PIN kept in the private file path, without the line
// end. A missing file is not created, and one readable by group or others
// is refused.
func ReadPIN(e Errors, path string) (string, error) {
	b, err := securefile.LoadOrCreate(path, func() ([]byte, error) {
		return nil, fmt.Errorf("%s: %w", path, fs.ErrNotExist)
	})
	if err != nil {
		return "", fmt.Errorf("%s: PIN file: %w", e.Prefix, err)
	}
	pin := strings.TrimRight(string(b), "\r\n")
	if pin == "" {
		return "", fmt.Errorf("%s: PIN file %s is empty", e.Prefix, path)
	}
	return pin, nil
}

// Seal returns what seal returns, seal being a call of the Seal of a
// token's cipher.AEAD: crypto11's Seal, bound by cipher.AEAD to return no
// error, panics with the token's error, which Seal returns instead, after
// what ("kms: wrap with token \"t\"").
func Seal(what string, seal func() ([]byte, error)) (out []byte, err error) {
	defer func() {
		if p := recover(); p != nil {
			perr, ok := p.(error)
			if !ok {
				panic(p)
			}
			out, err = nil, fmt.Errorf("%s: %w", what, perr)
		}
	}()
	return seal()
}

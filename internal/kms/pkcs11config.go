package kms

import (
	"errors"
	"fmt"
	"io/fs"
	"strings"

	"github.com/iotransit/iotransit/internal/securefile"
)

// DefaultPKCS11KeyLabel is the label of the root key in its token unless
// PKCS11Config.KeyLabel names another.
const DefaultPKCS11KeyLabel = "iotransit-root"

// PKCS11 errors, each naming what the operator must fix.
var (
	// ErrWrongPIN reports that the token refused the PIN.
	ErrWrongPIN = errors.New("kms: the PKCS#11 token refused the PIN")
	// ErrTokenNotFound reports that the module has no token with the label.
	ErrTokenNotFound = errors.New("kms: no PKCS#11 token with this label")
	// ErrNeedsCgo reports a PKCS#11 root asked of a build without cgo.
	ErrNeedsCgo = errors.New("kms: the PKCS#11 root key provider needs a build with cgo")
)

// PKCS11Config is how a node reaches the token that holds its root key.
type PKCS11Config struct {
	// Module is the path of the PKCS#11 library (--pkcs11-module).
	Module string
	// Token is the label of the token (--pkcs11-token).
	Token string
	// PINFile holds the user PIN (--pkcs11-pin-file); it must not be
	// readable by group or others.
	PINFile string
	// KeyLabel is the label of the AES-256 root key in the token
	// (--pkcs11-key-label, default DefaultPKCS11KeyLabel).
	KeyLabel string
}

// Validate reports every missing setting at once.
func (c PKCS11Config) Validate() error {
	var errs []error
	if c.Module == "" {
		errs = append(errs, errors.New("kms: the pkcs11 provider needs --pkcs11-module"))
	}
	if c.Token == "" {
		errs = append(errs, errors.New("kms: the pkcs11 provider needs --pkcs11-token"))
	}
	if c.PINFile == "" {
		errs = append(errs, errors.New("kms: the pkcs11 provider needs --pkcs11-pin-file"))
	}
	return errors.Join(errs...)
}

func (c PKCS11Config) keyLabel() string {
	if c.KeyLabel == "" {
		return DefaultPKCS11KeyLabel
	}
	return c.KeyLabel
}

// readPIN reads the PIN file, which must exist and be private.
func readPIN(path string) (string, error) {
	b, err := securefile.LoadOrCreate(path, func() ([]byte, error) {
		return nil, fmt.Errorf("%s: %w", path, fs.ErrNotExist)
	})
	if err != nil {
		return "", fmt.Errorf("kms: PIN file: %w", err)
	}
	pin := strings.TrimRight(string(b), "\r\n")
	if pin == "" {
		return "", fmt.Errorf("kms: PIN file %s is empty", path)
	}
	return pin, nil
}

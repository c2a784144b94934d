package kms

import (
	"errors"

	"github.com/iotransit/iotransit/internal/pkcs11tok"
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

// pkcs11Errors are the errors a token that will not open gives, in kms's
// terms.
var pkcs11Errors = pkcs11tok.Errors{Prefix: "kms", WrongPIN: ErrWrongPIN, TokenNotFound: ErrTokenNotFound}

// token is the part of c that reaches the token.
func (c PKCS11Config) token() pkcs11tok.Config {
	return pkcs11tok.Config{Module: c.Module, Token: c.Token, PINFile: c.PINFile}
}

// Validate reports every missing setting at once.
func (c PKCS11Config) Validate() error { return c.token().Validate(pkcs11Errors) }

func (c PKCS11Config) keyLabel() string {
	if c.KeyLabel == "" {
		return DefaultPKCS11KeyLabel
	}
	return c.KeyLabel
}

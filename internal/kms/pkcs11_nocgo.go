//go:build !cgo

package kms

// OpenPKCS11Root refuses: crypto11 and the PKCS#11 module it loads need
// cgo, and this build has none.
func OpenPKCS11Root(cfg PKCS11Config, create bool) (*PKCS11Root, error) {
	return nil, ErrNeedsCgo
}

// PKCS11Root is a root key in a PKCS#11 token (cgo builds only).
type PKCS11Root struct{ RootKey }

// Close does nothing in a build without cgo.
func (r *PKCS11Root) Close() error { return nil }

//go:build !cgo

package keystore

// OpenPKCS11 refuses: crypto11 and the PKCS#11 module it loads need cgo,
// and this build has none.
func OpenPKCS11(cfg PKCS11Config) (Store, error) {
	return nil, ErrNeedsCgo
}

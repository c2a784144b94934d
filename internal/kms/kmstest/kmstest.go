// Package kmstest finds what a shred or a rewrap must leave nowhere: the
// wrapped keys of a kms store, looked for in every file under a directory
// (a node's data directory, its JetStream store).
package kmstest

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/iotransit/iotransit/internal/kms"
)

// Suffixes of the names WrappedKeys gives its values.
const (
	AsStored      = " as stored"
	Wrapped       = " wrapped"
	WrappedBase64 = " wrapped, base64"
)

// WrappedKeys returns, for every key of s whose name starts with prefix,
// the bytes that must not outlive it, named by the key and a suffix: the
// value as stored (AsStored), the wrapped key inside it (Wrapped) and that
// in base64, as the stored JSON holds it (WrappedBase64). It fails tb when
// s holds no such key, or one that is not a wrapped key.
func WrappedKeys(tb testing.TB, s kms.ManagedKeyStore, prefix string) map[string][]byte {
	tb.Helper()
	entries, err := s.Entries(context.Background())
	if err != nil {
		tb.Fatal(err)
	}
	out := map[string][]byte{}
	for _, e := range entries {
		if !strings.HasPrefix(e.Key, prefix) {
			continue
		}
		var w struct {
			Key []byte `json:"key"`
		}
		if err := json.Unmarshal(e.Value, &w); err != nil || len(w.Key) < 16 {
			tb.Fatalf("%s: %q is not a wrapped key (%v)", e.Key, e.Value, err)
		}
		out[e.Key+AsStored] = e.Value
		out[e.Key+Wrapped] = w.Key
		out[e.Key+WrappedBase64] = []byte(base64.StdEncoding.EncodeToString(w.Key))
	}
	if len(out) == 0 {
		tb.Fatalf("no key %s* in the store", prefix)
	}
	return out
}

// Only returns the needles whose name ends with suffix.
func Only(needles map[string][]byte, suffix string) map[string][]byte {
	out := map[string][]byte{}
	for name, b := range needles {
		if strings.HasSuffix(name, suffix) {
			out[name] = b
		}
	}
	return out
}

// FilesHolding returns the needles found in the files under dir, each as
// "name in path".
func FilesHolding(tb testing.TB, dir string, needles map[string][]byte) []string {
	tb.Helper()
	var found []string
	err := filepath.WalkDir(dir, func(path string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		b, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		for name, n := range needles {
			if bytes.Contains(b, n) {
				found = append(found, name+" in "+path)
			}
		}
		return nil
	})
	if err != nil {
		tb.Fatal(err)
	}
	return found
}

// Package securefile writes and reads the files that hold iotransit's
// secrets and certificates: an exclusive create that never overwrites, an
// atomic replace through a temporary file, and the load-or-create of a
// private (0600) file that refuses one readable by group or others. Every
// write is synced before it is reported done. It is a leaf: the node, kms
// and the commands share it.
package securefile

import (
	"crypto/rand"
	"encoding/base64"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
)

// WriteExcl writes data to path, which must not exist yet, with mode (as
// os.OpenFile applies it, under the umask). It does not create directories.
func WriteExcl(path string, data []byte, mode os.FileMode) error {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, mode)
	if err != nil {
		return err
	}
	if err := writeSyncClose(f, data); err != nil {
		return err
	}
	return syncDir(filepath.Dir(path)) // the new name, as POSIX asks
}

// WriteAtomic replaces path with data through a temporary file in the same
// directory, so that a reader sees the old or the new content, never a
// part; the file gets exactly mode. It does not create directories.
func WriteAtomic(path string, data []byte, mode os.FileMode) error {
	tmp, err := os.CreateTemp(filepath.Dir(path), ".tmp-*")
	if err != nil {
		return err
	}
	defer os.Remove(tmp.Name())
	if err := tmp.Chmod(mode); err != nil {
		tmp.Close()
		return err
	}
	if err := writeSyncClose(tmp, data); err != nil {
		return err
	}
	if err := os.Rename(tmp.Name(), path); err != nil {
		return err
	}
	// The rename is durable only once the directory is: without this a
	// power loss can bring the old content back (or no file at all).
	return syncDir(filepath.Dir(path))
}

// syncDir fsyncs a directory, making the names in it durable.
func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	err = d.Sync()
	if cerr := d.Close(); err == nil {
		err = cerr
	}
	return err
}

// writeSyncClose writes data to f, syncs and closes it.
func writeSyncClose(f *os.File, data []byte) error {
	if _, err := f.Write(data); err != nil {
		f.Close()
		return err
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

// LoadOrCreate returns the content of the private file at path. When the
// file does not exist, it creates it (0600, and its directory 0700) with
// what fresh returns. A file that group or others may read is refused: it
// holds a secret.
func LoadOrCreate(path string, fresh func() ([]byte, error)) ([]byte, error) {
	b, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		data, err := fresh()
		if err != nil {
			return nil, err
		}
		if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
			return nil, err
		}
		if err := WriteExcl(path, data, 0o600); err != nil {
			return nil, err
		}
		return data, nil
	}
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", path, err)
	}
	st, err := os.Stat(path)
	if err != nil {
		return nil, err
	}
	if st.Mode().Perm()&0o077 != 0 {
		return nil, fmt.Errorf("%s has mode %v; it must be 0600", path, st.Mode().Perm())
	}
	return b, nil
}

// LoadOrCreateSecret returns the secret kept in the private file at path,
// creating it on first use: prefix followed by 32 random bytes in unpadded
// base64url, on one line.
func LoadOrCreateSecret(path, prefix string) (string, error) {
	b, err := LoadOrCreate(path, func() ([]byte, error) {
		raw := make([]byte, 32)
		if _, err := rand.Read(raw); err != nil {
			return nil, err
		}
		return []byte(prefix + base64.RawURLEncoding.EncodeToString(raw) + "\n"), nil
	})
	if err != nil {
		return "", err
	}
	return strings.TrimSpace(string(b)), nil
}

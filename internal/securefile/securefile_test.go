package securefile_test

import (
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/iotransit/iotransit/internal/securefile"
	"github.com/iotransit/iotransit/internal/testutil/lazyfs"
)

func mode(t *testing.T, path string) os.FileMode {
	t.Helper()
	st, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	return st.Mode().Perm()
}

func TestSecurefileWriteExclNeverOverwrites(t *testing.T) {
	path := filepath.Join(t.TempDir(), "key.pem")
	if err := securefile.WriteExcl(path, []byte("one"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := securefile.WriteExcl(path, []byte("two"), 0o600); !errors.Is(err, fs.ErrExist) {
		t.Fatalf("second write: %v, want ErrExist", err)
	}
	if b, _ := os.ReadFile(path); string(b) != "one" || mode(t, path) != 0o600 {
		t.Fatalf("file %q mode %v", b, mode(t, path))
	}
	if err := securefile.WriteExcl(filepath.Join(t.TempDir(), "missing", "f"), nil, 0o600); err == nil {
		t.Fatal("WriteExcl created a directory")
	}
}

func TestSecurefileWriteAtomicReplacesWithMode(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "cert.pem")
	for _, tc := range []struct {
		name string
		data string
		mode os.FileMode
	}{
		{name: "create", data: "first", mode: 0o644},
		{name: "replace", data: "second", mode: 0o600},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if err := securefile.WriteAtomic(path, []byte(tc.data), tc.mode); err != nil {
				t.Fatal(err)
			}
			if b, _ := os.ReadFile(path); string(b) != tc.data || mode(t, path) != tc.mode {
				t.Fatalf("file %q mode %v, want %q %v", b, mode(t, path), tc.data, tc.mode)
			}
		})
	}
	entries, err := os.ReadDir(dir)
	if err != nil || len(entries) != 1 {
		t.Fatalf("directory holds %d entries (temporary files left?): %v", len(entries), err)
	}
}

func TestSecurefileLoadOrCreate(t *testing.T) {
	path := filepath.Join(t.TempDir(), "sub", "operator.key")
	s1, err := securefile.LoadOrCreateSecret(path, "itop_")
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(s1, "itop_") || len(s1) != len("itop_")+43 {
		t.Fatalf("secret %q", s1)
	}
	if mode(t, path) != 0o600 || mode(t, filepath.Dir(path))&0o077 != 0 {
		t.Fatalf("file mode %v, directory mode %v", mode(t, path), mode(t, filepath.Dir(path)))
	}
	s2, err := securefile.LoadOrCreateSecret(path, "itop_")
	if err != nil || s2 != s1 {
		t.Fatalf("reload %q, %v; want %q", s2, err, s1)
	}
	if err := os.Chmod(path, 0o640); err != nil {
		t.Fatal(err)
	}
	if _, err := securefile.LoadOrCreate(path, func() ([]byte, error) { return []byte("new"), nil }); err == nil || !strings.Contains(err.Error(), "must be 0600") {
		t.Fatalf("a group-readable secret: %v", err)
	}
	if b, _ := os.ReadFile(path); strings.TrimSpace(string(b)) != s1 {
		t.Fatal("the refused file was changed")
	}
	boom := errors.New("no entropy")
	other := filepath.Join(t.TempDir(), "node.id")
	if _, err := securefile.LoadOrCreate(other, func() ([]byte, error) { return nil, boom }); !errors.Is(err, boom) {
		t.Fatalf("fresh error: %v", err)
	}
	if _, err := os.Stat(other); !errors.Is(err, fs.ErrNotExist) {
		t.Fatal("a file was made although fresh failed")
	}
}

// TestSecurefileSurvivesPowerLoss: what WriteAtomic and WriteExcl return
// from is durable, its name included: after a power loss (a file system
// that drops whatever was not fsynced, lazyfs) each file is there with its
// new content.
func TestSecurefileSurvivesPowerLoss(t *testing.T) {
	lfs := lazyfs.MountForTest(t)
	dir := filepath.Join(lfs.Dir(), "keys")
	if err := os.Mkdir(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	lfs.Sync() // the directory itself exists before the test
	replaced, created := filepath.Join(dir, "replaced"), filepath.Join(dir, "created")
	if err := securefile.WriteAtomic(replaced, []byte("old"), 0o600); err != nil {
		t.Fatal(err)
	}
	lfs.Sync()
	if err := securefile.WriteAtomic(replaced, []byte("new"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := securefile.WriteExcl(created, []byte("fresh"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := lfs.PowerLoss(nil); err != nil {
		t.Fatal(err)
	}
	for path, want := range map[string]string{replaced: "new", created: "fresh"} {
		got, err := os.ReadFile(path)
		if err != nil || string(got) != want {
			t.Errorf("%s after the power loss: %q, %v; want %q", filepath.Base(path), got, err, want)
		}
	}
}

package lazyfs_test

import (
	"bytes"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"syscall"
	"testing"

	"github.com/iotransit/iotransit/internal/testutil/lazyfs"
)

// want is a file's expected content after the power loss; nil means the
// file must not exist.
type want map[string][]byte

// TestLazyFSPowerLossKeepsOnlyWhatWasSynced runs file operations, cuts the
// power, and checks what the remounted file system holds against the model
// of the package comment.
func TestLazyFSPowerLossKeepsOnlyWhatWasSynced(t *testing.T) {
	tests := []struct {
		name string
		do   func(t *testing.T, dir string, f *lazyfs.FS)
		want want
		lost lazyfs.Loss // at least
	}{
		{
			name: "a write without fsync is gone",
			do: func(t *testing.T, dir string, _ *lazyfs.FS) {
				fd := create(t, dir, "f")
				write(t, fd, "synced", true)
				write(t, fd, "+lost", false)
				close(t, fd)
			},
			want: want{"f": []byte("synced")},
			lost: lazyfs.Loss{Bytes: 5, Files: 1},
		},
		{
			name: "an fsynced write stays",
			do: func(t *testing.T, dir string, _ *lazyfs.FS) {
				fd := create(t, dir, "f")
				write(t, fd, "one", false)
				write(t, fd, "two", true)
				close(t, fd)
			},
			want: want{"f": []byte("onetwo")},
		},
		{
			name: "a new file never fsynced is gone",
			do: func(t *testing.T, dir string, _ *lazyfs.FS) {
				fd := create(t, dir, "f")
				write(t, fd, "lost", false)
				close(t, fd)
			},
			want: want{"f": nil},
			lost: lazyfs.Loss{Bytes: 4, Files: 1, Names: 1},
		},
		{
			name: "an fsync keeps the file's name and its new directory",
			do: func(t *testing.T, dir string, _ *lazyfs.FS) {
				if err := os.MkdirAll(filepath.Join(dir, "a", "b"), 0o755); err != nil {
					t.Fatal(err)
				}
				fd := create(t, dir, "a/b/f")
				write(t, fd, "kept", true)
				close(t, fd)
				close(t, create(t, dir, "a/other")) // never fsynced
			},
			want: want{"a/b/f": []byte("kept"), "a/other": nil},
		},
		{
			name: "a rename without an fsync is undone",
			do: func(t *testing.T, dir string, _ *lazyfs.FS) {
				writeFile(t, dir, "f", "old", true)
				writeFile(t, dir, "f.tmp", "new", true)
				rename(t, dir, "f.tmp", "f")
			},
			want: want{"f": []byte("old"), "f.tmp": []byte("new")},
			lost: lazyfs.Loss{Names: 1},
		},
		{
			name: "a rename is durable once its directory is fsynced",
			do: func(t *testing.T, dir string, _ *lazyfs.FS) {
				writeFile(t, dir, "f", "old", true)
				writeFile(t, dir, "f.tmp", "new", true)
				rename(t, dir, "f.tmp", "f")
				syncDir(t, dir)
			},
			want: want{"f": []byte("new"), "f.tmp": nil},
		},
		{
			name: "a rename is durable once the renamed file is fsynced",
			do: func(t *testing.T, dir string, _ *lazyfs.FS) {
				writeFile(t, dir, "f", "old", true)
				writeFile(t, dir, "f.tmp", "new", true)
				rename(t, dir, "f.tmp", "f")
				fd, err := os.OpenFile(filepath.Join(dir, "f"), os.O_RDWR, 0)
				if err != nil {
					t.Fatal(err)
				}
				if err := fd.Sync(); err != nil {
					t.Fatal(err)
				}
				close(t, fd)
			},
			want: want{"f": []byte("new"), "f.tmp": nil},
		},
		{
			name: "a renamed directory is back under its old name until its parent is fsynced",
			do: func(t *testing.T, dir string, f *lazyfs.FS) {
				if err := os.Mkdir(filepath.Join(dir, "old"), 0o700); err != nil {
					t.Fatal(err)
				}
				writeFile(t, dir, "old/f", "in", false)
				f.Sync()
				rename(t, dir, "old", "new")
			},
			want: want{"old/f": []byte("in"), "new/f": nil},
			lost: lazyfs.Loss{Names: 2},
		},
		{
			name: "a truncation without fsync is undone",
			do: func(t *testing.T, dir string, _ *lazyfs.FS) {
				writeFile(t, dir, "f", "hello world", true)
				if err := os.Truncate(filepath.Join(dir, "f"), 5); err != nil {
					t.Fatal(err)
				}
			},
			want: want{"f": []byte("hello world")},
			lost: lazyfs.Loss{Bytes: 6, Files: 1},
		},
		{
			name: "a truncation, a write and an fsync keep no old byte past the cut",
			do: func(t *testing.T, dir string, _ *lazyfs.FS) {
				writeFile(t, dir, "f", "hello world", true)
				fd, err := os.OpenFile(filepath.Join(dir, "f"), os.O_RDWR, 0)
				if err != nil {
					t.Fatal(err)
				}
				if err := fd.Truncate(2); err != nil {
					t.Fatal(err)
				}
				if _, err := fd.WriteAt([]byte("XY"), 6); err != nil {
					t.Fatal(err)
				}
				if err := fd.Sync(); err != nil {
					t.Fatal(err)
				}
				close(t, fd)
			},
			want: want{"f": []byte("he\x00\x00\x00\x00XY")},
		},
		{
			name: "an unlink without an fsync is undone",
			do: func(t *testing.T, dir string, _ *lazyfs.FS) {
				writeFile(t, dir, "f", "back", true)
				if err := os.Remove(filepath.Join(dir, "f")); err != nil {
					t.Fatal(err)
				}
			},
			want: want{"f": []byte("back")},
			lost: lazyfs.Loss{Names: 1},
		},
		{
			name: "an unlink is durable once its directory is fsynced",
			do: func(t *testing.T, dir string, _ *lazyfs.FS) {
				writeFile(t, dir, "f", "gone", true)
				if err := os.Remove(filepath.Join(dir, "f")); err != nil {
					t.Fatal(err)
				}
				syncDir(t, dir)
			},
			want: want{"f": nil},
		},
		{
			name: "a write through O_SYNC is durable",
			do: func(t *testing.T, dir string, _ *lazyfs.FS) {
				fd, err := os.OpenFile(filepath.Join(dir, "f"), os.O_CREATE|os.O_WRONLY|os.O_SYNC, 0o600)
				if err != nil {
					t.Fatal(err)
				}
				write(t, fd, "osync", false)
				close(t, fd)
			},
			want: want{"f": []byte("osync")},
		},
		{
			name: "Sync makes everything durable",
			do: func(t *testing.T, dir string, f *lazyfs.FS) {
				if err := os.Mkdir(filepath.Join(dir, "d"), 0o700); err != nil {
					t.Fatal(err)
				}
				writeFile(t, dir, "d/f", "all", false)
				f.Sync()
				writeFile(t, dir, "d/g", "not this", false)
			},
			want: want{"d/f": []byte("all"), "d/g": nil},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			f := lazyfs.MountForTest(t)
			tc.do(t, f.Dir(), f)
			loss, err := f.PowerLoss(nil)
			if err != nil {
				t.Fatal(err)
			}
			t.Logf("lost %+v", loss)
			if loss.Bytes < tc.lost.Bytes || loss.Files < tc.lost.Files || loss.Names < tc.lost.Names {
				t.Errorf("lost %+v, want at least %+v", loss, tc.lost)
			}
			for name, content := range tc.want {
				got, err := os.ReadFile(filepath.Join(f.Dir(), name))
				switch {
				case content == nil && !errors.Is(err, fs.ErrNotExist):
					t.Errorf("%s: got %q, %v; want no such file", name, got, err)
				case content != nil && err != nil:
					t.Errorf("%s: %v; want %q", name, err, content)
				case content != nil && !bytes.Equal(got, content):
					t.Errorf("%s: got %q, want %q", name, got, content)
				}
			}
		})
	}
}

// TestLazyFSRefusesWhatAFileSystemRefuses: the errors a store may rely
// on, as a disk file system gives them.
func TestLazyFSRefusesWhatAFileSystemRefuses(t *testing.T) {
	f := lazyfs.MountForTest(t)
	dir := f.Dir()
	if err := os.MkdirAll(filepath.Join(dir, "d", "e"), 0o700); err != nil {
		t.Fatal(err)
	}
	writeFile(t, dir, "d/f", "x", false)
	tests := []struct {
		name string
		op   func() error
		want syscall.Errno
	}{
		{name: "rmdir of a directory that is not empty", op: func() error { return os.Remove(filepath.Join(dir, "d")) }, want: syscall.ENOTEMPTY},
		{name: "rmdir of a file", op: func() error { return syscall.Rmdir(filepath.Join(dir, "d", "f")) }, want: syscall.ENOTDIR},
		{name: "unlink of a directory", op: func() error { return syscall.Unlink(filepath.Join(dir, "d", "e")) }, want: syscall.EISDIR},
		{name: "exclusive create of an existing file", op: func() error {
			_, err := os.OpenFile(filepath.Join(dir, "d", "f"), os.O_CREATE|os.O_EXCL|os.O_WRONLY, 0o600)
			return err
		}, want: syscall.EEXIST},
		{name: "mkdir of an existing name", op: func() error { return os.Mkdir(filepath.Join(dir, "d", "f"), 0o700) }, want: syscall.EEXIST},
		{name: "rename of a file over a directory", op: func() error { return syscall.Rename(filepath.Join(dir, "d", "f"), filepath.Join(dir, "d", "e")) }, want: syscall.EISDIR},
		{name: "open of a missing file", op: func() error { _, err := os.Open(filepath.Join(dir, "nope")); return err }, want: syscall.ENOENT},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if err := tc.op(); !errors.Is(err, tc.want) {
				t.Errorf("got %v, want %v", err, tc.want)
			}
		})
	}
}

// TestLazyFSPowerLossTwice: the remounted file system is a lazy one again,
// on which a second power loss drops what was not synced since the first.
func TestLazyFSPowerLossTwice(t *testing.T) {
	f := lazyfs.MountForTest(t)
	dir := f.Dir()
	writeFile(t, dir, "f", "1", true)
	if _, err := f.PowerLoss(nil); err != nil {
		t.Fatal(err)
	}
	fd, err := os.OpenFile(filepath.Join(dir, "f"), os.O_WRONLY|os.O_APPEND, 0)
	if err != nil {
		t.Fatal(err)
	}
	write(t, fd, "2", true)
	write(t, fd, "3", false)
	close(t, fd)
	stopped := false
	if _, err := f.PowerLoss(func() { stopped = true }); err != nil {
		t.Fatal(err)
	}
	if !stopped {
		t.Error("PowerLoss did not call stop")
	}
	if got, err := os.ReadFile(filepath.Join(dir, "f")); err != nil || string(got) != "12" {
		t.Errorf("got %q, %v; want %q", got, err, "12")
	}
}

// TestLazyFSFailsWhileThePowerIsOff: between the cut and the unmount, a
// write and an fsync fail with EIO and leave nothing durable.
func TestLazyFSFailsWhileThePowerIsOff(t *testing.T) {
	f := lazyfs.MountForTest(t)
	dir := f.Dir()
	fd := create(t, dir, "f")
	write(t, fd, "before", true)
	var writeErr, syncErr error
	if _, err := f.PowerLoss(func() {
		_, writeErr = fd.Write([]byte("after"))
		syncErr = fd.Sync()
		_ = fd.Close()
	}); err != nil {
		t.Fatal(err)
	}
	if !errors.Is(writeErr, syscall.EIO) || !errors.Is(syncErr, syscall.EIO) {
		t.Errorf("write %v, fsync %v after the cut: want EIO", writeErr, syncErr)
	}
	if got, err := os.ReadFile(filepath.Join(dir, "f")); err != nil || string(got) != "before" {
		t.Errorf("got %q, %v; want %q", got, err, "before")
	}
}

func create(t *testing.T, dir, name string) *os.File {
	t.Helper()
	fd, err := os.OpenFile(filepath.Join(dir, name), os.O_CREATE|os.O_RDWR|os.O_TRUNC, 0o600)
	if err != nil {
		t.Fatal(err)
	}
	return fd
}

// write appends s to fd, then fsyncs it when sync is set.
func write(t *testing.T, fd *os.File, s string, sync bool) {
	t.Helper()
	if _, err := fd.WriteString(s); err != nil {
		t.Fatal(err)
	}
	if sync {
		if err := fd.Sync(); err != nil {
			t.Fatal(err)
		}
	}
}

func close(t *testing.T, fd *os.File) {
	t.Helper()
	if err := fd.Close(); err != nil {
		t.Fatal(err)
	}
}

// writeFile creates name with content s, fsynced when sync is set.
func writeFile(t *testing.T, dir, name, s string, sync bool) {
	t.Helper()
	fd := create(t, dir, name)
	write(t, fd, s, sync)
	close(t, fd)
}

func rename(t *testing.T, dir, from, to string) {
	t.Helper()
	if err := os.Rename(filepath.Join(dir, from), filepath.Join(dir, to)); err != nil {
		t.Fatal(err)
	}
}

func syncDir(t *testing.T, dir string) {
	t.Helper()
	d, err := os.Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	if err := d.Sync(); err != nil {
		t.Fatal(err)
	}
}

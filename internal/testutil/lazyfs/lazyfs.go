// Package lazyfs is a FUSE file system for power-loss tests: it keeps,
// for every file, what was written since its last fsync apart from what is
// durable, and PowerLoss leaves only what was durable, as a machine that
// lost its power would find its disk. Its model (the hardest we could
// make that a store which fsyncs what it acknowledges still passes):
//
//   - A file's content and size are durable as of its last fsync or
//     fdatasync, or the last write through a descriptor opened with
//     O_SYNC or O_DSYNC. A write, a truncation or a growth since then is
//     lost. Nothing is written back by itself in the meantime (no
//     kernel writeback), except by Sync.
//   - A name (create, mkdir, rename, unlink, rmdir) is durable once its
//     directory is fsynced, or once the file or directory it names is
//     fsynced: an fsync makes the inode's own names and those of the
//     directories above it durable, as ext4, XFS and btrfs do for a file
//     created or renamed before its fsync. A name changed and not yet
//     durable is undone: a created file is gone, a renamed one is back
//     under its old name (a rename is atomic: never both names), an
//     unlinked one is back with its durable content.
//   - Attributes other than the size (mode, owner, times) are kept as
//     they are.
//
// It holds everything in memory, serves regular files and directories
// (create, open, read, pwrite, truncate, rename, unlink, mkdir, rmdir,
// readdir, stat, statfs, fsync; no links, symlinks or devices), and mounts
// with mount(2) directly, so it needs root (CAP_SYS_ADMIN) and /dev/fuse;
// Mount reports when it cannot. Only tests import it.
package lazyfs

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/hanwen/go-fuse/v2/fs"
	"github.com/hanwen/go-fuse/v2/fuse"
)

// FS is a mounted lazy file system.
type FS struct {
	dir string

	mu      sync.Mutex
	root    *node
	lastIno uint64
	off     bool // the power is off: every operation fails with EIO
	server  *fuse.Server
}

// Mount mounts a new, empty lazy file system on dir, an existing
// directory.
func Mount(dir string) (*FS, error) {
	f := &FS{dir: dir, lastIno: 1}
	f.root = &node{ino: 1, mode: syscall.S_IFDIR | 0o755, live: map[string]*node{}, durable: map[string]*node{}}
	now := time.Now()
	f.root.atime, f.root.mtime, f.root.ctime = now, now, now
	if err := f.mount(); err != nil {
		return nil, err
	}
	return f, nil
}

// Dir is the mount point.
func (f *FS) Dir() string { return f.dir }

// mount serves the file system on f.dir.
func (f *FS) mount() error {
	sec := time.Second
	opts := &fs.Options{
		EntryTimeout: &sec, AttrTimeout: &sec,
		RootStableAttr: &fs.StableAttr{Ino: 1},
		MountOptions: fuse.MountOptions{
			DirectMountStrict: true, // mount(2) itself: there may be no fusermount
			FsName:            "lazyfs",
			Name:              "lazyfs",
			DisableXAttrs:     true,
		},
	}
	srv, err := fs.Mount(f.dir, &fnode{fs: f, n: f.root}, opts)
	if err != nil {
		return fmt.Errorf("lazyfs: mount %s (needs root and /dev/fuse): %w", f.dir, err)
	}
	f.server = srv
	return nil
}

// Sync makes everything written so far durable, as sync(2) does (or the
// kernel's writeback, given time).
func (f *FS) Sync() {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.syncAll()
}

// PowerLoss cuts the power: from that instant nothing more becomes
// durable and every operation fails with EIO. It then calls stop, which
// must end every process that uses the file system (kill -9 them and wait
// for them), unmounts, drops what was not durable (the model is in the
// package comment), and mounts the survivors again on the same directory.
// It returns what was dropped.
func (f *FS) PowerLoss(stop func()) (Loss, error) {
	f.mu.Lock()
	f.off = true
	f.mu.Unlock()
	if stop != nil {
		stop()
	}
	if err := f.unmount(); err != nil {
		return Loss{}, err
	}
	f.mu.Lock()
	loss := f.dropUnsynced()
	f.off = false
	f.mu.Unlock()
	return loss, f.mount()
}

// Unmount unmounts the file system; what it held is gone.
func (f *FS) Unmount() error {
	if f.server == nil {
		return nil
	}
	return f.unmount()
}

// unmount unmounts f.dir, waiting for the last descriptors of the stopped
// processes to close (the kernel releases them shortly after the process
// is reaped).
func (f *FS) unmount() error {
	var err error
	for deadline := time.Now().Add(10 * time.Second); ; {
		if err = f.server.Unmount(); err == nil || !errors.Is(err, syscall.EBUSY) || time.Now().After(deadline) {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	if err != nil {
		return fmt.Errorf("lazyfs: unmount %s: %w", f.dir, err)
	}
	f.server = nil
	return nil
}

// Available reports whether this process can mount a FUSE file system
// with mount(2): /dev/fuse exists and the process is root. The reason is
// set when it cannot.
func Available() (ok bool, reason string) {
	if _, err := os.Stat("/dev/fuse"); err != nil {
		return false, "no /dev/fuse: " + err.Error()
	}
	if os.Geteuid() != 0 {
		return false, "mounting FUSE with mount(2) needs root"
	}
	return true, ""
}

// MountForTest mounts a lazy file system on a new directory of the test
// and unmounts it at the test's end. When FUSE cannot be mounted here (no
// /dev/fuse, not root, no fuse module) the test is skipped with the
// reason; it is skipped even with IOTRANSIT_REQUIRE_PEERS=1, which is
// about peer binaries, and this is the kernel's FUSE.
func MountForTest(t testing.TB) *FS {
	t.Helper()
	if ok, reason := Available(); !ok {
		t.Skipf("lazyfs: %s (a kernel facility, not a peer binary: skipped even with IOTRANSIT_REQUIRE_PEERS=1)", reason)
	}
	dir := filepath.Join(t.TempDir(), "lazyfs")
	if err := os.Mkdir(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	f, err := Mount(dir)
	if err != nil {
		t.Skipf("%v (a kernel facility, not a peer binary: skipped even with IOTRANSIT_REQUIRE_PEERS=1)", err)
	}
	t.Cleanup(func() {
		if err := f.Unmount(); err != nil {
			t.Errorf("%v", err)
		}
	})
	return f
}

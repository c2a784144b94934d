package lazyfs

import (
	"context"
	"sort"
	"syscall"
	"time"

	"github.com/hanwen/go-fuse/v2/fs"
	"github.com/hanwen/go-fuse/v2/fuse"
)

// fnode is the FUSE face of a model node; a new one may stand for the
// same node after the kernel forgot the last (go-fuse keeps one Inode per
// inode number).
type fnode struct {
	fs.Inode
	fs *FS
	n  *node
}

// handle is an open file: it remembers whether its writes are synchronous.
type handle struct{ sync bool }

var (
	_ fs.NodeLookuper  = (*fnode)(nil)
	_ fs.NodeGetattrer = (*fnode)(nil)
	_ fs.NodeSetattrer = (*fnode)(nil)
	_ fs.NodeCreater   = (*fnode)(nil)
	_ fs.NodeOpener    = (*fnode)(nil)
	_ fs.NodeReader    = (*fnode)(nil)
	_ fs.NodeWriter    = (*fnode)(nil)
	_ fs.NodeFsyncer   = (*fnode)(nil)
	_ fs.NodeFlusher   = (*fnode)(nil)
	_ fs.NodeReleaser  = (*fnode)(nil)
	_ fs.NodeMkdirer   = (*fnode)(nil)
	_ fs.NodeUnlinker  = (*fnode)(nil)
	_ fs.NodeRmdirer   = (*fnode)(nil)
	_ fs.NodeRenamer   = (*fnode)(nil)
	_ fs.NodeReaddirer = (*fnode)(nil)
	_ fs.NodeStatfser  = (*fnode)(nil)
)

// lock takes the FS lock; it reports false (and takes nothing) once the
// power is off.
func (f *fnode) lock() bool {
	f.fs.mu.Lock()
	if f.fs.off {
		f.fs.mu.Unlock()
		return false
	}
	return true
}

func (f *fnode) unlock() { f.fs.mu.Unlock() }

// attr fills out with n's attributes.
func attr(n *node, out *fuse.Attr) {
	out.Ino = n.ino
	out.Mode = n.mode
	out.Owner = fuse.Owner{Uid: n.uid, Gid: n.gid}
	out.Nlink = 1
	if n.isDir() {
		out.Nlink = 2
	}
	out.Size = uint64(len(n.data))
	out.Blksize = 4096
	out.Blocks = (out.Size + 511) / 512
	out.SetTimes(&n.atime, &n.mtime, &n.ctime)
}

// child returns the FUSE inode of c, a child of f.
func (f *fnode) child(ctx context.Context, c *node, out *fuse.EntryOut) *fs.Inode {
	attr(c, &out.Attr)
	return f.NewInode(ctx, &fnode{fs: f.fs, n: c}, fs.StableAttr{Mode: c.mode & syscall.S_IFMT, Ino: c.ino})
}

// caller is the uid and gid of the process that made the request.
func caller(ctx context.Context) (uid, gid uint32) {
	if c, ok := fuse.FromContext(ctx); ok {
		return c.Uid, c.Gid
	}
	return 0, 0
}

func (f *fnode) Lookup(ctx context.Context, name string, out *fuse.EntryOut) (*fs.Inode, syscall.Errno) {
	if !f.lock() {
		return nil, syscall.EIO
	}
	defer f.unlock()
	c := f.n.live[name]
	if c == nil {
		return nil, syscall.ENOENT
	}
	return f.child(ctx, c, out), 0
}

func (f *fnode) Getattr(_ context.Context, _ fs.FileHandle, out *fuse.AttrOut) syscall.Errno {
	if !f.lock() {
		return syscall.EIO
	}
	defer f.unlock()
	attr(f.n, &out.Attr)
	return 0
}

func (f *fnode) Setattr(_ context.Context, _ fs.FileHandle, in *fuse.SetAttrIn, out *fuse.AttrOut) syscall.Errno {
	if !f.lock() {
		return syscall.EIO
	}
	defer f.unlock()
	n := f.n
	if size, ok := in.GetSize(); ok {
		if n.isDir() {
			return syscall.EISDIR
		}
		n.truncate(int(size))
	}
	if mode, ok := in.GetMode(); ok {
		n.mode = n.mode&syscall.S_IFMT | mode&^syscall.S_IFMT
	}
	if uid, ok := in.GetUID(); ok {
		n.uid = uid
	}
	if gid, ok := in.GetGID(); ok {
		n.gid = gid
	}
	if t, ok := in.GetATime(); ok {
		n.atime = t
	}
	if t, ok := in.GetMTime(); ok {
		n.mtime = t
	}
	n.ctime = time.Now()
	attr(n, &out.Attr)
	return 0
}

func (f *fnode) Create(ctx context.Context, name string, flags, mode uint32, out *fuse.EntryOut) (*fs.Inode, fs.FileHandle, uint32, syscall.Errno) {
	if !f.lock() {
		return nil, nil, 0, syscall.EIO
	}
	defer f.unlock()
	c := f.n.live[name]
	switch {
	case c != nil && flags&syscall.O_EXCL != 0:
		return nil, nil, 0, syscall.EEXIST
	case c != nil && c.isDir():
		return nil, nil, 0, syscall.EISDIR
	case c != nil && flags&syscall.O_TRUNC != 0:
		c.truncate(0)
	case c == nil:
		uid, gid := caller(ctx)
		c = f.fs.newNode(syscall.S_IFREG|mode&0o7777, uid, gid)
		link(f.n, name, c)
	}
	return f.child(ctx, c, out), &handle{sync: isSync(flags)}, 0, 0
}

// isSync reports whether open flags make every write synchronous.
func isSync(flags uint32) bool { return flags&(syscall.O_SYNC|syscall.O_DSYNC) != 0 }

func (f *fnode) Open(_ context.Context, flags uint32) (fs.FileHandle, uint32, syscall.Errno) {
	if !f.lock() {
		return nil, 0, syscall.EIO
	}
	defer f.unlock()
	if flags&syscall.O_TRUNC != 0 && flags&syscall.O_ACCMODE != syscall.O_RDONLY {
		f.n.truncate(0)
	}
	return &handle{sync: isSync(flags)}, 0, 0
}

func (f *fnode) Read(_ context.Context, _ fs.FileHandle, dest []byte, off int64) (fuse.ReadResult, syscall.Errno) {
	if !f.lock() {
		return nil, syscall.EIO
	}
	defer f.unlock()
	d := f.n.data
	if off >= int64(len(d)) {
		return fuse.ReadResultData(nil), 0
	}
	b := make([]byte, min(len(dest), len(d)-int(off)))
	copy(b, d[off:])
	return fuse.ReadResultData(b), 0
}

func (f *fnode) Write(_ context.Context, fh fs.FileHandle, data []byte, off int64) (uint32, syscall.Errno) {
	if !f.lock() {
		return 0, syscall.EIO
	}
	defer f.unlock()
	f.n.write(data, int(off))
	if h, ok := fh.(*handle); ok && h.sync {
		f.n.syncData()
		f.fs.syncName(f.n)
	}
	return uint32(len(data)), 0
}

// Fsync makes the node durable: a file's content, a directory's entries,
// and in both cases the node's own name and those above it (the model in
// the package comment). fdatasync does the same.
func (f *fnode) Fsync(context.Context, fs.FileHandle, uint32) syscall.Errno {
	if !f.lock() {
		return syscall.EIO
	}
	defer f.unlock()
	if f.n.isDir() {
		f.fs.syncDir(f.n)
		return 0
	}
	f.n.syncData()
	f.fs.syncName(f.n)
	return 0
}

func (f *fnode) Flush(context.Context, fs.FileHandle) syscall.Errno { return 0 }

func (f *fnode) Release(context.Context, fs.FileHandle) syscall.Errno { return 0 }

func (f *fnode) Mkdir(ctx context.Context, name string, mode uint32, out *fuse.EntryOut) (*fs.Inode, syscall.Errno) {
	if !f.lock() {
		return nil, syscall.EIO
	}
	defer f.unlock()
	if f.n.live[name] != nil {
		return nil, syscall.EEXIST
	}
	uid, gid := caller(ctx)
	c := f.fs.newNode(syscall.S_IFDIR|mode&0o7777, uid, gid)
	link(f.n, name, c)
	return f.child(ctx, c, out), 0
}

func (f *fnode) Unlink(_ context.Context, name string) syscall.Errno { return f.remove(name, false) }

func (f *fnode) Rmdir(_ context.Context, name string) syscall.Errno { return f.remove(name, true) }

// remove unlinks name, which must be an empty directory if dir is set and
// a file otherwise.
func (f *fnode) remove(name string, dir bool) syscall.Errno {
	if !f.lock() {
		return syscall.EIO
	}
	defer f.unlock()
	c := f.n.live[name]
	switch {
	case c == nil:
		return syscall.ENOENT
	case dir && !c.isDir():
		return syscall.ENOTDIR
	case !dir && c.isDir():
		return syscall.EISDIR
	case dir && len(c.live) > 0:
		return syscall.ENOTEMPTY
	}
	unlink(f.n, name)
	return 0
}

// renameNoReplace is RENAME_NOREPLACE of renameat2(2); RENAME_EXCHANGE
// and RENAME_WHITEOUT are not supported.
const renameNoReplace = 1

func (f *fnode) Rename(_ context.Context, name string, newParent fs.InodeEmbedder, newName string, flags uint32) syscall.Errno {
	to, ok := newParent.(*fnode)
	if !ok || flags&^renameNoReplace != 0 {
		return syscall.EINVAL
	}
	if !f.lock() {
		return syscall.EIO
	}
	defer f.unlock()
	c := f.n.live[name]
	if c == nil {
		return syscall.ENOENT
	}
	if old := to.n.live[newName]; old != nil && old != c {
		switch {
		case flags&renameNoReplace != 0:
			return syscall.EEXIST
		case c.isDir() && !old.isDir():
			return syscall.ENOTDIR
		case !c.isDir() && old.isDir():
			return syscall.EISDIR
		case old.isDir() && len(old.live) > 0:
			return syscall.ENOTEMPTY
		}
	}
	unlink(f.n, name)
	link(to.n, newName, c)
	c.ctime = time.Now()
	return 0
}

func (f *fnode) Readdir(context.Context) (fs.DirStream, syscall.Errno) {
	if !f.lock() {
		return nil, syscall.EIO
	}
	defer f.unlock()
	list := make([]fuse.DirEntry, 0, len(f.n.live))
	for name, c := range f.n.live {
		list = append(list, fuse.DirEntry{Name: name, Mode: c.mode, Ino: c.ino})
	}
	sort.Slice(list, func(i, j int) bool { return list[i].Name < list[j].Name })
	return fs.NewListDirStream(list), 0
}

// Statfs reports a roomy disk: JetStream sizes its store from the free
// space.
func (f *fnode) Statfs(_ context.Context, out *fuse.StatfsOut) syscall.Errno {
	const bsize = 4096
	out.Bsize, out.Frsize, out.NameLen = bsize, bsize, 255
	out.Blocks, out.Bfree, out.Bavail = 1<<28, 1<<28, 1<<28 // 1 TiB
	out.Files, out.Ffree = 1<<20, 1<<20
	return 0
}

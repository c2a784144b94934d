package lazyfs

import (
	"slices"
	"syscall"
	"time"
)

// node is one file or directory of the model: what a process sees now
// (live) and what a power loss leaves (durable). The FS mutex guards
// every field.
type node struct {
	ino      uint64
	mode     uint32 // type and permission bits
	uid, gid uint32
	atime    time.Time
	mtime    time.Time
	ctime    time.Time
	lparent  *node  // the directory that names it now; nil once unlinked (and for the root)
	lname    string // its name there
	dparent  *node  // the directory that names it durably; nil when no durable name does
	dname    string
	// A directory's entries, now and durably.
	live, durable map[string]*node
	// A regular file's content now, and as of its last fsync.
	data, synced []byte
	// dirty are the byte ranges of data written since the last fsync;
	// low is the smallest size data had since then (a truncation below
	// it drops synced bytes from there on, even if the file grew again).
	dirty []span
	low   int
}

// span is a byte range [off, end) of a file.
type span struct{ off, end int }

func (n *node) isDir() bool { return n.mode&syscall.S_IFMT == syscall.S_IFDIR }

// newNode returns a node of mode (type and permissions), owned by uid and
// gid, with its time stamps set to now.
func (f *FS) newNode(mode, uid, gid uint32) *node {
	f.lastIno++
	now := time.Now()
	n := &node{ino: f.lastIno, mode: mode, uid: uid, gid: gid, atime: now, mtime: now, ctime: now}
	if n.isDir() {
		n.live, n.durable = map[string]*node{}, map[string]*node{}
	}
	return n
}

// link names child name in dir (live), replacing what held that name.
func link(dir *node, name string, child *node) {
	if old := dir.live[name]; old != nil && old != child {
		old.lparent = nil
	}
	dir.live[name] = child
	child.lparent, child.lname = dir, name
	dir.mtime = time.Now()
	dir.ctime = dir.mtime
}

// unlink removes name from dir (live).
func unlink(dir *node, name string) {
	if c := dir.live[name]; c != nil {
		c.lparent = nil
		delete(dir.live, name)
	}
	dir.mtime = time.Now()
	dir.ctime = dir.mtime
}

// write copies b into the file at off, growing it with zeros as needed.
func (n *node) write(b []byte, off int) {
	end := off + len(b)
	if end > len(n.data) {
		n.data = append(n.data, make([]byte, end-len(n.data))...)
	}
	copy(n.data[off:end], b)
	n.markDirty(off, end)
	n.mtime = time.Now()
	n.ctime = n.mtime
}

// markDirty records [off, end) as written since the last fsync.
func (n *node) markDirty(off, end int) {
	if off >= end {
		return
	}
	if k := len(n.dirty); k > 0 {
		last := &n.dirty[k-1]
		if off <= last.end && end >= last.off { // overlaps or touches the last range: appends do
			last.off, last.end = min(last.off, off), max(last.end, end)
			return
		}
	}
	n.dirty = append(n.dirty, span{off, end})
	if len(n.dirty) > 64 { // many scattered writes: one range covering them all
		lo, hi := n.dirty[0].off, n.dirty[0].end
		for _, s := range n.dirty {
			lo, hi = min(lo, s.off), max(hi, s.end)
		}
		n.dirty = append(n.dirty[:0], span{lo, hi})
	}
}

// truncate sets the file's size.
func (n *node) truncate(size int) {
	if size < len(n.data) {
		n.data = n.data[:size]
	} else {
		n.data = append(n.data, make([]byte, size-len(n.data))...)
	}
	n.low = min(n.low, size)
	n.mtime = time.Now()
	n.ctime = n.mtime
}

// syncData makes the file's content as of now durable (fsync, fdatasync,
// a write through an O_SYNC or O_DSYNC descriptor).
func (n *node) syncData() {
	size := len(n.data)
	s := n.synced[:min(len(n.synced), n.low)]
	if size > len(s) {
		s = append(s, make([]byte, size-len(s))...)
	} else {
		s = s[:size]
	}
	for _, d := range n.dirty {
		if d.off < size {
			copy(s[d.off:min(d.end, size)], n.data[d.off:min(d.end, size)])
		}
	}
	n.synced, n.dirty, n.low = s, n.dirty[:0], size
}

// syncName makes the live name of n durable, and of each directory above
// it: a name it had durably elsewhere goes (a rename is atomic), a
// durable name that is no longer live goes too (an unlink).
func (f *FS) syncName(n *node) {
	for n != nil && n != f.root {
		if n.dparent != nil && (n.dparent != n.lparent || n.dname != n.lname) {
			if n.dparent.durable[n.dname] == n {
				delete(n.dparent.durable, n.dname)
			}
			n.dparent = nil
		}
		if n.lparent == nil {
			return
		}
		p := n.lparent
		if old := p.durable[n.lname]; old != nil && old != n {
			old.dparent = nil
		}
		p.durable[n.lname] = n
		n.dparent, n.dname = p, n.lname
		n = p
	}
}

// syncDir makes dir's entries as they are now durable (fsync of a
// directory), and its own name.
func (f *FS) syncDir(dir *node) {
	for name, c := range dir.durable {
		if dir.live[name] != c {
			delete(dir.durable, name)
			if c.dparent == dir && c.dname == name {
				c.dparent = nil
			}
		}
	}
	for name, c := range dir.live {
		if dir.durable[name] == c {
			continue
		}
		if c.dparent != nil && c.dparent.durable[c.dname] == c { // renamed here: its old name goes
			delete(c.dparent.durable, c.dname)
		}
		if old := dir.durable[name]; old != nil {
			old.dparent = nil
		}
		dir.durable[name] = c
		c.dparent, c.dname = dir, name
	}
	f.syncName(dir)
}

// syncAll makes everything durable, as sync(2) does.
func (f *FS) syncAll() {
	var walk func(*node)
	walk = func(n *node) {
		if !n.isDir() {
			n.syncData()
			return
		}
		f.syncDir(n)
		for _, c := range n.live {
			walk(c)
		}
	}
	walk(f.root)
}

// Loss is what a power loss dropped.
type Loss struct {
	// Bytes is the number of file bytes that were not durable: written,
	// cut or grown since the last fsync of their file.
	Bytes int64
	// Files is the number of files whose content went back to an older
	// state, or which went away.
	Files int
	// Names is the number of names (directory entries) whose durable
	// state differs from what was seen: created, renamed, replaced or
	// removed since they were last made durable.
	Names int
}

// dropUnsynced turns the durable state into the live one, as after a
// power loss, and returns what went.
func (f *FS) dropUnsynced() Loss {
	var loss Loss
	seen := map[*node]bool{}
	var live func(*node)
	live = func(n *node) { // what was there before: to count what goes
		seen[n] = true
		if n.isDir() {
			for name, c := range n.live {
				if n.durable[name] != c {
					loss.Names++
				}
				live(c)
			}
			for name := range n.durable {
				if n.live[name] == nil {
					loss.Names++
				}
			}
			return
		}
		if b := lostBytes(n); b > 0 {
			loss.Bytes += b
			loss.Files++
		}
	}
	live(f.root)
	var restore func(*node)
	restore = func(n *node) {
		if n.isDir() {
			n.live = make(map[string]*node, len(n.durable))
			for name, c := range n.durable {
				n.live[name] = c
				c.lparent, c.lname = n, name
				restore(c)
			}
			return
		}
		if !seen[n] && len(n.synced) > 0 { // unlinked, but not durably: back with its synced content
			loss.Files++
		}
		n.data = slices.Clone(n.synced)
		n.dirty, n.low = nil, len(n.synced)
	}
	restore(f.root)
	return loss
}

// lostBytes is the number of bytes of n that differ from its durable
// content: the size difference plus the dirty ranges within the durable
// size.
func lostBytes(n *node) int64 {
	size, dsize := len(n.data), len(n.synced)
	lost := int64(max(size, dsize) - min(size, dsize, n.low))
	for _, d := range n.dirty {
		lo, hi := d.off, min(d.end, size, dsize, n.low)
		if hi > lo {
			lost += int64(hi - lo)
		}
	}
	return lost
}

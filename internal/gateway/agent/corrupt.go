package agent

import (
	"errors"
	"fmt"
	"os"
	"time"

	"github.com/iotransit/iotransit/internal/gateway/queue"
	"github.com/iotransit/iotransit/internal/mesh"
)

// openQueue opens the queue. A file that is not a readable queue
// (queue.ErrCorrupt) is moved aside, kept for inspection, and a new queue
// is opened: what it held is lost, and so are the replay windows kept in
// it (logged as an error; the windows start again from the next frames).
func (a *Agent) openQueue() (*queue.Queue, error) {
	path := a.path("queue.db")
	q, err := queue.Open(path, queue.KeyFunc(a.queueKey), a.cfg.Queue)
	if !errors.Is(err, queue.ErrCorrupt) {
		return q, err
	}
	aside, merr := a.moveAside(path)
	if merr != nil {
		return nil, errors.Join(err, merr)
	}
	a.log.Error("the queue file is corrupt: moved aside, starting a new queue; its messages and the mesh replay windows it held are lost", "err", err, "moved_to", aside)
	return queue.Open(path, queue.KeyFunc(a.queueKey), a.cfg.Queue)
}

// moveAside renames a damaged file to path.corrupt-TIME.
func (a *Agent) moveAside(path string) (string, error) {
	aside := fmt.Sprintf("%s.corrupt-%d", path, time.Now().UnixNano())
	return aside, os.Rename(path, aside)
}

// fail ends Run with err (the first one wins).
func (a *Agent) fail(err error) {
	a.mu.Lock()
	if a.fatal == nil {
		a.fatal = err
	}
	stop := a.stopRun
	a.mu.Unlock()
	if stop != nil {
		stop()
	}
}

// queueBroken reports whether err is the queue's own damage, and if so ends
// Run: the agent then replaces the queue, keeping the replay windows that
// it holds in memory (recoverQueue), and exits with the error so that its
// supervisor starts it again.
func (a *Agent) queueBroken(err error) bool {
	var rerr *queue.RecordError
	if !errors.Is(err, queue.ErrCorrupt) || errors.As(err, &rerr) {
		return false
	}
	a.fail(fmt.Errorf("agent: %w", err))
	return true
}

// recoverQueue replaces a broken queue: the file is moved aside and a new
// one holds the receiver's replay windows, so that the next start does
// not reopen them.
func (a *Agent) recoverQueue() error {
	// A queue whose commit hit a damaged file may not close (its write
	// transaction's lock is never released); it is left behind, which
	// costs a descriptor until the process exits, as Run's caller should.
	closed := make(chan struct{})
	go func(q *queue.Queue) { _ = q.Close(); close(closed) }(a.q)
	select {
	case <-closed:
	case <-time.After(2 * time.Second):
		a.log.Error("the broken queue does not close; left open")
	}
	path := a.path("queue.db")
	aside, err := a.moveAside(path)
	if err != nil {
		return err
	}
	q, err := queue.Open(path, queue.KeyFunc(a.queueKey), a.cfg.Queue)
	if err != nil {
		return err
	}
	a.q = q
	states, _ := a.rcv.Snapshot()
	buckets := map[int]map[uint64]mesh.NodeState{}
	side := map[string][]byte{}
	for _, s := range states {
		side[replayKey(addState(buckets, s))] = nil
	}
	for b := range buckets {
		side[replayKey(b)] = encodeBucket(buckets[b])
	}
	if len(side) > 0 {
		if _, err := q.Append(nil, side); err != nil {
			return err
		}
	}
	a.log.Error("the queue broke: moved aside, a new queue holds the mesh replay windows; the messages it held are lost", "moved_to", aside)
	return nil
}

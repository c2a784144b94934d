package agent

import (
	"bytes"
	"context"
	"errors"
	"net"
	"time"

	"github.com/iotransit/iotransit/internal/gateway/queue"
	"github.com/iotransit/iotransit/internal/mesh"
	"github.com/iotransit/iotransit/internal/retry"
)

// maxAppend is the most messages one queue commit takes.
const maxAppend = 1024

// receive reads the mesh socket until it closes: each datagram goes
// through the mesh receiver (which counts every outcome), and what it
// accepts waits in the inbox for the appender. A full inbox holds the
// reader back: the kernel's socket buffer then drops, never memory grows.
func (a *Agent) receive(ctx context.Context) {
	buf := make([]byte, mesh.MaxFrameSize+1)
	for {
		n, _, err := a.conn.ReadFromUDP(buf)
		if err != nil {
			if ctx.Err() != nil || errors.Is(err, net.ErrClosed) {
				return
			}
			a.log.Warn("mesh receive", "err", err)
			continue
		}
		msg, _, reason := a.rcv.Receive(buf[:n])
		if reason != mesh.Accepted {
			continue
		}
		select {
		case a.inbox <- bytes.Clone(msg):
		case <-ctx.Done():
			return
		}
	}
}

// appendLoop appends the accepted messages to the queue, each commit with
// the replay windows that changed since the previous one: a restart finds
// every window at least as far as the messages it queued, so no accepted
// frame can be accepted again.
func (a *Agent) appendLoop(ctx context.Context) {
	// The windows restored at New are in the queue already; every change
	// after that mark is written with the messages it let in (a snapshot
	// taken here could already hold frames received meanwhile, and they
	// would never be written).
	buckets := map[int]map[uint64]mesh.NodeState{}
	for _, s := range a.restored {
		addState(buckets, s)
	}
	states, mark := []mesh.NodeState(nil), a.restoredMark
	batch := make([][]byte, 0, maxAppend)
	linger := time.NewTimer(0)
	<-linger.C
	for {
		select {
		case m := <-a.inbox:
			batch = append(batch[:0], m)
		case <-ctx.Done():
			return
		}
		// Gather what comes within Linger (or until the batch is full),
		// so that one commit carries many frames.
		if a.cfg.Linger > 0 {
			linger.Reset(a.cfg.Linger)
		}
	fill:
		for len(batch) < maxAppend {
			if a.cfg.Linger <= 0 {
				select {
				case m := <-a.inbox:
					batch = append(batch, m)
				default:
					break fill
				}
				continue
			}
			select {
			case m := <-a.inbox:
				batch = append(batch, m)
			case <-linger.C:
				break fill
			case <-ctx.Done():
				break fill
			}
		}
		linger.Stop()
		var next uint64
		states, next = a.rcv.Changes(states[:0], mark)
		changed := map[int]bool{}
		for _, s := range states {
			changed[addState(buckets, s)] = true
		}
		side := make(map[string][]byte, len(changed))
		for b := range changed {
			side[replayKey(b)] = encodeBucket(buckets[b])
		}
		res, err := a.q.Append(batch, side)
		switch {
		case err == nil:
			mark = next
			a.log.Debug("queued", "messages", res.Accepted, "depth", a.q.Stats().Depth)
			if res.Dropped > 0 || res.Refused > 0 {
				a.log.Warn("queue full", "policy", a.cfg.Queue.Full.String(), "dropped", res.Dropped, "refused", res.Refused)
				a.markChanged()
			}
		case ctx.Err() != nil:
			return
		case a.queueBroken(err):
			a.log.Error("queue append failed: mesh messages lost", "err", err, "messages", len(batch))
			return
		default:
			// The messages are lost; the replay windows are written with
			// the next batch (the mark stays).
			a.log.Error("queue append failed: mesh messages lost", "err", err, "messages", len(batch))
			if !errors.Is(err, queue.ErrTooLarge) {
				retry.Sleep(ctx, time.Second)
			}
		}
	}
}

// addState puts s in its bucket and returns the bucket.
func addState(buckets map[int]map[uint64]mesh.NodeState, s mesh.NodeState) int {
	b := bucketOf(s.Node)
	m := buckets[b]
	if m == nil {
		m = map[uint64]mesh.NodeState{}
		buckets[b] = m
	}
	m[windowKey(s)] = s
	return b
}

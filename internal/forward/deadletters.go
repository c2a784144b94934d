// Dead letters: the messages an integration gave up on, in its dead-letter
// stream (the worker writes them with the headers below); the registry
// lists them and re-drives them to the integration.

package forward

import (
	"context"
	"errors"
	"slices"
	"strconv"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/iotransit/iotransit/internal/backbone/names"
	"github.com/iotransit/iotransit/internal/fault"
)

// ErrDeadLetterAbsent is a re-drive of a dead letter that does not exist.
var ErrDeadLetterAbsent = fault.Define("forward.dead_letter_not_found", fault.NotFound, "no such dead letter")

// Dead-letter headers.
const (
	hdrDeadReason   = "Iot-Dead-Reason"
	hdrDeadAttempts = "Iot-Dead-Attempts"
	hdrDeadAt       = "Iot-Dead-At"
	hdrOrigSeq      = "Iot-Orig-Seq"
)

// contentID is a stored message's content-derived id.
func contentID(h nats.Header) string {
	if id := h.Get("Iot-Content-Id"); id != "" {
		return id
	}
	return h.Get(jetstream.MsgIDHeader)
}

// DeadLetters lists an integration's dead letters, oldest first, after the
// dead-letter sequence after; next is the cursor for the following page.
func (reg *Registry) DeadLetters(ctx context.Context, tenant, id string, after uint64, limit int) ([]DeadLetter, uint64, error) {
	if _, _, err := reg.load(ctx, tenant, id); err != nil {
		return nil, 0, err
	}
	st, err := reg.js.Stream(ctx, names.DeadLetterStream(tenant, id))
	if errors.Is(err, jetstream.ErrStreamNotFound) {
		return []DeadLetter{}, 0, nil
	}
	if err != nil {
		return nil, 0, err
	}
	out := []DeadLetter{}
	seq := after + 1
	for len(out) < limit {
		m, err := st.GetMsg(ctx, seq, jetstream.WithGetMsgSubject(names.DeadLetter(tenant, id)))
		if errors.Is(err, jetstream.ErrMsgNotFound) {
			return out, 0, nil
		}
		if err != nil {
			return nil, 0, err
		}
		sm, err := reg.msgs.Decode(ctx, tenant, m.Sequence, m.Time, m.Header, m.Data)
		if err != nil { // listed without its message (it could not be read when it died either)
			sm.ID, sm.Gateway, sm.Message = contentID(m.Header), m.Header.Get("Iot-Gateway"), nil
		}
		orig, _ := strconv.ParseUint(m.Header.Get(hdrOrigSeq), 10, 64)
		attempts, _ := strconv.Atoi(m.Header.Get(hdrDeadAttempts))
		deadAt, _ := time.Parse(time.RFC3339Nano, m.Header.Get(hdrDeadAt))
		out = append(out, DeadLetter{
			Seq: m.Sequence, OriginalSeq: orig, ID: sm.ID, Gateway: sm.Gateway, ReceivedAt: sm.ReceivedAt,
			DeadAt: deadAt, Reason: m.Header.Get(hdrDeadReason), Attempts: attempts, Message: sm.Message,
		})
		seq = m.Sequence + 1
	}
	return out, out[len(out)-1].Seq, nil
}

// Redrive sends dead letters back to the integration (all of them when
// seqs is empty), in their order, and removes them from the dead-letter
// stream. It returns how many were re-driven.
func (reg *Registry) Redrive(ctx context.Context, tenant, id string, seqs []uint64) (int, error) {
	if _, _, err := reg.load(ctx, tenant, id); err != nil {
		return 0, err
	}
	st, err := reg.js.Stream(ctx, names.DeadLetterStream(tenant, id))
	if errors.Is(err, jetstream.ErrStreamNotFound) {
		if len(seqs) > 0 {
			return 0, ErrDeadLetterAbsent.WithDetail("dead letter %d does not exist", seqs[0])
		}
		return 0, nil
	}
	if err != nil {
		return 0, err
	}
	slices.Sort(seqs)
	n := 0
	redrive := func(m *jetstream.RawStreamMsg) error {
		if err := reg.msgs.Redrive(ctx, tenant, id, m.Header, m.Data); err != nil {
			return err
		}
		if err := st.DeleteMsg(ctx, m.Sequence); err != nil {
			return err
		}
		n++
		return nil
	}
	if len(seqs) > 0 {
		// All or nothing on the request's side: every one must exist first.
		msgs := make([]*jetstream.RawStreamMsg, 0, len(seqs))
		for _, s := range slices.Compact(seqs) {
			m, err := st.GetMsg(ctx, s)
			if errors.Is(err, jetstream.ErrMsgNotFound) {
				return 0, ErrDeadLetterAbsent.WithDetail("dead letter %d does not exist", s)
			}
			if err != nil {
				return 0, err
			}
			msgs = append(msgs, m)
		}
		for _, m := range msgs {
			if err := redrive(m); err != nil {
				return n, err
			}
		}
		return n, nil
	}
	for seq := uint64(1); ; {
		m, err := st.GetMsg(ctx, seq, jetstream.WithGetMsgSubject(names.DeadLetter(tenant, id)))
		if errors.Is(err, jetstream.ErrMsgNotFound) {
			return n, nil
		}
		if err != nil {
			return n, err
		}
		if err := redrive(m); err != nil {
			return n, err
		}
		seq = m.Sequence + 1
	}
}

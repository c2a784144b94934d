package kms

import (
	"context"
	"errors"
	"fmt"
	"math"
	"slices"
	"strings"

	"github.com/nats-io/nats.go/jetstream"
)

// StreamStore keeps wrapped keys in a JetStream stream, one subject per
// key (Prefix + key), its last message being its value. Unlike a KV bucket
// (which denies deleting messages, so that a purged or replaced value
// stays in the stream's block files until JetStream compacts them), the
// stream lets the store erase a value: Update and Destroy overwrite every
// superseded message with random bytes in the block files
// (SecureDeleteMsg), so no wrapped key that was replaced or destroyed is
// left on disk. The stream must allow deletes, keep every message of a
// subject (no per-subject limit: JetStream would drop old values without
// erasing them), not compress, and answer reads at its leader (no direct
// get: a lagging replica would hide a message from an erase).
type StreamStore struct {
	JS     jetstream.JetStream
	Stream jetstream.Stream
	// Prefix is the subject of every key but its name ("kms.keys.").
	Prefix string
}

var _ ManagedKeyStore = StreamStore{}

// subject returns the subject of key: each of its dot-separated parts must
// be made of letters, digits, '_' and '-', as kms names keys (tenant ids,
// "_system", "_root", "v<N>", "shredded", "check"), so that no key is a
// wildcard or reaches another key's subject.
func (s StreamStore) subject(key string) (string, error) {
	for part := range strings.SplitSeq(key, ".") {
		if part == "" || len(part) > 128 || strings.IndexFunc(part, func(r rune) bool {
			return !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '_' || r == '-')
		}) >= 0 {
			return "", fmt.Errorf("kms: key %q: not a key name", key)
		}
	}
	return s.Prefix + key, nil
}

// Get returns a key's value: its last message.
func (s StreamStore) Get(ctx context.Context, key string) ([]byte, error) {
	v, _, err := s.GetEntry(ctx, key)
	return v, err
}

// GetEntry returns a key's value and revision (the stream sequence of its
// last message).
func (s StreamStore) GetEntry(ctx context.Context, key string) ([]byte, uint64, error) {
	subj, err := s.subject(key)
	if err != nil {
		return nil, 0, err
	}
	m, err := s.Stream.GetLastMsgForSubject(ctx, subj)
	if errors.Is(err, jetstream.ErrMsgNotFound) {
		return nil, 0, ErrKeyNotFound
	}
	if err != nil {
		return nil, 0, err
	}
	return m.Data, m.Sequence, nil
}

// Create stores a key that must not exist yet: the stream refuses the
// message unless the subject has none (expected last subject sequence 0).
func (s StreamStore) Create(ctx context.Context, key string, value []byte) error {
	_, err := s.put(ctx, key, value, 0)
	return err
}

// Update replaces a key whose last message is still revision, and then
// erases every earlier message of the key. A key changed or gone meanwhile
// gives ErrKeyExists. When the erasure fails the value is replaced all the
// same and the error says so; the next Entries erases what is left.
func (s StreamStore) Update(ctx context.Context, key string, value []byte, revision uint64) error {
	seq, err := s.put(ctx, key, value, revision)
	if err != nil {
		return err
	}
	if err := s.erase(ctx, s.Prefix+key, seq-1); err != nil {
		return fmt.Errorf("kms: %s replaced, its earlier value not yet erased: %w", key, err)
	}
	return nil
}

// put publishes value as key's message if the key's last message is
// revision (0: none), returning its sequence.
func (s StreamStore) put(ctx context.Context, key string, value []byte, revision uint64) (uint64, error) {
	subj, err := s.subject(key)
	if err != nil {
		return 0, err
	}
	ack, err := s.JS.Publish(ctx, subj, value,
		jetstream.WithExpectStream(s.Stream.CachedInfo().Config.Name),
		jetstream.WithExpectLastSequencePerSubject(revision))
	if wrongLastSequence(err) {
		return 0, ErrKeyExists
	}
	if err != nil {
		return 0, err
	}
	return ack.Sequence, nil
}

// wrongLastSequence reports whether err is the stream refusing a message
// whose subject's last sequence is not the one expected: 10071 on a single
// replica, 10164 on a replicated stream for a subject with a write in
// process.
func wrongLastSequence(err error) bool {
	var apiErr *jetstream.APIError
	return errors.As(err, &apiErr) && (apiErr.ErrorCode == jetstream.JSErrCodeStreamWrongLastSequence ||
		apiErr.ErrorCode == jetstream.JSErrCodeStreamWrongLastSequenceConstant)
}

// Entries returns every key with its value and revision. A key that has
// earlier messages beside its value (an Update interrupted before it
// erased them) gets them erased.
func (s StreamStore) Entries(ctx context.Context) ([]Entry, error) {
	info, err := s.Stream.Info(ctx, jetstream.WithSubjectFilter(s.Prefix+">"))
	if err != nil {
		return nil, fmt.Errorf("list keys: %w", err)
	}
	out := make([]Entry, 0, len(info.State.Subjects))
	for subj, n := range info.State.Subjects {
		key := strings.TrimPrefix(subj, s.Prefix)
		v, rev, err := s.GetEntry(ctx, key)
		if errors.Is(err, ErrKeyNotFound) {
			continue // destroyed meanwhile
		}
		if err != nil {
			return nil, fmt.Errorf("read %s: %w", key, err)
		}
		if n > 1 {
			if err := s.erase(ctx, subj, rev-1); err != nil {
				return nil, fmt.Errorf("erase the earlier values of %s: %w", key, err)
			}
		}
		out = append(out, Entry{Key: key, Value: v, Revision: rev})
	}
	slices.SortFunc(out, func(a, b Entry) int { return strings.Compare(a.Key, b.Key) })
	return out, nil
}

// Destroy erases every message of a key.
func (s StreamStore) Destroy(ctx context.Context, key string) error {
	subj, err := s.subject(key)
	if err != nil {
		return err
	}
	return s.erase(ctx, subj, math.MaxUint64)
}

// erase overwrites and removes every message of subj up to sequence last.
// A message removed meanwhile (by another node's erase) is fine.
func (s StreamStore) erase(ctx context.Context, subj string, last uint64) error {
	for seq := uint64(1); seq <= last; {
		m, err := s.Stream.GetMsg(ctx, seq, jetstream.WithGetMsgSubject(subj))
		if errors.Is(err, jetstream.ErrMsgNotFound) {
			return nil
		}
		if err != nil {
			return err
		}
		if m.Sequence > last {
			return nil
		}
		if err := s.Stream.SecureDeleteMsg(ctx, m.Sequence); err != nil {
			if _, gerr := s.Stream.GetMsg(ctx, m.Sequence); !errors.Is(gerr, jetstream.ErrMsgNotFound) {
				return fmt.Errorf("erase message %d: %w", m.Sequence, err)
			}
		}
		seq = m.Sequence + 1
	}
	return nil
}

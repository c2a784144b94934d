package mesh

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"slices"
	"time"
)

// KeySet is a network's keys: what the cloud delivers to a gateway (the
// JSON inside the sealed body on gwproto's KeysTopic) and what a key file
// holds (`iotransit mesh key export` writes it; commissioning and mesh-sim
// read it). Its JSON:
//
//	{"networkId": 11259375, "version": 3,
//	 "keys": [{"epoch": 3, "key": "base64 of 16 bytes"},
//	          {"epoch": 2, "key": "…", "notAfter": "2026-09-01T12:00:00Z"}]}
type KeySet struct {
	// NetworkID names the network; 0 is no network.
	NetworkID uint32 `json:"networkId"`
	// Version rises with every change of the set (a rotation, the end of
	// a grace period); a receiver refuses an older version than it holds.
	Version uint64 `json:"version"`
	// Keys are the network's keys by epoch: exactly one without NotAfter,
	// the current one, which has the highest epoch.
	Keys []EpochKey `json:"keys"`
}

// EpochKey is one epoch's key.
type EpochKey struct {
	// Epoch numbers the key; a rotation makes the next one. Epochs start
	// at 1.
	Epoch uint32 `json:"epoch"`
	// Key is the AES-128 key, KeySize bytes (base64 in JSON).
	Key []byte `json:"key"`
	// NotAfter, set on the keys of earlier epochs, ends their grace
	// period: from then on their frames are refused (stale_epoch).
	NotAfter *time.Time `json:"notAfter,omitempty"`
}

// maxKeyFile bounds a key file (a set of a few epochs is under 1 KiB).
const maxKeyFile = 64 << 10

// Validate reports every problem of the set at once.
func (ks *KeySet) Validate() error {
	var errs []error
	if ks.NetworkID == 0 {
		errs = append(errs, errors.New("networkId 0 is no network"))
	}
	if len(ks.Keys) == 0 {
		errs = append(errs, errors.New("no keys"))
	}
	seen := map[uint32]bool{}
	currents := 0
	var top uint32
	for _, k := range ks.Keys {
		if k.Epoch == 0 {
			errs = append(errs, errors.New("epoch 0: epochs start at 1"))
		}
		if seen[k.Epoch] {
			errs = append(errs, fmt.Errorf("epoch %d twice", k.Epoch))
		}
		seen[k.Epoch] = true
		top = max(top, k.Epoch)
		if _, err := NewKey(k.Key); err != nil {
			errs = append(errs, fmt.Errorf("epoch %d: %w", k.Epoch, err))
		}
		if k.NotAfter == nil {
			currents++
		}
	}
	if len(ks.Keys) > 0 {
		if c, ok := ks.current(); currents != 1 || !ok || c.Epoch != top {
			errs = append(errs, errors.New("exactly one key, the one of the highest epoch, must be current (no notAfter)"))
		}
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("mesh: key set: %w", err)
	}
	return nil
}

// current returns the key without NotAfter.
func (ks *KeySet) current() (EpochKey, bool) {
	i := slices.IndexFunc(ks.Keys, func(k EpochKey) bool { return k.NotAfter == nil })
	if i < 0 {
		return EpochKey{}, false
	}
	return ks.Keys[i], true
}

// Current returns the current epoch and its key, for a sender. The set
// must be valid (Validate).
func (ks *KeySet) Current() (uint32, *Key, error) {
	c, ok := ks.current()
	if !ok {
		return 0, nil, errors.New("mesh: key set has no current key")
	}
	k, err := NewKey(c.Key)
	if err != nil {
		return 0, nil, err
	}
	return c.Epoch, k, nil
}

// Marshal returns the set as a key file: indented JSON and a newline.
// Write it with internal/securefile, 0600: it holds the keys.
func (ks *KeySet) Marshal() ([]byte, error) {
	if err := ks.Validate(); err != nil {
		return nil, err
	}
	b, err := json.MarshalIndent(ks, "", "  ")
	if err != nil {
		return nil, err
	}
	return append(b, '\n'), nil
}

// ParseKeySet decodes and validates a key set or key file. Unknown fields
// are refused, so a misspelt field is not silently a missing one.
func ParseKeySet(b []byte) (KeySet, error) {
	var ks KeySet
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&ks); err != nil {
		return KeySet{}, fmt.Errorf("mesh: key set: %w", err)
	}
	if _, err := dec.Token(); !errors.Is(err, io.EOF) {
		return KeySet{}, errors.New("mesh: key set: data after the JSON object")
	}
	if err := ks.Validate(); err != nil {
		return KeySet{}, err
	}
	return ks, nil
}

// ReadKeyFile reads and parses the key file at path. It refuses a file that
// group or others may read or write, as internal/securefile does: the file
// holds the network's keys.
func ReadKeyFile(path string) (KeySet, error) {
	f, err := os.Open(path)
	if err != nil {
		return KeySet{}, err
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return KeySet{}, err
	}
	if st.Mode().Perm()&0o077 != 0 {
		return KeySet{}, fmt.Errorf("mesh: key file %s has mode %v; it must be 0600", path, st.Mode().Perm())
	}
	b, err := io.ReadAll(io.LimitReader(f, maxKeyFile+1))
	if err != nil {
		return KeySet{}, err
	}
	if len(b) > maxKeyFile {
		return KeySet{}, fmt.Errorf("mesh: key file %s is larger than %d KiB", path, maxKeyFile>>10)
	}
	ks, err := ParseKeySet(b)
	if err != nil {
		return KeySet{}, fmt.Errorf("%s: %w", path, err)
	}
	return ks, nil
}

package gwproto

import (
	"bytes"
	"crypto/ecdh"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"slices"

	"github.com/iotransit/iotransit/receiver"
)

// KeyDeliveryKeySize is the size of a raw X25519 key-delivery public key.
const KeyDeliveryKeySize = 32

// MeshDropReasons are the reasons a Status's mesh counters may name.
var MeshDropReasons = []string{"replay", "forged", "truncated", "malformed", "unknown_node", "stale_epoch", "unknown_network"}

// ParseStatus decodes and checks a Status payload: at most MaxStatusBytes,
// one JSON object with no unknown fields and nothing after it, slot "a",
// "b" or empty, no negative queue depth, mesh drop reasons from
// MeshDropReasons only, and a key-delivery key that is a usable X25519
// public key when present. It reports the first problem.
func ParseStatus(b []byte) (Status, error) {
	var st Status
	if len(b) > MaxStatusBytes {
		return st, fmt.Errorf("status: %d bytes, at most %d", len(b), MaxStatusBytes)
	}
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&st); err != nil {
		return Status{}, fmt.Errorf("status: %w", err)
	}
	if _, err := dec.Token(); !errors.Is(err, io.EOF) {
		return Status{}, errors.New("status: data after the JSON object")
	}
	switch {
	case len(st.AgentVersion) > 64 || len(st.FirmwareVersion) > 64:
		return Status{}, errors.New("status: agentVersion and firmwareVersion are at most 64 bytes")
	case st.Slot != "" && st.Slot != "a" && st.Slot != "b":
		return Status{}, errors.New(`status: slot must be "a" or "b"`)
	case st.QueueDepth < 0:
		return Status{}, errors.New("status: queueDepth must not be negative")
	}
	for r := range st.Mesh.Dropped {
		if !slices.Contains(MeshDropReasons, r) {
			return Status{}, fmt.Errorf("status: mesh.dropped: unknown reason %.40q", r)
		}
	}
	if st.KeyDeliveryKey != nil {
		if _, err := keySealer(st.KeyDeliveryKey); err != nil {
			return Status{}, fmt.Errorf("status: keyDeliveryKey: %w", err)
		}
	}
	return st, nil
}

// keySealer returns a Sealer (package receiver) for a raw X25519 public key.
func keySealer(raw []byte) (*receiver.Sealer, error) {
	if len(raw) != KeyDeliveryKeySize {
		return nil, fmt.Errorf("%d bytes, want a raw X25519 key of %d", len(raw), KeyDeliveryKeySize)
	}
	pub, err := ecdh.X25519().NewPublicKey(raw)
	if err != nil {
		return nil, err
	}
	der, err := x509.MarshalPKIXPublicKey(pub)
	if err != nil {
		return nil, err
	}
	return receiver.ParsePublicKey(pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der}))
}

// SealKeys seals a mesh key set (its JSON) to a gateway's key-delivery key
// (raw X25519, Status.KeyDeliveryKey): the payload of KeysTopic, a sealed
// body in package receiver's format.
func SealKeys(deliveryKey, keySetJSON []byte) ([]byte, error) {
	s, err := keySealer(deliveryKey)
	if err != nil {
		return nil, fmt.Errorf("gwproto: key-delivery key: %w", err)
	}
	return s.Seal(keySetJSON)
}

// OpenKeys opens a KeysTopic payload with the gateway's key-delivery
// private key and returns the key set's JSON (internal/mesh.ParseKeySet
// reads it). A payload sealed to another key does not open
// (receiver.ErrNotForThisKey).
func OpenKeys(priv *ecdh.PrivateKey, sealed []byte) ([]byte, error) {
	if priv == nil || priv.Curve() != ecdh.X25519() {
		return nil, errors.New("gwproto: the key-delivery key must be an X25519 private key")
	}
	der, err := x509.MarshalPKCS8PrivateKey(priv)
	if err != nil {
		return nil, err
	}
	o, err := receiver.ParsePrivateKey(pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}))
	if err != nil {
		return nil, err
	}
	return o.Open(sealed)
}

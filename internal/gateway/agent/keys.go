package agent

import (
	"crypto/ecdh"
	"crypto/rand"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"slices"

	"github.com/iotransit/iotransit/internal/gateway/keystore"
	"github.com/iotransit/iotransit/internal/gwproto"
	"github.com/iotransit/iotransit/internal/mesh"
	"github.com/iotransit/iotransit/internal/securefile"
	"github.com/iotransit/iotransit/receiver"
)

// Associated data of what the key store seals for the agent: each sealed
// secret opens only for its purpose.
var (
	aadQueueKey = []byte("iotransit/agent/queue-key/v1")
	aadKDK      = []byte("iotransit/agent/key-delivery-key/v1")
	aadNodes    = []byte("iotransit/agent/nodes/v1")
)

// loadSealed returns the secret sealed in the file at path, making it with
// fresh and sealing it there on first use.
func loadSealed(s keystore.Sealer, path string, aad []byte, fresh func() ([]byte, error)) ([]byte, error) {
	var made []byte
	sealed, err := securefile.LoadOrCreate(path, func() ([]byte, error) {
		var err error
		if made, err = fresh(); err != nil {
			return nil, err
		}
		return s.Seal(made, aad)
	})
	if err != nil {
		return nil, fmt.Errorf("agent: %w", err)
	}
	if made != nil {
		return made, nil
	}
	pt, err := s.Open(sealed, aad)
	if err != nil {
		return nil, fmt.Errorf("agent: %s: %w", path, err)
	}
	return pt, nil
}

// queueKey is the queue's data key: 32 random bytes sealed by the key
// store in queue.key.
func (a *Agent) queueKey() ([]byte, error) {
	return loadSealed(a.store, a.path("queue.key"), aadQueueKey, func() ([]byte, error) {
		k := make([]byte, 32)
		_, err := rand.Read(k)
		return k, err
	})
}

// deliveryKey is the gateway's key-delivery key: an X25519 key made once,
// kept sealed by the key store, whose public half goes in every status;
// the cloud seals the mesh keys to it.
type deliveryKey struct {
	public []byte
	opener *receiver.Opener
}

// loadDeliveryKey returns the key-delivery key sealed at path, making it
// on first use.
func loadDeliveryKey(s keystore.Sealer, path string) (*deliveryKey, error) {
	pemBytes, err := loadSealed(s, path, aadKDK, func() ([]byte, error) {
		k, err := ecdh.X25519().GenerateKey(rand.Reader)
		if err != nil {
			return nil, err
		}
		der, err := x509.MarshalPKCS8PrivateKey(k)
		if err != nil {
			return nil, err
		}
		return pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}), nil
	})
	if err != nil {
		return nil, err
	}
	block, _ := pem.Decode(pemBytes)
	if block == nil {
		return nil, errors.New("agent: key-delivery key: not PEM")
	}
	k, err := x509.ParsePKCS8PrivateKey(block.Bytes)
	if err != nil {
		return nil, fmt.Errorf("agent: key-delivery key: %w", err)
	}
	priv, ok := k.(*ecdh.PrivateKey)
	if !ok {
		return nil, fmt.Errorf("agent: key-delivery key is %T", k)
	}
	op, err := receiver.ParsePrivateKey(pemBytes)
	if err != nil {
		return nil, fmt.Errorf("agent: key-delivery key: %w", err)
	}
	return &deliveryKey{public: priv.PublicKey().Bytes(), opener: op}, nil
}

// DeliveryKey returns the raw X25519 public key the cloud seals mesh keys
// to (Status.KeyDeliveryKey).
func (a *Agent) DeliveryKey() []byte { return slices.Clone(a.kdk.public) }

// HandleKeys opens a key set delivered on the keys topic, gives it to the
// mesh receiver and keeps the delivery (still sealed to the key-delivery
// key) so that a restart works offline.
func (a *Agent) HandleKeys(sealed []byte) error {
	ks, err := a.openKeys(sealed)
	if err != nil {
		return err
	}
	if err := a.rcv.SetKeys(ks); err != nil {
		return fmt.Errorf("agent: mesh keys: %w", err)
	}
	if err := securefile.WriteAtomic(a.path("meshkeys"), sealed, 0o600); err != nil {
		return err
	}
	a.log.Info("mesh keys", "network", ks.NetworkID, "version", ks.Version, "epochs", len(ks.Keys))
	a.markChanged()
	return nil
}

// openKeys opens and parses a sealed key set.
func (a *Agent) openKeys(sealed []byte) (mesh.KeySet, error) {
	pt, err := a.kdk.opener.Open(sealed)
	if err != nil {
		return mesh.KeySet{}, fmt.Errorf("agent: mesh keys: %w", err)
	}
	return mesh.ParseKeySet(pt)
}

// HandleNodes takes a node list delivered on the nodes topic and keeps it,
// sealed by the key store.
func (a *Agent) HandleNodes(payload []byte) error {
	var nl gwproto.NodeList
	if err := json.Unmarshal(payload, &nl); err != nil {
		return fmt.Errorf("agent: node list: %w", err)
	}
	if nl.NetworkID == 0 {
		return errors.New("agent: node list: networkId 0 is no network")
	}
	if err := a.rcv.SetNodes(nl.NetworkID, nl.Version, nl.Nodes); err != nil {
		return fmt.Errorf("agent: node list: %w", err)
	}
	sealed, err := a.store.Seal(payload, aadNodes)
	if err != nil {
		return err
	}
	if err := securefile.WriteAtomic(a.path("nodes"), sealed, 0o600); err != nil {
		return err
	}
	a.log.Info("mesh nodes", "network", nl.NetworkID, "version", nl.Version, "nodes", len(nl.Nodes))
	a.markChanged()
	return nil
}

// Side keys of the replay windows in the queue: the windows in
// replayBuckets buckets by node id, each a run of mesh.NodeState, so that
// a commit rewrites only the buckets its frames changed.
const replayBuckets = 256

func replayKey(b int) string { return fmt.Sprintf("mesh/replay/%02x", b) }

func bucketOf(node uint32) int { return int(node % replayBuckets) }

// restoreMesh restores the keys and node list kept on disk and the replay
// windows kept in the queue.
func (a *Agent) restoreMesh() error {
	if sealed, err := os.ReadFile(a.path("meshkeys")); err == nil {
		ks, err := a.openKeys(sealed)
		if err != nil {
			return err
		}
		if err := a.rcv.SetKeys(ks); err != nil {
			return err
		}
	} else if !errors.Is(err, fs.ErrNotExist) {
		return err
	}
	if sealed, err := os.ReadFile(a.path("nodes")); err == nil {
		pt, err := a.store.Open(sealed, aadNodes)
		if err != nil {
			return fmt.Errorf("agent: %s: %w", a.path("nodes"), err)
		}
		var nl gwproto.NodeList
		if err := json.Unmarshal(pt, &nl); err != nil {
			return err
		}
		if err := a.rcv.SetNodes(nl.NetworkID, nl.Version, nl.Nodes); err != nil {
			return err
		}
	} else if !errors.Is(err, fs.ErrNotExist) {
		return err
	}
	var states []mesh.NodeState
	for b := range replayBuckets {
		v, err := a.q.Side(replayKey(b))
		if err != nil {
			return fmt.Errorf("agent: replay windows: %w", err)
		}
		s, err := decodeStates(v)
		if err != nil {
			return err
		}
		states = append(states, s...)
	}
	if err := a.rcv.Restore(states); err != nil {
		return fmt.Errorf("agent: replay windows: %w", err)
	}
	return nil
}

// decodeStates reads a bucket of node states.
func decodeStates(b []byte) ([]mesh.NodeState, error) {
	if len(b)%mesh.NodeStateSize != 0 {
		return nil, fmt.Errorf("agent: replay windows: a bucket of %d bytes", len(b))
	}
	out := make([]mesh.NodeState, len(b)/mesh.NodeStateSize)
	for i := range out {
		if err := out[i].UnmarshalBinary(b[i*mesh.NodeStateSize : (i+1)*mesh.NodeStateSize]); err != nil {
			return nil, err
		}
	}
	return out, nil
}

// windowKey orders node states in a bucket.
func windowKey(s mesh.NodeState) uint64 { return uint64(s.Network)<<32 | uint64(s.Node) }

// encodeBucket writes a bucket's states in window order.
func encodeBucket(m map[uint64]mesh.NodeState) []byte {
	keys := make([]uint64, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	b := make([]byte, 0, len(m)*mesh.NodeStateSize)
	for _, k := range keys {
		b, _ = m[k].AppendBinary(b)
	}
	return b
}

// Package mesh is the secured sensor mesh between sensor nodes and the
// gateway agent: the frame a node sends (a fixed header, then one Thingsee
// message sealed with AES-128-GCM under the network key of the header's
// epoch, the header as associated data, a nonce made of the node id, its
// boot counter and its frame counter), the Sender a node seals with, the
// key file and key set of a network (KeySet), and the Receiver the agent
// checks frames with: authorized nodes, keys by epoch with a grace period
// after rotation, and a 64-frame anti-replay window per node whose state
// the agent persists and restores. docs/mesh.md describes the format byte
// by byte, with its rationale and sources.
//
// It is a leaf: standard library only.
package mesh

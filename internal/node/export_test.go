package node

import "github.com/iotransit/iotransit/internal/kms"

// SetTenantDeleteHook makes n call fn before each step of a tenant's
// deletion ("shred", "streams", "shared", "buckets", "tombstone"); an
// error from fn fails the deletion at that step.
func SetTenantDeleteHook(n *Node, fn func(step string) error) { n.deleteHook = fn }

// Keyring returns n's keyring (tests that open sealed data directly).
func Keyring(n *Node) *kms.Keyring { return n.keys }

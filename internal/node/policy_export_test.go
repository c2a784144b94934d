package node

import "context"

// ApplyRetention applies tenant's policy to its streams, as a change of
// the tenant's record (or a retry of one) does.
func ApplyRetention(ctx context.Context, n *Node, tenant string) error {
	return n.applyRetention(ctx, tenant)
}

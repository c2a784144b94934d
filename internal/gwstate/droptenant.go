package gwstate

// DropTenant forgets what this node holds of a deleted tenant's gateways,
// without writing it: the tenant's bucket is deleted, and a write would
// make it again.
func (t *Tracker) DropTenant(tenant string) {
	t.mu.Lock()
	defer t.mu.Unlock()
	for k := range t.m {
		if k.tenant == tenant {
			delete(t.m, k)
		}
	}
}

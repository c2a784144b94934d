package forward

import "strings"

// DropTenant stops following a deleted tenant on this node: the watch of
// its integrations ends and every worker of its integrations stops (its
// lease is released), waiting for them. The tenant is not followed again
// (AddTenant ignores it).
func (e *Engine) DropTenant(tenant string) {
	e.mu.Lock()
	stop := e.tenants[tenant]
	e.tenants[tenant] = nil
	var ids []string
	for key := range e.workers {
		if t, id, ok := strings.Cut(key, "/"); ok && t == tenant {
			ids = append(ids, id)
		}
	}
	e.mu.Unlock()
	if stop != nil {
		stop()
	}
	for _, id := range ids {
		e.stopWorker(tenant, id)
	}
}

// Live sessions on a retired tenant CA version end, as a revoked gateway's
// do: a CA retirement refuses new connections at the handshake, and this
// ends the sessions already open on certificates of that version.

package node

import (
	"context"
	"time"

	"github.com/iotransit/iotransit/internal/ingest"
)

// caRetirementPoll is how often a node looks for CA versions that stopped
// being trusted (a retirement made anywhere, or an overlap that ran out).
const caRetirementPoll = 250 * time.Millisecond

// endRetiredCASessions ends, until ctx ends, every live session whose
// certificate a CA version issued once that version is no longer trusted.
// Versions untrusted when it starts need nothing: no session is open yet
// and the handshake refuses their certificates. A version that stops being
// trusted is swept again on every tick for as long as a connection whose
// handshake verified before then may still send its CONNECT (the ingest
// ConnectTimeout bounds both): such a session registers after the first
// sweep, and no later one would otherwise find it.
func (n *Node) endRetiredCASessions(ctx context.Context) {
	window := n.cfg.Ingest.ConnectTimeout
	if window <= 0 {
		window = 10 * time.Second // ingest's default
	}
	window += 2 * caRetirementPoll
	seen := map[string]time.Time{} // tenant + "/" + CA subject key id → when first seen untrusted
	mark := func(now time.Time, act bool) {
		for tenant, skis := range n.reg.UntrustedCAs(now) {
			for _, ski := range skis {
				k := tenant + "/" + ski
				first, ok := seen[k]
				if !ok {
					first, seen[k] = now, now
					if !act {
						seen[k] = now.Add(-window) // untrusted at start: nothing to sweep
					}
				}
				if act && now.Sub(first) <= window {
					n.endSessionsOf(tenant, ski)
				}
			}
		}
	}
	mark(time.Now(), false)
	t := time.NewTicker(caRetirementPoll)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case now := <-t.C:
			mark(now, true)
		}
	}
}

// endSessionsOf ends the tenant's live sessions on certificates issued by
// the CA version with subject key id ski.
func (n *Node) endSessionsOf(tenant, ski string) {
	gws, err := n.reg.Gateways(tenant)
	if err != nil {
		return // the tenant is gone: so are its sessions
	}
	for _, g := range gws {
		n.ing.KickStale(tenant, g.Serial, func(certSerial string) string {
			if n.reg.IssuedBy(tenant, g.Serial, certSerial, ski) {
				return ingest.EndCARetired
			}
			return ""
		})
	}
}

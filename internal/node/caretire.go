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
// and the handshake refuses their certificates.
func (n *Node) endRetiredCASessions(ctx context.Context) {
	done := map[string]bool{} // tenant + "/" + CA subject key id
	mark := func(now time.Time, act bool) {
		for tenant, skis := range n.reg.UntrustedCAs(now) {
			for _, ski := range skis {
				if done[tenant+"/"+ski] {
					continue
				}
				done[tenant+"/"+ski] = true
				if act {
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

package ingest

import (
	"log/slog"
	"sync"
	"testing"

	mqtt "github.com/mochi-mqtt/server/v2"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/iotransit/iotransit/internal/gwproto"
	tu "github.com/iotransit/iotransit/internal/testutil"
)

// presenceLog records what a Presence is told, in order.
type presenceLog struct {
	mu    sync.Mutex
	calls []string
}

func (p *presenceLog) add(s string) {
	p.mu.Lock()
	p.calls = append(p.calls, s)
	p.mu.Unlock()
}

func (p *presenceLog) Connected(id Identity)                { p.add("connected " + id.CertSerial) }
func (p *presenceLog) Seen(id Identity)                     { p.add("seen " + id.CertSerial) }
func (p *presenceLog) Status(id Identity, _ gwproto.Status) { p.add("status " + id.CertSerial) }
func (p *presenceLog) Disconnected(id Identity)             { p.add("disconnected " + id.CertSerial) }
func (p *presenceLog) last() string                         { p.mu.Lock(); defer p.mu.Unlock(); return p.calls[len(p.calls)-1] }

// TestIngestTakenOverSessionDoesNotEndThePresence: a gateway that
// reconnects takes its session over; mochi ends the old one on its own
// goroutine, after the new one's OnConnect and, when the old one was in a
// publish (a persist in progress), after the new one's first status. The
// old session's end used to reach the Presence as the gateway's
// disconnect: the tracker then dropped the key-delivery key the new
// session had just named (no key rotation reached the connected gateway
// until it reconnected) and forgot its status. Only the end of the
// gateway's current session is its disconnect.
func TestIngestTakenOverSessionDoesNotEndThePresence(t *testing.T) {
	p := &presenceLog{}
	core := &Core{m: newMetrics(prometheus.NewRegistry())}
	h := newHook(Config{Presence: p}, nil, nil, core, func(Event) {}, slog.New(tu.Logger(t).Handler()))
	oldCl, newCl := &mqtt.Client{}, &mqtt.Client{}
	oldID := Identity{Tenant: "acme", Serial: "TSGW06ACM00000001", CertSerial: "old"}
	newID := Identity{Tenant: "acme", Serial: "TSGW06ACM00000001", CertSerial: "new"}
	// The sessions as OnConnect registers them: the new one takes the
	// gateway over.
	register := func(cl *mqtt.Client, id Identity) {
		h.mu.Lock()
		s := &session{id: id, cl: cl, established: true}
		h.perTenant[id.Tenant]++
		h.byClient[cl] = s
		h.byGateway[gatewayKey(id.Tenant, id.Serial)] = s
		h.mu.Unlock()
		p.Connected(id)
	}
	register(oldCl, oldID)
	register(newCl, newID)
	p.Status(newID, gwproto.Status{})
	h.ended(oldCl, "session taken over")
	if got := p.last(); got != "status new" {
		t.Fatalf("the taken-over session's end told the Presence %q; the gateway is still connected", got)
	}
	if _, ok := h.session("acme", "TSGW06ACM00000001"); !ok {
		t.Fatal("the new session was forgotten")
	}
	h.ended(newCl, "closed")
	if got := p.last(); got != "disconnected new" {
		t.Fatalf("the current session's end told the Presence %q, want its disconnect", got)
	}
}

package meshnet

import (
	"context"
	"encoding/json"
	"log/slog"
	"sync"
	"time"

	"github.com/iotransit/iotransit/internal/gwproto"
)

// Publisher is what Delivery needs of the MQTT front end (ingest.Server):
// the gateways with a session on this node, and a retained QoS 1 publish
// on one gateway's down/ topic.
type Publisher interface {
	Sessions(tenant string) []string
	Connected(tenant, serial string) bool
	Deliver(serial, topic string, payload []byte) error
}

// Delivery gives the tenant's gateways connected to this node their mesh
// keys and node list: on a gateway's status (which names the key the keys
// are sealed to) and on every change of the tenant's mesh, whichever node
// made it (Service.Watch). Work is queued per gateway and coalesced, so a
// burst of changes or statuses costs one delivery each.
type Delivery struct {
	svc *Service
	pub Publisher
	// deliveryKey returns the key-delivery key of a gateway's current
	// session, if its status named one.
	deliveryKey func(tenant, serial string) ([]byte, bool)
	log         *slog.Logger

	mu      sync.Mutex
	pending map[[2]string]struct{}
	wake    chan struct{}
	done    chan struct{}
	stop    context.CancelFunc
}

// NewDelivery starts delivering; Close stops it.
func NewDelivery(svc *Service, pub Publisher, deliveryKey func(tenant, serial string) ([]byte, bool), log *slog.Logger) *Delivery {
	ctx, cancel := context.WithCancel(context.Background())
	d := &Delivery{
		svc: svc, pub: pub, deliveryKey: deliveryKey, log: log.With("component", "meshnet"),
		pending: map[[2]string]struct{}{}, wake: make(chan struct{}, 1), done: make(chan struct{}), stop: cancel,
	}
	go d.run(ctx)
	return d
}

// Gateway queues a delivery to one gateway (after its status).
func (d *Delivery) Gateway(tenant, serial string) {
	d.mu.Lock()
	d.pending[[2]string{tenant, serial}] = struct{}{}
	d.mu.Unlock()
	select {
	case d.wake <- struct{}{}:
	default:
	}
}

// Tenant queues a delivery to each of the tenant's gateways connected here
// (after a change of its mesh).
func (d *Delivery) Tenant(tenant string) {
	for _, serial := range d.pub.Sessions(tenant) {
		d.Gateway(tenant, serial)
	}
}

// Close stops delivering.
func (d *Delivery) Close() {
	d.stop()
	<-d.done
}

func (d *Delivery) run(ctx context.Context) {
	defer close(d.done)
	for {
		select {
		case <-ctx.Done():
			return
		case <-d.wake:
		}
		d.mu.Lock()
		batch := d.pending
		d.pending = map[[2]string]struct{}{}
		d.mu.Unlock()
		read := map[string]*tenantMesh{} // each tenant's mesh read once a batch
		for g := range batch {
			if ctx.Err() != nil {
				return
			}
			tm, ok := read[g[0]]
			if !ok {
				tm = d.read(ctx, g[0])
				read[g[0]] = tm
			}
			d.deliver(tm, g[0], g[1])
		}
		for _, tm := range read {
			clear(tm.keys)
		}
	}
}

// tenantMesh is what a tenant's gateways get: its node list (JSON) and key
// set (JSON, the plaintext to seal); nil when there is none.
type tenantMesh struct {
	nodes, keys []byte
}

// read reads a tenant's node list and key set for delivery. A tenant
// without a network has nothing to deliver yet.
func (d *Delivery) read(ctx context.Context, tenant string) *tenantMesh {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	tm := &tenantMesh{}
	nl, err := d.svc.NodeList(ctx, tenant)
	if ErrNoNetwork.Is(err) {
		return tm
	}
	if err != nil {
		d.log.Warn("mesh delivery: read node list", "tenant_id", tenant, "error", err)
		return tm
	}
	if tm.nodes, err = json.Marshal(nl); err != nil {
		d.log.Error("mesh delivery: encode node list", "tenant_id", tenant, "error", err)
	}
	ks, err := d.svc.KeySet(ctx, tenant)
	if err != nil {
		d.log.Warn("mesh delivery: read key set", "tenant_id", tenant, "error", err)
		return tm
	}
	if tm.keys, err = ks.Marshal(); err != nil {
		d.log.Error("mesh delivery: encode key set", "tenant_id", tenant, "error", err)
	}
	return tm
}

// deliver publishes the tenant's node list and key set (sealed to the
// gateway's key-delivery key, when its session named one) to one gateway,
// if it is still connected here: the topics are the serial's, and the
// serial may since be another tenant's gateway.
func (d *Delivery) deliver(tm *tenantMesh, tenant, serial string) {
	if !d.pub.Connected(tenant, serial) {
		return
	}
	if tm.nodes != nil {
		if err := d.pub.Deliver(serial, gwproto.NodesTopic(serial), tm.nodes); err != nil {
			d.log.Warn("mesh delivery: publish node list", "tenant_id", tenant, "gateway_id", serial, "error", err)
		}
	}
	key, ok := d.deliveryKey(tenant, serial)
	if !ok || tm.keys == nil {
		return
	}
	sealed, err := gwproto.SealKeys(key, tm.keys)
	if err != nil {
		d.log.Warn("mesh delivery: seal key set", "tenant_id", tenant, "gateway_id", serial, "error", err)
		return
	}
	if err := d.pub.Deliver(serial, gwproto.KeysTopic(serial), sealed); err != nil {
		d.log.Warn("mesh delivery: publish keys", "tenant_id", tenant, "gateway_id", serial, "error", err)
		return
	}
	d.log.Debug("mesh keys delivered", "tenant_id", tenant, "gateway_id", serial)
}

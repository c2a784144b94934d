package ingest

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"time"
	"unicode/utf8"

	mqtt "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/packets"
	"golang.org/x/time/rate"

	"github.com/iotransit/iotransit/internal/gwproto"
	"github.com/iotransit/iotransit/internal/registry"
)

// UpTopic is the only topic a gateway may publish to.
func UpTopic(serial string) string { return gwproto.UpTopic(serial) }

// ErrorsTopic is where a gateway learns which of its messages were rejected.
func ErrorsTopic(serial string) string { return gwproto.ErrorsTopic(serial) }

// session is one authenticated gateway connection.
type session struct {
	id          Identity
	cl          *mqtt.Client
	established bool // mochi sent the CONNACK: OnDisconnect follows
	// statuses bounds the session's status publishes (each may cost the
	// cloud a key delivery): a burst of statusBurst, then one per
	// statusEvery.
	statuses *rate.Limiter
	// ending is why the server ends the session (an End reason), set
	// before it closes it: the disconnect is recorded with it rather than
	// with what the closed connection looked like.
	ending string
	// pipe holds the session's publishes in flight and answers them in
	// order (pipeline.go).
	pipe *pipeline
}

// Reasons the server ends a live session, as its disconnect is recorded.
const (
	EndRevoked    = "revoked"
	EndIsolated   = "isolated"
	EndSuperseded = "superseded"
	EndTakenOver  = "taken over"
	// EndCARetired: the CA version that issued the session's certificate
	// is no longer trusted (its overlap after a CA rotation ended).
	EndCARetired = "ca_retired"
	// EndTenantDeleted: the gateway's tenant was deleted (DropTenant).
	EndTenantDeleted = "tenant deleted"
)

// EndReason says why a session on the certificate certSerial of g may no
// longer go on (an End reason), or "" when it may: the gateway was
// revoked (or is gone: g is zero), isolated, or the certificate is no
// longer valid (superseded by newer ones, or revoked with the gateway).
func EndReason(g registry.Gateway, certSerial string, now time.Time) string {
	switch {
	case g.State == registry.StateIsolated:
		return EndIsolated
	case g.State != registry.StateActive:
		return EndRevoked
	case g.CertificateValid(certSerial, now):
		return ""
	}
	if c, ok := g.Certificate(certSerial); ok && c.RevocationReason == registry.RevocationSuperseded {
		return EndSuperseded
	}
	return EndRevoked
}

// endings is the MQTT 5 DISCONNECT of each End reason: its reason code
// and a reason string that starts with the recorded reason and says what
// the gateway can do.
var endings = map[string]packets.Code{
	EndRevoked: {Code: packets.ErrAdministrativeAction.Code,
		Reason: EndRevoked + ": the gateway was revoked; its certificates are no longer accepted"},
	EndIsolated: {Code: packets.ErrAdministrativeAction.Code,
		Reason: EndIsolated + ": connections are refused until the gateway is activated again"},
	EndSuperseded: {Code: packets.ErrNotAuthorized.Code,
		Reason: EndSuperseded + ": newer certificates replaced this one; reconnect with the newest"},
	EndCARetired: {Code: packets.ErrNotAuthorized.Code,
		Reason: EndCARetired + ": the CA that issued this certificate is retired; enroll again for a certificate of the tenant's current CA"},
	EndTakenOver: {Code: packets.ErrSessionTakenOver.Code,
		Reason: EndTakenOver + ": the gateway connected again with the same client id"},
	EndTenantDeleted: {Code: packets.ErrAdministrativeAction.Code,
		Reason: EndTenantDeleted + ": the gateway's tenant was deleted; its certificates are no longer accepted"},
}

// end ends s's connection because of reason (an End reason): the
// disconnect is recorded with it, and an MQTT 5 gateway gets a DISCONNECT
// with its code and reason string (an MQTT 3.1.1 one, to which a server
// sends no DISCONNECT, a closed connection). A reason already set stays.
func (h *hook) end(s *session, reason string) {
	h.mu.Lock()
	if s.ending == "" {
		s.ending = reason
	}
	h.mu.Unlock()
	code, ok := endings[reason]
	if !ok {
		code = packets.ErrAdministrativeAction
	}
	s.pipe.breakOff() // no PUBACK after the DISCONNECT
	if v5(s.cl) {
		_ = h.broker.DisconnectClient(s.cl, code)
		return
	}
	s.cl.Stop(code)
}

// Bounds of a session's status publishes: an agent sends one on connect and
// one a minute at most.
const (
	statusEvery = 5 * time.Second
	statusBurst = 4
)

// Bounds of what one gateway may subscribe to under its down/ prefix.
const (
	maxSubscriptions = 16
	maxFilterLen     = 256
	maxFilterLevels  = 3 // below down/
)

// hook adapts mochi's Hook to the ingest. It keeps what is MQTT's: the
// CONNECT and its binding to the certificate identity, the topic ACL and
// subscription bounds, the QoS 2 refusal, wills and sessions. A publish goes
// to the accept core (accept.go), whose Outcome it answers through one
// table (answers). It is the only file that knows mochi's hook API.
type hook struct {
	mqtt.HookBase
	cfg    Config
	broker *mqtt.Server
	dir    Directory
	core   *Core
	m      *metrics
	emit   func(Event) // the recorder: budgets, summaries, log lines
	log    *slog.Logger
	now    func() time.Time

	mu        sync.Mutex
	byClient  map[*mqtt.Client]*session
	byGateway map[string]*session // tenant/serial
	perTenant map[string]int
	owners    map[string]string // client id → tenant/incarnation of its mochi session
	// retainedBy is the tenant whose messages are retained on a serial's
	// down/ topics (RetainFor, and the tenant of its last session here).
	retainedBy map[string]string
}

func newHook(cfg Config, broker *mqtt.Server, dir Directory, core *Core, emit func(Event), log *slog.Logger) *hook {
	return &hook{
		cfg: cfg, broker: broker, dir: dir, core: core, m: core.m, emit: emit, log: log,
		now:       time.Now,
		byClient:  map[*mqtt.Client]*session{},
		byGateway: map[string]*session{},
		perTenant: map[string]int{},
		owners:    map[string]string{},

		retainedBy: map[string]string{},
	}
}

// unregister forgets cl's session; it reports the session if there was
// one, and whether it was still the gateway's current session (not taken
// over by a newer connection).
func (h *hook) unregister(cl *mqtt.Client) (s *session, current, ok bool) {
	h.mu.Lock()
	defer h.mu.Unlock()
	s, ok = h.byClient[cl]
	if !ok {
		return nil, false, false
	}
	delete(h.byClient, cl)
	h.perTenant[s.id.Tenant]--
	if h.perTenant[s.id.Tenant] <= 0 {
		delete(h.perTenant, s.id.Tenant)
	}
	k := gatewayKey(s.id.Tenant, s.id.Serial)
	current = h.byGateway[k] == s // not taken over by a newer connection
	if current {
		delete(h.byGateway, k)
	}
	return s, current, true
}

// stillValid re-reads the gateway after its session is registered: a
// revocation (or a renewal superseding the certificate) between the TLS
// handshake and CONNECT found no session to close, so it is caught here.
func (h *hook) stillValid(id Identity) (registry.Gateway, bool) {
	g, ok := h.dir.Gateway(id.Tenant, id.Serial)
	return g, ok && g.State == registry.StateActive && g.CertificateValid(id.CertSerial, h.now())
}

// prepareSession cleans the broker's stored session of this client id
// before mochi hands it to the new connection: a session left by another
// gateway with the same serial (deleted and registered again, here or in
// another tenant) is emptied, and no stored PUBACK is ever resent (it would
// acknowledge a packet id the new connection may reuse for a message not
// yet stored). What the cloud published retained on the earlier gateway's
// down/ topics (its tenant's mesh node list and key set) is dropped too:
// the new gateway must not get it when it subscribes.
func (h *hook) prepareSession(clientID, tenant, owner string) {
	existing, ok := h.broker.Clients.Get(clientID)
	h.mu.Lock()
	prev := h.owners[clientID]
	h.owners[clientID] = owner
	by := h.retainedBy[clientID]
	h.retainedBy[clientID] = tenant
	h.mu.Unlock()
	if prev != "" && prev != owner || by != "" && by != tenant {
		h.dropRetained(clientID)
	}
	if !ok {
		return
	}
	if prev != owner {
		h.broker.UnsubscribeClient(existing)
		existing.ClearInflights()
		return
	}
	for _, p := range existing.State.Inflight.GetAll(false) {
		if p.FixedHeader.Type == packets.Puback {
			existing.State.Inflight.Delete(p.PacketID)
		}
	}
}

// dropRetained deletes what is retained on a serial's down/ topics.
func (h *hook) dropRetained(serial string) {
	for _, pk := range h.broker.Topics.Messages(gwproto.DownTopic(serial) + "/#") {
		h.broker.Topics.RetainMessage(packets.Packet{TopicName: pk.TopicName}) // no payload: deleted
	}
}

// retainFor makes the serial's down/ topics the tenant's before a message
// of the tenant is retained there: what another tenant retained is
// dropped. It reports false, and nothing changes, when the serial's
// last session here was another tenant's gateway and the tenant has no
// gateway of that serial (a message left for an earlier gateway).
func (h *hook) retainFor(tenant, serial string) bool {
	h.mu.Lock()
	by, owner := h.retainedBy[serial], h.owners[serial]
	h.mu.Unlock()
	if owner != "" && !strings.HasPrefix(owner, tenant+"/") {
		if _, ok := h.dir.Gateway(tenant, serial); !ok {
			return false
		}
	}
	h.mu.Lock()
	h.retainedBy[serial] = tenant
	h.mu.Unlock()
	if by != "" && by != tenant {
		h.dropRetained(serial)
	}
	return true
}

// ID names the hook.
func (h *hook) ID() string { return "iotransit-ingest" }

// Provides lists exactly the events the hook handles.
func (h *hook) Provides(b byte) bool {
	switch b {
	case mqtt.OnConnect, mqtt.OnConnectAuthenticate, mqtt.OnSessionEstablished, mqtt.OnACLCheck, mqtt.OnDisconnect,
		mqtt.OnPacketRead, mqtt.OnPublish, mqtt.OnPacketEncode:
		return true
	}
	return false
}

func gatewayKey(tenant, serial string) string { return tenant + "/" + serial }

func (h *hook) session(tenant, serial string) (*session, bool) {
	h.mu.Lock()
	defer h.mu.Unlock()
	s, ok := h.byGateway[gatewayKey(tenant, serial)]
	return s, ok
}

// sessions returns the serials of the tenant's live sessions.
func (h *hook) sessions(tenant string) []string {
	h.mu.Lock()
	defer h.mu.Unlock()
	var out []string
	for _, s := range h.byGateway {
		if s.id.Tenant == tenant {
			out = append(out, s.id.Serial)
		}
	}
	return out
}

func (h *hook) clientSession(cl *mqtt.Client) (*session, bool) {
	h.mu.Lock()
	defer h.mu.Unlock()
	s, ok := h.byClient[cl]
	return s, ok
}

func v5(cl *mqtt.Client) bool { return cl.Properties.ProtocolVersion == 5 }

// refuseConnect answers CONNECT with a reason code and ends the connection;
// the refusal is counted and recorded (within the budget, EventBudget).
func (h *hook) refuseConnect(cl *mqtt.Client, id Identity, code packets.Code, reason string) error {
	h.m.connRefused.WithLabelValues(reason).Inc()
	h.emit(Event{Kind: EventRefused, Tenant: id.Tenant, Serial: id.Serial, Remote: cl.Net.Remote, Reason: reason})
	_ = h.broker.SendConnack(cl, code, false, nil)
	return code
}

// OnConnect binds the MQTT client id to the certificate: a gateway's client
// id is its serial. An empty client id is given the serial (MQTT 5 returns
// it as the assigned client identifier). Any other id is refused with 0x85
// (MQTT 3.1.1: 0x02), so no connection can take over another gateway's
// session.
func (h *hook) OnConnect(cl *mqtt.Client, pk packets.Packet) error {
	gc, ok := cl.Net.Conn.(*gatewayConn)
	if !ok {
		return h.refuseConnect(cl, Identity{}, packets.ErrNotAuthorized, "no_identity")
	}
	id := gc.id
	switch pk.Connect.ClientIdentifier {
	case id.Serial:
	case "":
		cl.ID = id.Serial
		if v5(cl) {
			cl.Properties.Props.AssignedClientID = id.Serial
		}
	default:
		return h.refuseConnect(cl, id, packets.ErrClientIdentifierNotValid, "client_id_mismatch")
	}
	// A will message would be published by the broker on the gateway's
	// behalf without an ACL check (mochi), to any topic, for example another
	// gateway's down/errors. Gateways have no use for one: it is dropped.
	// Logged within the gateway's budget (a reconnect loop with a will
	// would otherwise write a line per CONNECT).
	if cl.Properties.Will.TopicName != "" {
		h.emit(Event{Kind: eventWillDropped, Tenant: id.Tenant, Serial: id.Serial, Remote: cl.Net.Remote})
		cl.Properties.Will = mqtt.Will{}
	}
	// Keepalive 0 (never time out) or longer than allowed is lowered; MQTT 5
	// clients are told through Server Keep Alive.
	if max := uint16(h.cfg.MaxKeepalive / time.Second); cl.State.Keepalive == 0 || cl.State.Keepalive > max {
		cl.State.Keepalive = max
		cl.State.ServerKeepalive = v5(cl)
	}
	s := &session{id: id, cl: cl, statuses: rate.NewLimiter(rate.Every(statusEvery), statusBurst)}
	s.pipe = newPipeline(h, s, cl)
	tenant, _ := h.dir.Tenant(id.Tenant)
	h.mu.Lock()
	if h.perTenant[id.Tenant] >= h.cfg.maxConns(tenant) {
		h.mu.Unlock()
		return h.refuseConnect(cl, id, packets.ErrQuotaExceeded, "tenant_connections")
	}
	h.perTenant[id.Tenant]++
	h.byClient[cl] = s
	displaced := h.byGateway[gatewayKey(id.Tenant, id.Serial)]
	h.byGateway[gatewayKey(id.Tenant, id.Serial)] = s
	h.mu.Unlock()
	// A session whose CONNACK never goes out (the write fails), or whose
	// connection is closed before mochi established it (a takeover by the
	// gateway's next connection), gets no OnDisconnect from mochi: closing
	// the connection ends it.
	gc.setHooks(func() {
		h.mu.Lock()
		established := s.established
		h.mu.Unlock()
		if !established {
			h.ended(cl, "connection closed before the session was established")
		}
	}, func() { h.goodbye(s) })
	g, valid := h.stillValid(id)
	if !valid {
		h.unregister(cl) // revoked, isolated or its certificate superseded since the handshake
		h.reinstate(displaced)
		return h.refuseConnect(cl, id, packets.ErrNotAuthorized, "revoked_after_handshake")
	}
	h.prepareSession(cl.ID, id.Tenant, id.Tenant+"/"+g.Incarnation+"/"+g.CreatedAt.String())
	h.m.connAccepted.Inc()
	h.emit(Event{Kind: EventConnect, Tenant: id.Tenant, Serial: id.Serial, Remote: cl.Net.Remote})
	if h.cfg.Presence != nil {
		h.cfg.Presence.Connected(id)
	}
	return nil
}

// reinstate makes a live session that a refused connect had displaced the
// gateway's session again (mochi did not take it over), and ends it unless
// the gateway still allows it: a revocation whose kick came while the
// refused connect was the gateway's session kicked that one only, and the
// displaced session was no longer found by any kick.
func (h *hook) reinstate(s *session) {
	if s == nil {
		return
	}
	k := gatewayKey(s.id.Tenant, s.id.Serial)
	h.mu.Lock()
	live := h.byClient[s.cl] == s
	if _, taken := h.byGateway[k]; live && !taken {
		h.byGateway[k] = s
	}
	h.mu.Unlock()
	if !live {
		return
	}
	if g, valid := h.stillValid(s.id); !valid {
		h.end(s, EndReason(g, s.id.CertSerial, h.now()))
	}
}

// OnConnectAuthenticate accepts exactly the connections OnConnect bound to an
// identity (proved at the TLS handshake).
//
// An accepted connection takes over the live session of its client id, if
// any (mochi closes it next): that session is ended here, so that its
// disconnect is recorded as taken over and an MQTT 5 gateway is told so.
func (h *hook) OnConnectAuthenticate(cl *mqtt.Client, pk packets.Packet) bool {
	_, ok := h.clientSession(cl)
	if !ok {
		return false
	}
	if existing, found := h.broker.Clients.Get(cl.ID); found && existing != cl {
		if old, live := h.clientSession(existing); live {
			h.end(old, EndTakenOver)
		}
	}
	return true
}

// OnSessionEstablished marks the session as one mochi will end with
// OnDisconnect.
func (h *hook) OnSessionEstablished(cl *mqtt.Client, pk packets.Packet) {
	h.mu.Lock()
	if s, ok := h.byClient[cl]; ok {
		s.established = true
	}
	h.mu.Unlock()
}

// OnDisconnect ends the session.
func (h *hook) OnDisconnect(cl *mqtt.Client, err error, expire bool) {
	reason := "closed"
	if err != nil {
		reason = disconnectReason(err)
	}
	h.ended(cl, reason)
}

// ended forgets cl's session, if it is still registered, and records its
// disconnect: exactly one for each recorded connect. The Presence hears of
// it only when it was the gateway's current session: a session taken over
// by the gateway's next connection may end after that one's status (mochi
// ends it on its own goroutine), and the gateway is still there.
func (h *hook) ended(cl *mqtt.Client, reason string) {
	if s, current, ok := h.unregister(cl); ok {
		h.mu.Lock()
		if s.ending != "" {
			reason = s.ending
		}
		h.mu.Unlock()
		h.emit(Event{Kind: EventDisconnect, Tenant: s.id.Tenant, Serial: s.id.Serial, Remote: cl.Net.Remote, Reason: reason})
		if current && h.cfg.Presence != nil {
			h.cfg.Presence.Disconnected(s.id)
		}
	}
}

// disconnectReason is a short label for why a session ended.
func disconnectReason(err error) string {
	var code packets.Code
	if errors.As(err, &code) {
		return code.Reason
	}
	if errors.Is(err, io.EOF) {
		return "connection closed by the gateway"
	}
	return "connection lost"
}

// OnACLCheck allows publishing only to v1/gw/{own serial}/up and
// v1/gw/{own serial}/status, and subscribing only under
// v1/gw/{own serial}/down/.
func (h *hook) OnACLCheck(cl *mqtt.Client, topic string, write bool) bool {
	s, ok := h.clientSession(cl)
	if !ok {
		return false
	}
	var allowed bool
	if write {
		allowed = topic == UpTopic(s.id.Serial) || topic == gwproto.StatusTopic(s.id.Serial)
	} else {
		// Under down/ only, and small: mochi builds one topic-tree node
		// per level under a global lock, so deep or many filters would
		// cost every tenant.
		down := gwproto.DownTopic(s.id.Serial)
		rest, under := strings.CutPrefix(topic, down+"/")
		if !under {
			rest = "" // CutPrefix returns the whole topic: down itself has no level below
		}
		allowed = (topic == down || under) && len(topic) <= maxFilterLen &&
			strings.Count(rest, "/") < maxFilterLevels &&
			(cl.State.Subscriptions.Len() < maxSubscriptions || subscribed(cl, topic))
	}
	if !allowed {
		reason := "subscribe_denied"
		if write {
			reason = "publish_denied"
		}
		h.m.publishRefused.WithLabelValues(reason).Inc()
		// mochi asks before OnPublish (so before the message rate limit),
		// and once per filter of a SUBSCRIBE: logged within the gateway's
		// budget, past it in summaries.
		h.emit(Event{Kind: eventTopicRefused, Tenant: s.id.Tenant, Serial: s.id.Serial, Remote: cl.Net.Remote, Reason: reason})
		if write {
			// mochi writes this refusal itself, from the read loop: after
			// the answers of every earlier publish (pipeline.go).
			s.pipe.drain()
		}
	}
	return allowed
}

// topicRefusal is the reason string of a topic the ACL refused (0x87 in a
// PUBACK or SUBACK): the topics the gateway may use, so that whoever reads
// it learns what to change. It names nothing but the gateway contract.
func topicRefusal(serial string) string {
	return fmt.Sprintf("not authorized: gateway %s may publish only to %s and %s, and subscribe only to %s/# (at most %d filters, %d levels below down/)",
		serial, UpTopic(serial), gwproto.StatusTopic(serial), gwproto.DownTopic(serial), maxSubscriptions, maxFilterLevels)
}

// OnPacketEncode gives an MQTT 5 PUBACK or SUBACK that refuses a topic
// (0x87, which only the ACL answers: mochi writes it with the fixed reason
// "not authorized", a SUBACK with none) the reason string topicRefusal.
// mochi leaves the string out when the client asked for no problem
// information or when it would exceed the client's maximum packet size.
// MQTT 3.1.1 has no reason strings.
func (h *hook) OnPacketEncode(cl *mqtt.Client, pk packets.Packet) packets.Packet {
	var refused bool
	switch pk.FixedHeader.Type {
	case packets.Puback:
		refused = pk.ReasonCode == packets.ErrNotAuthorized.Code
	case packets.Suback:
		refused = slices.Contains(pk.ReasonCodes, packets.ErrNotAuthorized.Code)
	}
	if !refused || !v5(cl) {
		return pk
	}
	if s, ok := h.clientSession(cl); ok {
		pk.Properties.ReasonString = topicRefusal(s.id.Serial)
	}
	return pk
}

// deniedTopic stands in for publish topics mochi would drop without any
// answer ($-prefixed ones), so that they reach the ACL and get 0x87.
const deniedTopic = "iotransit/denied"

// OnPacketRead refuses QoS 2 publishes before mochi would downgrade them
// (and answer with a PUBACK the client does not expect), and routes
// $-topic publishes to the ACL refusal. It also answers the one invalid
// MQTT 3.1.1 CONNECT that mochi would refuse with 0x80, a return code 3.1.1
// does not have (connect311).
func (h *hook) OnPacketRead(cl *mqtt.Client, pk packets.Packet) (packets.Packet, error) {
	if pk.FixedHeader.Type == packets.Connect {
		if h.connect311(cl, pk) {
			return pk, packets.ErrRejectPacket
		}
		return pk, nil
	}
	if pk.FixedHeader.Type != packets.Publish {
		return pk, nil
	}
	if pk.FixedHeader.Qos > 1 {
		h.m.publishRefused.WithLabelValues("qos_not_supported").Inc()
		if s, ok := h.clientSession(cl); ok {
			s.pipe.close() // the earlier publishes' answers first
		}
		_ = h.broker.DisconnectClient(cl, packets.ErrQosNotSupported)
		return pk, packets.ErrRejectPacket
	}
	if strings.HasPrefix(pk.TopicName, "$") {
		pk.TopicName = deniedTopic
	}
	return pk, nil
}

// connect311 refuses an MQTT 3.1.1 CONNECT with an empty client id and
// CleanSession 0 with return code 0x02, identifier rejected
// ([MQTT-3.1.3-8]); mochi's own check answers 0x80, which 3.1.1 does not
// define. The refusal is counted, and attributed (the TLS handshake proved
// who the gateway is). It reports whether it refused.
func (h *hook) connect311(cl *mqtt.Client, pk packets.Packet) bool {
	if pk.ProtocolVersion >= 5 || pk.Connect.Clean || pk.Connect.ClientIdentifier != "" {
		return false
	}
	var id Identity
	if gc, ok := cl.Net.Conn.(*gatewayConn); ok {
		id = gc.id
	}
	cl.Properties.ProtocolVersion = pk.ProtocolVersion // mochi sets it only after this hook: the CONNACK is 3.1.1's
	_ = h.refuseConnect(cl, id, packets.ErrClientIdentifierNotValid, "client_id_invalid")
	return true
}

// subscribed reports whether cl already holds the filter (a re-subscribe
// does not count against the limit).
func subscribed(cl *mqtt.Client, filter string) bool {
	_, ok := cl.State.Subscriptions.Get(filter)
	return ok
}

// reply is what a QoS 1 publish gets in one protocol version.
type reply struct {
	// ack: a PUBACK is sent, in MQTT 5 with code as its reason code (0x00
	// when zero, or a refusal with a reason string). Otherwise no PUBACK is
	// sent and the connection is closed with code (MQTT 5: DISCONNECT).
	ack  bool
	code packets.Code
}

// answer is how the MQTT front end answers one Status of the core.
type answer struct {
	v5, v311 reply
	// reason is the MQTT 5 reason string of a refusing PUBACK.
	reason func(h *hook, out Outcome, serial string) string
}

// answers is the one table from the core's Outcome to what a gateway sees.
// A QoS 0 publish has no PUBACK: it is taken when the payload's fate is
// settled (v311.ack: stored or rejected for good) and dropped otherwise.
// The pipeline's acker writes the verdict (hook.verdict); OnPublish never
// hands mochi a plain Go error, which mochi would acknowledge (DESIGN §13).
var answers = map[Status]answer{
	AllStored:    {v5: reply{ack: true}, v311: reply{ack: true}},
	SomeRejected: {v5: reply{ack: true}, v311: reply{ack: true}},
	// Nothing valid: MQTT 3.1.1 has no reason code, so the publish is
	// acknowledged once its rejections are stored (resending cannot fix
	// it); the gateway learns why on down/errors.
	AllRejected: {v5: reply{ack: true, code: packets.ErrPayloadFormatInvalid}, v311: reply{ack: true},
		reason: func(h *hook, out Outcome, serial string) string { return noneValidReason(out.Report, serial) }},
	TooLarge: {v5: reply{ack: true, code: packets.ErrPacketTooLarge}, v311: reply{ack: true},
		reason: func(h *hook, out Outcome, serial string) string { return tooLargeReason(h.cfg.MaxPayload) }},
	// MQTT 3.1.1 has no reason code: the ack is withheld and the
	// connection closed, and the gateway resends later.
	RateLimited: {v5: reply{ack: true, code: packets.ErrMessageRateTooHigh}, v311: reply{code: packets.ErrMessageRateTooHigh},
		reason: func(h *hook, out Outcome, serial string) string {
			return fmt.Sprintf("over %g messages per second for this gateway; retry later", out.MsgRate)
		}},
	// Not stored, never acknowledged: the gateway resends.
	PersistFailed: {v5: reply{code: packets.ErrServerBusy}, v311: reply{code: packets.ErrServerBusy}},
	// The tenant's stored-bytes quota is reached: refused like the rate
	// (MQTT 3.1.1: no ack, the connection closed), with 0x97.
	QuotaExceeded: {v5: reply{ack: true, code: packets.ErrQuotaExceeded}, v311: reply{code: packets.ErrQuotaExceeded},
		reason: func(h *hook, out Outcome, serial string) string {
			return "the tenant's stored-bytes quota is reached; retry later"
		}},
}

// OnPublish hands a gateway upload to the accept core (Core.Begin), which
// hands its writes to JetStream and returns, and queues it in the
// session's pipeline, whose acker answers it once JetStream acknowledged
// every accepted and rejected message, after every earlier publish of the
// connection (pipeline.go). mochi writes nothing: OnPublish returns
// packets.ErrRejectPacket for every gateway publish. A status is answered
// in the same order.
func (h *hook) OnPublish(cl *mqtt.Client, pk packets.Packet) (packets.Packet, error) {
	if cl.Net.Inline {
		return pk, nil // our own reports on down/errors
	}
	s, ok := h.clientSession(cl)
	if !ok {
		return pk, errReject
	}
	if h.cfg.Presence != nil {
		h.cfg.Presence.Seen(s.id)
	}
	qos1 := pk.FixedHeader.Qos == 1
	if !s.pipe.admit(qos1) {
		return pk, errReject
	}
	t := newTicket(pk.PacketID, qos1)
	if pk.TopicName == gwproto.StatusTopic(s.id.Serial) {
		t.verdict = h.status(cl, s, pk)
	} else {
		h.core.begin(&t.upload, context.Background(), s.id, pk.Payload)
		t.pending = &t.upload
	}
	s.pipe.push(t)
	// Uplinks are never routed to MQTT subscribers nor retained, and
	// mochi writes no PUBACK: the pipeline answers.
	return pk, errReject
}

// errReject is packets.ErrRejectPacket as an error made once: returning the
// packets.Code itself boxed it anew on every publish.
var errReject error = packets.ErrRejectPacket

// verdict maps the core's Outcome of a publish through answers. A QoS 0
// publish has nothing to answer: it is taken when the 3.1.1 column
// acknowledges and dropped otherwise.
func (h *hook) verdict(s *session, qos1 bool, out Outcome) verdict {
	a, ok := answers[out.Status]
	if !ok { // a status without an answer is a bug: never acknowledge it
		h.log.Error("publish outcome without an answer", "tenant_id", s.id.Tenant, "gateway_id", s.id.Serial, "status", out.Status.String())
		a = answers[PersistFailed]
	}
	r := a.v311
	if v5(s.cl) {
		r = a.v5
	}
	switch {
	case !qos1:
		return verdict{}
	case r.ack && r.code.Code >= packets.ErrUnspecifiedError.Code:
		return verdict{ack: true, code: packets.Code{Code: r.code.Code, Reason: a.reason(h, out, s.id.Serial)}}
	case !r.ack:
		return verdict{close: true, code: r.code}
	}
	return verdict{ack: true}
}

// status takes a gateway's Status (gwproto.ParseStatus): a valid one goes
// to the Presence and is acknowledged; anything else is refused (MQTT 5:
// PUBACK 0x99 with the reason; MQTT 3.1.1: the connection is closed) and
// counted, and so is a status over the session's status rate (0x96). A
// status is never stored as a message nor routed to subscribers. It runs
// in the read loop; its verdict waits in the pipeline for the earlier
// publishes' answers.
func (h *hook) status(cl *mqtt.Client, s *session, pk packets.Packet) verdict {
	qos1 := pk.FixedHeader.Qos == 1
	refuse := func(label string, code packets.Code, reason string) verdict {
		h.m.publishRefused.WithLabelValues(label).Inc()
		h.emit(Event{Kind: eventTopicRefused, Tenant: s.id.Tenant, Serial: s.id.Serial, Remote: cl.Net.Remote, Reason: label})
		switch {
		case !qos1:
			return verdict{}
		case v5(cl):
			if len(reason) > 160 {
				reason = reason[:160]
			}
			return verdict{ack: true, code: packets.Code{Code: code.Code, Reason: strings.ToValidUTF8(reason, "")}}
		default:
			return verdict{close: true, code: code}
		}
	}
	if !s.statuses.Allow() {
		return refuse("status_rate", packets.ErrMessageRateTooHigh, fmt.Sprintf("over the status rate (a burst of %d, then one per %v); send a status on connect and when something changes", statusBurst, statusEvery))
	}
	st, err := gwproto.ParseStatus(pk.Payload)
	if err != nil {
		return refuse("status_invalid", packets.ErrPayloadFormatInvalid, err.Error())
	}
	h.m.statuses.Inc()
	if h.cfg.Presence != nil {
		h.cfg.Presence.Status(s.id, st)
	}
	return verdict{ack: qos1}
}

// noneValidReason is the PUBACK reason string when nothing was valid: the
// first rejection and where to read the rest, bounded in size.
func noneValidReason(rep *Report, serial string) string {
	r := rep.Rejected[0]
	s := r.Reason
	if len(s) > 160 { // cut on a character boundary: the reason must stay UTF-8
		i := 160
		for i > 0 && !utf8.RuneStart(s[i]) {
			i--
		}
		s = s[:i]
	}
	where := "payload"
	if r.Index >= 0 {
		where = fmt.Sprintf("message %d", r.Index)
	}
	more := ""
	if n := rep.Total(); n > 1 {
		more = fmt.Sprintf(" (and %d more)", n-1)
	}
	return fmt.Sprintf("no valid message: %s: %s [%s]%s; details on %s", where, s, r.Code, more, ErrorsTopic(serial))
}

// report publishes the rejections of one publish on the gateway's errors
// topic (the acker calls it just before the publish's PUBACK).
func (h *hook) report(s *session, packetID uint16, rep *Report) {
	rep.PacketID = packetID
	b, err := json.Marshal(rep)
	if err != nil {
		h.log.Error("encode error report", "error", err)
		return
	}
	if err := h.broker.Publish(ErrorsTopic(s.id.Serial), b, false, 1); err != nil {
		h.log.Warn("publish error report", "tenant_id", s.id.Tenant, "gateway_id", s.id.Serial, "error", err)
	}
}

// goodbye ends a session because the server shuts down: the publishes
// already read get their answers (the pipeline drains; nothing more is
// taken), then MQTT 5 gets DISCONNECT 0x8B (server shutting down); MQTT
// 3.1.1, where a server sends no DISCONNECT, a closed connection. Neither
// takes the broker's clients lock.
func (h *hook) goodbye(s *session) {
	cl := s.cl
	s.pipe.close()
	if v5(cl) {
		_ = h.broker.DisconnectClient(cl, packets.ErrServerShuttingDown)
		return
	}
	cl.Stop(packets.ErrServerShuttingDown)
}

// kick disconnects the gateway's live session, if any, when why names a
// reason (an End reason) for the certificate it authenticated with.
func (h *hook) kick(tenant, serial string, why func(certSerial string) string) bool {
	s, ok := h.session(tenant, serial)
	if !ok {
		return false
	}
	reason := why(s.id.CertSerial)
	if reason == "" {
		return false
	}
	h.end(s, reason)
	return true
}

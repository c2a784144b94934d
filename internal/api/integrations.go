package api

import (
	"context"
	"encoding/json"
	"net/http"
	"slices"
	"strconv"
	"time"

	"github.com/iotransit/iotransit/client"
	"github.com/iotransit/iotransit/internal/credential"
	"github.com/iotransit/iotransit/internal/forward"
)

// Integrations manages integrations (forward.Registry).
type Integrations interface {
	List(ctx context.Context, tenant string) ([]forward.Integration, error)
	Create(ctx context.Context, tenant string, in forward.Integration) (forward.Integration, forward.Shown, error)
	Views(ctx context.Context, tenant string) ([]forward.View, error)
	Get(ctx context.Context, tenant, id string) (forward.View, error)
	Update(ctx context.Context, tenant, id string, in forward.Integration) (forward.Integration, error)
	SetPaused(ctx context.Context, tenant, id string, paused bool) (forward.Integration, error)
	RetryNow(ctx context.Context, tenant, id string) (forward.Integration, error)
	RotateSecret(ctx context.Context, tenant, id string, overlap time.Duration) (forward.Integration, string, error)
	Delete(ctx context.Context, tenant, id string) error
	TestSend(ctx context.Context, tenant, id string) (forward.TestResult, error)
	DeadLetters(ctx context.Context, tenant, id string, after uint64, limit int) ([]forward.DeadLetter, uint64, error)
	Redrive(ctx context.Context, tenant, id string, seqs []uint64) (int, error)
}

func (s *Server) integrationID(r *http.Request) (string, error) {
	id := r.PathValue("id")
	if !forward.ValidID(id) {
		return "", forward.ErrIntegrationNotFound.New()
	}
	return id, nil
}

// audit an integration change.
func (s *Server) recordIntegration(r *http.Request, p *Principal, action, id string, err error, detail map[string]string) {
	if forward.ErrIntegrationNotFound.Is(err) {
		return
	}
	s.record(r.Context(), r, r.PathValue("tenant"), p, "forward.integration."+action, "integration:"+id, err, detail)
}

// destination is what decides where, and to whom, an integration delivers
// the tenant's messages: the endpoint and its port, the topic and the
// device or client there, the CA trusted for it, and the key payloads are
// sealed to. Each is a field of its own, compared apart: joined into one
// string, AWS client "a b" with topic "c" would equal client "a" with
// topic "b c". A websocket integration has none: its stream needs
// messages:read anyway.
type destination struct {
	endpoint      string
	port          int
	topic, device string
	ca, key       string
}

func destinationOf(in forward.Integration) destination {
	var d destination
	switch {
	case in.Type == forward.TypeWebsocket:
		return d
	case in.Webhook != nil:
		d.endpoint, d.ca = in.Webhook.URL, in.Webhook.CAPEM
	case in.MQTT != nil:
		d.endpoint, d.topic, d.ca = in.MQTT.Broker, in.MQTT.Topic, in.MQTT.CAPEM
	case in.Azure != nil:
		d.endpoint, d.port, d.device, d.ca = in.Azure.HostName, in.Azure.Port, in.Azure.DeviceID, in.Azure.CAPEM
	case in.AWS != nil:
		d.endpoint, d.port, d.device, d.topic, d.ca = in.AWS.Endpoint, in.AWS.Port, in.AWS.ClientID, in.AWS.Topic, in.AWS.CAPEM
	}
	if in.Encryption != nil {
		d.key = in.Encryption.PublicKeyPEM
	}
	return d
}

// delivers reports whether an integration of this type sends the tenant's
// messages to an endpoint (every type but websocket).
func delivers(typ string) bool {
	return typ != forward.TypeWebsocket && slices.Contains(client.IntegrationTypes, typ)
}

func (s *Server) createIntegration(w http.ResponseWriter, r *http.Request, p *Principal) error {
	var in forward.Integration
	if err := decodeJSON(w, r, s.cfg.MaxBody, &in, false); err != nil {
		return err
	}
	if delivers(in.Type) {
		if err := needAlso(p, credential.ScopeMessagesRead, "creating a "+in.Type+" integration (it delivers the tenant's messages)"); err != nil {
			return err
		}
	}
	tenant := r.PathValue("tenant")
	// Refusals by the tenant's policy are audited like the others.
	err := s.checkIntegration(tenant, in, nil)
	release := func() {}
	if err == nil {
		release, err = s.integrationQuota(r.Context(), tenant)
	}
	var out forward.Integration
	var shown forward.Shown
	if err == nil {
		out, shown, err = s.deps.Integrations.Create(r.Context(), tenant, in)
		release()
	}
	s.recordIntegration(r, p, "create", out.ID, err, map[string]string{"type": in.Type, "name": in.Name})
	if err != nil {
		return err
	}
	// A secret the server generated is in the answer once.
	if sec := shown["webhook.secret"]; sec != "" && out.Webhook != nil {
		out.Webhook.Secret = sec
	}
	writeJSON(w, http.StatusCreated, out)
	return nil
}

// listIntegrations lists the tenant's integrations with their delivery
// state, as getIntegration shows one.
func (s *Server) listIntegrations(w http.ResponseWriter, r *http.Request, _ *Principal) error {
	views, err := s.deps.Integrations.Views(r.Context(), r.PathValue("tenant"))
	if err != nil {
		return err
	}
	items := make([]client.IntegrationView, len(views))
	for i, v := range views {
		items[i] = integrationView(v)
	}
	writeJSON(w, http.StatusOK, client.List[client.IntegrationView]{Items: items})
	return nil
}

func integrationView(v forward.View) client.IntegrationView {
	return client.IntegrationView{Integration: v.Integration, Health: v.Health, State: v.State.IntegrationState, Backlog: v.Backlog, DeadLetters: v.DeadLetters}
}

func (s *Server) getIntegration(w http.ResponseWriter, r *http.Request, _ *Principal) error {
	id, err := s.integrationID(r)
	if err != nil {
		return err
	}
	v, err := s.deps.Integrations.Get(r.Context(), r.PathValue("tenant"), id)
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, integrationView(v))
	return nil
}

// updateIntegration merges the body's fields over the current settings
// (secrets given replace, secrets omitted stay) and saves them.
func (s *Server) updateIntegration(w http.ResponseWriter, r *http.Request, p *Principal) error {
	id, err := s.integrationID(r)
	if err != nil {
		return err
	}
	tenant := r.PathValue("tenant")
	cur, err := s.deps.Integrations.Get(r.Context(), tenant, id)
	if err != nil {
		return err
	}
	// The body is decoded over the current settings (sharing their type
	// settings object): take the destination first.
	before := destinationOf(cur.Integration)
	stored := slices.Clone(cur.SecretsSet)
	in := cur.Integration
	if err := decodeJSON(w, r, s.cfg.MaxBody, &in, false); err != nil {
		return err
	}
	if destinationOf(in) != before {
		if err := needAlso(p, credential.ScopeMessagesRead, "changing where an integration delivers (endpoint, topic, device, trusted CA or encryption key)"); err != nil {
			return err
		}
	}
	// The type cannot change, and one left empty keeps the stored one:
	// the policy is checked against that type, not against "" (which
	// looked like a type that needs no authentication).
	if in.Type == "" {
		in.Type = cur.Integration.Type
	}
	// The stored secrets the update keeps: none cleared, and none when
	// the endpoint moves (the registry forgets those sent there).
	kept := slices.DeleteFunc(stored, func(n string) bool { return slices.Contains(in.ClearSecrets, n) })
	if destinationOf(in).endpoint != before.endpoint {
		kept = nil
	}
	var out forward.Integration
	err = s.checkIntegration(tenant, in, kept)
	if err == nil {
		out, err = s.deps.Integrations.Update(r.Context(), tenant, id, in)
	}
	s.recordIntegration(r, p, "update", id, err, nil)
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, out)
	return nil
}

func (s *Server) pauseIntegration(paused bool) handlerFunc {
	return s.integrationAction(map[bool]string{true: "pause", false: "resume"}[paused],
		func(ctx context.Context, tenant, id string) (forward.Integration, error) {
			if !paused {
				if err := s.sendAllowed(ctx, tenant, id); err != nil {
					return forward.Integration{}, err
				}
			}
			return s.deps.Integrations.SetPaused(ctx, tenant, id, paused)
		})
}

// retryIntegrationNow ends the backoff wait of the integration's failing
// batch, on whichever node delivers it.
func (s *Server) retryIntegrationNow() handlerFunc {
	return s.integrationAction("retry_now", func(ctx context.Context, tenant, id string) (forward.Integration, error) {
		if err := s.sendAllowed(ctx, tenant, id); err != nil {
			return forward.Integration{}, err
		}
		return s.deps.Integrations.RetryNow(ctx, tenant, id) // at request time: deps may be set after the route table
	})
}

// integrationAction is the handler of an action on an integration with an
// empty body (pause, resume, retry now): it is audited as action and
// answers the integration.
func (s *Server) integrationAction(action string, do func(ctx context.Context, tenant, id string) (forward.Integration, error)) handlerFunc {
	return func(w http.ResponseWriter, r *http.Request, p *Principal) error {
		id, err := s.integrationID(r)
		if err != nil {
			return err
		}
		if err := decodeJSON(w, r, s.cfg.MaxBody, &struct{}{}, true); err != nil {
			return err
		}
		out, err := do(r.Context(), r.PathValue("tenant"), id)
		s.recordIntegration(r, p, action, id, err, nil)
		if err != nil {
			return err
		}
		writeJSON(w, http.StatusOK, out)
		return nil
	}
}

func (s *Server) deleteIntegration(w http.ResponseWriter, r *http.Request, p *Principal) error {
	id, err := s.integrationID(r)
	if err != nil {
		return err
	}
	err = s.deps.Integrations.Delete(r.Context(), r.PathValue("tenant"), id)
	s.recordIntegration(r, p, "delete", id, err, nil)
	if err != nil {
		return err
	}
	w.WriteHeader(http.StatusNoContent)
	return nil
}

func (s *Server) testIntegration(w http.ResponseWriter, r *http.Request, p *Principal) error {
	id, err := s.integrationID(r)
	if err != nil {
		return err
	}
	if err := decodeJSON(w, r, s.cfg.MaxBody, &struct{}{}, true); err != nil {
		return err
	}
	var res forward.TestResult
	err = s.sendAllowed(r.Context(), r.PathValue("tenant"), id)
	if err == nil {
		res, err = s.deps.Integrations.TestSend(r.Context(), r.PathValue("tenant"), id)
	}
	outcome := err
	if err == nil && !res.OK {
		outcome = forward.ErrTestFailed.WithDetail("%s", res.Error)
	}
	s.recordIntegration(r, p, "test", id, outcome, nil)
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, res)
	return nil
}

func (s *Server) rotateSecret(w http.ResponseWriter, r *http.Request, p *Principal) error {
	id, err := s.integrationID(r)
	if err != nil {
		return err
	}
	var req client.RotateSecretRequest
	if err := decodeJSON(w, r, s.cfg.MaxBody, &req, true); err != nil {
		return err
	}
	overlap := forward.DefaultSecretOverlap
	if req.Overlap != "" {
		if overlap, err = time.ParseDuration(req.Overlap); err != nil {
			return forward.ErrIntegrationInvalid.WithDetail("overlap must be a duration such as \"24h\"")
		}
	}
	out, secret, err := s.deps.Integrations.RotateSecret(r.Context(), r.PathValue("tenant"), id, overlap)
	s.recordIntegration(r, p, "rotate_secret", id, err, map[string]string{"overlap": overlap.String()})
	if err != nil {
		return err
	}
	if out.Webhook != nil {
		out.Webhook.Secret = secret
	}
	writeJSON(w, http.StatusOK, out)
	return nil
}

// envelopeMembers are the members of a Thingsee message that say what it is
// (type, event, sensor, times, gateway) and not what it measured.
var envelopeMembers = []string{"tsmId", "tsmEv", "tsmTuid", "tsmTs", "tsmCloudTs", "tsmGw", "deploymentGroupId"}

// envelope returns a message with only its envelope members; nil if it is
// not a JSON object.
func envelope(msg json.RawMessage) json.RawMessage {
	var all map[string]json.RawMessage
	if err := json.Unmarshal(msg, &all); err != nil || all == nil {
		return nil
	}
	kept := make(map[string]json.RawMessage, len(envelopeMembers))
	for _, k := range envelopeMembers {
		if v, ok := all[k]; ok {
			kept[k] = v
		}
	}
	b, err := json.Marshal(kept)
	if err != nil {
		return nil
	}
	return b
}

// listDeadLetters lists dead letters. Their message payloads are what
// messages:read guards: a caller without it gets each message's envelope
// only (type, sensor, times, gateway), not its measurements. A page reads
// at most what the read budget lends it: a shorter one is partial, with a
// cursor that goes on.
func (s *Server) listDeadLetters(w http.ResponseWriter, r *http.Request, p *Principal) error {
	id, err := s.integrationID(r)
	if err != nil {
		return err
	}
	limit, err := intParam(r, "limit", 1, MaxLimit, DefaultLimit)
	if err != nil {
		return err
	}
	var after uint64
	if c := r.URL.Query().Get("cursor"); c != "" {
		if after, err = strconv.ParseUint(c, 10, 64); err != nil {
			return ErrBadParameter.WithDetail("cursor must be a value from a previous page's next")
		}
	}
	// Each dead letter is a sealed message read and opened: the page reads
	// within the read budget, as the messages list does.
	loan, err := s.lendReads(w, r, p)
	if err != nil {
		return err
	}
	take := min(limit, loan.lent)
	items, next, err := s.deps.Integrations.DeadLetters(r.Context(), r.PathValue("tenant"), id, after, take)
	loan.settle(len(items))
	if err != nil {
		return err
	}
	if !p.can(credential.ScopeMessagesRead) {
		for i := range items {
			items[i].Message = envelope(items[i].Message)
		}
	}
	s.reads.read(r, p, "dead-letters", "integration:"+id, 1, len(items))
	out := client.Page[forward.DeadLetter]{Items: items}
	if next != 0 && len(items) == take {
		out.Next = strconv.FormatUint(next, 10)
		out.Partial = take < limit
	}
	writeJSON(w, http.StatusOK, out)
	return nil
}

func (s *Server) redrive(w http.ResponseWriter, r *http.Request, p *Principal) error {
	id, err := s.integrationID(r)
	if err != nil {
		return err
	}
	if err := needAlso(p, credential.ScopeMessagesRead, "re-driving dead letters (they deliver the tenant's messages again)"); err != nil {
		return err
	}
	var req client.RedriveRequest
	if err := decodeJSON(w, r, s.cfg.MaxBody, &req, true); err != nil {
		return err
	}
	if len(req.Seqs) > 10000 {
		return forward.ErrIntegrationInvalid.WithDetail("at most 10000 dead letters at once")
	}
	var n int
	err = s.sendAllowed(r.Context(), r.PathValue("tenant"), id)
	if err == nil {
		n, err = s.deps.Integrations.Redrive(r.Context(), r.PathValue("tenant"), id, req.Seqs)
	}
	s.recordIntegration(r, p, "redrive", id, err, map[string]string{"count": strconv.Itoa(n)})
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, client.RedriveResult{Redriven: n})
	return nil
}

package api

import (
	"context"
	"encoding/json"
	"hash/fnv"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/iotransit/iotransit/client"
	"github.com/iotransit/iotransit/internal/audit"
	"github.com/iotransit/iotransit/internal/fault"
	"github.com/iotransit/iotransit/internal/forward"
	"github.com/iotransit/iotransit/internal/forward/azure"
	"github.com/iotransit/iotransit/internal/registry"
)

// The tenant's security policy (registry.Tenant.Policy): read by the
// tenant, set by the operator only (a tenant must not loosen its own
// policy, and a tenant admin tightening it is left to the operator too),
// and the rules the API applies when a tenant creates something.

// getPolicy answers the tenant's policy and what this node applies.
func (s *Server) getPolicy(w http.ResponseWriter, r *http.Request, _ *Principal) error {
	t, _ := s.deps.Registry.Tenant(r.PathValue("tenant")) // authorize checked it exists
	writeJSON(w, http.StatusOK, s.withUsage(r.Context(), s.viewPolicy(t)))
	return nil
}

// putPolicy replaces the tenant's policy (operator only), audited in the
// tenant's log and the platform's with each member changed, before and
// after (a policy holds no secret); a refused change is audited too.
func (s *Server) putPolicy(w http.ResponseWriter, r *http.Request, p *Principal) error {
	tenant := r.PathValue("tenant")
	cur, ok := s.deps.Registry.Tenant(tenant)
	if !ok {
		return registry.ErrTenantNotFound.New()
	}
	var req client.Policy
	if err := decodeJSON(w, r, s.cfg.MaxBody, &req, false); err != nil {
		return err
	}
	before := cur.Policy
	lim := registry.PolicyLimits{MaxCertificateValidity: s.cfg.CertValidity}
	if rt := s.cfg.PolicyDefaults.Retention; rt != nil && rt.AuditMinAge != nil {
		lim.AuditRetention = time.Duration(*rt.AuditMinAge)
	}
	err := registry.ValidatePolicy(req, lim)
	var after registry.Tenant
	if err == nil {
		var old registry.Tenant
		if old, after, err = s.deps.Registry.SetPolicy(r.Context(), tenant, req); err == nil {
			before = old.Policy
		}
	}
	detail := policyChanges(before, req)
	s.record(r.Context(), r, tenant, p, "registry.policy.update", "tenant:"+tenant, err, detail)
	s.record(r.Context(), r, audit.SystemTenant, p, "registry.policy.update", "tenant:"+tenant, err, detail)
	if err != nil {
		return err
	}
	s.pauseForbidden(r, p, tenant)
	writeJSON(w, http.StatusOK, s.withUsage(r.Context(), s.viewPolicy(after)))
	return nil
}

// pauseForbidden pauses the tenant's delivering integrations that its
// policy, as just set, forbids (their type, a host they reach, missing
// authentication): made before it, they would go on delivering where the
// operator no longer allows. Each pause is audited with the rule it
// breaks; resume stays refused until the integration is changed to comply
// (sendAllowed). Their messages wait in the backlog, within retention. A
// pause that fails is audited as failed and leaves the policy set.
func (s *Server) pauseForbidden(r *http.Request, p *Principal, tenant string) {
	t, _ := s.deps.Registry.Tenant(tenant)
	if t.Policy.Integrations == nil {
		return
	}
	ctx := r.Context()
	ins, err := s.deps.Integrations.List(ctx, tenant)
	if err != nil {
		s.log.Warn("policy: list integrations to pause those it forbids", "tenant_id", tenant, "error", err)
		return
	}
	for _, in := range ins {
		if in.Paused || !delivers(in.Type) {
			continue
		}
		why := s.checkIntegration(tenant, in, in.SecretsSet)
		if why == nil {
			continue
		}
		_, err := s.deps.Integrations.SetPaused(ctx, tenant, in.ID, true)
		s.record(ctx, r, tenant, p, "forward.integration.pause", "integration:"+in.ID, err, map[string]string{"reason": fault.From(why).Detail()})
	}
}

// policyChanges names the members of a policy that differ from before
// to after, each as "before -> after" in JSON ("default" for a member left
// out): the audit detail of a change (at most the 11 members, each value
// cut by the audit log at 256 bytes).
func policyChanges(before, after client.Policy) map[string]string {
	b, a := flatPolicy(before), flatPolicy(after)
	out := map[string]string{}
	for k := range b {
		if _, ok := a[k]; !ok {
			a[k] = "default"
		}
	}
	for k, v := range a {
		was, ok := b[k]
		if !ok {
			was = "default"
		}
		if was != v {
			out[k] = was + " -> " + v
		}
	}
	return out
}

// flatPolicy is a policy's members as "quotas.gateways" -> its JSON value,
// without the members left out.
func flatPolicy(p client.Policy) map[string]string {
	raw, err := json.Marshal(p)
	if err != nil {
		return nil
	}
	var tree map[string]json.RawMessage
	_ = json.Unmarshal(raw, &tree)
	out := map[string]string{}
	for k, v := range tree {
		var sub map[string]json.RawMessage
		if json.Unmarshal(v, &sub) == nil {
			for sk, sv := range sub {
				out[k+"."+sk] = string(sv)
			}
			continue
		}
		out[k] = string(v)
	}
	return out
}

// viewPolicy is a tenant's policy, with what this node applies: every
// member left out filled with the node's default, and named in Defaults.
// Count quotas, allowed types and hosts and the API key lifetime left out
// stay out of Effective (no bound) and are named in Defaults too.
func (s *Server) viewPolicy(t registry.Tenant) client.PolicyView {
	set := t.Policy
	defaults := []string{}
	strict := t.StrictValidation()
	validity := client.Duration(t.CertificateValidity(s.cfg.CertValidity))
	eff := client.Policy{StrictValidation: &strict, CertificateValidity: &validity, APIKeyMaxLifetime: set.APIKeyMaxLifetime, APIAllowCIDRs: set.APIAllowCIDRs}
	if set.StrictValidation == nil {
		defaults = append(defaults, "strictValidation")
	}
	if set.CertificateValidity == nil {
		defaults = append(defaults, "certificateValidity")
	}
	q := client.Quotas{}
	if set.Quotas != nil {
		q = *set.Quotas
	}
	def := client.Quotas{}
	if s.cfg.PolicyDefaults.Quotas != nil {
		def = *s.cfg.PolicyDefaults.Quotas
	}
	for _, f := range []struct {
		name     string
		v        **int
		fallback *int
	}{{"quotas.ingestBurst", &q.IngestBurst, def.IngestBurst}, {"quotas.concurrentConnections", &q.ConcurrentConnections, def.ConcurrentConnections}} {
		if *f.v == nil {
			*f.v, defaults = f.fallback, append(defaults, f.name)
		}
	}
	if q.StoredBytes == nil {
		q.StoredBytes, defaults = def.StoredBytes, append(defaults, "quotas.storedBytes")
	}
	if q.IngestMsgsPerSecond == nil {
		q.IngestMsgsPerSecond, defaults = def.IngestMsgsPerSecond, append(defaults, "quotas.ingestMsgsPerSecond")
	}
	eff.Quotas = &q
	ip := client.IntegrationPolicy{}
	if set.Integrations != nil {
		ip = *set.Integrations
	}
	if ip.RequireAuth == nil {
		off := false
		ip.RequireAuth, defaults = &off, append(defaults, "integrations.requireAuth")
	}
	eff.Integrations = &ip
	rt := client.Retention{}
	if set.Retention != nil {
		rt = *set.Retention
	}
	var defRT client.Retention
	if s.cfg.PolicyDefaults.Retention != nil {
		defRT = *s.cfg.PolicyDefaults.Retention
	}
	if rt.MessagesMaxAge == nil {
		rt.MessagesMaxAge, defaults = defRT.MessagesMaxAge, append(defaults, "retention.messagesMaxAge")
	}
	for _, f := range []struct {
		name     string
		v        **client.Duration
		fallback *client.Duration
	}{
		{"retention.rejectedMaxAge", &rt.RejectedMaxAge, defRT.RejectedMaxAge},
		{"retention.deadLettersMaxAge", &rt.DeadLettersMaxAge, defRT.DeadLettersMaxAge},
		{"retention.auditMinAge", &rt.AuditMinAge, defRT.AuditMinAge},
	} {
		if *f.v == nil {
			*f.v, defaults = f.fallback, append(defaults, f.name)
		}
	}
	if rt.MessagesMaxBytes == nil {
		rt.MessagesMaxBytes, defaults = defRT.MessagesMaxBytes, append(defaults, "retention.messagesMaxBytes")
	}
	eff.Retention = &rt
	// The members without a default of the node's: left out, no bound.
	for name, left := range map[string]bool{
		"quotas.gateways": q.Gateways == nil, "quotas.integrations": q.Integrations == nil, "quotas.apiKeys": q.APIKeys == nil,
		"integrations.allowedTypes": ip.AllowedTypes == nil, "integrations.allowedHosts": ip.AllowedHosts == nil,
		"apiKeyMaxLifetime": set.APIKeyMaxLifetime == nil, "apiAllowCIDRs": len(set.APIAllowCIDRs) == 0,
	} {
		if left {
			defaults = append(defaults, name)
		}
	}
	slices.Sort(defaults)
	return client.PolicyView{Tenant: t.ID, Policy: set, Effective: eff, Defaults: defaults}
}

// withUsage adds to v what its tenant uses of its bounds, when the node
// can read it (a failure leaves it out, logged).
func (s *Server) withUsage(ctx context.Context, v client.PolicyView) client.PolicyView {
	if s.deps.StoredBytes == nil {
		return v
	}
	sb, err := s.deps.StoredBytes(ctx, v.Tenant)
	if err != nil {
		s.log.Warn("policy: read the tenant's stored bytes", "tenant_id", v.Tenant, "error", err)
		return v
	}
	v.Usage = &client.PolicyUsage{StoredBytes: sb}
	return v
}

// checkIntegration refuses an integration (new, or one as changed) that
// the tenant's policy forbids: its type, a host it reaches, or missing
// outbound authentication. kept names the stored secrets an update keeps
// (SecretsSet names; none at create).
func (s *Server) checkIntegration(tenant string, in forward.Integration, kept []string) error {
	t, _ := s.deps.Registry.Tenant(tenant)
	ip := t.Policy.Integrations
	if ip == nil {
		return nil
	}
	if len(ip.AllowedTypes) > 0 && !slices.Contains(ip.AllowedTypes, in.Type) {
		return registry.ErrPolicyViolation.WithDetail("integrations.allowedTypes: type %s is not allowed (allowed: %s)", quote(in.Type), strings.Join(ip.AllowedTypes, ", "))
	}
	if len(ip.AllowedHosts) > 0 {
		for _, h := range integrationHosts(in) {
			if h == "" || !registry.HostAllowed(ip.AllowedHosts, h) {
				return registry.ErrPolicyViolation.WithDetail("integrations.allowedHosts: host %s is not allowed (allowed: %s)", quote(h), strings.Join(ip.AllowedHosts, ", "))
			}
		}
	}
	if ip.RequireAuth != nil && *ip.RequireAuth && !authenticates(in, kept) {
		return registry.ErrPolicyViolation.WithDetail("integrations.requireAuth: a %s integration must authenticate to its endpoint (%s)", in.Type, authHint[in.Type])
	}
	return nil
}

// sendAllowed refuses sending on demand (test, resume, retry now,
// redrive) through an integration that the tenant's policy forbids as it
// is now: one made before the policy was tightened must not be pointed at
// a forbidden host again by its tenant. Its background delivery is the
// forwarder's.
func (s *Server) sendAllowed(ctx context.Context, tenant, id string) error {
	t, _ := s.deps.Registry.Tenant(tenant)
	if t.Policy.Integrations == nil {
		return nil
	}
	v, err := s.deps.Integrations.Get(ctx, tenant, id)
	if err != nil {
		return err
	}
	return s.checkIntegration(tenant, v.Integration, v.SecretsSet)
}

// integrationHosts are the hosts an integration connects to: its endpoint
// (an Azure hub's host name completed as its target completes it) and a
// webhook's OAuth2 token URL ("" for one that cannot be read).
func integrationHosts(in forward.Integration) []string {
	urlHost := func(v string) string {
		u, err := url.Parse(v)
		if err != nil {
			return ""
		}
		return u.Hostname()
	}
	switch {
	case in.Type == forward.TypeWebsocket:
		return nil // the tenant's own client connects to the API
	case in.Webhook != nil:
		hosts := []string{urlHost(in.Webhook.URL)}
		if a := in.Webhook.Auth; a != nil && a.TokenURL != "" {
			hosts = append(hosts, urlHost(a.TokenURL))
		}
		return hosts
	case in.MQTT != nil:
		return []string{urlHost(in.MQTT.Broker)}
	case in.Azure != nil:
		return []string{azure.HostName(in.Azure.HostName)} // a bare hub name completed, as the target does
	case in.AWS != nil:
		return []string{in.AWS.Endpoint}
	}
	return []string{""} // no settings: the integration is refused below anyway
}

// authHint says how each type authenticates to its endpoint.
var authHint = map[string]string{
	client.IntegrationWebhook: "webhook.auth of kind apikey, oauth2 or mtls, or a client certificate",
	client.IntegrationMQTT:    "mqtt.username with a password, or a client certificate",
}

// authenticates reports whether an integration authenticates to its
// endpoint: a webhook by API key header, OAuth2 or a client certificate
// (the webhook's own checks refuse these without their secret), an MQTT
// integration by a user name with a password (given, or kept: a stored
// secret named in kept) or a client certificate; Azure IoT Hub (device
// key) and AWS IoT (certificate) always do, and a websocket stream
// delivers to the API's own authenticated clients.
func authenticates(in forward.Integration, kept []string) bool {
	switch in.Type {
	case client.IntegrationWebhook:
		if in.Webhook == nil {
			return false
		}
		a := in.Webhook.Auth
		return in.Webhook.ClientCertPEM != "" || a != nil && (a.Kind == "apikey" || a.Kind == "oauth2" || a.Kind == "mtls")
	case client.IntegrationMQTT:
		if in.MQTT == nil {
			return false
		}
		password := in.MQTT.Password != "" || slices.Contains(kept, "mqtt.password")
		return in.MQTT.Username != "" && password || in.MQTT.ClientCertPEM != ""
	}
	return in.Type == client.IntegrationAzure || in.Type == client.IntegrationAWS || in.Type == client.IntegrationWebsocket
}

// countQuota refuses one more of a tenant's things when its policy's count
// quota (sel, named name) is set and reached; held counts them, and is
// called only then. While the quota is set, the count and the creation
// are one at a time on this node (quotaLock): the caller calls release
// once it created the thing (or failed to), so that concurrent creations
// cannot each take the last place.
func (s *Server) countQuota(ctx context.Context, tenant, name string, sel func(*client.Quotas) *int, held func(context.Context) (int, error)) (release func(), err error) {
	t, _ := s.deps.Registry.Tenant(tenant)
	if _, ok := t.Quota(sel); !ok {
		return func() {}, nil
	}
	release = quotaLock(tenant, name)
	n, err := held(ctx)
	if err == nil {
		t, _ = s.deps.Registry.Tenant(tenant) // the newest policy, now that we hold the lock
		err = registry.CheckQuota(t, name, sel, n)
	}
	if err != nil {
		release()
		return nil, err
	}
	return release, nil
}

// quotaLocks serialize the creations counted against a count quota on
// this node (quotaLock); a tenant's quota takes one by its hash, so that
// their number stays fixed whatever the number of tenants.
var quotaLocks [64]sync.Mutex

// quotaLock locks the creations of tenant's things counted by the quota
// name and returns its unlock.
func quotaLock(tenant, name string) func() {
	h := fnv.New32a()
	_, _ = h.Write([]byte(name + "\x00" + tenant))
	mu := &quotaLocks[h.Sum32()%uint32(len(quotaLocks))]
	mu.Lock()
	return mu.Unlock
}

// integrationQuota refuses one more integration past the tenant's quota;
// release as countQuota's.
func (s *Server) integrationQuota(ctx context.Context, tenant string) (release func(), err error) {
	return s.countQuota(ctx, tenant, "integrations", func(q *client.Quotas) *int { return q.Integrations }, func(ctx context.Context) (int, error) {
		l, err := s.deps.Integrations.List(ctx, tenant)
		return len(l), err
	})
}

// credentialQuota refuses one more API key or OAuth2 client past the
// tenant's quota of both together (neither revoked nor expired); release
// as countQuota's.
func (s *Server) credentialQuota(ctx context.Context, tenant string) (release func(), err error) {
	return s.countQuota(ctx, tenant, "apiKeys", func(q *client.Quotas) *int { return q.APIKeys }, func(ctx context.Context) (int, error) {
		now := nowFunc()
		keys, err := s.deps.Credentials.APIKeys(ctx, tenant)
		if err != nil {
			return 0, err
		}
		clients, err := s.deps.Credentials.Clients(ctx, tenant)
		if err != nil {
			return 0, err
		}
		n := 0
		for _, k := range keys {
			if k.Active(now) {
				n++
			}
		}
		for _, c := range clients {
			if c.Active(now) {
				n++
			}
		}
		return n, nil
	})
}

// admitCredential applies the tenant's policy to a new API key or OAuth2
// client asked with ttl: its lifetime (credentialTTL) and the quota of
// both (credentialQuota); it returns the ttl to create it with, and
// release (credentialQuota's) to call once it is created.
func (s *Server) admitCredential(ctx context.Context, tenant string, ttl time.Duration) (time.Duration, func(), error) {
	ttl, err := s.credentialTTL(tenant, ttl)
	if err != nil {
		return 0, nil, err
	}
	release, err := s.credentialQuota(ctx, tenant)
	if err != nil {
		return 0, nil, err
	}
	return ttl, release, nil
}

// credentialTTL applies the tenant's apiKeyMaxLifetime to the ttl asked
// for a new API key or OAuth2 client: none asked gets the maximum, a
// longer one is refused.
func (s *Server) credentialTTL(tenant string, ttl time.Duration) (time.Duration, error) {
	t, _ := s.deps.Registry.Tenant(tenant)
	max := t.Policy.APIKeyMaxLifetime
	switch {
	case max == nil:
		return ttl, nil
	case ttl == 0:
		return time.Duration(*max), nil
	case ttl > time.Duration(*max):
		return 0, registry.ErrPolicyViolation.WithDetail("apiKeyMaxLifetime: the ttl %s is longer than the tenant's maximum %s", ttl, time.Duration(*max))
	}
	return ttl, nil
}

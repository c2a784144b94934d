package api

import (
	"encoding/json"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"time"

	"github.com/iotransit/iotransit/client"
	"github.com/iotransit/iotransit/internal/audit"
	"github.com/iotransit/iotransit/internal/credential"
	"github.com/iotransit/iotransit/internal/fault"
)

// viewAPIKey is an API key as the API shows it, never with its hash; the
// bearer token is given only in the answer that creates it.
func viewAPIKey(k credential.APIKey, token string) client.APIKey {
	v := k.APIKey
	v.Key = token
	return v
}

func (s *Server) createAPIKey(w http.ResponseWriter, r *http.Request, p *Principal) error {
	var req client.CreateAPIKeyRequest
	if err := decodeJSON(w, r, s.cfg.MaxBody, &req, false); err != nil {
		return err
	}
	ttl, err := parseTTL(req.TTL)
	if err != nil {
		return err
	}
	tenant := r.PathValue("tenant")
	ttl, release, err := s.admitCredential(r.Context(), tenant, ttl) // refusals are audited like the others
	var k credential.APIKey
	var token string
	if err == nil {
		k, token, err = s.deps.Credentials.CreateAPIKeyWithin(r.Context(), tenant, req.Name, req.Scopes, p.held(), ttl, p.ExpiresAt, p.Actor())
		release()
	}
	s.record(r.Context(), r, tenant, p, "credential.apikey.create", "apikey:"+k.ID, err, map[string]string{"scopes": strings.Join(k.Scopes, " ")})
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusCreated, viewAPIKey(k, token))
	return nil
}

func (s *Server) listAPIKeys(w http.ResponseWriter, r *http.Request, _ *Principal) error {
	keys, err := s.deps.Credentials.APIKeys(r.Context(), r.PathValue("tenant"))
	if err != nil {
		return err
	}
	writeList(w, keys, func(k credential.APIKey) client.APIKey { return viewAPIKey(k, "") })
	return nil
}

func (s *Server) getAPIKey(w http.ResponseWriter, r *http.Request, _ *Principal) error {
	k, err := s.deps.Credentials.APIKey(r.Context(), r.PathValue("tenant"), r.PathValue("id"))
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, viewAPIKey(k, ""))
	return nil
}

func (s *Server) revokeAPIKey(w http.ResponseWriter, r *http.Request, p *Principal) error {
	if err := decodeJSON(w, r, s.cfg.MaxBody, &struct{}{}, true); err != nil {
		return err
	}
	tenant, id := r.PathValue("tenant"), r.PathValue("id")
	k, err := s.deps.Credentials.RevokeAPIKey(r.Context(), tenant, id)
	if !credential.ErrNotFound.Is(err) {
		s.record(r.Context(), r, tenant, p, "credential.apikey.revoke", "apikey:"+id, err, nil)
	}
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, viewAPIKey(k, ""))
	return nil
}

// viewClient is an OAuth2 client as the API shows it, never with its hash;
// the secret is given only in the answer that creates it.
func viewClient(c credential.Client, secret string) client.OAuth2Client {
	v := c.OAuth2Client
	v.ClientSecret = secret
	return v
}

func (s *Server) createClient(w http.ResponseWriter, r *http.Request, p *Principal) error {
	var req client.CreateOAuth2ClientRequest
	if err := decodeJSON(w, r, s.cfg.MaxBody, &req, false); err != nil {
		return err
	}
	ttl, err := parseTTL(req.TTL)
	if err != nil {
		return err
	}
	tenant := r.PathValue("tenant")
	ttl, release, err := s.admitCredential(r.Context(), tenant, ttl) // refusals are audited like the others
	var c credential.Client
	var secret string
	if err == nil {
		c, secret, err = s.deps.Credentials.CreateClientWithin(r.Context(), tenant, req.Name, req.Scopes, p.held(), ttl, p.ExpiresAt, p.Actor())
		release()
	}
	s.record(r.Context(), r, tenant, p, "credential.oauth2.create", "oauth2:"+c.ID, err, map[string]string{"scopes": strings.Join(c.Scopes, " ")})
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusCreated, viewClient(c, secret))
	return nil
}

func (s *Server) listClients(w http.ResponseWriter, r *http.Request, _ *Principal) error {
	cs, err := s.deps.Credentials.Clients(r.Context(), r.PathValue("tenant"))
	if err != nil {
		return err
	}
	writeList(w, cs, func(c credential.Client) client.OAuth2Client { return viewClient(c, "") })
	return nil
}

func (s *Server) getClient(w http.ResponseWriter, r *http.Request, _ *Principal) error {
	c, err := s.deps.Credentials.Client(r.Context(), r.PathValue("tenant"), r.PathValue("id"))
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, viewClient(c, ""))
	return nil
}

func (s *Server) revokeClient(w http.ResponseWriter, r *http.Request, p *Principal) error {
	if err := decodeJSON(w, r, s.cfg.MaxBody, &struct{}{}, true); err != nil {
		return err
	}
	tenant, id := r.PathValue("tenant"), r.PathValue("id")
	c, err := s.deps.Credentials.RevokeClient(r.Context(), tenant, id)
	if !credential.ErrNotFound.Is(err) {
		s.record(r.Context(), r, tenant, p, "credential.oauth2.revoke", "oauth2:"+id, err, nil)
	}
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, viewClient(c, ""))
	return nil
}

// writeOAuthError answers with an RFC 6749 §5.2 error, which OAuth2 client
// libraries parse; it carries the request id too.
func writeOAuthError(w http.ResponseWriter, r *http.Request, status int, code, desc string) {
	if status == http.StatusUnauthorized {
		w.Header().Set("WWW-Authenticate", `Basic realm="iotransit"`)
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(client.OAuthError{Code: code, Description: desc, RequestID: requestID(r)})
}

// token is the OAuth2 token endpoint: client credentials grant (RFC 6749
// §4.4), client authentication by HTTP Basic or form fields (§2.3.1). The
// optional scope parameter narrows the client's scopes.
func (s *Server) token(w http.ResponseWriter, r *http.Request, _ *Principal) error {
	now := nowFunc()
	ip := clientIP(r)
	if locked, wait := s.limits.throttled(ip, now); locked {
		retryAfter(w, wait)
		writeOAuthError(w, r, http.StatusTooManyRequests, "slow_down", ErrAuthThrottle.Message())
		return nil
	}
	if ct := r.Header.Get("Content-Type"); !strings.HasPrefix(ct, "application/x-www-form-urlencoded") {
		writeOAuthError(w, r, http.StatusBadRequest, "invalid_request", "the body must be application/x-www-form-urlencoded")
		return nil
	}
	r.Body = http.MaxBytesReader(w, r.Body, 8<<10)
	if err := r.ParseForm(); err != nil {
		writeOAuthError(w, r, http.StatusBadRequest, "invalid_request", "the form could not be read")
		return nil
	}
	form := r.PostForm
	if form.Get("grant_type") != "client_credentials" {
		writeOAuthError(w, r, http.StatusBadRequest, "unsupported_grant_type", "only client_credentials is supported")
		return nil
	}
	id, secret, basic := r.BasicAuth()
	if basic {
		id, _ = url.QueryUnescape(id)
		secret, _ = url.QueryUnescape(secret)
	} else {
		id, secret = form.Get("client_id"), form.Get("client_secret")
	}
	c, err := s.deps.Credentials.VerifyClient(r.Context(), id, secret)
	if err != nil {
		if fault.From(err).Kind() != fault.Unauthenticated {
			return err
		}
		s.limits.failed(ip, now)
		s.recordRefusal(r, c.Tenant, &Principal{Kind: "oauth2", ID: c.ID}, "credential.oauth2.token", "oauth2:"+c.ID, err, now)
		writeOAuthError(w, r, http.StatusUnauthorized, "invalid_client", "client authentication failed")
		return nil
	}
	if s.tenantGone(c.Tenant) {
		writeOAuthError(w, r, http.StatusUnauthorized, "invalid_client", "client authentication failed")
		return nil
	}
	if err := s.sourceAllowed(r, c.Tenant); err != nil {
		s.recordRefusal(r, c.Tenant, &Principal{Kind: "oauth2", ID: c.ID}, "api.source.refuse", "oauth2:"+c.ID, err, now)
		return err
	}
	if want := strings.Fields(form.Get("scope")); len(want) > 0 {
		for _, sc := range want {
			if !slices.Contains(c.Scopes, sc) {
				writeOAuthError(w, r, http.StatusBadRequest, "invalid_scope", "the client does not hold "+quote(sc))
				return nil
			}
		}
		c.Scopes = want
	}
	tok, err := s.deps.Tokens.Issue(c)
	if err != nil {
		return err
	}
	if s.deps.Audit != nil {
		detail := map[string]string{"requestId": requestID(r), "scope": strings.Join(c.Scopes, " ")}
		if claims, err := s.deps.Tokens.Verify(tok); err == nil {
			detail["tokenId"] = claims.ID
		}
		ev := audit.Event{Actor: (&Principal{Kind: "oauth2", ID: c.ID}).Actor(), Action: "credential.oauth2.token",
			Target: "oauth2:" + c.ID, Source: r.RemoteAddr, Outcome: "ok", Detail: detail}
		if err := s.appendOrRefuse(w, r, c.Tenant, ev, "no token was issued"); err != nil {
			return err
		}
	}
	// A token ends when its client does, if that is sooner.
	life := s.deps.Tokens.TTL()
	if c.ExpiresAt != nil {
		life = min(life, c.ExpiresAt.Sub(now))
	}
	writeJSON(w, http.StatusOK, client.Token{
		AccessToken: tok,
		TokenType:   "Bearer",
		ExpiresIn:   max(int(life/time.Second), 0),
		Scope:       strings.Join(c.Scopes, " "),
	})
	return nil
}

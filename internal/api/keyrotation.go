package api

import (
	"context"
	"net/http"
	"strconv"
	"time"

	"github.com/iotransit/iotransit/client"
	"github.com/iotransit/iotransit/internal/audit"
	"github.com/iotransit/iotransit/internal/fault"
)

// CAs rotates and shows the tenants' certificate authorities
// (registry.Registry).
type CAs interface {
	TenantCA(tenant string) (client.TenantCA, error)
	RotateCA(ctx context.Context, tenant string, overlap time.Duration) (client.TenantCA, error)
	RetireCA(ctx context.Context, tenant string, version int) (client.TenantCA, error)
}

// PlatformKeys rotates and lists the platform's signing keys: the access
// token key and the audit checkpoint key (the node's).
type PlatformKeys interface {
	PlatformKeys(ctx context.Context) (client.PlatformKeys, error)
	RotateJWTKey(ctx context.Context) (client.PlatformKeys, error)
	RotateAuditKey(ctx context.Context) (client.PlatformKeys, error)
}

// defaultCAOverlap is how long the certificates of the previous CA version
// stay accepted after a rotation unless the request says otherwise: long
// enough for every gateway to renew (they renew at two thirds of their
// certificate's life, and may be offline for days).
const defaultCAOverlap = 30 * 24 * time.Hour

// maxCAOverlap bounds the overlap: beyond it a compromised CA would stay
// trusted for longer than a rotation is worth.
const maxCAOverlap = 400 * 24 * time.Hour

// ErrCAOverlap answers a rotation with an overlap that is not a duration
// between 0 and 400 days.
var ErrCAOverlap = fault.Define("api.ca_overlap_invalid", fault.InvalidArgument,
	"overlap must be a duration such as \"720h\", from 0 to 400 days")

// rotateCA makes a new version of the tenant's CA.
func (s *Server) rotateCA(w http.ResponseWriter, r *http.Request, p *Principal) error {
	if s.deps.CAs == nil {
		return ErrNotFound.New()
	}
	var req client.RotateCARequest
	if err := decodeJSON(w, r, s.cfg.MaxBody, &req, true); err != nil {
		return err
	}
	overlap := defaultCAOverlap
	if req.Overlap != "" {
		d, err := time.ParseDuration(req.Overlap)
		if err != nil || d < 0 || d > maxCAOverlap {
			return ErrCAOverlap.New()
		}
		overlap = d
	}
	tenant := r.PathValue("tenant")
	st, err := s.deps.CAs.RotateCA(r.Context(), tenant, overlap)
	detail := map[string]string{"overlap": overlap.String()}
	if err == nil {
		detail["version"] = strconv.Itoa(st.CurrentVersion)
		detail["fingerprint"] = st.Versions[0].Fingerprint
	}
	s.record(r.Context(), r, tenant, p, "ca.rotate", "ca", err, detail)
	if err != nil {
		return err
	}
	st.Rotated = true
	writeJSON(w, http.StatusOK, st)
	return nil
}

// retireCA ends the overlap of a previous CA version (or of all).
func (s *Server) retireCA(w http.ResponseWriter, r *http.Request, p *Principal) error {
	if s.deps.CAs == nil {
		return ErrNotFound.New()
	}
	var req client.RetireCARequest
	if err := decodeJSON(w, r, s.cfg.MaxBody, &req, true); err != nil {
		return err
	}
	tenant := r.PathValue("tenant")
	st, err := s.deps.CAs.RetireCA(r.Context(), tenant, req.Version)
	detail := map[string]string{"version": "all previous"}
	if req.Version != 0 {
		detail["version"] = strconv.Itoa(req.Version)
	}
	s.record(r.Context(), r, tenant, p, "ca.retire", "ca", err, detail)
	if err != nil {
		return err
	}
	st.Retired = true
	writeJSON(w, http.StatusOK, st)
	return nil
}

// getCA shows the tenant's CA versions, never their keys.
func (s *Server) getCA(w http.ResponseWriter, r *http.Request, _ *Principal) error {
	if s.deps.CAs == nil {
		return ErrNotFound.New()
	}
	st, err := s.deps.CAs.TenantCA(r.PathValue("tenant"))
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, st)
	return nil
}

// listPlatformKeys lists the public parts of the platform's signing keys.
func (s *Server) listPlatformKeys(w http.ResponseWriter, r *http.Request, _ *Principal) error {
	if s.deps.PlatformKeys == nil {
		return ErrNotFound.New()
	}
	keys, err := s.deps.PlatformKeys.PlatformKeys(r.Context())
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, keys)
	return nil
}

// rotatePlatformKey rotates one of the platform's signing keys (which
// names it in the audit action: jwt or audit).
func (s *Server) rotatePlatformKey(which string) func(http.ResponseWriter, *http.Request, *Principal) error {
	return func(w http.ResponseWriter, r *http.Request, p *Principal) error {
		if s.deps.PlatformKeys == nil {
			return ErrNotFound.New()
		}
		if err := decodeJSON(w, r, s.cfg.MaxBody, &struct{}{}, true); err != nil {
			return err
		}
		rotate := s.deps.PlatformKeys.RotateJWTKey
		if which == "audit" {
			rotate = s.deps.PlatformKeys.RotateAuditKey
		}
		keys, err := rotate(r.Context())
		var detail map[string]string
		if err == nil {
			list := keys.JWT
			if which == "audit" {
				list = keys.Audit
			}
			cur := list[len(list)-1]
			detail = map[string]string{"keyId": cur.ID, "version": strconv.FormatUint(uint64(cur.Version), 10)}
		}
		s.record(r.Context(), r, audit.SystemTenant, p, "system."+which+"_key.rotate", "key:"+which, err, detail)
		if err != nil {
			return err
		}
		writeJSON(w, http.StatusOK, keys)
		return nil
	}
}

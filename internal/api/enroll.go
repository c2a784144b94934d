package api

import (
	"net/http"

	"github.com/iotransit/iotransit/client"
	"github.com/iotransit/iotransit/internal/audit"
	"github.com/iotransit/iotransit/internal/fault"
	"github.com/iotransit/iotransit/internal/gwproto"
	"github.com/iotransit/iotransit/internal/registry"
)

// enrollment is what a gateway gets from (re)enrollment (like EST
// simpleenroll, RFC 7030 §4.2): its certificate chain and the CA that
// verifies the server.
func (s *Server) enrollment(e registry.Enrollment) client.Enrollment {
	return client.Enrollment{
		Certificate: string(e.Chain), CA: string(s.deps.ServerCA), Tenant: e.Tenant, Serial: e.Serial,
		CertificateSerial: e.Certificate.Serial, NotAfter: e.Certificate.NotAfter, UpTopic: gwproto.UpTopic(e.Serial),
		MQTTPort: s.deps.MQTTPort,
	}
}

// enroll spends an enrollment token on a CSR. Unauthenticated by design
// (the token is the credential), so failed attempts count toward the
// address's authentication throttle.
func (s *Server) enroll(w http.ResponseWriter, r *http.Request, _ *Principal) error {
	now := nowFunc()
	ip := clientIP(r)
	if locked, wait := s.limits.throttled(ip, now); locked {
		retryAfter(w, wait)
		return ErrAuthThrottle.New()
	}
	var req client.EnrollRequest
	if err := decodeJSON(w, r, s.cfg.MaxBody, &req, false); err != nil {
		return err
	}
	// Written ahead to the tenant the token names once it has passed every
	// check (nothing is spent or issued before), or refused.
	ahead := func(tenant, serial string) error {
		var err error
		r, err = s.writeAheadTo(w, r, &Principal{Kind: "gateway", ID: serial}, tenant, "route:POST /v1/enroll")
		return err
	}
	e, err := s.deps.Registry.Enroll(r.Context(), req.Token, []byte(req.CSR), s.cfg.CertValidity, ahead)
	actor := &Principal{Kind: "gateway", ID: e.Serial}
	if e.Tenant != "" && !audit.ErrUnavailable.Is(err) {
		s.record(r.Context(), r, e.Tenant, actor, "pki.cert.enroll", "gateway:"+e.Serial, err, map[string]string{"certificate": e.Certificate.Serial})
	}
	if err != nil {
		if fault.From(err).Kind() == fault.Unauthenticated {
			s.limits.failed(ip, now)
		}
		return err
	}
	writeJSON(w, http.StatusOK, s.enrollment(e))
	return nil
}

// reenroll renews an authenticated gateway's certificate (mutual TLS with
// its current certificate; RFC 7030 §4.2.2). Only the newest
// registry.MaxValidCertificates certificates of a gateway stay valid, and
// renewing too often answers 429 with Retry-After.
func (s *Server) reenroll(w http.ResponseWriter, r *http.Request, p *Principal) error {
	var req client.ReenrollRequest
	if err := decodeJSON(w, r, s.cfg.MaxBody, &req, false); err != nil {
		return err
	}
	// Written ahead to the tenant the certificate names, or refused.
	r, err := s.writeAheadTo(w, r, p, p.Identity.Tenant, "route:POST /v1/reenroll")
	if err != nil {
		return err
	}
	e, err := s.deps.Registry.Reenroll(r.Context(), p.Identity, []byte(req.CSR), s.cfg.CertValidity)
	s.record(r.Context(), r, p.Identity.Tenant, p, "pki.cert.renew", "gateway:"+p.Identity.Serial, err, map[string]string{"previous": p.Identity.CertSerial, "certificate": e.Certificate.Serial})
	if err != nil {
		if registry.ErrRenewalRateLimited.Is(err) {
			retryAfter(w, registry.RenewalWindow)
		}
		return err
	}
	writeJSON(w, http.StatusOK, s.enrollment(e))
	return nil
}

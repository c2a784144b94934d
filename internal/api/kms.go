package api

import (
	"context"
	"errors"
	"net/http"
	"strconv"
	"time"

	"github.com/iotransit/iotransit/client"
	"github.com/iotransit/iotransit/internal/fault"
	"github.com/iotransit/iotransit/internal/kms"
)

// KMS manages the tenants' data keys (kms.Keyring).
type KMS interface {
	Rotate(ctx context.Context, tenant string) (uint32, error)
	Status(ctx context.Context, tenant string) (kms.Status, error)
}

// Reencryption runs the tenants' re-encryption jobs (reencrypt.Service).
type Reencryption interface {
	// Start starts the tenant's job, or returns the one running.
	Start(ctx context.Context, tenant string) (client.KMSReencryption, error)
	// Status returns the tenant's latest job, nil when none was started.
	Status(ctx context.Context, tenant string) (*client.KMSReencryption, error)
}

// ErrKMSNoKey answers for a tenant that has no data key (its keys were
// shredded).
var ErrKMSNoKey = fault.Define("kms.no_key", fault.NotFound, "the tenant has no data key")

// kmsError maps the keyring's errors to what a client may see.
func kmsError(err error) error {
	if errors.Is(err, kms.ErrNoKey) {
		return ErrKMSNoKey.Wrap(err)
	}
	return err
}

// rotateKMSKey makes a new version of the tenant's data key.
func (s *Server) rotateKMSKey(w http.ResponseWriter, r *http.Request, p *Principal) error {
	if s.deps.KMS == nil {
		return ErrNotFound.New()
	}
	if err := decodeJSON(w, r, s.cfg.MaxBody, &struct{}{}, true); err != nil {
		return err
	}
	tenant := r.PathValue("tenant")
	v, err := s.deps.KMS.Rotate(r.Context(), tenant)
	err = kmsError(err)
	var detail map[string]string
	if err == nil {
		detail = map[string]string{"version": strconv.FormatUint(uint64(v), 10)}
	}
	s.record(r.Context(), r, tenant, p, "kms.key.rotate", "kms:data-key", err, detail)
	if err != nil {
		return err
	}
	st, err := s.deps.KMS.Status(r.Context(), tenant)
	if err != nil {
		return kmsError(err)
	}
	view := viewKMSStatus(st)
	view.Rotated = true
	writeJSON(w, http.StatusOK, view)
	return nil
}

// getKMSStatus shows the tenant's data key versions, never the keys.
func (s *Server) getKMSStatus(w http.ResponseWriter, r *http.Request, _ *Principal) error {
	if s.deps.KMS == nil {
		return ErrNotFound.New()
	}
	st, err := s.deps.KMS.Status(r.Context(), r.PathValue("tenant"))
	if err != nil {
		return kmsError(err)
	}
	view := viewKMSStatus(st)
	if s.deps.Reencryption != nil {
		if view.Reencryption, err = s.deps.Reencryption.Status(r.Context(), r.PathValue("tenant")); err != nil {
			return err
		}
	}
	writeJSON(w, http.StatusOK, view)
	return nil
}

// reencryptKMS starts the tenant's re-encryption job: records sealed under
// older data key versions are re-sealed under the newest in the background
// (its progress is in the status).
func (s *Server) reencryptKMS(w http.ResponseWriter, r *http.Request, p *Principal) error {
	if s.deps.KMS == nil || s.deps.Reencryption == nil {
		return ErrNotFound.New()
	}
	if err := decodeJSON(w, r, s.cfg.MaxBody, &struct{}{}, true); err != nil {
		return err
	}
	tenant := r.PathValue("tenant")
	job, err := s.deps.Reencryption.Start(r.Context(), tenant)
	err = kmsError(err)
	var detail map[string]string
	if err == nil {
		detail = map[string]string{"state": job.State, "pass": strconv.Itoa(job.Pass), "startedAt": job.StartedAt.Format(time.RFC3339)}
	}
	s.record(r.Context(), r, tenant, p, "kms.reencrypt.start", "kms:data-key", err, detail)
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusAccepted, job)
	return nil
}

func viewKMSStatus(st kms.Status) client.KMSStatus {
	v := client.KMSStatus{CurrentVersion: st.Current, RootKeyID: st.RootKeyID, Versions: []client.KMSKeyVersion{}}
	for _, kv := range st.Versions {
		v.Versions = append(v.Versions, client.KMSKeyVersion{Version: kv.Version, CreatedAt: kv.Created, RootKeyID: kv.RootKeyID})
	}
	return v
}

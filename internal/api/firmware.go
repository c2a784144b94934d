package api

import (
	"context"
	"io"
	"net/http"
	"regexp"
	"strconv"

	"github.com/iotransit/iotransit/client"
	"github.com/iotransit/iotransit/internal/firmware"
	"github.com/iotransit/iotransit/internal/registry"
)

// Firmware is what the API uses of the tenants' firmware repositories
// (firmware.Repos).
type Firmware interface {
	OnlineKeys(ctx context.Context, tenant string) (client.FirmwareOnlineKeys, error)
	Init(ctx context.Context, tenant string, root, targets []byte) (client.FirmwareRepository, error)
	Repository(ctx context.Context, tenant string) (client.FirmwareRepository, error)
	Publish(ctx context.Context, tenant string, targets []byte) (client.FirmwareRepository, error)
	RotateRoot(ctx context.Context, tenant string, root, targets []byte) (client.FirmwareRepository, error)
	PutImage(ctx context.Context, tenant, sha256 string, body io.Reader) (client.FirmwareImage, error)
	Metadata(ctx context.Context, tenant, file string) ([]byte, error)
	Image(ctx context.Context, tenant, name string) ([]byte, error)
	CreateRollout(ctx context.Context, tenant, model, version string, serials []string, by string) (client.Rollout, error)
	Rollout(ctx context.Context, tenant, id string) (client.Rollout, error)
	Report(ctx context.Context, tenant, serial string, rep client.FirmwareReport) (client.RolloutGateway, error)
}

// firmware returns the repositories, or 404 when the node has none.
func (s *Server) firmware() (Firmware, error) {
	if s.deps.Firmware == nil {
		return nil, ErrNotFound.New()
	}
	return s.deps.Firmware, nil
}

func (s *Server) firmwareOnlineKeys(w http.ResponseWriter, r *http.Request, p *Principal) error {
	fw, err := s.firmware()
	if err != nil {
		return err
	}
	k, err := fw.OnlineKeys(r.Context(), r.PathValue("tenant"))
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, k)
	return nil
}

func (s *Server) initFirmware(w http.ResponseWriter, r *http.Request, p *Principal) error {
	fw, err := s.firmware()
	if err != nil {
		return err
	}
	var req client.InitFirmwareRequest
	if err := decodeJSON(w, r, s.cfg.MaxBody, &req, false); err != nil {
		return err
	}
	tenant := r.PathValue("tenant")
	repo, err := fw.Init(r.Context(), tenant, req.Root, req.Targets)
	s.record(r.Context(), r, tenant, p, "firmware.repository.init", "firmware:repository", err, nil)
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusCreated, repo)
	return nil
}

func (s *Server) getFirmwareRepository(w http.ResponseWriter, r *http.Request, p *Principal) error {
	fw, err := s.firmware()
	if err != nil {
		return err
	}
	repo, err := fw.Repository(r.Context(), r.PathValue("tenant"))
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, repo)
	return nil
}

func (s *Server) getFirmwareMetadata(w http.ResponseWriter, r *http.Request, p *Principal) error {
	fw, err := s.firmware()
	if err != nil {
		return err
	}
	b, err := fw.Metadata(r.Context(), r.PathValue("tenant"), r.PathValue("file"))
	if err != nil {
		return err
	}
	writeBytes(w, "application/json", b)
	return nil
}

// sha256Hex matches an image's name in the upload path.
var sha256Hex = regexp.MustCompile(`^[0-9a-f]{64}$`)

func (s *Server) putFirmwareImage(w http.ResponseWriter, r *http.Request, p *Principal) error {
	fw, err := s.firmware()
	if err != nil {
		return err
	}
	sum := r.PathValue("sha256")
	if !sha256Hex.MatchString(sum) {
		return ErrBadParameter.WithDetail("the image is named by its SHA-256, 64 lowercase hex digits")
	}
	tenant := r.PathValue("tenant")
	img, err := fw.PutImage(r.Context(), tenant, sum, r.Body)
	s.record(r.Context(), r, tenant, p, "firmware.image.upload", "firmware-image:"+sum, err, nil)
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, img)
	return nil
}

func (s *Server) publishFirmware(w http.ResponseWriter, r *http.Request, p *Principal) error {
	fw, err := s.firmware()
	if err != nil {
		return err
	}
	var req client.PublishFirmwareRequest
	if err := decodeJSON(w, r, s.cfg.MaxBody, &req, false); err != nil {
		return err
	}
	tenant := r.PathValue("tenant")
	repo, err := fw.Publish(r.Context(), tenant, req.Targets)
	detail := map[string]string{}
	if err == nil {
		detail["targetsVersion"] = strconv.FormatInt(repo.Roles.Targets.Version, 10)
	}
	s.record(r.Context(), r, tenant, p, "firmware.targets.publish", "firmware:repository", err, detail)
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, repo)
	return nil
}

func (s *Server) rotateFirmwareRoot(w http.ResponseWriter, r *http.Request, p *Principal) error {
	fw, err := s.firmware()
	if err != nil {
		return err
	}
	var req client.RotateFirmwareRootRequest
	if err := decodeJSON(w, r, s.cfg.MaxBody, &req, false); err != nil {
		return err
	}
	tenant := r.PathValue("tenant")
	repo, err := fw.RotateRoot(r.Context(), tenant, req.Root, req.Targets)
	detail := map[string]string{}
	if err == nil {
		detail["rootVersion"] = strconv.FormatInt(repo.Roles.Root.Version, 10)
	}
	s.record(r.Context(), r, tenant, p, "firmware.root.rotate", "firmware:repository", err, detail)
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, repo)
	return nil
}

func (s *Server) createRollout(w http.ResponseWriter, r *http.Request, p *Principal) error {
	fw, err := s.firmware()
	if err != nil {
		return err
	}
	var req client.CreateRolloutRequest
	if err := decodeJSON(w, r, s.cfg.MaxBody, &req, false); err != nil {
		return err
	}
	tenant := r.PathValue("tenant")
	serials, err := s.rolloutGateways(r.Context(), tenant, req)
	if err != nil {
		return err
	}
	ro, err := fw.CreateRollout(r.Context(), tenant, req.Target, req.Version, serials, p.Actor())
	s.record(r.Context(), r, tenant, p, "firmware.rollout.create", "firmware-rollout:"+ro.ID, err,
		map[string]string{"target": req.Target, "version": req.Version, "gateways": strconv.Itoa(len(serials))})
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusCreated, ro)
	return nil
}

// rolloutGateways resolves a rollout's gateways: the serials given (each a
// gateway of the tenant; another tenant's answers like an unknown one) or
// every gateway of the tenant holding all the labels.
func (s *Server) rolloutGateways(ctx context.Context, tenant string, req client.CreateRolloutRequest) ([]string, error) {
	if (len(req.Serials) == 0) == (len(req.Labels) == 0) {
		return nil, firmware.ErrRolloutInvalid.WithDetail("give serials or labels, not both")
	}
	if len(req.Serials) > 0 {
		for _, serial := range req.Serials {
			if !registry.ValidSerial(serial) {
				return nil, registry.ErrGatewayNotFound.New()
			}
			if _, ok := s.deps.Registry.Gateway(tenant, serial); !ok {
				return nil, registry.ErrGatewayNotFound.WithDetail("no gateway %s", serial)
			}
		}
		return req.Serials, nil
	}
	gws, err := s.deps.Registry.Gateways(tenant)
	if err != nil {
		return nil, err
	}
	var out []string
	for _, g := range gws {
		match := true
		for k, v := range req.Labels {
			if got, ok := g.Labels[k]; !ok || got != v {
				match = false
			}
		}
		if match {
			out = append(out, g.Serial)
		}
	}
	return out, nil
}

func (s *Server) getRollout(w http.ResponseWriter, r *http.Request, p *Principal) error {
	fw, err := s.firmware()
	if err != nil {
		return err
	}
	ro, err := fw.Rollout(r.Context(), r.PathValue("tenant"), r.PathValue("id"))
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, ro)
	return nil
}

// gatewayTUF serves a file of the gateway's own tenant's repository: the
// tenant comes from its client certificate, never from the request.
func (s *Server) gatewayTUF(w http.ResponseWriter, r *http.Request, p *Principal) error {
	fw, err := s.firmware()
	if err != nil {
		return err
	}
	b, err := fw.Metadata(r.Context(), p.Identity.Tenant, r.PathValue("file"))
	if err != nil {
		return err
	}
	writeBytes(w, "application/json", b)
	return nil
}

// gatewayFirmwareImage serves an image of the gateway's own tenant.
func (s *Server) gatewayFirmwareImage(w http.ResponseWriter, r *http.Request, p *Principal) error {
	fw, err := s.firmware()
	if err != nil {
		return err
	}
	b, err := fw.Image(r.Context(), p.Identity.Tenant, r.PathValue("name"))
	if err != nil {
		return err
	}
	writeBytes(w, "application/octet-stream", b)
	return nil
}

// reportFirmware records a gateway's progress in a rollout, audited.
func (s *Server) reportFirmware(w http.ResponseWriter, r *http.Request, p *Principal) error {
	fw, err := s.firmware()
	if err != nil {
		return err
	}
	var req client.FirmwareReport
	if err := decodeJSON(w, r, s.cfg.MaxBody, &req, false); err != nil {
		return err
	}
	tenant, serial := p.Identity.Tenant, p.Identity.Serial
	// A report changes the rollout: written ahead like every change.
	if r, err = s.writeAheadTo(w, r, p, tenant, "firmware-rollout:"+req.RolloutID); err != nil {
		return err
	}
	_, err = fw.Report(r.Context(), tenant, serial, req)
	detail := map[string]string{"state": req.State, "gateway": serial}
	if req.Reason != "" {
		detail["reason"] = req.Reason
	}
	s.record(r.Context(), r, tenant, p, "firmware.rollout.report", "firmware-rollout:"+req.RolloutID, err, detail)
	if err != nil {
		return err
	}
	w.WriteHeader(http.StatusNoContent)
	return nil
}

// writeBytes answers 200 with b as it is.
func writeBytes(w http.ResponseWriter, contentType string, b []byte) {
	w.Header().Set("Content-Type", contentType)
	w.Header().Set("Content-Length", strconv.Itoa(len(b)))
	w.WriteHeader(http.StatusOK)
	_, _ = w.Write(b)
}

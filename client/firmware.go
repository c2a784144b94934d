package client

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"net/http"
	"time"
)

// Firmware states of a gateway in a rollout.
const (
	// FirmwarePending: the rollout names the gateway, which has not
	// reported yet.
	FirmwarePending = "pending"
	// FirmwareDownloading: the gateway is updating its TUF metadata and
	// downloading the image.
	FirmwareDownloading = "downloading"
	// FirmwareInstalling: the image is verified and written to the
	// inactive slot, which the gateway now tries; it is installed once it
	// starts healthy, or failed (boot_failed) when it does not.
	FirmwareInstalling = "installing"
	// FirmwareInstalled: the gateway runs the new firmware and confirmed it.
	FirmwareInstalled = "installed"
	// FirmwareFailed: the gateway refused or could not install it; Reason
	// says why.
	FirmwareFailed = "failed"
)

// FirmwareStates lists the states a gateway reports (all but pending).
var FirmwareStates = []string{FirmwareDownloading, FirmwareInstalling, FirmwareInstalled, FirmwareFailed}

// TUFKey is a public key as TUF metadata lists it (the "keys" of root.json).
type TUFKey struct {
	// KeyID is the key's TUF id: the SHA-256 of its canonical JSON, hex.
	KeyID   string      `json:"keyid"`
	KeyType string      `json:"keytype"`
	Scheme  string      `json:"scheme"`
	KeyVal  TUFKeyValue `json:"keyval"`
}

// TUFKeyValue holds a TUF key's public part.
type TUFKeyValue struct {
	// Public is the public key, hex (an Ed25519 key's 32 bytes).
	Public string `json:"public"`
}

// FirmwareOnlineKeys are the online keys of a tenant's TUF repository, made
// and held by the server (sealed by kms): the publisher lists them in the
// root it signs.
type FirmwareOnlineKeys struct {
	Snapshot  TUFKey `json:"snapshot"`
	Timestamp TUFKey `json:"timestamp"`
}

// InitFirmwareRequest is the body of POST
// /v1/tenants/{tenant}/firmware/repository: the first root and targets
// metadata, signed by the publisher with the offline root and targets keys.
type InitFirmwareRequest struct {
	// Root is root.json version 1, signed by its root keys (threshold),
	// whose snapshot and timestamp roles are the server's online keys.
	Root json.RawMessage `json:"root"`
	// Targets is targets.json version 1, signed by the root's targets keys.
	Targets json.RawMessage `json:"targets"`
}

// RotateFirmwareRootRequest is the body of POST
// /v1/tenants/{tenant}/firmware/root.
type RotateFirmwareRootRequest struct {
	// Root is the next root.json version, signed by a threshold of the
	// current root's root keys and of its own.
	Root json.RawMessage `json:"root"`
	// Targets is the next targets.json, signed under the new root: needed
	// when the rotation changes the targets keys (the current targets no
	// longer verify), else optional.
	Targets json.RawMessage `json:"targets,omitempty"`
}

// PublishFirmwareRequest is the body of POST
// /v1/tenants/{tenant}/firmware/targets.
type PublishFirmwareRequest struct {
	// Targets is the next targets.json version, signed by the root's
	// targets keys; each of its targets names an uploaded image.
	Targets json.RawMessage `json:"targets"`
}

// FirmwareRole is a role's current metadata version and its expiry.
type FirmwareRole struct {
	Version int64     `json:"version"`
	Expires time.Time `json:"expires"`
}

// FirmwareRoles are the four top-level roles of a TUF repository.
type FirmwareRoles struct {
	Root      FirmwareRole `json:"root"`
	Targets   FirmwareRole `json:"targets"`
	Snapshot  FirmwareRole `json:"snapshot"`
	Timestamp FirmwareRole `json:"timestamp"`
}

// FirmwareRepository is a tenant's TUF repository: its roles and targets.
type FirmwareRepository struct {
	Tenant string        `json:"tenant"`
	Roles  FirmwareRoles `json:"roles"`
	// Targets are the firmware images of the current targets.json.
	Targets []FirmwareTarget `json:"targets"`
}

// FirmwareTarget is one firmware image of a repository.
type FirmwareTarget struct {
	// Name is the TUF target path, model-version.
	Name    string `json:"name"`
	Model   string `json:"model"`
	Version string `json:"version"`
	Length  int64  `json:"length"`
	// SHA256 is the image's SHA-256, hex.
	SHA256 string `json:"sha256"`
}

// FirmwareImage is an uploaded image, named by its SHA-256.
type FirmwareImage struct {
	SHA256 string `json:"sha256"`
	Length int64  `json:"length"`
}

// CreateRolloutRequest is the body of POST
// /v1/tenants/{tenant}/firmware/rollouts: which firmware, to which gateways
// (by serial, or every gateway that has all the labels).
type CreateRolloutRequest struct {
	// Target is the model.
	Target  string `json:"target"`
	Version string `json:"version"`
	// Serials names the gateways; give Serials or Labels, not both.
	Serials []string `json:"serials,omitempty"`
	// Labels selects every gateway of the tenant holding all of them.
	Labels map[string]string `json:"labels,omitempty"`
}

// Rollout is a firmware rollout and the state of each of its gateways.
type Rollout struct {
	ID      string `json:"id"`
	Tenant  string `json:"tenant"`
	Target  string `json:"target"`
	Version string `json:"version"`
	// TargetName is the TUF target path the gateways install.
	TargetName string    `json:"targetName"`
	CreatedAt  time.Time `json:"createdAt"`
	CreatedBy  string    `json:"createdBy,omitempty"`
	// Gateways are the rollout's gateways, by serial.
	Gateways []RolloutGateway `json:"gateways"`
}

// RolloutGateway is a gateway's state in a rollout.
type RolloutGateway struct {
	Serial string `json:"serial"`
	// State is pending, downloading, installing, installed or failed.
	State string `json:"state"`
	// Reason is why it failed, a code such as hash_mismatch or
	// version_not_newer (docs/firmware.md).
	Reason string `json:"reason,omitempty"`
	// Detail is the gateway's sentence about it.
	Detail    string    `json:"detail,omitempty"`
	UpdatedAt time.Time `json:"updatedAt"`
}

// FirmwareReport is what a gateway reports of a rollout (POST
// /v1/gw/firmware/report, over mutual TLS).
type FirmwareReport struct {
	RolloutID string `json:"rolloutId"`
	// State is one of FirmwareStates.
	State string `json:"state"`
	// Reason is a failure's code: lowercase letters and underscores.
	Reason string `json:"reason,omitempty"`
	// Detail is a sentence about it, at most 256 printable characters.
	Detail string `json:"detail,omitempty"`
}

// FirmwareOnlineKeys returns the tenant's online TUF keys (snapshot,
// timestamp), made by the server on first use.
func (c *Client) FirmwareOnlineKeys(ctx context.Context, tenant string) (*FirmwareOnlineKeys, error) {
	return get[FirmwareOnlineKeys](ctx, c, path("tenants", tenant, "firmware", "online-keys"), nil)
}

// InitFirmware sets up the tenant's TUF repository with the first root and
// targets metadata, signed by the publisher.
func (c *Client) InitFirmware(ctx context.Context, tenant string, req InitFirmwareRequest) (*FirmwareRepository, error) {
	return post[FirmwareRepository](ctx, c, path("tenants", tenant, "firmware", "repository"), req)
}

// GetFirmwareRepository returns the tenant's TUF repository.
func (c *Client) GetFirmwareRepository(ctx context.Context, tenant string) (*FirmwareRepository, error) {
	return get[FirmwareRepository](ctx, c, path("tenants", tenant, "firmware", "repository"), nil)
}

// RotateFirmwareRoot replaces the repository's root with its next version
// (and publishes the targets that go with it, if given).
func (c *Client) RotateFirmwareRoot(ctx context.Context, tenant string, req RotateFirmwareRootRequest) (*FirmwareRepository, error) {
	return post[FirmwareRepository](ctx, c, path("tenants", tenant, "firmware", "root"), req)
}

// FirmwareMetadata returns a metadata file of the tenant's repository as
// stored: "root.json", "timestamp.json", "snapshot.json", "targets.json", or
// a version of one ("3.root.json").
func (c *Client) FirmwareMetadata(ctx context.Context, tenant, file string) ([]byte, error) {
	a, err := c.send(ctx, request{method: http.MethodGet, path: path("tenants", tenant, "firmware", "metadata", file), auth: true})
	if err != nil {
		return nil, err
	}
	return a.Body, nil
}

// UploadFirmwareImage uploads an image, named by its SHA-256 (at most
// MaxAnswer bytes, and the server's limit).
func (c *Client) UploadFirmwareImage(ctx context.Context, tenant string, image []byte) (*FirmwareImage, error) {
	sum := sha256.Sum256(image)
	if image == nil {
		image = []byte{}
	}
	return call[FirmwareImage](ctx, c, request{method: http.MethodPut, path: path("tenants", tenant, "firmware", "images", hex.EncodeToString(sum[:])), octets: image, auth: true})
}

// PublishFirmware publishes the next targets metadata, signed by the
// publisher with the targets key.
func (c *Client) PublishFirmware(ctx context.Context, tenant string, targets json.RawMessage) (*FirmwareRepository, error) {
	return post[FirmwareRepository](ctx, c, path("tenants", tenant, "firmware", "targets"), PublishFirmwareRequest{Targets: targets})
}

// CreateRollout starts a rollout: each gateway it names gets a firmware
// notice.
func (c *Client) CreateRollout(ctx context.Context, tenant string, req CreateRolloutRequest) (*Rollout, error) {
	return post[Rollout](ctx, c, path("tenants", tenant, "firmware", "rollouts"), req)
}

// GetRollout returns a rollout with the state of each of its gateways.
func (c *Client) GetRollout(ctx context.Context, tenant, id string) (*Rollout, error) {
	return get[Rollout](ctx, c, path("tenants", tenant, "firmware", "rollouts", id), nil)
}

// GatewayTUF returns a file of the gateway's tenant's TUF repository (GET
// /v1/gw/tuf/{file}: "timestamp.json", "3.root.json", ...), over mutual TLS
// with Config.Certificate or the HTTPClient's. An answer longer than
// maxLength bytes is refused (ErrAnswerTooLarge) without reading further.
func (c *Client) GatewayTUF(ctx context.Context, file string, maxLength int64) ([]byte, error) {
	a, err := c.send(ctx, request{method: http.MethodGet, path: path("gw", "tuf", file), limit: maxLength})
	if err != nil {
		return nil, err
	}
	return a.Body, nil
}

// GatewayFirmwareImage returns a firmware image of the gateway's tenant
// (GET /v1/gw/tuf/targets/{name}, name "{sha256}.{target}"), over mutual
// TLS, at most maxLength bytes. The caller checks it against its TUF
// metadata.
func (c *Client) GatewayFirmwareImage(ctx context.Context, name string, maxLength int64) ([]byte, error) {
	a, err := c.send(ctx, request{method: http.MethodGet, path: path("gw", "tuf", "targets", name), limit: maxLength})
	if err != nil {
		return nil, err
	}
	return a.Body, nil
}

// ReportFirmware reports a gateway's progress in a rollout (POST
// /v1/gw/firmware/report), over mutual TLS.
func (c *Client) ReportFirmware(ctx context.Context, r FirmwareReport) error {
	return c.noContent(ctx, request{method: http.MethodPost, path: path("gw", "firmware", "report"), body: r})
}

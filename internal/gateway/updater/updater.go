// Package updater is the gateway agent's firmware updater: a TUF client
// (go-tuf's metadata/updater) of its tenant's repository over HTTPS with
// the gateway's client certificate, and A/B slots in the agent's data
// directory.
//
// Apply, on a firmware notice: refresh the TUF metadata (signatures,
// thresholds, expiry, versions: rollback and freeze protection), take the
// signed target of the notice's model and version, check that it is for
// this gateway's model and newer than anything installed (anti-rollback on
// top of TUF's own), download it (length and hash checked by the TUF
// client), write it to the inactive slot, read it back and check its hash
// again, and mark that slot for trial. Boot, at every start: a slot on
// trial is started once (the Config's HealthCheck) and confirmed, and one
// that failed its first start is rolled back at the next Boot; the slot to
// run is verified against the signed targets metadata that authorised it
// (the secure-boot analogue), and a tampered slot is refused in favour of
// the other one, or Boot refuses to run.
//
// Every step is reported to the cloud (client.FirmwareReport), which
// audits it. The package talks to the cloud only through package client.
package updater

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/theupdateframework/go-tuf/v2/metadata"
	"github.com/theupdateframework/go-tuf/v2/metadata/config"
	tufupdater "github.com/theupdateframework/go-tuf/v2/metadata/updater"

	"github.com/iotransit/iotransit/client"
	"github.com/iotransit/iotransit/internal/gwproto"
	"github.com/iotransit/iotransit/internal/securefile"
)

// Reasons a gateway gives for refusing or failing an update (the Reason
// of a failed report).
const (
	ReasonSignature        = "signature_invalid"
	ReasonRollback         = "rollback"
	ReasonExpired          = "metadata_expired"
	ReasonMetadataMismatch = "metadata_hash_mismatch"
	ReasonHashMismatch     = "hash_mismatch"
	ReasonTruncated        = "truncated"
	ReasonTooLarge         = "too_large"
	ReasonWrongModel       = "wrong_model"
	ReasonNotNewer         = "version_not_newer"
	ReasonNoTarget         = "target_not_found"
	ReasonUnavailable      = "unavailable"
	ReasonInstall          = "install_failed"
	ReasonBootFailed       = "boot_failed"
	ReasonSlotTampered     = "slot_tampered"
)

// ErrNoTrustedSlot is Boot's error when no slot verifies: the gateway must
// not run its firmware.
var ErrNoTrustedSlot = errors.New("updater: no firmware slot verifies against the trusted TUF metadata")

// Config configures an Updater.
type Config struct {
	// Dir is the updater's directory inside the agent's data directory:
	// the slots, the trusted TUF metadata and the state.
	Dir string
	// Client reaches the API over mutual TLS with the gateway's
	// certificate (client.Config.Certificate).
	Client *client.Client
	// Model is the gateway's model: only targets signed for it install.
	Model string
	// TrustedRoot is the tenant's root.json given at commissioning. It is
	// pinned the first time (Dir has no root yet); later roots come only
	// through TUF root rotation, each signed by its predecessor.
	TrustedRoot []byte
	// HealthCheck decides whether a slot on trial started well (nil: it
	// did). A slot whose first start fails is rolled back at the next Boot.
	HealthCheck func(ctx context.Context, s Slot) error
	// Report sends a report (default: Client.ReportFirmware). A report
	// that cannot be sent is logged; the update goes on.
	Report func(ctx context.Context, r client.FirmwareReport) error
	// MaxImage is the largest image accepted (default 32 MiB).
	MaxImage int64
	// Now is the clock the TUF client checks expiry with (default
	// time.Now).
	Now func() time.Time
	// Logger logs (default: discard).
	Logger *slog.Logger
}

// Slot is a firmware slot.
type Slot struct {
	// Name is "a" or "b".
	Name string
	// Path is the slot's image file.
	Path string
	// Target is the TUF target installed in it ("" for the factory
	// image), Version its version.
	Target, Version string
}

// Report is the outcome of an Apply: installing (the new slot waits for
// its trial at the next Boot: restart the firmware), failed with a
// reason, or installed when nothing was left to do.
type Report = client.FirmwareReport

// Updater applies firmware updates. Its methods are safe for concurrent
// use; Apply and Boot run one at a time, Installed does not wait for them.
type Updater struct {
	cfg Config
	log *slog.Logger
	mu  sync.Mutex
}

// New checks cfg and returns an updater; it pins cfg.TrustedRoot when the
// directory has no trusted root yet.
func New(cfg Config) (*Updater, error) {
	if cfg.Dir == "" || cfg.Client == nil || !gwproto.ValidModel(cfg.Model) {
		return nil, errors.New("updater: Dir, Client and a valid Model are required")
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.MaxImage <= 0 {
		cfg.MaxImage = client.MaxAnswer
	}
	if cfg.Report == nil {
		cfg.Report = cfg.Client.ReportFirmware
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	u := &Updater{cfg: cfg, log: cfg.Logger.With("component", "updater")}
	if err := os.MkdirAll(u.tufDir(), 0o700); err != nil {
		return nil, err
	}
	if _, err := os.Stat(u.rootPath()); errors.Is(err, os.ErrNotExist) {
		if len(cfg.TrustedRoot) == 0 {
			return nil, errors.New("updater: no trusted root: give the tenant's root.json at commissioning")
		}
		if _, err := metadata.Root().FromBytes(cfg.TrustedRoot); err != nil {
			return nil, fmt.Errorf("updater: the trusted root: %w", err)
		}
		if err := securefile.WriteAtomic(u.rootPath(), cfg.TrustedRoot, 0o600); err != nil {
			return nil, err
		}
	}
	return u, nil
}

func (u *Updater) tufDir() string   { return filepath.Join(u.cfg.Dir, "tuf") }
func (u *Updater) rootPath() string { return filepath.Join(u.tufDir(), "root.json") }

// failure is a refusal with its reason.
type failure struct {
	reason string
	err    error
}

func (f *failure) Error() string { return f.reason + ": " + f.err.Error() }

func fail(reason string, format string, args ...any) *failure {
	return &failure{reason: reason, err: fmt.Errorf(format, args...)}
}

// Apply installs the firmware a notice names into the inactive slot, for
// trial at the next Boot, reporting each step. A notice already handled
// (retained notices come again on every connect) returns its outcome
// without doing or reporting anything again.
func (u *Updater) Apply(ctx context.Context, n gwproto.FirmwareNotice) Report {
	u.mu.Lock()
	defer u.mu.Unlock()
	st, err := u.loadState()
	if err != nil {
		return u.report(ctx, Report{RolloutID: n.RolloutID, State: client.FirmwareFailed, Reason: ReasonInstall, Detail: "the updater state cannot be read"})
	}
	if st.Last.RolloutID == n.RolloutID && n.RolloutID != "" && st.Last.Reason != ReasonUnavailable && st.Last.Reason != ReasonInstall {
		return st.Last // done, or refused for good
	}
	u.report(ctx, Report{RolloutID: n.RolloutID, State: client.FirmwareDownloading})
	slot, err := u.install(ctx, st, n)
	var r Report
	if err != nil {
		var f *failure
		if !errors.As(err, &f) {
			f = &failure{reason: ReasonInstall, err: err}
		}
		u.log.Warn("firmware refused", "rollout_id", n.RolloutID, "reason", f.reason, "error", f.err)
		r = Report{RolloutID: n.RolloutID, State: client.FirmwareFailed, Reason: f.reason, Detail: detail(f.err)}
	} else {
		r = Report{RolloutID: n.RolloutID, State: client.FirmwareInstalling, Detail: "written to slot " + slot + ", on trial at the next start"}
	}
	st.Last = r
	if err := u.saveState(st); err != nil {
		r = Report{RolloutID: n.RolloutID, State: client.FirmwareFailed, Reason: ReasonInstall, Detail: "the updater state cannot be written"}
	}
	return u.report(ctx, r)
}

// install does the work of Apply and returns the slot it wrote.
func (u *Updater) install(ctx context.Context, st *state, n gwproto.FirmwareNotice) (string, error) {
	if !gwproto.ValidModel(n.Target) || !gwproto.ValidVersion(n.Version) {
		return "", fail(ReasonNoTarget, "the notice names no valid target")
	}
	if st.Trial != nil {
		return "", fail(ReasonInstall, "slot %s is still on trial", st.Trial.Slot)
	}
	tu, f, err := u.refresh(ctx)
	if err != nil {
		return "", err
	}
	name := gwproto.FirmwareTarget(n.Target, n.Version)
	tf, err := tu.GetTargetInfo(name)
	if err != nil {
		return "", reasonOf(err, f)
	}
	var raw []byte
	if tf.Custom != nil {
		raw = *tf.Custom
	}
	custom, err := gwproto.ParseFirmwareCustom(raw)
	if err != nil {
		return "", fail(ReasonNoTarget, "target %s: %v", name, err)
	}
	if custom.Model != u.cfg.Model {
		return "", fail(ReasonWrongModel, "target %s is for model %s, this gateway is %s", name, custom.Model, u.cfg.Model)
	}
	if custom.Version != n.Version || name != gwproto.FirmwareTarget(custom.Model, custom.Version) {
		return "", fail(ReasonNoTarget, "target %s is signed as %s %s", name, custom.Model, custom.Version)
	}
	if st.Floor != "" && gwproto.CompareVersions(custom.Version, st.Floor) <= 0 {
		return "", fail(ReasonNotNewer, "version %s is not newer than the installed %s", custom.Version, st.Floor)
	}
	if tf.Length > u.cfg.MaxImage {
		return "", fail(ReasonTooLarge, "the image has %d bytes, more than %d", tf.Length, u.cfg.MaxImage)
	}
	// The download is checked by the TUF client (length and hashes of the
	// signed target); the file it leaves is not used.
	tmp := filepath.Join(u.cfg.Dir, "download.tmp")
	defer os.Remove(tmp)
	f.last = -1
	_, image, err := tu.DownloadTarget(tf, tmp, "")
	if err != nil {
		if f.last >= 0 && f.last < tf.Length {
			return "", fail(ReasonTruncated, "the download ended after %d of %d bytes", f.last, tf.Length)
		}
		return "", reasonOf(err, f)
	}
	slot := other(st.Active)
	path := u.slotPath(slot)
	if err := securefile.WriteAtomic(path, image, 0o600); err != nil {
		return "", fail(ReasonInstall, "write slot %s: %v", slot, err)
	}
	// Read it back: what the next start runs is what was verified.
	written, err := os.ReadFile(path)
	if err != nil {
		return "", fail(ReasonInstall, "read slot %s back: %v", slot, err)
	}
	if err := tf.VerifyLengthHashes(written); err != nil {
		return "", fail(ReasonHashMismatch, "slot %s differs from its target after writing", slot)
	}
	targets, err := os.ReadFile(filepath.Join(u.tufDir(), metadata.TARGETS+".json"))
	if err != nil {
		return "", fail(ReasonInstall, "the trusted targets metadata: %v", err)
	}
	root, err := os.ReadFile(u.rootPath())
	if err != nil {
		return "", fail(ReasonInstall, "the trusted root: %v", err)
	}
	// The slot keeps the metadata that authorised it and the root that
	// metadata verified under: a later rotation of the targets key must not
	// make an intact slot unbootable.
	if err := securefile.WriteAtomic(u.slotMetaPath(slot), targets, 0o600); err != nil {
		return "", fail(ReasonInstall, "write the slot's metadata: %v", err)
	}
	if err := securefile.WriteAtomic(u.slotRootPath(slot), root, 0o600); err != nil {
		return "", fail(ReasonInstall, "write the slot's root: %v", err)
	}
	st.Slots[slot] = slotState{Target: name, Version: custom.Version}
	st.Trial = &trial{Slot: slot, RolloutID: n.RolloutID}
	return slot, nil
}

// refresh runs the TUF client's refresh against the trusted metadata in
// Dir (which it updates: root rotations, newer timestamp, snapshot and
// targets) with the configured clock.
func (u *Updater) refresh(ctx context.Context) (*tufupdater.Updater, *fetcher, error) {
	root, err := os.ReadFile(u.rootPath())
	if err != nil {
		return nil, nil, fail(ReasonInstall, "the trusted root: %v", err)
	}
	base := u.cfg.Client.Server() + "/v1/gw/tuf/"
	cfg, err := config.New(base, root)
	if err != nil {
		return nil, nil, err
	}
	f := &fetcher{ctx: ctx, c: u.cfg.Client, base: base, last: -1}
	cfg.Fetcher = f
	cfg.LocalMetadataDir = u.tufDir()
	cfg.LocalTargetsDir = u.cfg.Dir
	cfg.TargetsMaxLength = 1 << 20
	tu, err := tufupdater.New(cfg)
	if err != nil {
		return nil, nil, fail(ReasonSignature, "the trusted root: %v", err)
	}
	tu.UnsafeSetRefTime(u.cfg.Now().UTC())
	if err := tu.Refresh(); err != nil {
		return nil, nil, reasonOf(err, f)
	}
	return tu, f, nil
}

// reasonOf maps a TUF client error to a reason.
func reasonOf(err error, f *fetcher) error {
	var (
		expired  *metadata.ErrExpiredMetadata
		version  *metadata.ErrBadVersionNumber
		unsigned *metadata.ErrUnsignedMetadata
		mismatch *metadata.ErrLengthOrHashMismatch
		dlLen    *metadata.ErrDownloadLengthMismatch
		dlHTTP   *metadata.ErrDownloadHTTP
	)
	switch {
	case errors.As(err, &expired):
		return &failure{ReasonExpired, err}
	case errors.As(err, &version):
		return &failure{ReasonRollback, err}
	case errors.As(err, &unsigned):
		return &failure{ReasonSignature, err}
	case errors.As(err, &mismatch):
		if f != nil && f.target {
			return &failure{ReasonHashMismatch, err}
		}
		return &failure{ReasonMetadataMismatch, err}
	case errors.As(err, &dlLen) && f != nil && !f.target:
		return &failure{ReasonMetadataMismatch, err} // longer than its snapshot or timestamp says
	case errors.As(err, &dlLen):
		return &failure{ReasonTooLarge, err}
	case errors.As(err, &dlHTTP) && dlHTTP.StatusCode == 404, strings.HasSuffix(err.Error(), " not found"):
		return &failure{ReasonNoTarget, err}
	case errors.As(err, &dlHTTP):
		return &failure{ReasonUnavailable, err}
	}
	return &failure{ReasonUnavailable, err}
}

// report sends r (logging a failure to) and returns it.
func (u *Updater) report(ctx context.Context, r Report) Report {
	if r.RolloutID == "" {
		return r
	}
	if err := u.cfg.Report(ctx, r); err != nil {
		u.log.Warn("firmware report not sent", "rollout_id", r.RolloutID, "state", r.State, "error", err)
	}
	return r
}

// detail bounds an error's text for a report.
func detail(err error) string {
	s := strings.Map(func(r rune) rune {
		if r < 0x20 || r == 0x7f {
			return ' '
		}
		return r
	}, err.Error())
	if len(s) > 256 {
		s = s[:253] + "..."
	}
	return s
}

// Notice applies a notice (the agent's firmware handler): nil when the
// firmware waits for its trial at the next start (restart the firmware)
// or was already installed, else the refusal with its reason, which was
// reported to the cloud.
func (u *Updater) Notice(ctx context.Context, n gwproto.FirmwareNotice) error {
	r := u.Apply(ctx, n)
	if r.State == client.FirmwareFailed {
		return fmt.Errorf("updater: firmware %s %s refused: %s: %s", n.Target, n.Version, r.Reason, r.Detail)
	}
	return nil
}

// Installed returns the active slot's firmware version ("" for the
// factory image) and the slot, "a" or "b" (for the gateway's status). It
// reads the state as last written (atomically), without waiting for an
// update in progress: the agent asks for every status.
func (u *Updater) Installed() (version, slot string) {
	st, err := u.loadState()
	if err != nil {
		return "", ""
	}
	return st.Slots[st.Active].Version, st.Active
}

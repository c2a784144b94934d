// Rollouts: which gateways are to install a target, the notice each gets
// (retained on its down/firmware topic by every node), and the state each
// reports.

package firmware

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"regexp"
	"slices"
	"strings"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/iotransit/iotransit/client"
	"github.com/iotransit/iotransit/internal/backbone/names"
	"github.com/iotransit/iotransit/internal/fault"
	"github.com/iotransit/iotransit/internal/gwproto"
)

// Errors of rollouts a client can see.
var (
	ErrRolloutInvalid  = fault.Define("firmware.rollout_invalid", fault.InvalidArgument, "the rollout is not valid")
	ErrRolloutNotFound = fault.Define("firmware.rollout_not_found", fault.NotFound, "no such rollout")
	ErrReportInvalid   = fault.Define("firmware.report_invalid", fault.InvalidArgument, "the firmware report is not valid")
)

// MaxRolloutGateways bounds the gateways of one rollout (its record is one
// KV value).
const MaxRolloutGateways = 1000

var (
	rolloutID = regexp.MustCompile(`^ro_[0-9a-f]{16}$`)
	reasonRE  = regexp.MustCompile(`^[a-z][a-z_]{0,47}$`)
)

func rolloutKey(id string) string { return "rollout." + id }

// CreateRollout records a rollout of the current target of model and
// version to serials (the caller resolved them to gateways of the tenant),
// each pending, and leaves each gateway its notice.
func (r *Repos) CreateRollout(ctx context.Context, tenant, model, version string, serials []string, by string) (client.Rollout, error) {
	var none client.Rollout
	if !gwproto.ValidModel(model) || !gwproto.ValidVersion(version) {
		return none, ErrRolloutInvalid.WithDetail("target must be a model name and version a version such as 1.2.3")
	}
	if len(serials) == 0 {
		return none, ErrRolloutInvalid.WithDetail("the rollout names no gateway")
	}
	if len(serials) > MaxRolloutGateways {
		return none, ErrRolloutInvalid.WithDetail("at most %d gateways per rollout", MaxRolloutGateways)
	}
	name, _, err := r.currentTarget(ctx, tenant, model, version)
	if ErrNotInitialised.Is(err) || ErrNotFound.Is(err) {
		return none, ErrRolloutInvalid.WithDetail("the repository has no target %s: publish it first", gwproto.FirmwareTarget(model, version))
	}
	if err != nil {
		return none, err
	}
	var b [8]byte
	_, _ = rand.Read(b[:])
	now := r.now()
	ro := client.Rollout{ID: "ro_" + hex.EncodeToString(b[:]), Tenant: tenant, Target: model, Version: version,
		TargetName: name, CreatedAt: now, CreatedBy: by}
	seen := map[string]bool{}
	for _, s := range serials {
		if !seen[s] {
			seen[s] = true
			ro.Gateways = append(ro.Gateways, client.RolloutGateway{Serial: s, State: client.FirmwarePending, UpdatedAt: now})
		}
	}
	kv, err := r.bucket(ctx, tenant)
	if err != nil {
		return none, err
	}
	v, _ := json.Marshal(ro)
	if _, err := kv.Create(ctx, rolloutKey(ro.ID), v); err != nil {
		return none, err
	}
	notices, err := r.bb.KV(ctx, names.FirmwareNoticesBucket, 1)
	if err != nil {
		return none, err
	}
	n, _ := json.Marshal(gwproto.FirmwareNotice{RolloutID: ro.ID, Target: model, Version: version})
	for _, g := range ro.Gateways {
		if _, err := notices.Put(ctx, names.FirmwareNotice(tenant, g.Serial), n); err != nil {
			return none, err
		}
	}
	return ro, nil
}

// Rollout returns a rollout with each gateway's state.
func (r *Repos) Rollout(ctx context.Context, tenant, id string) (client.Rollout, error) {
	ro, _, err := r.rollout(ctx, tenant, id)
	return ro, err
}

func (r *Repos) rollout(ctx context.Context, tenant, id string) (client.Rollout, uint64, error) {
	var ro client.Rollout
	if !rolloutID.MatchString(id) {
		return ro, 0, ErrRolloutNotFound.New()
	}
	kv, err := r.bucket(ctx, tenant)
	if err != nil {
		return ro, 0, err
	}
	b, rev, err := get(ctx, kv, rolloutKey(id))
	if ErrNotFound.Is(err) {
		return ro, 0, ErrRolloutNotFound.New()
	}
	if err != nil {
		return ro, 0, err
	}
	if err := json.Unmarshal(b, &ro); err != nil {
		return ro, 0, err
	}
	return ro, rev, nil
}

// Report records a gateway's report of a rollout that names it. A final
// state (installed) is not overwritten by a late progress report.
func (r *Repos) Report(ctx context.Context, tenant, serial string, rep client.FirmwareReport) (client.RolloutGateway, error) {
	var none client.RolloutGateway
	if !slices.Contains(client.FirmwareStates, rep.State) {
		return none, ErrReportInvalid.WithDetail("state must be one of %s", strings.Join(client.FirmwareStates, ", "))
	}
	if rep.State == client.FirmwareFailed && !reasonRE.MatchString(rep.Reason) || rep.State != client.FirmwareFailed && rep.Reason != "" {
		return none, ErrReportInvalid.WithDetail("a failed report needs a reason of lowercase letters and underscores; others have none")
	}
	if len(rep.Detail) > 256 || strings.IndexFunc(rep.Detail, func(c rune) bool { return c < 0x20 || c == 0x7f }) >= 0 {
		return none, ErrReportInvalid.WithDetail("detail is at most 256 printable characters")
	}
	kv, err := r.bucket(ctx, tenant)
	if err != nil {
		return none, err
	}
	for range 16 {
		ro, rev, err := r.rollout(ctx, tenant, rep.RolloutID)
		if err != nil {
			return none, err
		}
		i := slices.IndexFunc(ro.Gateways, func(g client.RolloutGateway) bool { return g.Serial == serial })
		if i < 0 { // the same answer as for another tenant's rollout
			return none, ErrRolloutNotFound.New()
		}
		g := &ro.Gateways[i]
		if g.State == client.FirmwareInstalled && rep.State != client.FirmwareFailed {
			return *g, nil
		}
		g.State, g.Reason, g.Detail, g.UpdatedAt = rep.State, rep.Reason, rep.Detail, r.now()
		v, _ := json.Marshal(ro)
		if _, err := kv.Update(ctx, rolloutKey(ro.ID), v, rev); err == nil {
			return *g, nil
		} else if !ErrBusy.Is(conflict(err)) {
			return none, err
		}
	}
	return none, ErrBusy.New()
}

// WatchNotices calls fn with each gateway's firmware notice (its tenant,
// serial and the notice's JSON) now and whenever one changes, until ctx ends: the node
// publishes them retained on its broker, so a gateway gets its notice on
// whichever node it connects to.
func (r *Repos) WatchNotices(ctx context.Context, fn func(tenant, serial string, notice []byte)) error {
	kv, err := r.bb.KV(ctx, names.FirmwareNoticesBucket, 1)
	if err != nil {
		return err
	}
	w, err := kv.WatchAll(ctx)
	if err != nil {
		return err
	}
	go func() {
		defer func() { _ = w.Stop() }()
		for {
			select {
			case <-ctx.Done():
				return
			case e, ok := <-w.Updates():
				if !ok {
					return
				}
				if e == nil || e.Operation() != jetstream.KeyValuePut {
					continue
				}
				if tenant, serial, ok := strings.Cut(e.Key(), "."); ok {
					fn(tenant, serial, e.Value())
				}
			}
		}
	}()
	return nil
}

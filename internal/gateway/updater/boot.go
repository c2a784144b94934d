package updater

import (
	"context"
	"errors"
	"fmt"
	"os"

	"github.com/theupdateframework/go-tuf/v2/metadata"

	"github.com/iotransit/iotransit/client"
	"github.com/iotransit/iotransit/internal/gwproto"
)

// Boot decides which slot runs, at every start of the agent:
//
//   - a slot that was started on trial and never confirmed failed its
//     first start: it is rolled back (the previous slot runs again) and
//     the rollout is told boot_failed;
//   - a slot waiting for its trial is started: it must verify, then pass
//     the HealthCheck, and is confirmed (it becomes the active slot, its
//     version the anti-rollback floor, the rollout is told installed); when
//     the HealthCheck fails, Boot returns its error and the next Boot rolls
//     it back;
//   - the slot to run is verified against the signed targets metadata
//     that authorised it: a tampered slot is refused, the other slot runs
//     if it verifies, else Boot returns ErrNoTrustedSlot.
//
// A gateway still on its factory image (nothing installed yet) has
// nothing to verify: Boot returns slot "a" without a target.
func (u *Updater) Boot(ctx context.Context) (Slot, error) {
	u.mu.Lock()
	defer u.mu.Unlock()
	st, err := u.loadState()
	if err != nil {
		return Slot{}, fmt.Errorf("updater: state: %w", err)
	}
	if tr := st.Trial; tr != nil {
		if tr.Started {
			st.Trial = nil
			delete(st.Slots, tr.Slot)
			st.Last = Report{RolloutID: tr.RolloutID, State: client.FirmwareFailed, Reason: ReasonBootFailed,
				Detail: "slot " + tr.Slot + " failed its first start; rolled back to slot " + st.Active}
			if err := u.saveState(st); err != nil {
				return Slot{}, err
			}
			u.report(ctx, st.Last)
		} else {
			tr.Started = true
			if err := u.saveState(st); err != nil {
				return Slot{}, err
			}
			return u.tryTrial(ctx, st)
		}
	}
	return u.verified(ctx, st)
}

// tryTrial starts the slot on trial: verified, then health-checked, then
// confirmed.
func (u *Updater) tryTrial(ctx context.Context, st *state) (Slot, error) {
	tr := st.Trial
	s := u.slot(st, tr.Slot)
	if err := u.verify(s); err != nil {
		st.Trial = nil
		delete(st.Slots, tr.Slot)
		st.Last = Report{RolloutID: tr.RolloutID, State: client.FirmwareFailed, Reason: ReasonSlotTampered, Detail: detail(err)}
		if err := u.saveState(st); err != nil {
			return Slot{}, err
		}
		u.report(ctx, st.Last)
		return u.verified(ctx, st)
	}
	if u.cfg.HealthCheck != nil {
		if err := u.cfg.HealthCheck(ctx, s); err != nil {
			// The trial stays started and unconfirmed: the next Boot rolls
			// it back.
			return s, fmt.Errorf("updater: slot %s failed its first start: %w", s.Name, err)
		}
	}
	st.Active, st.Trial, st.Floor = tr.Slot, nil, s.Version
	st.Last = Report{RolloutID: tr.RolloutID, State: client.FirmwareInstalled, Detail: "running " + s.Target + " from slot " + s.Name}
	if err := u.saveState(st); err != nil {
		return Slot{}, err
	}
	u.report(ctx, st.Last)
	return s, nil
}

// verified returns the active slot when it verifies, else the other one
// (which then becomes active), else ErrNoTrustedSlot.
func (u *Updater) verified(ctx context.Context, st *state) (Slot, error) {
	s := u.slot(st, st.Active)
	if s.Target == "" && len(st.Slots) == 0 {
		return s, nil // the factory image
	}
	err := u.verify(s)
	if err == nil {
		return s, nil
	}
	u.log.Error("firmware slot refused", "slot", s.Name, "error", err)
	alt := u.slot(st, other(st.Active))
	if alt.Target == "" {
		return Slot{}, fmt.Errorf("%w: slot %s: %v", ErrNoTrustedSlot, s.Name, err)
	}
	if aerr := u.verify(alt); aerr != nil {
		return Slot{}, fmt.Errorf("%w: slot %s: %v; slot %s: %v", ErrNoTrustedSlot, s.Name, err, alt.Name, aerr)
	}
	st.Active = alt.Name
	delete(st.Slots, s.Name)
	if err := u.saveState(st); err != nil {
		return Slot{}, err
	}
	return alt, nil
}

func (u *Updater) slot(st *state, name string) Slot {
	ss := st.Slots[name]
	return Slot{Name: name, Path: u.slotPath(name), Target: ss.Target, Version: ss.Version}
}

// verify checks a slot's bytes against the targets metadata saved with
// it: signed by a threshold of the targets keys of the root it verified
// under when it was installed (one the TUF client trusted then), naming
// the slot's target for this gateway's model, whose length and hashes the
// bytes have. Expiry is not checked here: a gateway must start offline.
func (u *Updater) verify(s Slot) error {
	if s.Target == "" {
		return errors.New("the slot holds no installed target")
	}
	rootBytes, err := os.ReadFile(u.slotRootPath(s.Name))
	if err != nil {
		return err
	}
	root, err := metadata.Root().FromBytes(rootBytes)
	if err != nil {
		return err
	}
	tb, err := os.ReadFile(u.slotMetaPath(s.Name))
	if err != nil {
		return err
	}
	targets, err := metadata.Targets().FromBytes(tb)
	if err != nil {
		return err
	}
	if err := root.VerifyDelegate(metadata.TARGETS, targets); err != nil {
		return fmt.Errorf("the slot's targets metadata: %w", err)
	}
	tf, ok := targets.Signed.Targets[s.Target]
	if !ok {
		return fmt.Errorf("the slot's targets metadata does not name %s", s.Target)
	}
	var raw []byte
	if tf.Custom != nil {
		raw = *tf.Custom
	}
	c, err := gwproto.ParseFirmwareCustom(raw)
	if err != nil || c.Model != u.cfg.Model || c.Version != s.Version {
		return fmt.Errorf("target %s is not this gateway's %s %s", s.Target, u.cfg.Model, s.Version)
	}
	image, err := os.ReadFile(s.Path)
	if err != nil {
		return err
	}
	if err := tf.VerifyLengthHashes(image); err != nil {
		return fmt.Errorf("slot %s was changed: %w", s.Name, err)
	}
	return nil
}

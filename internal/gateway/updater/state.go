package updater

import (
	"encoding/json"
	"errors"
	"os"
	"path/filepath"

	"github.com/iotransit/iotransit/client"
	"github.com/iotransit/iotransit/internal/securefile"
)

// state is the updater's record in Dir/state.json (written atomically).
type state struct {
	// Active is the slot that runs, "a" or "b".
	Active string `json:"active"`
	// Slots says what each slot holds.
	Slots map[string]slotState `json:"slots"`
	// Trial is the slot waiting for, or in, its first start.
	Trial *trial `json:"trial,omitempty"`
	// Floor is the newest version that ever started well: anti-rollback
	// accepts only newer ones.
	Floor string `json:"floor,omitempty"`
	// Last is the outcome of the last rollout handled.
	Last client.FirmwareReport `json:"last"`
}

type slotState struct {
	Target  string `json:"target"`
	Version string `json:"version"`
}

type trial struct {
	Slot      string `json:"slot"`
	RolloutID string `json:"rolloutId,omitempty"`
	// Started is set when the slot has been started once: a Boot that
	// finds it set and unconfirmed rolls it back.
	Started bool `json:"started,omitempty"`
}

func (u *Updater) statePath() string           { return filepath.Join(u.cfg.Dir, "state.json") }
func (u *Updater) slotPath(slot string) string { return filepath.Join(u.cfg.Dir, "slot-"+slot+".img") }
func (u *Updater) slotMetaPath(slot string) string {
	return filepath.Join(u.cfg.Dir, "slot-"+slot+".targets.json")
}
func (u *Updater) slotRootPath(slot string) string {
	return filepath.Join(u.cfg.Dir, "slot-"+slot+".root.json")
}

// other is the slot that is not s.
func other(s string) string {
	if s == "a" {
		return "b"
	}
	return "a"
}

func (u *Updater) loadState() (*state, error) {
	st := &state{Active: "a", Slots: map[string]slotState{}}
	b, err := os.ReadFile(u.statePath())
	if errors.Is(err, os.ErrNotExist) {
		return st, nil
	}
	if err != nil {
		return nil, err
	}
	if err := json.Unmarshal(b, st); err != nil {
		return nil, err
	}
	if st.Active != "a" && st.Active != "b" {
		return nil, errors.New("updater: the state names no active slot")
	}
	if st.Slots == nil {
		st.Slots = map[string]slotState{}
	}
	return st, nil
}

func (u *Updater) saveState(st *state) error {
	b, err := json.Marshal(st)
	if err != nil {
		return err
	}
	return securefile.WriteAtomic(u.statePath(), b, 0o600)
}

package agent

import (
	"context"
	"encoding/json"
	"testing"
	"time"

	"github.com/iotransit/iotransit/internal/gwproto"
	"github.com/iotransit/iotransit/internal/testutil"
)

// fakeUpdater records the notices it gets.
type fakeUpdater struct{ got chan gwproto.FirmwareNotice }

func (f *fakeUpdater) Notice(_ context.Context, n gwproto.FirmwareNotice) error {
	f.got <- n
	return nil
}

func (f *fakeUpdater) Installed() (string, string) { return "1.2.3", "b" }

// TestDownTopics: a firmware notice reaches the FirmwareHandler; an error
// report is counted; a malformed notice, a topic not subscribed to and a
// malformed report change nothing.
func TestDownTopics(t *testing.T) {
	const serial = "TSGW06AGT00000099"
	up := &fakeUpdater{got: make(chan gwproto.FirmwareNotice, 4)}
	a := &Agent{cfg: Config{Serial: serial, Firmware: up}, log: testutil.Logger(t), changed: make(chan struct{}, 1)}
	notice := gwproto.FirmwareNotice{RolloutID: "r1", Target: "TSGW06", Version: "2.0.0"}
	b, _ := json.Marshal(notice)
	rep, _ := json.Marshal(gwproto.Report{Accepted: 3, Rejected: []gwproto.ReportedRejection{{Index: 1, Code: "thingsee.field_missing"}}, More: 2})
	cases := []struct {
		name     string
		topic    string
		payload  []byte
		notice   bool
		rejected uint64
	}{
		{name: "firmware notice", topic: gwproto.FirmwareTopic(serial), payload: b, notice: true},
		{name: "malformed firmware notice", topic: gwproto.FirmwareTopic(serial), payload: []byte("{")},
		{name: "report of rejections", topic: gwproto.ErrorsTopic(serial), payload: rep, rejected: 3},
		{name: "malformed report", topic: gwproto.ErrorsTopic(serial), payload: []byte("[]")},
		{name: "another topic", topic: gwproto.DownTopic(serial) + "/other", payload: b},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			before := a.rejected.Load()
			a.onDown(context.Background(), tc.topic, tc.payload)
			if got := a.rejected.Load() - before; got != tc.rejected {
				t.Errorf("rejected counted %d, want %d", got, tc.rejected)
			}
			select {
			case n := <-up.got:
				if !tc.notice || n != notice {
					t.Errorf("handler got %+v", n)
				}
			case <-time.After(200 * time.Millisecond):
				if tc.notice {
					t.Error("the handler got no notice")
				}
			}
		})
	}
}

package api_test

import (
	"context"
	"net/url"
	"testing"

	"github.com/iotransit/iotransit/client"
	"github.com/iotransit/iotransit/internal/credential"
	"github.com/iotransit/iotransit/internal/firmware/firmwaretest"
	"github.com/iotransit/iotransit/internal/testutil/nodetest"
)

// auditActions returns the actions and outcomes of tenant's audit log
// entries whose action is one of actions, oldest first.
func auditActions(t *testing.T, w *world, tenant string, actions ...string) []client.AuditEntry {
	t.Helper()
	page, err := w.api.Client.ListAudit(context.Background(), tenant, client.AuditQuery{Oldest: true, Limit: 1000})
	if err != nil {
		t.Fatal(err)
	}
	var out []client.AuditEntry
	for _, e := range page.Items {
		for _, a := range actions {
			if e.Action == a {
				out = append(out, e)
			}
		}
	}
	return out
}

// TestOAuth2TokenFailsClosedWhenAuditCannotBeWritten: a token is a
// credential handed out, so it is issued only once its audit entry is
// written: while the tenant's audit log refuses writes the token endpoint
// answers 503 audit.unavailable with no token; afterwards the token comes
// with an entry naming the client, and the log verifies.
func TestOAuth2TokenFailsClosedWhenAuditCannotBeWritten(t *testing.T) {
	w := newWorld(t)
	id, secret := clientWithSecret(t, w, "acme", []string{credential.ScopeMessagesRead})
	grant := url.Values{"grant_type": {"client_credentials"}}
	restore := refuseAuditWrites(t, w, "acme")
	status, out := tokenRequest(t, w, grant, id, secret)
	if status != 503 || out["code"] != "audit.unavailable" || out["access_token"] != nil || out["requestId"] == "" {
		t.Fatalf("token while the audit log refuses writes: %d %v", status, out)
	}
	restore()
	status, out = tokenRequest(t, w, grant, id, secret)
	if status != 200 || out["access_token"] == nil {
		t.Fatalf("token after: %d %v", status, out)
	}
	got := auditActions(t, w, "acme", "credential.oauth2.token")
	if len(got) != 1 || got[0].Outcome != "ok" || got[0].Actor != "oauth2:"+id || got[0].Detail["requestId"] == "" {
		t.Fatalf("token entries %+v", got)
	}
	verified(t, w, "acme")
}

// TestFirmwareReportFailsClosedWhenAuditCannotBeWritten: a gateway's
// rollout report changes the rollout, so it is written ahead to the
// tenant's log like every change: refused with 503 (state unchanged) while
// the log refuses writes, recorded started-then-ok afterwards.
func TestFirmwareReportFailsClosedWhenAuditCannotBeWritten(t *testing.T) {
	w := newWorld(t)
	ctx := context.Background()
	serial := w.gateway("acme")
	cert := nodetest.Gateway(t, w.n, "acme", serial)
	repo := firmwaretest.Init(t, w.n, "acme")
	if err := repo.Publish([]byte("fail-closed image"), "TSGW06", "1.0.0"); err != nil {
		t.Fatal(err)
	}
	ro, err := w.api.Client.CreateRollout(ctx, "acme", client.CreateRolloutRequest{Target: "TSGW06", Version: "1.0.0", Serials: []string{serial}})
	if err != nil {
		t.Fatal(err)
	}
	gw, err := client.New(client.Config{Server: w.n.APIAddr(), CAPEM: w.n.ServerCAPEM(), Certificate: cert})
	if err != nil {
		t.Fatal(err)
	}
	defer gw.Close()
	state := func() string {
		t.Helper()
		r, err := w.api.Client.GetRollout(ctx, "acme", ro.ID)
		if err != nil || len(r.Gateways) != 1 {
			t.Fatalf("rollout %+v %v", r, err)
		}
		return r.Gateways[0].State
	}
	before := state()
	report := client.FirmwareReport{RolloutID: ro.ID, State: client.FirmwareInstalled}
	restore := refuseAuditWrites(t, w, "acme")
	if err := gw.ReportFirmware(ctx, report); problemCode(err) != "audit.unavailable" {
		t.Fatalf("report while the audit log refuses writes: %v", err)
	}
	restore()
	if got := state(); got != before {
		t.Fatalf("the refused report changed the rollout: %q → %q", before, got)
	}
	if err := gw.ReportFirmware(ctx, report); err != nil {
		t.Fatal(err)
	}
	if got := state(); got != client.FirmwareInstalled {
		t.Fatalf("state after the report %q", got)
	}
	var started, done string
	for _, e := range auditActions(t, w, "acme", "api.change", "firmware.rollout.report") {
		if e.Target == "firmware-rollout:"+ro.ID && e.Outcome == "started" {
			started = e.Detail["requestId"]
		}
		if e.Action == "firmware.rollout.report" && e.Outcome == "ok" {
			done = e.Detail["requestId"]
		}
	}
	if started == "" || started != done {
		t.Fatalf("write-ahead %q and outcome %q of the report do not pair up", started, done)
	}
	verified(t, w, "acme")
}

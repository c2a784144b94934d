package api_test

import (
	"bytes"
	"context"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/iotransit/iotransit/apispec"
	"github.com/iotransit/iotransit/client"
	"github.com/iotransit/iotransit/internal/backbone/names"
	"github.com/iotransit/iotransit/internal/node"
	tu "github.com/iotransit/iotransit/internal/testutil"
	"github.com/iotransit/iotransit/internal/testutil/nodetest"
	"github.com/iotransit/iotransit/internal/testutil/storetest"
)

const (
	erasedTuid = "TSEN01ERASE000001"
	keptTuid   = "TSEN01ERASE000002"
	eraseGw    = "TSGW06ACM00000001"
	eraseRoute = "DELETE /v1/tenants/{tenant}/devices/{tsmTuid}/messages"
)

// TestAPIEraseDeviceRemovesOnlyThatSensor (issue 12, device erasure): two
// sensors' messages arrive over MQTT, with rejected messages of both (one
// naming the sensor in a field of the wrong type, one not JSON naming it,
// one not JSON naming nobody), dead letters of both in a failing
// integration, and copies of them re-driven to it. Erasing one sensor
// answers the counts; its data is gone from every listing and from a
// direct read of every stream, the other sensor's remains exactly; a
// second erasure answers zeros. A bad TUID is 400, another tenant's
// credential 404, a credential without messages:erase 403. The erasure is
// audited and the log verifies. A paused integration that had not
// delivered the erased messages goes on without them, and the live stream
// goes on.
func TestAPIEraseDeviceRemovesOnlyThatSensor(t *testing.T) {
	n := nodetest.Start(t, func(c *node.Config) {
		nodetest.NoLimits(c)
		c.Forward.RetryBase, c.Forward.RetryMax = 50*time.Millisecond, 300*time.Millisecond
		c.Forward.DeliveryTimeout = 2 * time.Second
	})
	ctx := t.Context()
	opAPI := nodetest.NewAPI(t, n)
	op := opAPI.Client
	up, err := nodetest.Dial(t, n, nodetest.Gateway(t, n, "acme", eraseGw), eraseGw, nil)
	if err != nil {
		t.Fatal(err)
	}
	nodetest.Gateway(t, n, "beta", "TSGW06BET00000001") // another tenant

	// A failing integration (its messages become dead letters after 1 s)
	// and a paused one (its consumer holds them, not yet delivered).
	failing := tu.NewReceiver(t)
	failing.Down(http.StatusServiceUnavailable, "")
	held := tu.NewReceiver(t)
	integration := func(name string, r *tu.Receiver, maxAge time.Duration) string {
		t.Helper()
		in, err := op.CreateIntegration(ctx, "acme", client.Integration{Name: name, Type: "webhook", MaxAge: client.Duration(maxAge),
			Webhook: &client.WebhookConfig{URL: r.URL, CAPEM: r.CAPEM}})
		if err != nil {
			t.Fatal(err)
		}
		return in.ID
	}
	deadID := integration("failing", failing, time.Second)
	heldID := integration("held", held, time.Hour)
	if _, err := op.PauseIntegration(ctx, "acme", heldID); err != nil {
		t.Fatal(err)
	}
	streamKey := apiKey(t, op, "acme", client.ScopeMessagesRead)
	live, err := clientFor(t, n, streamKey).OpenStream(ctx, "acme", client.StreamOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer live.Close()

	ts := int64(1_700_000_000)
	publish := func(payload string, wantCode byte) {
		t.Helper()
		ts++
		res, err := up.Publish(ctx, []byte(payload), 1)
		if err != nil || res.ReasonCode != wantCode {
			t.Fatalf("publish %.60s: %+v, %v; want reason code %#x", payload, res, err, wantCode)
		}
	}
	for i := range 3 {
		publish(tu.Thingsee(erasedTuid, ts, float64(20+i)), 0)
		publish(tu.Thingsee(keptTuid, ts, float64(20+i)), 0)
	}
	publish(`{"tsmId":12100,"tsmEv":10,"tsmTs":1700000100,"tsmTuid":"`+erasedTuid+`","temp":"hot"}`, 0x99)
	publish(`{"tsmId":12100,"tsmEv":10,"tsmTs":1700000100,"tsmTuid":"`+keptTuid+`","temp":"hot"}`, 0x99)
	publish(`garbage naming `+erasedTuid, 0x99)
	publish(`garbage naming nobody`, 0x99)

	// Dead letters, re-driven to the failing integration, dead again.
	deadLetters := func(want int) []client.DeadLetter {
		t.Helper()
		var out []client.DeadLetter
		tu.Eventually(t, 20*time.Second, 100*time.Millisecond, func() error {
			out = out[:0]
			for d, err := range op.AllDeadLetters(ctx, "acme", deadID, client.DeadLetterQuery{}) {
				if err != nil {
					return err
				}
				out = append(out, d)
			}
			if len(out) != want {
				return fmt.Errorf("%d dead letters, want %d", len(out), want)
			}
			return nil
		})
		return out
	}
	deadLetters(6)
	if res, err := op.Redrive(ctx, "acme", deadID); err != nil || res.Redriven != 6 {
		t.Fatalf("redrive: %+v, %v", res, err)
	}
	deadLetters(6)

	before := inventory(t, n, op)
	wantBefore := map[string]int{"msg:" + erasedTuid: 3, "msg:" + keptTuid: 3, "redrive:" + erasedTuid: 3, "redrive:" + keptTuid: 3,
		"dlq:" + erasedTuid: 3, "dlq:" + keptTuid: 3, "rej": 4, "rej:" + erasedTuid: 2, "list:" + erasedTuid: 3, "list:" + keptTuid: 3,
		"listrej": 4}
	if !equalCounts(before, wantBefore) {
		t.Fatalf("before the erasure: %v, want %v", before, wantBefore)
	}
	keptIDs := messageIDs(t, op, keptTuid)

	// Refusals.
	eraser := apiKey(t, op, "acme", client.ScopeMessagesErase)
	betaEraser := apiKey(t, op, "beta", client.ScopeMessagesErase)
	reader := apiKey(t, op, "acme", client.ScopeMessagesRead, client.ScopeIntegrationsWrite)
	path := func(tenant, tuid string) string { return "/v1/tenants/" + tenant + "/devices/" + tuid + "/messages" }
	for _, tc := range []struct {
		name, path, key string
		status          int
		code            string
	}{
		{name: "lowercase tuid", path: path("acme", strings.ToLower(erasedTuid)), key: eraser, status: 400, code: "api.tsm_tuid_invalid"},
		{name: "short tuid", path: path("acme", "TSEN01"), key: eraser, status: 400, code: "api.tsm_tuid_invalid"},
		{name: "bad continuation", path: path("acme", erasedTuid) + "?next=abc", key: eraser, status: 400, code: "store.erase_cursor_invalid"},
		{name: "another tenant's credential", path: path("acme", erasedTuid), key: betaEraser, status: 404, code: "registry.tenant_not_found"},
		{name: "no messages:erase", path: path("acme", erasedTuid), key: reader, status: 403, code: "api.scope_missing"},
		{name: "no credential", path: path("acme", erasedTuid), status: 401, code: "api.unauthenticated"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := opAPI.Do(http.MethodDelete, tc.path, tc.key, nil)
			if r.Status != tc.status || !strings.Contains(string(r.Body), `"code":"`+tc.code+`"`) {
				t.Fatalf("%d %s, want %d %s", r.Status, r.Body, tc.status, tc.code)
			}
		})
	}
	if got := inventory(t, n, op); !equalCounts(got, wantBefore) {
		t.Fatalf("a refused erasure changed the data: %v", got)
	}

	// The erasure, its answer checked against the OpenAPI document.
	s := parseSpec(t, apispec.OpenAPI)
	ops, _ := s.operations(t)
	a := &apiClient{t: t, s: s, ops: ops, base: "https://" + n.APIAddr(),
		c: &http.Client{Timeout: 60 * time.Second, Transport: &http.Transport{TLSClientConfig: nodetest.ClientTLS(t, n, nil)}}}
	got := a.call(eraseRoute, path("acme", erasedTuid), eraser, "", "", 200)
	want := map[string]any{"tsmTuid": erasedTuid, "messages": 3.0, "redriven": 3.0, "deadLetters": 3.0, "rejected": 2.0, "complete": true}
	for k, v := range want {
		if got[k] != v {
			t.Errorf("erasure answered %s = %v, want %v (%v)", k, got[k], v, got)
		}
	}
	if got["overwritten"] != 11.0 { // every part is small: all overwritten
		t.Errorf("erasure overwrote %v records, want 11", got["overwritten"])
	}

	after := inventory(t, n, op)
	wantAfter := map[string]int{"msg:" + keptTuid: 3, "redrive:" + keptTuid: 3, "dlq:" + keptTuid: 3, "rej": 2,
		"list:" + keptTuid: 3, "listrej": 2}
	if !equalCounts(after, wantAfter) {
		t.Fatalf("after the erasure: %v, want %v", after, wantAfter)
	}
	if ids := messageIDs(t, op, keptTuid); !slices.Equal(ids, keptIDs) {
		t.Errorf("the kept sensor's messages changed: %v, were %v", ids, keptIDs)
	}
	for r, err := range op.AllRejected(ctx, "acme", client.RejectedQuery{}) {
		if err != nil {
			t.Fatal(err)
		}
		if r.Tuid != keptTuid && r.Payload != "garbage naming nobody" {
			t.Errorf("a rejected message that is not the kept sensor's or the anonymous one stayed: %+v", r)
		}
	}

	again, err := clientFor(t, n, eraser).EraseDevice(ctx, "acme", erasedTuid)
	if err != nil || *again != (client.DeviceErasure{Tuid: erasedTuid, Complete: true}) {
		t.Fatalf("second erasure: %+v, %v; want zeros", again, err)
	}

	// Audited with the counts; the log verifies.
	var entry *client.AuditEntry
	for e, err := range op.AllAudit(ctx, "acme", client.AuditQuery{Action: "device.erase", Oldest: true}) {
		if err != nil {
			t.Fatal(err)
		}
		if entry == nil && e.Outcome == "ok" { // the refused continuation is there too
			entry = &e
		}
	}
	if entry == nil || entry.Target != "sensor:"+erasedTuid || entry.Outcome != "ok" || entry.Actor == "" ||
		entry.Detail["messages"] != "3" || entry.Detail["deadLetters"] != "3" || entry.Detail["rejected"] != "2" || entry.Detail["redriven"] != "3" {
		t.Fatalf("audit entry %+v", entry)
	}
	if rep, err := op.VerifyAudit(ctx, "acme"); err != nil || !rep.OK {
		t.Fatalf("audit verify: %+v, %v", rep, err)
	}

	// The paused integration goes on without the erased messages.
	if _, err := op.ResumeIntegration(ctx, "acme", heldID); err != nil {
		t.Fatal(err)
	}
	publish(tu.Thingsee(keptTuid, ts, 30), 0)
	tu.Eventually(t, 20*time.Second, 100*time.Millisecond, func() error {
		v, err := op.GetIntegration(ctx, "acme", heldID)
		if err != nil {
			return err
		}
		if v.State.Delivered != 4 || v.Backlog != 0 {
			return fmt.Errorf("held integration: %d delivered, %d waiting", v.State.Delivered, v.Backlog)
		}
		return nil
	})
	for _, d := range held.Got() {
		if bytes.Contains(d.Body, []byte(erasedTuid)) {
			t.Fatalf("an erased message was delivered after the erasure: %.200s", d.Body)
		}
	}
	// The live stream goes on: it shows the message sent after the erasure.
	readCtx, cancel := context.WithTimeout(ctx, 20*time.Second)
	defer cancel()
	for {
		m, err := live.Next(readCtx)
		if err != nil {
			t.Fatalf("live stream after the erasure: %v", err)
		}
		if bytes.Contains(m, []byte(`"temp":30`)) {
			break
		}
	}
}

// inventory counts a tenant acme's data: each sensor's messages and
// re-driven copies by subject and dead letters by header, read directly
// from the streams; the rejected messages stored, and those naming the
// erased sensor (opened through the API); and what the API lists.
func inventory(t *testing.T, n *node.Node, op *client.Client) map[string]int {
	t.Helper()
	ctx := t.Context()
	out := map[string]int{}
	each := func(stream string, fn func(*jetstream.RawStreamMsg)) {
		t.Helper()
		storetest.Walk(t, n.JetStream(), stream, fn)
	}
	each(names.MessageStream("acme"), func(m *jetstream.RawStreamMsg) {
		part := "msg"
		if strings.Contains(m.Subject, ".redrive.") {
			part = "redrive"
		}
		toks := strings.Split(m.Subject, ".")
		out[part+":"+toks[len(toks)-2]]++
	})
	l := n.JetStream().StreamNames(ctx, jetstream.WithStreamListSubject("iot.acme.dlq.*"))
	for name := range l.Name() {
		each(name, func(m *jetstream.RawStreamMsg) { out["dlq:"+m.Header.Get("Iot-Tuid")]++ })
	}
	if err := l.Err(); err != nil {
		t.Fatal(err)
	}
	each(names.RejectedStream("acme"), func(*jetstream.RawStreamMsg) { out["rej"]++ })
	for r, err := range op.AllRejected(ctx, "acme", client.RejectedQuery{}) {
		if err != nil {
			t.Fatal(err)
		}
		out["listrej"]++
		if r.Tuid == erasedTuid || strings.Contains(r.Payload, erasedTuid) {
			out["rej:"+erasedTuid]++
		}
	}
	for _, tuid := range []string{erasedTuid, keptTuid} {
		if k := len(messageIDs(t, op, tuid)); k > 0 {
			out["list:"+tuid] = k
		}
	}
	return out
}

func messageIDs(t *testing.T, op *client.Client, tuid string) []string {
	t.Helper()
	var ids []string
	for m, err := range op.AllMessages(t.Context(), "acme", client.MessageQuery{TsmTuid: tuid}) {
		if err != nil {
			t.Fatal(err)
		}
		ids = append(ids, m.ID)
	}
	return ids
}

func equalCounts(a, b map[string]int) bool {
	for k, v := range a {
		if b[k] != v {
			return false
		}
	}
	for k, v := range b {
		if a[k] != v {
			return false
		}
	}
	return true
}

// apiKey creates an API key of tenant with scopes, as the operator.
func apiKey(t *testing.T, op *client.Client, tenant string, scopes ...string) string {
	t.Helper()
	k, err := op.CreateAPIKey(t.Context(), tenant, client.CreateAPIKeyRequest{Scopes: scopes})
	if err != nil {
		t.Fatal(err)
	}
	return k.Key
}

// clientFor returns a client of n's API with credential.
func clientFor(t *testing.T, n *node.Node, credential string) *client.Client {
	t.Helper()
	c, err := client.New(client.Config{Server: "https://" + n.APIAddr(), CAPEM: n.ServerCAPEM(), Credential: credential, Timeout: 60 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Close)
	return c
}

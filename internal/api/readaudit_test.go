package api_test

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/coder/websocket"

	"github.com/iotransit/iotransit/client"
	"github.com/iotransit/iotransit/internal/api"
	"github.com/iotransit/iotransit/internal/audit"
	"github.com/iotransit/iotransit/internal/credential"
	tu "github.com/iotransit/iotransit/internal/testutil"
	"github.com/iotransit/iotransit/internal/testutil/nodetest"
)

// dataReads returns the tenant's data.read entries, oldest first.
func dataReads(t *testing.T, w *world, tenant string) []audit.Entry {
	t.Helper()
	var page client.Page[audit.Entry]
	r := w.api.Do("GET", "/v1/tenants/"+tenant+"/audit?action=data.read&order=oldest&limit=1000", w.api.Key(), nil)
	if r.Status != 200 {
		t.Fatalf("list %s's audit: %d %s", tenant, r.Status, r.Body)
	}
	r.Decode(t, &page)
	return page.Items
}

// readsOf sums "reads resource/items" of actor's entries of target.
func readsOf(entries []audit.Entry, actor, target string) []string {
	var out []string
	for _, e := range entries {
		if e.Actor == actor && e.Target == target {
			out = append(out, e.Detail["reads"]+"/"+e.Detail["items"])
		}
	}
	return out
}

// TestAPIReadsOfCustomerDataAreAuditedPerCredential: reads of messages,
// rejected messages and dead letters, and opening the stream, each land in
// the tenant's log as data.read, at most one entry per credential per
// resource per window: the first read at once, the rest summed when the
// window ends (50 reads: an entry for 1 read, then one for 49). Two
// credentials get entries of their own; another tenant's reads are not in
// this tenant's log; the log verifies.
func TestAPIReadsOfCustomerDataAreAuditedPerCredential(t *testing.T) {
	const window = 5 * time.Second
	defer api.SetReadAuditWindow(window)()
	w := newWorld(t)
	serial := "TSGW06ACM00000099"
	u, err := nodetest.Dial(t, w.n, nodetest.Gateway(t, w.n, "acme", serial), serial, nil)
	if err != nil {
		t.Fatal(err)
	}
	ts := time.Now().Unix() - 10
	var msgs []string
	for i := range 3 {
		msgs = append(msgs, tu.Thingsee("TSEN01ACM00000001", ts+int64(i), 20))
	}
	if _, err := u.Publish(context.Background(), []byte("["+strings.Join(msgs, ",")+"]"), 1); err != nil {
		t.Fatal(err)
	}
	integ := w.integration("acme")
	k1 := w.keyWithID("acme", []string{credential.ScopeMessagesRead, credential.ScopeIntegrationsRead})
	k2 := w.keyWithID("acme", []string{credential.ScopeMessagesRead})
	kb := w.keyWithID("beta", []string{credential.ScopeMessagesRead})
	get := func(key, path string, want int) {
		t.Helper()
		if r := w.api.Do("GET", path, key, nil); r.Status != want {
			t.Fatalf("GET %s: %d %s, want %d", path, r.Status, r.Body, want)
		}
	}
	tu.Eventually(t, 10*time.Second, 20*time.Millisecond, func() error {
		var p client.Page[client.Message]
		w.api.Do("GET", "/v1/tenants/acme/messages", w.api.Key(), nil).Decode(t, &p)
		if len(p.Items) != 3 {
			return fmt.Errorf("%d messages stored, want 3", len(p.Items))
		}
		return nil
	})
	start := time.Now()
	for range 50 {
		get(k1.key, "/v1/tenants/acme/messages?limit=2", 200)
	}
	for range 3 {
		get(k2.key, "/v1/tenants/acme/messages", 200)
	}
	get(k1.key, "/v1/tenants/acme/rejected", 200)
	get(k1.key, "/v1/tenants/acme/integrations/"+integ+"/dead-letters", 200)
	get(kb.key, "/v1/tenants/beta/messages", 200)
	get(kb.key, "/v1/tenants/acme/messages", 404) // not beta's: no read, no entry
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c := openStream(t, ctx, w.n, w.api, "/v1/tenants/acme/stream?after=0", k2.key)
	if _, data, err := c.Read(ctx); err != nil || !strings.Contains(string(data), "TSEN01ACM00000001") {
		t.Fatalf("stream: %v %s", err, data)
	}
	c.Close(websocket.StatusNormalClosure, "")
	if d := time.Since(start); d >= window {
		t.Fatalf("the reads took %s, longer than the window %s: the test cannot tell windows apart", d, window)
	}

	// At once: the first read of each credential and resource.
	first := dataReads(t, w, "acme")
	for _, tc := range []struct {
		name, actor, target, want string
	}{
		{"messages, key 1", "apikey:" + k1.id, "messages", "[1/2]"},
		{"messages, key 2", "apikey:" + k2.id, "messages", "[1/3]"},
		{"rejected, key 1", "apikey:" + k1.id, "rejected", "[1/0]"},
		{"dead letters, key 1", "apikey:" + k1.id, "integration:" + integ, "[1/0]"},
		{"stream opened, key 2", "apikey:" + k2.id, "stream", "[1/0]"},
	} {
		if got := fmt.Sprint(readsOf(first, tc.actor, tc.target)); got != tc.want {
			t.Errorf("%s: entries (reads/items) %s at once, want %s", tc.name, got, tc.want)
		}
	}
	// When the window ends: the rest, summed.
	var all []audit.Entry
	tu.Eventually(t, 3*window, 100*time.Millisecond, func() error {
		all = dataReads(t, w, "acme")
		for _, tc := range []struct {
			name, actor, target, want string
		}{
			{"messages, key 1", "apikey:" + k1.id, "messages", "[1/2 49/98]"},
			{"messages, key 2", "apikey:" + k2.id, "messages", "[1/3 2/6]"},
			{"rejected, key 1", "apikey:" + k1.id, "rejected", "[1/0]"},
			{"stream, key 2: the messages it sent", "apikey:" + k2.id, "stream", "[1/0 0/3]"},
			{"beta's key in acme's log", "apikey:" + kb.id, "messages", "[]"},
		} {
			if got := fmt.Sprint(readsOf(all, tc.actor, tc.target)); got != tc.want {
				return fmt.Errorf("%s: entries (reads/items) %s, want %s", tc.name, got, tc.want)
			}
		}
		return nil
	})
	for _, e := range all {
		if e.Actor == "apikey:"+k1.id && e.Detail["reads"] == "49" {
			f, err1 := time.Parse(time.RFC3339Nano, e.Detail["first"])
			l, err2 := time.Parse(time.RFC3339Nano, e.Detail["last"])
			if err1 != nil || err2 != nil || l.Before(f) || f.Before(start) {
				t.Errorf("summary between %q and %q", e.Detail["first"], e.Detail["last"])
			}
		}
	}
	if got := fmt.Sprint(readsOf(dataReads(t, w, "beta"), "apikey:"+kb.id, "messages")); got != "[1/0]" {
		t.Errorf("beta's log: beta's key's reads %s, want [1/0]", got)
	}
	verified(t, w, "acme")
	verified(t, w, "beta")
}

// keyOf is an API key and its id.
type keyOf struct{ key, id string }

// keyWithID makes an API key of tenant with scopes (by the operator).
func (w *world) keyWithID(tenant string, scopes []string) keyOf {
	w.t.Helper()
	r := w.api.Do("POST", "/v1/tenants/"+tenant+"/api-keys", w.api.Key(), map[string]any{"scopes": scopes})
	if r.Status != 201 {
		w.t.Fatalf("create key: %d %s", r.Status, r.Body)
	}
	var k struct{ Key, ID string }
	r.Decode(w.t, &k)
	return keyOf{k.Key, k.ID}
}

// TestAPIReadIsNotRefusedForItsAudit: while the tenant's audit log refuses
// writes a read still answers; its entry is kept and written with the
// window's sum once the log takes writes again.
func TestAPIReadIsNotRefusedForItsAudit(t *testing.T) {
	const window = 2 * time.Second
	defer api.SetReadAuditWindow(window)()
	w := newWorld(t)
	k := w.keyWithID("acme", []string{credential.ScopeMessagesRead})
	restore := refuseAuditWrites(t, w, "acme")
	for range 2 {
		if r := w.api.Do("GET", "/v1/tenants/acme/messages", k.key, nil); r.Status != 200 {
			t.Fatalf("a read while the audit log refuses writes: %d %s", r.Status, r.Body)
		}
	}
	restore()
	tu.Eventually(t, 5*window, 100*time.Millisecond, func() error {
		if got := fmt.Sprint(readsOf(dataReads(t, w, "acme"), "apikey:"+k.id, "messages")); got != "[2/0]" {
			return fmt.Errorf("the key's reads %s, want [2/0]", got)
		}
		return nil
	})
	verified(t, w, "acme")
}

package api_test

import (
	"context"
	"encoding/json"
	"net/http"
	"net/url"
	"strings"
	"testing"

	"github.com/iotransit/iotransit/internal/audit"
	"github.com/iotransit/iotransit/internal/backbone/names"
	"github.com/iotransit/iotransit/internal/credential"
	"github.com/iotransit/iotransit/internal/testutil/nodetest"
)

func tokenRequest(t *testing.T, w *world, form url.Values, basicID, basicSecret string) (int, map[string]any) {
	t.Helper()
	req, _ := http.NewRequest("POST", w.api.Base()+"/oauth2/token", strings.NewReader(form.Encode()))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	if basicID != "" {
		req.SetBasicAuth(basicID, basicSecret)
	}
	resp, err := (&http.Client{Transport: &http.Transport{TLSClientConfig: nodetest.ClientTLS(t, w.n, nil)}}).Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var out map[string]any
	_ = json.NewDecoder(resp.Body).Decode(&out)
	return resp.StatusCode, out
}

func TestAPIOAuth2ClientCredentials(t *testing.T) {
	w := newWorld(t)
	id, secret := clientWithSecret(t, w, "acme", []string{credential.ScopeMessagesRead, credential.ScopeGatewaysRead})
	grant := url.Values{"grant_type": {"client_credentials"}}

	status, tok := tokenRequest(t, w, grant, id, secret)
	if status != 200 || tok["token_type"] != "Bearer" || tok["expires_in"].(float64) <= 0 {
		t.Fatalf("token: %d %v", status, tok)
	}
	access := tok["access_token"].(string)
	if r := w.api.Do("GET", "/v1/tenants/acme/gateways", access, nil); r.Status != 200 {
		t.Errorf("token use: %d %s", r.Status, r.Body)
	}
	if r := w.api.Do("GET", "/v1/tenants/acme/audit", access, nil); r.Status != 403 {
		t.Errorf("scope not granted: %d", r.Status)
	}
	// Form credentials and a narrowed scope.
	form := url.Values{"grant_type": {"client_credentials"}, "client_id": {id}, "client_secret": {secret}, "scope": {"messages:read"}}
	status, narrow := tokenRequest(t, w, form, "", "")
	if status != 200 || narrow["scope"] != "messages:read" {
		t.Fatalf("narrowed: %d %v", status, narrow)
	}
	if r := w.api.Do("GET", "/v1/tenants/acme/gateways", narrow["access_token"].(string), nil); r.Status != 403 {
		t.Errorf("narrowed token reads gateways: %d", r.Status)
	}
	for name, tc := range map[string]struct {
		form        url.Values
		id, secret  string
		status      int
		oauthErrMsg string
	}{
		"wrong secret":   {grant, id, secret + "x", 401, "invalid_client"},
		"unknown client": {grant, "itc_0000000000000000", secret, 401, "invalid_client"},
		"no credentials": {grant, "", "", 401, "invalid_client"},
		"password grant": {url.Values{"grant_type": {"password"}}, id, secret, 400, "unsupported_grant_type"},
		"scope not held": {url.Values{"grant_type": {"client_credentials"}, "scope": {"audit:read"}}, id, secret, 400, "invalid_scope"},
	} {
		status, out := tokenRequest(t, w, tc.form, tc.id, tc.secret)
		if status != tc.status || out["error"] != tc.oauthErrMsg || out["requestId"] == "" {
			t.Errorf("%s: %d %v", name, status, out)
		}
	}
	// Revoking the client kills its live tokens at once.
	if r := w.api.Do("POST", "/v1/tenants/acme/oauth2-clients/"+id+"/revoke", w.api.Key(), nil); r.Status != 200 {
		t.Fatalf("revoke: %d", r.Status)
	}
	if r := w.api.Do("GET", "/v1/tenants/acme/gateways", access, nil); r.Status != 401 {
		t.Errorf("revoked client's token still works: %d", r.Status)
	}
	if status, _ := tokenRequest(t, w, grant, id, secret); status != 401 {
		t.Errorf("revoked client gets tokens: %d", status)
	}
}

// rewriteAudit replaces tenant's audit stream with mutate(messages), as
// someone with NATS administrator rights could: delete the stream (whose
// deny-delete flag only guards single messages), recreate it, republish.
func rewriteAudit(t *testing.T, w *world, tenant string, mutate func(i int, e *audit.Entry, data []byte) []byte) {
	t.Helper()
	ctx := context.Background()
	js := w.n.JetStream()
	st, err := js.Stream(ctx, names.AuditStream(tenant))
	if err != nil {
		t.Fatal(err)
	}
	info, err := st.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	type msg struct {
		subject string
		data    []byte
	}
	var msgs []msg
	for seq := info.State.FirstSeq; seq <= info.State.LastSeq; seq++ {
		m, err := st.GetMsg(ctx, seq)
		if err != nil {
			continue
		}
		msgs = append(msgs, msg{m.Subject, m.Data})
	}
	if err := js.DeleteStream(ctx, names.AuditStream(tenant)); err != nil {
		t.Fatal(err)
	}
	cfg := info.Config
	cfg.DenyDelete, cfg.DenyPurge = false, false
	if _, err := js.CreateStream(ctx, cfg); err != nil {
		t.Fatal(err)
	}
	for i, m := range msgs {
		data := m.data
		var e audit.Entry
		if strings.HasSuffix(m.subject, ".entry") && json.Unmarshal(m.data, &e) == nil {
			data = mutate(i, &e, m.data)
		}
		if data == nil {
			continue
		}
		if _, err := js.Publish(ctx, m.subject, data); err != nil {
			t.Fatal(err)
		}
	}
}

// TestAPIAuditDetectsTampering edits the audit stream behind the API's back
// and checks that verify, through the API, names the first broken entry.
func TestAPIAuditDetectsTampering(t *testing.T) {
	cases := []struct {
		name   string
		mutate func(i int, e *audit.Entry, data []byte) []byte
	}{
		{"one byte changed in entry 4", func(_ int, e *audit.Entry, data []byte) []byte {
			if e.Seq == 4 {
				return []byte(strings.Replace(string(data), `"outcome":"`+e.Outcome+`"`, `"outcome":"ko"`, 1))
			}
			return data
		}},
		{"entry 4 deleted", func(_ int, e *audit.Entry, data []byte) []byte {
			if e.Seq == 4 {
				return nil
			}
			return data
		}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			w := newWorld(t)
			for i := 0; i < 5; i++ {
				w.gateway("acme")
			}
			var rep audit.Report
			w.api.Do("GET", "/v1/tenants/acme/audit/verify", w.api.Key(), nil).Decode(t, &rep)
			if !rep.OK || rep.Entries < 6 {
				t.Fatalf("untouched log: %+v", rep)
			}
			rewriteAudit(t, w, "acme", tc.mutate)
			r := w.api.Do("GET", "/v1/tenants/acme/audit/verify", w.api.Key(), nil)
			rep = audit.Report{}
			r.Decode(t, &rep)
			if r.Status != 200 || rep.OK || rep.FirstBroken != 4 || rep.Problem == "" {
				t.Fatalf("after tampering: %d %s", r.Status, r.Body)
			}
			var beta audit.Report
			w.api.Do("GET", "/v1/tenants/beta/audit/verify", w.api.Key(), nil).Decode(t, &beta)
			if !beta.OK {
				t.Errorf("beta's log: %+v", beta)
			}
		})
	}
}

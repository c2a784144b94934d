package api_test

import (
	"encoding/base64"
	"encoding/json"
	"errors"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/iotransit/iotransit/internal/credential"
	tu "github.com/iotransit/iotransit/internal/testutil"
	"github.com/iotransit/iotransit/internal/testutil/nodetest"
)

// A dead letter's message payload is what messages:read guards: a caller
// with integrations:read alone sees the letter's metadata and the message's
// envelope (type, sensor, times, gateway), not its measurements.
func TestAPIDeadLettersPayloadNeedsMessagesRead(t *testing.T) {
	w := newWorld(t)
	rcv := tu.NewReceiver(t)
	rcv.Handle(func(wr http.ResponseWriter, _ *http.Request, _ []byte) bool { wr.WriteHeader(400); return true })
	r := w.api.Do("POST", "/v1/tenants/acme/integrations", w.api.Key(), map[string]any{
		"name": "dl", "type": "webhook", "maxAge": "1s",
		"webhook": map[string]any{"url": rcv.URL, "caPem": rcv.CAPEM},
	})
	if r.Status != 201 {
		t.Fatalf("create: %d %s", r.Status, r.Body)
	}
	var in struct{ ID string }
	r.Decode(t, &in)
	const gw, sensor = "TSGW06ACM99999998", "TSEN01ABC12345678"
	up, err := nodetest.Dial(t, w.n, nodetest.Gateway(t, w.n, "acme", gw), gw, nil)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := up.Publish(t.Context(), []byte(tu.Thingsee(sensor, 1700000000, 37.25)), 1); err != nil {
		t.Fatal(err)
	}
	path := "/v1/tenants/acme/integrations/" + in.ID + "/dead-letters"

	type letter struct {
		Seq         uint64
		OriginalSeq uint64
		ID          string
		Gateway     string
		ReceivedAt  time.Time
		DeadAt      time.Time
		Reason      string
		Attempts    int
		Message     map[string]any
	}
	get := func(key string) []letter {
		t.Helper()
		r := w.api.Do("GET", path, key, nil)
		if r.Status != 200 {
			t.Fatalf("dead letters: %d %s", r.Status, r.Body)
		}
		var page struct{ Items []letter }
		r.Decode(t, &page)
		return page.Items
	}
	tu.Eventually(t, 20*time.Second, 200*time.Millisecond, func() error {
		if len(get(w.api.Key())) == 0 {
			return errors.New("no dead letter yet")
		}
		return nil
	})

	intRead := w.key("acme", []string{credential.ScopeIntegrationsRead})
	both := w.key("acme", []string{credential.ScopeIntegrationsRead, credential.ScopeMessagesRead})
	if r := w.api.Do("GET", "/v1/tenants/acme/messages", intRead, nil); r.Status != 403 {
		t.Fatalf("messages without messages:read: %d", r.Status)
	}

	// integrations:read only: metadata and envelope, no measurements.
	r = w.api.Do("GET", path, intRead, nil)
	if r.Status != 200 {
		t.Fatalf("dead letters: %d %s", r.Status, r.Body)
	}
	if strings.Contains(string(r.Body), "37.25") || strings.Contains(string(r.Body), "humd") {
		t.Errorf("an integrations:read-only key read a message payload: %s", r.Body)
	}
	items := get(intRead)
	if len(items) != 1 {
		t.Fatalf("%d dead letters, want 1", len(items))
	}
	d := items[0]
	if d.Seq == 0 || d.ID == "" || d.Gateway != gw || d.Reason == "" || d.Attempts < 1 || d.ReceivedAt.IsZero() || d.DeadAt.IsZero() {
		t.Errorf("metadata missing without messages:read: %+v", d)
	}
	if d.Message["tsmTuid"] != sensor || d.Message["tsmId"] != float64(12100) || d.Message["tsmTs"] != float64(1700000000) || d.Message["tsmCloudTs"] == nil {
		t.Errorf("envelope missing without messages:read: %v", d.Message)
	}
	if _, ok := d.Message["temp"]; ok {
		t.Errorf("measurement present without messages:read: %v", d.Message)
	}

	// integrations:read + messages:read, and the operator: the whole message.
	for name, key := range map[string]string{"integrations:read+messages:read": both, "operator": w.api.Key()} {
		items := get(key)
		if len(items) != 1 || items[0].Message["temp"] != 37.25 || items[0].Message["humd"] != 41.5 || items[0].Message["tsmTuid"] != sensor {
			t.Errorf("%s: want the whole message, got %+v", name, items)
		}
	}
}

type createdKey struct {
	Key       string
	ID        string
	ExpiresAt *time.Time
}

func createKey(t *testing.T, w *world, by string, body map[string]any) createdKey {
	t.Helper()
	r := w.api.Do("POST", "/v1/tenants/acme/api-keys", by, body)
	if r.Status != 201 {
		t.Fatalf("create key: %d %s", r.Status, r.Body)
	}
	var k createdKey
	r.Decode(t, &k)
	return k
}

// A credential never creates one that outlives it.
func TestAPICreatedKeyExpiresNoLaterThanCreator(t *testing.T) {
	w := newWorld(t)
	scopes := []string{credential.ScopeKeysWrite, credential.ScopeMessagesRead}
	parent := createKey(t, w, w.api.Key(), map[string]any{"scopes": scopes, "ttl": "1h"})
	if parent.ExpiresAt == nil {
		t.Fatal("the 1h parent has no expiresAt")
	}

	// No ttl: the child gets the parent's expiry.
	child := createKey(t, w, parent.Key, map[string]any{"scopes": scopes})
	if child.ExpiresAt == nil || child.ExpiresAt.After(*parent.ExpiresAt) {
		t.Errorf("child of a key expiring %v expires %v", parent.ExpiresAt, child.ExpiresAt)
	}
	// Longer ttl: capped at the parent's expiry.
	long := createKey(t, w, parent.Key, map[string]any{"scopes": scopes, "ttl": "48h"})
	if long.ExpiresAt == nil || !long.ExpiresAt.Equal(*parent.ExpiresAt) {
		t.Errorf("a 48h child of a key expiring %v expires %v", parent.ExpiresAt, long.ExpiresAt)
	}
	// The stored record agrees with the answer.
	var got struct{ ExpiresAt *time.Time }
	if r := w.api.Do("GET", "/v1/tenants/acme/api-keys/"+long.ID, w.api.Key(), nil); r.Status != 200 {
		t.Fatalf("get: %d %s", r.Status, r.Body)
	} else if r.Decode(t, &got); got.ExpiresAt == nil || !got.ExpiresAt.Equal(*parent.ExpiresAt) {
		t.Errorf("stored expiry %v, want %v", got.ExpiresAt, parent.ExpiresAt)
	}
	// A shorter ttl is kept.
	short := createKey(t, w, parent.Key, map[string]any{"scopes": scopes, "ttl": "10m"})
	if short.ExpiresAt == nil || !short.ExpiresAt.Before(parent.ExpiresAt.Add(-40*time.Minute)) {
		t.Errorf("a 10m child expires %v (parent %v)", short.ExpiresAt, parent.ExpiresAt)
	}
	// A grandchild is bounded too.
	grand := createKey(t, w, child.Key, map[string]any{"scopes": scopes})
	if grand.ExpiresAt == nil || grand.ExpiresAt.After(*parent.ExpiresAt) {
		t.Errorf("grandchild expires %v, parent %v", grand.ExpiresAt, parent.ExpiresAt)
	}

	// A key without expiry and the operator make keys without expiry.
	forever := createKey(t, w, w.api.Key(), map[string]any{"scopes": scopes})
	if forever.ExpiresAt != nil {
		t.Errorf("operator key without ttl expires %v", forever.ExpiresAt)
	}
	if k := createKey(t, w, forever.Key, map[string]any{"scopes": scopes}); k.ExpiresAt != nil {
		t.Errorf("child of a non-expiring key expires %v", k.ExpiresAt)
	}
}

// An OAuth2 client made by an expiring key expires with it; its tokens end
// by then and the keys its tokens make are bounded the same way.
func TestAPICreatedClientExpiresNoLaterThanCreator(t *testing.T) {
	w := newWorld(t)
	scopes := []string{credential.ScopeKeysWrite, credential.ScopeMessagesRead}
	parent := createKey(t, w, w.api.Key(), map[string]any{"scopes": scopes, "ttl": "10m"})

	r := w.api.Do("POST", "/v1/tenants/acme/oauth2-clients", parent.Key, map[string]any{"scopes": scopes})
	if r.Status != 201 {
		t.Fatalf("create client: %d %s", r.Status, r.Body)
	}
	var c struct {
		ClientID, ClientSecret string
		ExpiresAt              *time.Time
	}
	r.Decode(t, &c)
	if c.ExpiresAt == nil || !c.ExpiresAt.Equal(*parent.ExpiresAt) {
		t.Fatalf("client of a key expiring %v expires %v", parent.ExpiresAt, c.ExpiresAt)
	}
	status, tok := tokenRequest(t, w, url.Values{"grant_type": {"client_credentials"}}, c.ClientID, c.ClientSecret)
	if status != 200 {
		t.Fatalf("token: %d %v", status, tok)
	}
	if in := tok["expires_in"].(float64); in <= 0 || in > 600 {
		t.Errorf("expires_in %v, want at most the client's 600 s", in)
	}
	access := tok["access_token"].(string)
	var claims struct{ Exp int64 }
	if parts := strings.Split(access, "."); len(parts) == 3 {
		b, _ := base64.RawURLEncoding.DecodeString(parts[1])
		_ = json.Unmarshal(b, &claims)
	}
	if claims.Exp == 0 || claims.Exp > parent.ExpiresAt.Unix() {
		t.Errorf("token exp %d after the client's expiry %d", claims.Exp, parent.ExpiresAt.Unix())
	}
	k := createKey(t, w, access, map[string]any{"scopes": scopes, "ttl": "48h"})
	if k.ExpiresAt == nil || k.ExpiresAt.After(*parent.ExpiresAt) {
		t.Errorf("key made by the client's token expires %v, client %v", k.ExpiresAt, parent.ExpiresAt)
	}

	// A client made by the operator does not expire; its tokens make
	// keys as asked.
	id, secret := clientWithSecret(t, w, "acme", scopes)
	op := accessToken(t, w, id, secret)
	if k := createKey(t, w, op, map[string]any{"scopes": scopes}); k.ExpiresAt != nil {
		t.Errorf("key made by a non-expiring client's token expires %v", k.ExpiresAt)
	}
}

package forward_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/iotransit/iotransit/internal/backbone/names"
	"github.com/iotransit/iotransit/internal/forward"
	"github.com/iotransit/iotransit/internal/node"
	tu "github.com/iotransit/iotransit/internal/testutil"
)

// TestForwardFilterWithRepeatedValue: a filter naming one device twice is
// stored once (JetStream refuses overlapping consumer filters, and the
// integration would never deliver).
func TestForwardFilterWithRepeatedValue(t *testing.T) {
	e := newEnv(t, nil)
	id, secret := e.integration(map[string]any{"filter": map[string]any{"devices": []string{devices[1], devices[1]}, "tsmIds": []int{13100, 13100}}})
	if f := getView(t, e, id).Filter; len(f.Devices) != 1 || len(f.TsmIDs) != 1 {
		t.Errorf("filter stored as %+v", f)
	}
	e.publish(1)
	got := waitArrived(t, e.rcv, secret, 1, 10*time.Second)
	if len(got) != 1 || got[0]["tsmTuid"] != devices[1] {
		t.Errorf("arrived %v", got)
	}
}

// TestForwardLongBatchWaitHasNoDuplicates: a batch that waits longer than
// JetStream's ack wait must not collect the redeliveries of its own first
// messages.
func TestForwardLongBatchWaitHasNoDuplicates(t *testing.T) {
	e := newEnv(t, func(c *node.Config) { c.Forward.AckWait = time.Second })
	e.integration(map[string]any{"batch": map[string]any{"maxMessages": 50, "maxWait": "3s"}})
	sent := e.publish(1)
	tu.Eventually(t, 15*time.Second, 50*time.Millisecond, func() error {
		if len(e.rcv.Got()) == 0 {
			return fmt.Errorf("nothing yet")
		}
		return nil
	})
	var batch []map[string]any
	if err := json.Unmarshal(e.rcv.Got()[0].Body, &batch); err != nil {
		t.Fatal(err)
	}
	if len(batch) != len(sent) {
		t.Fatalf("first batch holds %d messages for %d published", len(batch), len(sent))
	}
}

// TestForwardUnreadableMessageInAFailingBatch: an unreadable message after
// good ones that cannot be delivered yet is dead-lettered, but must not
// move the delivery position past them: after a restart of the worker the
// good ones still arrive.
func TestForwardUnreadableMessageInAFailingBatch(t *testing.T) {
	e := newEnv(t, nil)
	var down atomic.Bool
	var accepted atomic.Int32 // messages in requests answered 200
	down.Store(true)
	e.rcv.Handle(func(w http.ResponseWriter, _ *http.Request, body []byte) bool {
		if down.Load() {
			w.WriteHeader(503)
			return true
		}
		var b []json.RawMessage
		_ = json.Unmarshal(body, &b)
		accepted.Add(int32(len(b)))
		return false
	})
	id, _ := e.integration(map[string]any{"batch": map[string]any{"maxMessages": 50, "maxWait": "2s"}})
	sent := e.publish(1)
	m := nats.NewMsg(names.Message(tenant, gwSer, devices[0], 13100))
	m.Data = []byte("not a sealed message")
	m.Header.Set("Iot-Tsm-Id", "13100")
	if _, err := e.n.JetStream().PublishMsg(context.Background(), m); err != nil {
		t.Fatal(err)
	}
	waitState(t, e, id, func(s forward.State) bool { return s.DeadLettered == 1 && s.Failed >= 2 })
	for _, op := range []string{"pause", "resume"} {
		if r := e.api.Do("POST", "/v1/tenants/"+tenant+"/integrations/"+id+"/"+op, e.api.Key(), nil); r.Status != 200 {
			t.Fatalf("%s: %d", op, r.Status)
		}
		time.Sleep(300 * time.Millisecond)
	}
	down.Store(false)
	tu.Eventually(t, 15*time.Second, 50*time.Millisecond, func() error {
		if n := int(accepted.Load()); n < len(sent) {
			return fmt.Errorf("%d of %d messages delivered", n, len(sent))
		}
		return nil
	})
	if dl := e.api.Do("GET", "/v1/tenants/"+tenant+"/integrations/"+id+"/dead-letters", e.api.Key(), nil); !strings.Contains(string(dl.Body), "message cannot be decoded") {
		t.Errorf("dead letters: %d %s", dl.Status, dl.Body)
	}
}

// TestForwardSessionErrorKeepsState: a session that fails before it read
// the stored state (here the sealed secrets cannot be opened) records its
// error without wiping the counters and the delivery position.
func TestForwardSessionErrorKeepsState(t *testing.T) {
	e := newEnv(t, nil)
	id, secret := e.integration(nil)
	sent := e.publish(1)
	waitArrived(t, e.rcv, secret, len(sent), 10*time.Second)
	before := waitState(t, e, id, func(s forward.State) bool { return s.Delivered == uint64(len(sent)) && s.AckedThrough > 0 }).State

	ctx := context.Background()
	kv, err := e.n.JetStream().KeyValue(ctx, forward.IntegrationsBucket(tenant))
	if err != nil {
		t.Fatal(err)
	}
	ent, err := kv.Get(ctx, id)
	if err != nil {
		t.Fatal(err)
	}
	orig := ent.Value()
	var rec map[string]any
	if err := json.Unmarshal(orig, &rec); err != nil {
		t.Fatal(err)
	}
	rec["sealedSecrets"] = "AAAA"
	bad, _ := json.Marshal(rec)
	if _, err := kv.Put(ctx, id, bad); err != nil {
		t.Fatal(err)
	}
	// The API cannot show an integration whose secrets do not open: read
	// the state where the engine keeps it.
	skv, err := e.n.JetStream().KeyValue(ctx, forward.StateBucket(tenant))
	if err != nil {
		t.Fatal(err)
	}
	var s forward.State
	tu.Eventually(t, 10*time.Second, 50*time.Millisecond, func() error {
		ent, err := skv.Get(ctx, id)
		if err != nil {
			return err
		}
		if err := json.Unmarshal(ent.Value(), &s); err != nil {
			return err
		}
		if s.LastErrorAt == nil || s.LastErrorAt.Before(*before.LastSuccessAt) {
			return fmt.Errorf("no error recorded yet: %+v", s)
		}
		return nil
	})
	if s.Delivered != before.Delivered || s.AckedThrough != before.AckedThrough || s.Batches != before.Batches {
		t.Fatalf("state after a failed session %+v, before %+v", s, before)
	}
	if _, err := kv.Put(ctx, id, orig); err != nil { // repaired
		t.Fatal(err)
	}
	sent = append(sent, e.publish(1)...)
	waitArrived(t, e.rcv, secret, len(sent), 15*time.Second)
	if s := waitState(t, e, id, func(s forward.State) bool { return s.Delivered == uint64(len(sent)) }).State; s.AckedThrough <= before.AckedThrough {
		t.Errorf("state after repair %+v", s)
	}
}

// TestForwardRetargetNeedsSecretsAgain: who may change an integration
// cannot point its stored credentials at a server of their own: moving the
// webhook to another host drops the API key header and the URL's query,
// and the update is refused until they are given again.
func TestForwardRetargetNeedsSecretsAgain(t *testing.T) {
	e := newEnv(t, nil)
	other := tu.NewReceiver(t)
	id, _ := e.integration(map[string]any{"webhook": map[string]any{
		"url": e.rcv.URL + "?code=AZFUNCKEY", "caPem": e.rcv.CAPEM,
		"auth": map[string]any{"kind": "apikey", "headerName": "X-Api-Key", "headerValue": "S3CRET-ERP-KEY"}}})
	path := "/v1/tenants/" + tenant + "/integrations/" + id
	r := e.api.Do("PATCH", path, e.api.Key(), map[string]any{"webhook": map[string]any{"url": other.URL + "?code=redacted", "caPem": other.CAPEM}})
	if code, _ := r.Problem(); r.Status != 400 || code != "webhook.auth_invalid" {
		t.Fatalf("retarget without the secrets: %d %s", r.Status, r.Body)
	}
	r = e.api.Do("PATCH", path, e.api.Key(), map[string]any{"webhook": map[string]any{"url": other.URL, "caPem": other.CAPEM, "auth": map[string]any{"headerValue": "NEW-KEY"}}})
	if r.Status != 200 {
		t.Fatalf("retarget with a new key: %d %s", r.Status, r.Body)
	}
	if r := e.api.Do("POST", path+"/test", e.api.Key(), nil); r.Status != 200 {
		t.Fatalf("test-send: %d %s", r.Status, r.Body)
	}
	got := other.Got()
	if len(got) == 0 {
		t.Fatal("nothing arrived at the new endpoint")
	}
	for _, d := range got {
		if d.Header.Get("X-Api-Key") != "NEW-KEY" || strings.Contains(d.URI, "AZFUNCKEY") {
			t.Errorf("the new endpoint got X-Api-Key %q, URI %q", d.Header.Get("X-Api-Key"), d.URI)
		}
	}
}

// TestForwardOneLaneRestartResendsUnderItsID: an integration delivering
// one batch at a time (delivery.concurrency 1, and every type but the
// webhook) resends the batch a restart interrupted under its webhook-id,
// with the same messages, before the ones after it; also when an
// unreadable message stored after the batch comes in the same fetch (it
// is dead-lettered, the batch keeps its id).
func TestForwardOneLaneRestartResendsUnderItsID(t *testing.T) {
	for _, tc := range []struct {
		name       string
		unreadable bool
	}{
		{name: "interrupted batch"},
		{name: "unreadable message after it", unreadable: true},
	} {
		t.Run(tc.name, func(t *testing.T) { testOneLaneRestartResendsUnderItsID(t, tc.unreadable) })
	}
}

func testOneLaneRestartResendsUnderItsID(t *testing.T, unreadable bool) {
	dir := t.TempDir()
	e := newEnv(t, func(c *node.Config) { c.DataDir = dir })
	var (
		mu       sync.Mutex
		hold     = true
		heldID   string
		heldBody []byte
		acc      accepted
	)
	e.rcv.Handle(func(w http.ResponseWriter, r *http.Request, body []byte) bool {
		mu.Lock()
		h := hold
		if h && heldID == "" {
			heldID, heldBody = r.Header.Get("webhook-id"), body
		}
		mu.Unlock()
		if h {
			<-r.Context().Done() // in flight until the node stops
			return true
		}
		acc.add(r, body)
		return false
	})
	e.integration(nil)
	sent := e.publish(2)
	tu.Eventually(t, 10*time.Second, 20*time.Millisecond, func() error {
		mu.Lock()
		defer mu.Unlock()
		if heldID == "" {
			return fmt.Errorf("no batch tried")
		}
		return nil
	})
	if unreadable {
		m := nats.NewMsg(names.Message(tenant, gwSer, devices[0], 13100))
		m.Data = []byte("not a sealed message")
		m.Header.Set("Iot-Tsm-Id", "13100")
		if _, err := e.n.JetStream().PublishMsg(context.Background(), m); err != nil {
			t.Fatal(err)
		}
	}
	_ = e.up.Close()
	e.n.Close()
	mu.Lock()
	hold = false
	id, body := heldID, heldBody
	mu.Unlock()

	e.restart(dir)
	tu.Eventually(t, 20*time.Second, 50*time.Millisecond, func() error {
		if got, _ := acc.messages(t); len(got) < len(sent) {
			return fmt.Errorf("%d of %d delivered", len(got), len(sent))
		}
		return nil
	})
	got, _ := acc.messages(t)
	checkOrder(t, got)
	acc.mu.Lock()
	first := acc.got[0]
	acc.mu.Unlock()
	if fid := first.Header.Get("webhook-id"); fid != id || !bytes.Equal(first.Body, body) {
		t.Errorf("the interrupted batch came back as %q with %s, not under its id %q with %s", fid, first.Body, id, body)
	}
}

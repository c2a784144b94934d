package forward

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/iotransit/iotransit/internal/backbone/names"
	"github.com/iotransit/iotransit/internal/fault"
)

// Faults of integration operations.
var (
	ErrNotWebhook       = fault.Define("forward.not_webhook", fault.InvalidArgument, "only webhook integrations have a signing secret")
	ErrTestFailed       = fault.Define("forward.test_failed", fault.Unavailable, "the test delivery failed")
	ErrDeadLetterAbsent = fault.Define("forward.dead_letter_not_found", fault.NotFound, "no such dead letter")
)

// GenerateWebhookSecret makes a Standard Webhooks secret: whsec_ and the
// base64 of 32 random bytes.
func GenerateWebhookSecret() (string, error) {
	b := make([]byte, 32)
	if _, err := rand.Read(b); err != nil {
		return "", err
	}
	return "whsec_" + base64.StdEncoding.EncodeToString(b), nil
}

// Shown are secrets the server made, returned once.
type Shown map[string]string

// prepare checks an integration and its secrets: common fields, the
// encryption key, and the type's own settings.
func (e *Engine) prepare(ctx context.Context, in *Integration, sec *Secrets) error {
	if err := normalize(in); err != nil {
		return err
	}
	if in.Encryption != nil {
		if e.cfg.ParseKey == nil {
			return ErrIntegrationInvalid.WithDetail("payload encryption is not available")
		}
		_, kid, err := e.cfg.ParseKey([]byte(in.Encryption.PublicKeyPEM))
		if err != nil {
			return ErrIntegrationInvalid.WithDetail("encryption.publicKeyPem must be an X25519 public key in PEM (iotransit keygen makes one)")
		}
		in.Encryption.KeyID = kid
	}
	if f := e.factories[in.Type]; f != nil {
		return f.Prepare(ctx, in, sec, e.cfg.Policy)
	}
	if in.Type != TypeWebsocket {
		return ErrIntegrationInvalid.WithDetail("type %s is not available on this server", in.Type)
	}
	return nil
}

// Create stores a new integration; its delivery starts with the messages
// stored from now on. Secrets the server generated are returned once.
func (e *Engine) Create(ctx context.Context, tenant string, in Integration) (Integration, Shown, error) {
	id, err := newID()
	if err != nil {
		return Integration{}, nil, err
	}
	now := time.Now().UTC()
	in.ID, in.Tenant, in.CreatedAt, in.UpdatedAt, in.Paused = id, tenant, now, now, false
	in.SecretsSet, in.PreviousSecretUntil, in.ClearSecrets = nil, nil, nil
	sec := extractSecrets(&in, Secrets{})
	shown := Shown{}
	if in.Type == TypeWebhook && in.Webhook != nil && sec.WebhookSecret == "" {
		if sec.WebhookSecret, err = GenerateWebhookSecret(); err != nil {
			return Integration{}, nil, err
		}
		shown["webhook.secret"] = sec.WebhookSecret
	}
	if err := e.prepare(ctx, &in, &sec); err != nil {
		return Integration{}, nil, err
	}
	existing, err := e.List(ctx, tenant)
	if err != nil {
		return Integration{}, nil, err
	}
	for _, x := range existing {
		if x.Name == in.Name {
			return Integration{}, nil, ErrNameTaken.New()
		}
	}
	if err := e.reserveName(ctx, tenant, in.Name, id); err != nil {
		return Integration{}, nil, err
	}
	if err := e.store(ctx, in, sec, 0); err != nil {
		e.releaseName(ctx, tenant, in.Name, id)
		return Integration{}, nil, err
	}
	return e.public(in, sec), shown, nil
}

// store writes the record (rev 0: create).
func (e *Engine) store(ctx context.Context, in Integration, sec Secrets, rev uint64) error {
	sealed, err := e.seal(ctx, in.Tenant, in.ID, sec)
	if err != nil {
		return err
	}
	b, err := json.Marshal(record{Integration: in, Sealed: sealed})
	if err != nil {
		return err
	}
	kv, err := e.bucket(ctx, in.Tenant)
	if err != nil {
		return err
	}
	if rev == 0 {
		_, err = kv.Create(ctx, in.ID, b)
	} else {
		_, err = kv.Update(ctx, in.ID, b, rev)
	}
	if errors.Is(err, jetstream.ErrKeyExists) {
		return fault.ErrInternal.Wrap(fmt.Errorf("forward: integration %s changed concurrently", in.ID))
	}
	return err
}

// public returns what the API shows: no secret values.
func (e *Engine) public(in Integration, sec Secrets) Integration {
	in.SecretsSet = sec.names()
	if !sec.WebhookPreviousUntil.IsZero() && time.Now().Before(sec.WebhookPreviousUntil) {
		t := sec.WebhookPreviousUntil
		in.PreviousSecretUntil = &t
	}
	return in
}

// View is an integration with its delivery state.
type View struct {
	Integration
	State       State  `json:"state"`
	Backlog     uint64 `json:"backlog"`
	DeadLetters uint64 `json:"deadLetters"`
}

// List returns a tenant's integrations, oldest first.
func (e *Engine) List(ctx context.Context, tenant string) ([]Integration, error) {
	kv, err := e.bucket(ctx, tenant)
	if err != nil {
		return nil, err
	}
	lister, err := kv.ListKeys(ctx)
	if err != nil {
		return nil, fmt.Errorf("forward: list integrations: %w", err)
	}
	out := []Integration{}
	for key := range lister.Keys() {
		r, _, err := e.load(ctx, tenant, key)
		if ErrIntegrationNotFound.Is(err) {
			continue
		}
		if err != nil {
			return nil, err
		}
		sec, err := e.secrets(ctx, r)
		if err != nil {
			return nil, err
		}
		out = append(out, e.public(r.Integration, sec))
	}
	slices.SortFunc(out, func(a, b Integration) int { return a.CreatedAt.Compare(b.CreatedAt) })
	return out, nil
}

// Get returns one integration with its state, backlog and dead letters.
func (e *Engine) Get(ctx context.Context, tenant, id string) (View, error) {
	r, _, err := e.load(ctx, tenant, id)
	if err != nil {
		return View{}, err
	}
	sec, err := e.secrets(ctx, r)
	if err != nil {
		return View{}, err
	}
	v := View{Integration: e.public(r.Integration, sec)}
	if v.State, err = e.loadState(ctx, tenant, id); err != nil {
		return View{}, err
	}
	v.State.Pending = nil
	if r.Type == TypeWebsocket {
		return v, nil
	}
	if st, err := e.js.Stream(ctx, names.MessageStream(tenant)); err == nil {
		if c, err := st.Consumer(ctx, names.IntegrationConsumer(id)); err == nil {
			if info, err := c.Info(ctx); err == nil {
				v.Backlog = info.NumPending + uint64(info.NumAckPending)
			}
		}
	}
	if st, err := e.js.Stream(ctx, names.DeadLetterStream(tenant, id)); err == nil {
		if info, err := st.Info(ctx); err == nil {
			v.DeadLetters = info.State.Msgs
		}
	}
	return v, nil
}

// Update replaces an integration's settings with in (name, filter, batch,
// maxAge, encryption, type settings). Secrets left empty keep their values.
func (e *Engine) Update(ctx context.Context, tenant, id string, in Integration) (Integration, error) {
	r, rev, err := e.load(ctx, tenant, id)
	if err != nil {
		return Integration{}, err
	}
	old, err := e.secrets(ctx, r)
	if err != nil {
		return Integration{}, err
	}
	if in.Type != "" && in.Type != r.Type {
		return Integration{}, ErrIntegrationInvalid.WithDetail("the type of an integration cannot change")
	}
	in.ID, in.Tenant, in.Type, in.CreatedAt, in.Paused = r.ID, r.Tenant, r.Type, r.CreatedAt, r.Paused
	in.UpdatedAt = time.Now().UTC()
	in.SecretsSet, in.PreviousSecretUntil = nil, nil
	if err := old.clear(in.ClearSecrets); err != nil {
		return Integration{}, err
	}
	in.ClearSecrets = nil
	old.forgetRetargeted(r.Integration, in)
	sec := extractSecrets(&in, old)
	if err := e.prepare(ctx, &in, &sec); err != nil {
		return Integration{}, err
	}
	if in.Name != r.Name {
		existing, err := e.List(ctx, tenant)
		if err != nil {
			return Integration{}, err
		}
		for _, x := range existing {
			if x.Name == in.Name && x.ID != id {
				return Integration{}, ErrNameTaken.New()
			}
		}
		if err := e.reserveName(ctx, tenant, in.Name, id); err != nil {
			return Integration{}, err
		}
	}
	if err := e.store(ctx, in, sec, rev); err != nil {
		if in.Name != r.Name {
			e.releaseName(ctx, tenant, in.Name, id)
		}
		return Integration{}, err
	}
	if in.Name != r.Name {
		e.releaseName(ctx, tenant, r.Name, id)
	}
	return e.public(in, sec), nil
}

// SetPaused pauses or resumes delivery; a paused integration's messages
// wait in its backlog.
func (e *Engine) SetPaused(ctx context.Context, tenant, id string, paused bool) (Integration, error) {
	r, rev, err := e.load(ctx, tenant, id)
	if err != nil {
		return Integration{}, err
	}
	sec, err := e.secrets(ctx, r)
	if err != nil {
		return Integration{}, err
	}
	r.Paused, r.UpdatedAt = paused, time.Now().UTC()
	if err := e.store(ctx, r.Integration, sec, rev); err != nil {
		return Integration{}, err
	}
	return e.public(r.Integration, sec), nil
}

// RotateSecret gives a webhook a new signing secret (returned once); the
// previous one keeps signing for overlap, so receivers can switch.
func (e *Engine) RotateSecret(ctx context.Context, tenant, id string, overlap time.Duration) (Integration, string, error) {
	r, rev, err := e.load(ctx, tenant, id)
	if err != nil {
		return Integration{}, "", err
	}
	if r.Type != TypeWebhook {
		return Integration{}, "", ErrNotWebhook.New()
	}
	if overlap < 0 || overlap > 30*24*time.Hour {
		return Integration{}, "", ErrIntegrationInvalid.WithDetail("overlap must be 0 to 720h")
	}
	sec, err := e.secrets(ctx, r)
	if err != nil {
		return Integration{}, "", err
	}
	secret, err := GenerateWebhookSecret()
	if err != nil {
		return Integration{}, "", err
	}
	sec.WebhookPrevious, sec.WebhookPreviousUntil, sec.WebhookSecret = sec.WebhookSecret, time.Now().UTC().Add(overlap), secret
	r.UpdatedAt = time.Now().UTC()
	if err := e.store(ctx, r.Integration, sec, rev); err != nil {
		return Integration{}, "", err
	}
	return e.public(r.Integration, sec), secret, nil
}

// Delete removes an integration, its consumer, dead letters and state.
func (e *Engine) Delete(ctx context.Context, tenant, id string) error {
	r, _, err := e.load(ctx, tenant, id)
	if err != nil {
		return err
	}
	kv, err := e.bucket(ctx, tenant)
	if err != nil {
		return err
	}
	if err := kv.Delete(ctx, id); err != nil {
		return fmt.Errorf("forward: delete integration: %w", err)
	}
	e.releaseName(ctx, tenant, r.Name, id)
	e.stopWorker(tenant, id)
	if st, err := e.js.Stream(ctx, names.MessageStream(tenant)); err == nil {
		if err := st.DeleteConsumer(ctx, names.IntegrationConsumer(id)); err != nil && !errors.Is(err, jetstream.ErrConsumerNotFound) {
			return fmt.Errorf("forward: delete consumer: %w", err)
		}
	}
	if err := e.js.DeleteStream(ctx, names.DeadLetterStream(tenant, id)); err != nil && !errors.Is(err, jetstream.ErrStreamNotFound) {
		return fmt.Errorf("forward: delete dead letters: %w", err)
	}
	if skv, err := e.kvs.KV(ctx, names.IntegrationStateBucket(tenant), 1); err == nil {
		_ = skv.Delete(ctx, id)
	}
	return nil
}

// TestResult is the outcome of a test delivery.
type TestResult struct {
	OK        bool    `json:"ok"`
	LatencyMS float64 `json:"latencyMs"`
	Error     string  `json:"error,omitempty"`
	BatchID   string  `json:"batchId"`
}

// TestSend delivers one synthetic message (tsmTuid XXXX00TESTMESSAGE) to the
// integration's endpoint now, outside its stream.
func (e *Engine) TestSend(ctx context.Context, tenant, id string) (TestResult, error) {
	r, _, err := e.load(ctx, tenant, id)
	if err != nil {
		return TestResult{}, err
	}
	f := e.factories[r.Type]
	if f == nil {
		return TestResult{}, ErrIntegrationInvalid.WithDetail("a %s integration has no endpoint to test", r.Type)
	}
	sec, err := e.secrets(ctx, r)
	if err != nil {
		return TestResult{}, err
	}
	var sealer Sealer
	if r.Encryption != nil && e.cfg.ParseKey != nil {
		if sealer, _, err = e.cfg.ParseKey([]byte(r.Encryption.PublicKeyPEM)); err != nil {
			return TestResult{}, err
		}
	}
	now := time.Now().UTC()
	ts := strconv.FormatInt(now.Unix(), 10)
	body := `{"tsmId":12100,"tsmEv":10,"tsmTs":` + ts + `,"tsmTuid":"XXXX00TESTMESSAGE","temp":21.5,"tsmCloudTs":` + ts + `,"tsmGw":"XXXX00TESTGATEWAY"}`
	b := &Batch{ID: newBatchID(), Tenant: tenant, Integration: id, Attempt: 1, Messages: []Message{{
		ID: "test", Gateway: "XXXX00TESTGATEWAY", Tuid: "XXXX00TESTMESSAGE", TsmID: 12100, ReceivedAt: now, Body: []byte(body),
	}}}
	tctx, cancel := context.WithTimeout(ctx, 15*time.Second)
	defer cancel()
	start := time.Now()
	t, err := f.New(tctx, r.Integration, sec, e.cfg.Policy, sealer)
	if err != nil {
		msg := "configuration refused"
		if fe, ok := fault.As(err); ok && fe.Kind() != fault.Internal {
			msg += ": " + fe.PublicMessage()
		}
		return TestResult{BatchID: b.ID, Error: msg}, nil
	}
	defer t.Close()
	err = t.Deliver(tctx, b)
	res := TestResult{OK: err == nil, LatencyMS: float64(time.Since(start).Microseconds()) / 1000, BatchID: b.ID}
	if err != nil {
		res.Error = Summary(err)
	}
	return res, nil
}

// DeadLetter is a message an integration gave up on.
type DeadLetter struct {
	Seq         uint64          `json:"seq"`
	OriginalSeq uint64          `json:"originalSeq"`
	ID          string          `json:"id"`
	Gateway     string          `json:"gateway"`
	ReceivedAt  time.Time       `json:"receivedAt"`
	DeadAt      time.Time       `json:"deadAt"`
	Reason      string          `json:"reason"`
	Attempts    int             `json:"attempts"`
	Message     json.RawMessage `json:"message"`
}

// DeadLetters lists an integration's dead letters, oldest first, after the
// dead-letter sequence after; next is the cursor for the following page.
func (e *Engine) DeadLetters(ctx context.Context, tenant, id string, after uint64, limit int) ([]DeadLetter, uint64, error) {
	if _, _, err := e.load(ctx, tenant, id); err != nil {
		return nil, 0, err
	}
	st, err := e.js.Stream(ctx, names.DeadLetterStream(tenant, id))
	if errors.Is(err, jetstream.ErrStreamNotFound) {
		return []DeadLetter{}, 0, nil
	}
	if err != nil {
		return nil, 0, err
	}
	out := []DeadLetter{}
	seq := after + 1
	for len(out) < limit {
		m, err := st.GetMsg(ctx, seq, jetstream.WithGetMsgSubject(names.DeadLetter(tenant, id)))
		if errors.Is(err, jetstream.ErrMsgNotFound) {
			return out, 0, nil
		}
		if err != nil {
			return nil, 0, err
		}
		sm, err := e.msgs.Decode(ctx, tenant, m.Sequence, m.Time, m.Header, m.Data)
		if err != nil { // listed without its message (it could not be read when it died either)
			sm.ID, sm.Gateway, sm.Message = contentID(m.Header), m.Header.Get("Iot-Gateway"), nil
		}
		orig, _ := strconv.ParseUint(m.Header.Get(hdrOrigSeq), 10, 64)
		attempts, _ := strconv.Atoi(m.Header.Get(hdrDeadAttempts))
		deadAt, _ := time.Parse(time.RFC3339Nano, m.Header.Get(hdrDeadAt))
		out = append(out, DeadLetter{
			Seq: m.Sequence, OriginalSeq: orig, ID: sm.ID, Gateway: sm.Gateway, ReceivedAt: sm.ReceivedAt,
			DeadAt: deadAt, Reason: m.Header.Get(hdrDeadReason), Attempts: attempts, Message: sm.Message,
		})
		seq = m.Sequence + 1
	}
	return out, out[len(out)-1].Seq, nil
}

// Redrive sends dead letters back to the integration (all of them when
// seqs is empty), in their order, and removes them from the dead-letter
// stream. It returns how many were re-driven.
func (e *Engine) Redrive(ctx context.Context, tenant, id string, seqs []uint64) (int, error) {
	if _, _, err := e.load(ctx, tenant, id); err != nil {
		return 0, err
	}
	st, err := e.js.Stream(ctx, names.DeadLetterStream(tenant, id))
	if errors.Is(err, jetstream.ErrStreamNotFound) {
		if len(seqs) > 0 {
			return 0, ErrDeadLetterAbsent.WithDetail("dead letter %d does not exist", seqs[0])
		}
		return 0, nil
	}
	if err != nil {
		return 0, err
	}
	slices.Sort(seqs)
	n := 0
	redrive := func(m *jetstream.RawStreamMsg) error {
		if err := e.msgs.Redrive(ctx, tenant, id, m.Header, m.Data); err != nil {
			return err
		}
		if err := st.DeleteMsg(ctx, m.Sequence); err != nil {
			return err
		}
		n++
		return nil
	}
	if len(seqs) > 0 {
		// All or nothing on the request's side: every one must exist first.
		msgs := make([]*jetstream.RawStreamMsg, 0, len(seqs))
		for _, s := range slices.Compact(seqs) {
			m, err := st.GetMsg(ctx, s)
			if errors.Is(err, jetstream.ErrMsgNotFound) {
				return 0, ErrDeadLetterAbsent.WithDetail("dead letter %d does not exist", s)
			}
			if err != nil {
				return 0, err
			}
			msgs = append(msgs, m)
		}
		for _, m := range msgs {
			if err := redrive(m); err != nil {
				return n, err
			}
		}
		return n, nil
	}
	for seq := uint64(1); ; {
		m, err := st.GetMsg(ctx, seq, jetstream.WithGetMsgSubject(names.DeadLetter(tenant, id)))
		if errors.Is(err, jetstream.ErrMsgNotFound) {
			return n, nil
		}
		if err != nil {
			return n, err
		}
		if err := redrive(m); err != nil {
			return n, err
		}
		seq = m.Sequence + 1
	}
}

// ValidID reports whether id has the form of an integration id.
func ValidID(id string) bool { return validID(id) && strings.ToLower(id) == id }

// Names are unique in a tenant across nodes: a name is claimed by creating
// the key nameKey(name) in the integrations bucket (atomic in JetStream),
// whose value is the owner's id. A claim left behind by a crash between the
// claim and the write of the integration (its owner missing, or named
// otherwise) is taken over once it is older than staleClaim.
var staleClaim = time.Minute

func nameKey(name string) string {
	h := sha256.Sum256([]byte(name))
	return "name." + hex.EncodeToString(h[:16])
}

// reserveName claims name for integration id (ErrNameTaken if another
// holds it).
func (e *Engine) reserveName(ctx context.Context, tenant, name, id string) error {
	kv, err := e.bucket(ctx, tenant)
	if err != nil {
		return err
	}
	k := nameKey(name)
	for range 3 {
		_, err := kv.Create(ctx, k, []byte(id))
		if err == nil {
			return nil
		}
		if !errors.Is(err, jetstream.ErrKeyExists) {
			return fmt.Errorf("forward: claim name: %w", err)
		}
		ent, err := kv.Get(ctx, k)
		if errors.Is(err, jetstream.ErrKeyNotFound) {
			continue // released meanwhile
		}
		if err != nil {
			return fmt.Errorf("forward: claim name: %w", err)
		}
		owner := string(ent.Value())
		if owner == id {
			return nil
		}
		if time.Since(ent.Created()) < staleClaim {
			return ErrNameTaken.New()
		}
		r, _, err := e.load(ctx, tenant, owner)
		if err == nil && r.Name == name {
			return ErrNameTaken.New()
		}
		if err != nil && !ErrIntegrationNotFound.Is(err) {
			return err
		}
		if _, err := kv.Update(ctx, k, []byte(id), ent.Revision()); err == nil {
			return nil
		} else if !errors.Is(err, jetstream.ErrKeyExists) {
			return fmt.Errorf("forward: claim name: %w", err)
		}
	}
	return ErrNameTaken.New()
}

// releaseName gives up id's claim on name. A failure leaves a claim that
// reserveName takes over later.
func (e *Engine) releaseName(ctx context.Context, tenant, name, id string) {
	kv, err := e.bucket(ctx, tenant)
	if err != nil {
		return
	}
	k := nameKey(name)
	ent, err := kv.Get(ctx, k)
	if err != nil || string(ent.Value()) != id {
		return
	}
	if err := kv.Delete(ctx, k, jetstream.LastRevision(ent.Revision())); err != nil {
		e.log.Warn("release integration name", "tenant_id", tenant, "integration_id", id, "error", err)
	}
}

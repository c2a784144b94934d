// The integrations registry: integrations as tenant resources, what the
// API calls. It checks them, keeps them in the tenant's integrations bucket
// (their secrets sealed), and answers with what a client may see; the
// engine follows the bucket and delivers.

package forward

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strconv"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/iotransit/iotransit/client"
	"github.com/iotransit/iotransit/internal/backbone/kverr"
	"github.com/iotransit/iotransit/internal/backbone/names"
	"github.com/iotransit/iotransit/internal/fault"
)

// Faults of integration operations.
var (
	ErrNotWebhook = fault.Define("forward.not_webhook", fault.InvalidArgument, "only webhook integrations have a signing secret")
	ErrTestFailed = fault.Define("forward.test_failed", fault.Unavailable, "the test delivery failed")
)

// Registry is every tenant's integrations as resources, what the API
// manages them with (api.Integrations): create, list, get, update, pause,
// rotate secrets, delete, test, and the dead letters. The registries of all
// nodes work on the same buckets, so any node serves any request.
type Registry struct {
	records
	cfg       Config
	js        jetstream.JetStream
	msgs      Messages
	factories map[string]Factory
	log       *slog.Logger
	// engine is this node's delivery engine (nil if it runs none): Delete
	// stops its worker before it removes what the worker uses.
	engine *Engine
}

// NewRegistry returns the registry. Of cfg it uses Policy and ParseKey; of
// deps neither Streams nor Metrics. engine, this node's delivery engine (or
// nil), is stopped from delivering an integration before Delete removes the
// integration's consumer, dead letters and state.
func NewRegistry(cfg Config, deps Deps, engine *Engine) *Registry {
	return &Registry{
		records: newRecords(deps), cfg: cfg, js: deps.JetStream, msgs: deps.Messages, factories: deps.Factories,
		log: deps.Logger.With("component", "forward"), engine: engine,
	}
}

// Shown are secrets the server made, returned once.
type Shown map[string]string

// prepare checks an integration and its secrets: common fields, the
// encryption key, and the type's own settings.
func (reg *Registry) prepare(ctx context.Context, in *Integration, sec *Secrets) error {
	if err := normalize(in); err != nil {
		return err
	}
	if in.Encryption != nil {
		if reg.cfg.ParseKey == nil {
			return ErrIntegrationInvalid.WithDetail("payload encryption is not available")
		}
		_, kid, err := reg.cfg.ParseKey([]byte(in.Encryption.PublicKeyPEM))
		if err != nil {
			return ErrIntegrationInvalid.WithDetail("encryption.publicKeyPem must be an X25519 public key in PEM (iotransit keygen makes one)")
		}
		in.Encryption.KeyID = kid
	}
	if f := reg.factories[in.Type]; f != nil {
		return f.Prepare(ctx, in, sec, reg.cfg.Policy)
	}
	if in.Type != TypeWebsocket {
		return ErrIntegrationInvalid.WithDetail("type %s is not available on this server", in.Type)
	}
	return nil
}

// Create stores a new integration; its delivery starts with the messages
// stored from now on. Secrets the server generated are returned once.
func (reg *Registry) Create(ctx context.Context, tenant string, in Integration) (Integration, Shown, error) {
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
	if err := reg.prepare(ctx, &in, &sec); err != nil {
		return Integration{}, nil, err
	}
	existing, err := reg.List(ctx, tenant)
	if err != nil {
		return Integration{}, nil, err
	}
	for _, x := range existing {
		if x.Name == in.Name {
			return Integration{}, nil, ErrNameTaken.New()
		}
	}
	if err := reg.reserveName(ctx, tenant, in.Name, id); err != nil {
		return Integration{}, nil, err
	}
	if err := reg.store(ctx, in, sec, 0); err != nil {
		reg.releaseName(ctx, tenant, in.Name, id)
		return Integration{}, nil, err
	}
	return reg.public(in, sec), shown, nil
}

// store writes the record (rev 0: create).
func (reg *Registry) store(ctx context.Context, in Integration, sec Secrets, rev uint64) error {
	sealed, err := reg.seal(ctx, in.Tenant, in.ID, sec)
	if err != nil {
		return err
	}
	b, err := json.Marshal(record{Integration: in, Sealed: sealed})
	if err != nil {
		return err
	}
	kv, err := reg.bucket(ctx, in.Tenant)
	if err != nil {
		return err
	}
	if rev == 0 {
		_, err = kv.Create(ctx, in.ID, b)
	} else {
		_, err = kv.Update(ctx, in.ID, b, rev)
	}
	if kverr.Conflict(err) {
		return fault.ErrInternal.Wrap(fmt.Errorf("forward: integration %s changed concurrently", in.ID))
	}
	return err
}

// public returns what the API shows: no secret values.
func (reg *Registry) public(in Integration, sec Secrets) Integration {
	in.SecretsSet = sec.names()
	if in.Delivery.Concurrency == 0 { // stored before the setting: what the engine uses
		in.Delivery.Concurrency = lanesOf(in)
	}
	if !sec.WebhookPreviousUntil.IsZero() && time.Now().Before(sec.WebhookPreviousUntil) {
		t := sec.WebhookPreviousUntil
		in.PreviousSecretUntil = &t
	}
	return in
}

// List returns a tenant's integrations, oldest first.
func (reg *Registry) List(ctx context.Context, tenant string) ([]Integration, error) {
	kv, err := reg.bucket(ctx, tenant)
	if err != nil {
		return nil, err
	}
	lister, err := kv.ListKeys(ctx)
	if err != nil {
		return nil, fmt.Errorf("forward: list integrations: %w", err)
	}
	out := []Integration{}
	for key := range lister.Keys() {
		r, _, err := reg.load(ctx, tenant, key)
		if ErrIntegrationNotFound.Is(err) {
			continue
		}
		if err != nil {
			return nil, err
		}
		sec, err := reg.secrets(ctx, r)
		if err != nil {
			return nil, err
		}
		out = append(out, reg.public(r.Integration, sec))
	}
	slices.SortFunc(out, func(a, b Integration) int { return a.CreatedAt.Compare(b.CreatedAt) })
	return out, nil
}

// Get returns one integration with its state, backlog and dead letters.
func (reg *Registry) Get(ctx context.Context, tenant, id string) (View, error) {
	r, _, err := reg.load(ctx, tenant, id)
	if err != nil {
		return View{}, err
	}
	sec, err := reg.secrets(ctx, r)
	if err != nil {
		return View{}, err
	}
	v := View{Integration: reg.public(r.Integration, sec)}
	if v.State, err = reg.loadState(ctx, tenant, id); err != nil {
		return View{}, err
	}
	v.State.Pending, v.State.Lanes, v.State.FormerLanes = nil, nil, nil
	if r.Type != TypeWebsocket {
		if st, err := reg.js.Stream(ctx, names.MessageStream(tenant)); err == nil {
			if c, err := st.Consumer(ctx, names.IntegrationConsumer(id)); err == nil {
				if info, err := c.Info(ctx); err == nil {
					v.Backlog = info.NumPending + uint64(info.NumAckPending)
				}
			}
		}
		v.DeadLetters = reg.deadLetterCount(ctx, tenant, id)
	}
	v.Health = v.health()
	return v, nil
}

// deadLetterCount counts the dead letters waiting (0 if unknown).
func (reg *Registry) deadLetterCount(ctx context.Context, tenant, id string) uint64 {
	if st, err := reg.js.Stream(ctx, names.DeadLetterStream(tenant, id)); err == nil {
		if info, err := st.Info(ctx); err == nil {
			return info.State.Msgs
		}
	}
	return 0
}

// Views returns a tenant's integrations, oldest first, each with its state,
// backlog and dead letters, as Get does, more cheaply: the backlogs come
// from one listing of the tenant's consumers, and the dead letters are
// counted only of integrations that ever had one.
func (reg *Registry) Views(ctx context.Context, tenant string) ([]View, error) {
	ins, err := reg.List(ctx, tenant)
	if err != nil {
		return nil, err
	}
	backlog := map[string]uint64{}
	if st, err := reg.js.Stream(ctx, names.MessageStream(tenant)); err == nil {
		infos := st.ListConsumers(ctx)
		for info := range infos.Info() {
			backlog[info.Name] = info.NumPending + uint64(info.NumAckPending)
		}
		if err := infos.Err(); err != nil {
			reg.log.Warn("list consumers", "tenant_id", tenant, "error", err)
		}
	}
	out := make([]View, 0, len(ins))
	for _, in := range ins {
		v := View{Integration: in}
		if v.State, err = reg.loadState(ctx, tenant, in.ID); err != nil {
			return nil, err
		}
		v.State.Pending, v.State.Lanes, v.State.FormerLanes = nil, nil, nil
		if in.Type != TypeWebsocket {
			v.Backlog = backlog[names.IntegrationConsumer(in.ID)]
			if v.State.DeadLettered > 0 {
				v.DeadLetters = reg.deadLetterCount(ctx, tenant, in.ID)
			}
		}
		v.Health = v.health()
		out = append(out, v)
	}
	return out, nil
}

// Update replaces an integration's settings with in (name, filter, batch,
// maxAge, encryption, type settings). Secrets left empty keep their values.
func (reg *Registry) Update(ctx context.Context, tenant, id string, in Integration) (Integration, error) {
	r, rev, err := reg.load(ctx, tenant, id)
	if err != nil {
		return Integration{}, err
	}
	old, err := reg.secrets(ctx, r)
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
	if err := reg.prepare(ctx, &in, &sec); err != nil {
		return Integration{}, err
	}
	if in.Name != r.Name {
		existing, err := reg.List(ctx, tenant)
		if err != nil {
			return Integration{}, err
		}
		for _, x := range existing {
			if x.Name == in.Name && x.ID != id {
				return Integration{}, ErrNameTaken.New()
			}
		}
		if err := reg.reserveName(ctx, tenant, in.Name, id); err != nil {
			return Integration{}, err
		}
	}
	if err := reg.store(ctx, in, sec, rev); err != nil {
		if in.Name != r.Name {
			reg.releaseName(ctx, tenant, in.Name, id)
		}
		return Integration{}, err
	}
	if in.Name != r.Name {
		reg.releaseName(ctx, tenant, r.Name, id)
	}
	return reg.public(in, sec), nil
}

// SetPaused pauses or resumes delivery; a paused integration's messages
// wait in its backlog.
func (reg *Registry) SetPaused(ctx context.Context, tenant, id string, paused bool) (Integration, error) {
	r, rev, err := reg.load(ctx, tenant, id)
	if err != nil {
		return Integration{}, err
	}
	sec, err := reg.secrets(ctx, r)
	if err != nil {
		return Integration{}, err
	}
	r.Paused, r.UpdatedAt = paused, time.Now().UTC()
	if err := reg.store(ctx, r.Integration, sec, rev); err != nil {
		return Integration{}, err
	}
	return reg.public(r.Integration, sec), nil
}

// How long a rotated webhook secret keeps signing beside the new one: when
// no overlap is asked, and the longest.
const (
	DefaultSecretOverlap = 24 * time.Hour
	MaxSecretOverlap     = 30 * 24 * time.Hour
)

// RotateSecret gives a webhook a new signing secret (returned once); the
// previous one keeps signing for overlap (0 to MaxSecretOverlap), so
// receivers can switch.
func (reg *Registry) RotateSecret(ctx context.Context, tenant, id string, overlap time.Duration) (Integration, string, error) {
	r, rev, err := reg.load(ctx, tenant, id)
	if err != nil {
		return Integration{}, "", err
	}
	if r.Type != TypeWebhook {
		return Integration{}, "", ErrNotWebhook.New()
	}
	if overlap < 0 || overlap > MaxSecretOverlap {
		return Integration{}, "", ErrIntegrationInvalid.WithDetail("overlap must be 0 to 720h")
	}
	sec, err := reg.secrets(ctx, r)
	if err != nil {
		return Integration{}, "", err
	}
	secret, err := GenerateWebhookSecret()
	if err != nil {
		return Integration{}, "", err
	}
	sec.WebhookPrevious, sec.WebhookPreviousUntil, sec.WebhookSecret = sec.WebhookSecret, time.Now().UTC().Add(overlap), secret
	r.UpdatedAt = time.Now().UTC()
	if err := reg.store(ctx, r.Integration, sec, rev); err != nil {
		return Integration{}, "", err
	}
	return reg.public(r.Integration, sec), secret, nil
}

// Delete removes an integration, its consumer, dead letters and state.
func (reg *Registry) Delete(ctx context.Context, tenant, id string) error {
	r, _, err := reg.load(ctx, tenant, id)
	if err != nil {
		return err
	}
	kv, err := reg.bucket(ctx, tenant)
	if err != nil {
		return err
	}
	if err := kv.Delete(ctx, id); err != nil {
		return fmt.Errorf("forward: delete integration: %w", err)
	}
	reg.releaseName(ctx, tenant, r.Name, id)
	reg.forgetRetry(ctx, kv, id)
	if reg.engine != nil { // it must not recreate what follows
		reg.engine.stopWorker(tenant, id)
	}
	if st, err := reg.js.Stream(ctx, names.MessageStream(tenant)); err == nil {
		if err := st.DeleteConsumer(ctx, names.IntegrationConsumer(id)); err != nil && !errors.Is(err, jetstream.ErrConsumerNotFound) {
			return fmt.Errorf("forward: delete consumer: %w", err)
		}
	}
	if err := reg.js.DeleteStream(ctx, names.DeadLetterStream(tenant, id)); err != nil && !errors.Is(err, jetstream.ErrStreamNotFound) {
		return fmt.Errorf("forward: delete dead letters: %w", err)
	}
	if skv, err := reg.stateBucket(ctx, tenant); err == nil {
		_ = skv.Delete(ctx, id)
	}
	return nil
}

// TestSend delivers one synthetic message (tsmTuid XXXX00TESTMESSAGE) to the
// integration's endpoint now, outside its stream.
func (reg *Registry) TestSend(ctx context.Context, tenant, id string) (TestResult, error) {
	r, _, err := reg.load(ctx, tenant, id)
	if err != nil {
		return TestResult{}, err
	}
	f := reg.factories[r.Type]
	if f == nil {
		return TestResult{}, ErrIntegrationInvalid.WithDetail("a %s integration has no endpoint to test", r.Type)
	}
	sec, err := reg.secrets(ctx, r)
	if err != nil {
		return TestResult{}, err
	}
	sealer, err := reg.cfg.sealer(r.Integration)
	if err != nil {
		return TestResult{}, err
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
	t, err := f.New(tctx, r.Integration, sec, reg.cfg.Policy, sealer)
	if err != nil {
		msg := "configuration refused"
		if fe, ok := fault.As(err); ok && fe.Kind() != fault.Internal {
			msg += ": " + fe.PublicMessage()
		}
		return TestResult{BatchID: b.ID, Error: msg, Code: client.TestConfigurationRefused}, nil
	}
	defer t.Close()
	err = t.Deliver(tctx, b)
	res := TestResult{OK: err == nil, LatencyMS: float64(time.Since(start).Microseconds()) / 1000, BatchID: b.ID}
	if err != nil {
		res.Error, res.Code = Summary(err), FailureCode(err)
	}
	return res, nil
}

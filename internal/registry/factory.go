// Factory provisioning and claims: serials made for a model, each with a
// one-time claim code, held unclaimed (reserved, of no tenant) until a
// tenant claims one with its code.

package registry

import (
	"context"
	"crypto/rand"
	"crypto/subtle"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/iotransit/iotransit/internal/backbone/kverr"
	"github.com/iotransit/iotransit/internal/backbone/names"
	"github.com/iotransit/iotransit/internal/credential"
	"github.com/iotransit/iotransit/internal/fault"
)

// Faults of factory provisioning and claims.
var (
	ErrModelInvalid = fault.Define("registry.model_invalid", fault.InvalidArgument, "a gateway model is 6 characters: 4 uppercase letters and 2 digits, the start of its serials (e.g. TSGW06)")
	ErrCountInvalid = fault.Define("registry.provision_count_invalid", fault.InvalidArgument, "a provisioning batch makes 1 to 1000 gateways")
	// ErrClaimInvalid is the one answer to every claim that does not bind
	// a gateway: unknown serial, wrong or spent code, a serial of another
	// tenant, a malformed serial or code. A caller learns nothing of which.
	ErrClaimInvalid = fault.Define("registry.claim_invalid", fault.NotFound, "no gateway can be claimed with this serial and claim code")
)

// MaxProvision is the most gateways one provisioning batch makes.
const MaxProvision = 1000

// FactoryGateway is a gateway made by factory provisioning: its serial is
// reserved from then on; it belongs to no tenant until claimed.
type FactoryGateway struct {
	Serial    string    `json:"serial"`
	Model     string    `json:"model"`
	Batch     string    `json:"batch"`
	CreatedAt time.Time `json:"createdAt"`
	// CodeHash is the claim code's hash (credential.HashSecret under
	// claimHashDomain); the code itself is never stored.
	CodeHash []byte `json:"codeHash"`
	// ClaimedBy and ClaimedAt record the claim that spent the code.
	ClaimedBy string     `json:"claimedBy,omitempty"`
	ClaimedAt *time.Time `json:"claimedAt,omitempty"`
}

// Provisioned is a gateway Provision made, with its claim code: the only
// place the code is ever given.
type Provisioned struct {
	Serial    string
	Model     string
	ClaimCode string
}

// A claim code is claimCodeLen characters of Crockford's base32 (5 bits
// each: 100 bits), shown in groups of 5 joined by '-'.
const (
	claimCodeLen    = 20
	claimAlphabet   = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"
	claimHashDomain = "iotransit/claim/v1"
	// unclaimedMarker is what the serials bucket holds for a serial
	// reserved by the factory (not a valid tenant id).
	unclaimedMarker = "-factory"
	// serialAlphabet is the alphabet of a serial's last 11 characters.
	serialAlphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"
)

// dummyClaimHash is compared against when no record holds a hash, so that
// an unknown serial costs what a known one does.
var dummyClaimHash = credential.HashSecret(claimHashDomain, strings.Repeat("0", claimCodeLen))

// ValidModel reports whether m is a gateway model: the 6 characters a
// Thingsee TUID starts with (4 uppercase letters, 2 digits).
func ValidModel(m string) bool {
	return len(m) == 6 && ValidSerial(m+"00000000000")
}

func (r *Registry) factory(ctx context.Context) (jetstream.KeyValue, error) {
	return r.kvs.KV(ctx, names.FactoryBucket, 1)
}

// Provision makes count gateways of model: random serials in TUID form
// (model + 11 random characters of A-Z0-9), each reserved across tenants
// and held unclaimed with the hash of a new one-time claim code. It returns
// the batch id and the gateways with their codes, which are given only
// here.
func (r *Registry) Provision(ctx context.Context, model string, count int) (string, []Provisioned, error) {
	if !ValidModel(model) {
		return "", nil, ErrModelInvalid.New()
	}
	if count < 1 || count > MaxProvision {
		return "", nil, ErrCountInvalid.New()
	}
	kv, err := r.factory(ctx)
	if err != nil {
		return "", nil, err
	}
	batch, err := randomString("0123456789abcdef", 16)
	if err != nil {
		return "", nil, err
	}
	out := make([]Provisioned, 0, count)
	for len(out) < count {
		p, err := r.provisionOne(ctx, kv, model, batch)
		if errors.Is(err, errSerialTaken) {
			continue // a random serial that exists: draw another
		}
		if err != nil {
			// Take back what was made: codes not given to anyone would
			// leave serials nobody can claim.
			for _, p := range out {
				_ = kv.Delete(context.WithoutCancel(ctx), p.Serial)
				_ = r.serKV.Delete(context.WithoutCancel(ctx), p.Serial)
			}
			return "", nil, err
		}
		out = append(out, p)
	}
	return batch, out, nil
}

var errSerialTaken = errors.New("registry: serial taken")

// provisionOne makes one gateway of Provision.
func (r *Registry) provisionOne(ctx context.Context, kv jetstream.KeyValue, model, batch string) (Provisioned, error) {
	tail, err := randomString(serialAlphabet, 11)
	if err != nil {
		return Provisioned{}, err
	}
	code, err := randomString(claimAlphabet, claimCodeLen)
	if err != nil {
		return Provisioned{}, err
	}
	serial := model + tail
	if _, err := r.serKV.Create(ctx, serial, []byte(unclaimedMarker)); err != nil {
		if kverr.Conflict(err) {
			return Provisioned{}, errSerialTaken
		}
		return Provisioned{}, fmt.Errorf("registry: reserve serial: %w", err)
	}
	rec := FactoryGateway{Serial: serial, Model: model, Batch: batch, CreatedAt: r.now().UTC(), CodeHash: credential.HashSecret(claimHashDomain, code)}
	b, err := json.Marshal(rec)
	if err == nil {
		_, err = kv.Put(ctx, serial, b) // a record of a serial deleted since and drawn again is replaced
	}
	if err != nil {
		_ = r.serKV.Delete(ctx, serial)
		return Provisioned{}, fmt.Errorf("registry: store factory gateway: %w", err)
	}
	return Provisioned{Serial: serial, Model: model, ClaimCode: formatClaimCode(code)}, nil
}

// Claim binds the unclaimed gateway serial to tenant, spending its claim
// code: from then on it is a gateway of the tenant like a registered one
// (enrollment tokens, certificates). Of concurrent claims of one serial
// exactly one wins. Every other outcome that is not a failure of the
// backbone is ErrClaimInvalid, with the same work done (a hash compared in
// constant time) whether the serial exists or not.
func (r *Registry) Claim(ctx context.Context, tenant, serial, code string) (Gateway, error) {
	te, err := r.entry(tenant)
	if err != nil {
		return Gateway{}, err
	}
	// The quota depends on the tenant alone: refusing before the code is
	// read tells nothing of the serial.
	release, err := r.admitGateway(te)
	if err != nil {
		return Gateway{}, err
	}
	defer release()
	norm, wellFormed := normalizeClaimCode(code)
	hash := credential.HashSecret(claimHashDomain, norm)
	if !ValidSerial(serial) {
		subtle.ConstantTimeCompare(hash, dummyClaimHash)
		return Gateway{}, ErrClaimInvalid.New()
	}
	kv, err := r.factory(ctx)
	if err != nil {
		return Gateway{}, err
	}
	rec, rev, err := read[FactoryGateway](ctx, kv, serial, "factory gateway")
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		subtle.ConstantTimeCompare(hash, dummyClaimHash)
		return Gateway{}, ErrClaimInvalid.New()
	}
	if err != nil {
		return Gateway{}, err
	}
	match := subtle.ConstantTimeCompare(hash, rec.CodeHash) == 1
	if !match || !wellFormed || rec.ClaimedAt != nil {
		return Gateway{}, ErrClaimInvalid.New()
	}
	// Spend the code: of concurrent claims only one wins the revision.
	unclaimed := rec
	now := r.now().UTC()
	rec.ClaimedBy, rec.ClaimedAt = tenant, &now
	b, err := json.Marshal(rec)
	if err != nil {
		return Gateway{}, err
	}
	spent, err := kv.Update(ctx, serial, b, rev)
	if errors.Is(err, jetstream.ErrKeyRevisionMismatch) { // 10071, or 10164 on a replicated bucket
		return Gateway{}, ErrClaimInvalid.New()
	}
	if err != nil {
		return Gateway{}, fmt.Errorf("registry: spend claim code: %w", err)
	}
	g, err := r.bindClaimed(ctx, te, serial)
	if err != nil {
		// Give the code back, so that the claim can be tried again.
		if ub, merr := json.Marshal(unclaimed); merr == nil {
			_, _ = kv.Update(context.WithoutCancel(ctx), serial, ub, spent)
		}
		return Gateway{}, err
	}
	return g, nil
}

// bindClaimed moves the reservation of an unclaimed serial to te's tenant
// and stores the gateway's record.
func (r *Registry) bindClaimed(ctx context.Context, te *tenantEntry, serial string) (Gateway, error) {
	e, err := r.serKV.Get(ctx, serial)
	if err != nil {
		return Gateway{}, fmt.Errorf("registry: read serial: %w", err)
	}
	if string(e.Value()) != unclaimedMarker {
		return Gateway{}, fmt.Errorf("registry: serial %s of a factory gateway is held by %q", serial, e.Value())
	}
	held, err := r.serKV.Update(ctx, serial, []byte(te.rec.ID), e.Revision())
	if err != nil {
		return Gateway{}, fmt.Errorf("registry: bind serial: %w", err)
	}
	g, err := r.createGateway(ctx, te, serial)
	if err != nil {
		_, _ = r.serKV.Update(context.WithoutCancel(ctx), serial, []byte(unclaimedMarker), held)
		return Gateway{}, err
	}
	return g, nil
}

// FactoryGateway returns the factory record of serial (its code hash
// cleared), and whether there is one.
func (r *Registry) FactoryGateway(ctx context.Context, serial string) (FactoryGateway, bool, error) {
	if !ValidSerial(serial) {
		return FactoryGateway{}, false, nil
	}
	kv, err := r.factory(ctx)
	if err != nil {
		return FactoryGateway{}, false, err
	}
	rec, _, err := read[FactoryGateway](ctx, kv, serial, "factory gateway")
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		return FactoryGateway{}, false, nil
	}
	if err != nil {
		return FactoryGateway{}, false, err
	}
	rec.CodeHash = nil
	return rec, true, nil
}

// normalizeClaimCode returns a claim code as it was made: upper case,
// without the separators ('-', spaces), with Crockford's readings of
// look-alikes (O as 0, I and L as 1). ok is false when the result is not
// a code's length and alphabet; it is then still a string to hash.
func normalizeClaimCode(code string) (string, bool) {
	if len(code) > 4*claimCodeLen {
		return "", false
	}
	var b strings.Builder
	ok := true
	for _, c := range strings.ToUpper(code) {
		switch c {
		case '-', ' ':
			continue
		case 'O':
			c = '0'
		case 'I', 'L':
			c = '1'
		}
		if !strings.ContainsRune(claimAlphabet, c) {
			ok = false
			continue
		}
		b.WriteRune(c)
	}
	s := b.String()
	return s, ok && len(s) == claimCodeLen
}

// formatClaimCode writes a code in groups of 5 joined by '-'.
func formatClaimCode(code string) string {
	var parts []string
	for i := 0; i < len(code); i += 5 {
		parts = append(parts, code[i:min(i+5, len(code))])
	}
	return strings.Join(parts, "-")
}

// randomString returns n characters of alphabet (at most 256), drawn
// uniformly from crypto/rand.
func randomString(alphabet string, n int) (string, error) {
	limit := 256 - 256%len(alphabet) // reject bytes beyond a multiple of the size
	out := make([]byte, 0, n)
	buf := make([]byte, 2*n)
	for len(out) < n {
		if _, err := rand.Read(buf); err != nil {
			return "", fmt.Errorf("registry: random: %w", err)
		}
		for _, c := range buf {
			if int(c) < limit && len(out) < n {
				out = append(out, alphabet[int(c)%len(alphabet)])
			}
		}
	}
	return string(out), nil
}

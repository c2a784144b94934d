package registry_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/iotransit/iotransit/internal/fault"
	"github.com/iotransit/iotransit/internal/registry"
	tu "github.com/iotransit/iotransit/internal/testutil"
)

func mustProvision(t *testing.T, n *node, model string, count int) []registry.Provisioned {
	t.Helper()
	var ps []registry.Provisioned
	_, err := call(func(c context.Context) (string, error) {
		batch, p, err := n.reg.Provision(c, model, count)
		ps = p
		return batch, err
	})
	if err != nil {
		t.Fatalf("provision %d of %s: %v", count, model, err)
	}
	return ps
}

func claim(n *node, tenant, serial, code string) (registry.Gateway, error) {
	return call(func(c context.Context) (registry.Gateway, error) { return n.reg.Claim(c, tenant, serial, code) })
}

// TestRegistryProvisionMakesSerialsOfTheModel: a batch makes distinct
// serials in TUID form starting with the model, each with a code of its
// own in groups of 5; the serials are reserved (a direct registration of
// one is refused) and belong to no tenant.
func TestRegistryProvisionMakesSerialsOfTheModel(t *testing.T) {
	n := newCluster(t).open()
	mustTenant(t, n, "acme")
	ps := mustProvision(t, n, "TSGW06", 50)
	if len(ps) != 50 {
		t.Fatalf("%d gateways made", len(ps))
	}
	serials, codes := map[string]bool{}, map[string]bool{}
	for _, p := range ps {
		if !registry.ValidSerial(p.Serial) || !strings.HasPrefix(p.Serial, "TSGW06") || p.Model != "TSGW06" {
			t.Errorf("serial %q of model %q", p.Serial, p.Model)
		}
		if len(p.ClaimCode) != 23 || strings.Count(p.ClaimCode, "-") != 3 {
			t.Errorf("claim code %q", p.ClaimCode)
		}
		serials[p.Serial], codes[p.ClaimCode] = true, true
	}
	if len(serials) != 50 || len(codes) != 50 {
		t.Errorf("%d distinct serials, %d distinct codes", len(serials), len(codes))
	}
	if _, err := call(func(c context.Context) (registry.Gateway, error) {
		return n.reg.RegisterGateway(c, "acme", ps[0].Serial)
	}); !registry.ErrGatewayExists.Is(err) {
		t.Errorf("registering a provisioned serial: %v", err)
	}
	if gws, _ := n.reg.Gateways("acme"); len(gws) != 0 {
		t.Errorf("the tenant has %d gateways before any claim", len(gws))
	}
	rec, ok, err := call2(n, ps[0].Serial)
	if err != nil || !ok || rec.ClaimedAt != nil || rec.CodeHash != nil || rec.Batch == "" {
		t.Errorf("factory record %+v, %v, %v", rec, ok, err)
	}
}

func call2(n *node, serial string) (registry.FactoryGateway, bool, error) {
	c, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	return n.reg.FactoryGateway(c, serial)
}

// TestRegistryProvisionRefusesBadInput: the model and the count are
// checked.
func TestRegistryProvisionRefusesBadInput(t *testing.T) {
	n := newCluster(t).open()
	for _, tc := range []struct {
		name  string
		model string
		count int
		want  *fault.Definition
	}{
		{name: "lowercase model", model: "tsgw06", count: 1, want: registry.ErrModelInvalid},
		{name: "long model", model: "TSGW066", count: 1, want: registry.ErrModelInvalid},
		{name: "zero", model: "TSGW06", count: 0, want: registry.ErrCountInvalid},
		{name: "too many", model: "TSGW06", count: registry.MaxProvision + 1, want: registry.ErrCountInvalid},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := call(func(c context.Context) (string, error) {
				b, _, err := n.reg.Provision(c, tc.model, tc.count)
				return b, err
			})
			if !tc.want.Is(err) {
				t.Errorf("got %v, want %v", err, tc.want)
			}
		})
	}
}

// TestRegistryClaimBindsOnceWithTheCode: the right code binds the serial
// to the tenant (an active gateway that can get an enrollment token); the
// code then is spent; anything else is ErrClaimInvalid. The code is read
// as a person types it: any case, without or with other separators.
func TestRegistryClaimBindsOnceWithTheCode(t *testing.T) {
	n := newCluster(t).open()
	mustTenant(t, n, "acme")
	mustTenant(t, n, "beta")
	ps := mustProvision(t, n, "TSGW06", 3)
	mustGateway(t, n, "beta", "TSGW06BET00000001")
	wrong := strings.Repeat("Z", 20)
	for _, tc := range []struct {
		name, serial, code string
	}{
		{name: "unknown serial", serial: "TSGW06XXX00000001", code: ps[0].ClaimCode},
		{name: "wrong code", serial: ps[0].Serial, code: wrong},
		{name: "another serial's code", serial: ps[0].Serial, code: ps[1].ClaimCode},
		{name: "another tenant's serial", serial: "TSGW06BET00000001", code: ps[0].ClaimCode},
		{name: "malformed serial", serial: "tsgw06;drop", code: ps[0].ClaimCode},
		{name: "empty code", serial: ps[0].Serial, code: ""},
		{name: "huge code", serial: ps[0].Serial, code: strings.Repeat("A", 10000)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if _, err := claim(n, "acme", tc.serial, tc.code); !registry.ErrClaimInvalid.Is(err) {
				t.Errorf("got %v, want registry.claim_invalid", err)
			}
		})
	}
	typed := strings.ToLower(strings.ReplaceAll(ps[0].ClaimCode, "-", " "))
	g, err := claim(n, "acme", ps[0].Serial, typed)
	if err != nil {
		t.Fatalf("claim with the code as typed %q: %v", typed, err)
	}
	if g.Tenant != "acme" || g.State != registry.StateActive || g.Incarnation == "" {
		t.Errorf("claimed gateway %+v", g)
	}
	if _, ok := n.reg.Gateway("acme", ps[0].Serial); !ok {
		t.Error("the claimed gateway is not the tenant's")
	}
	if _, _, err := call3(n, "acme", ps[0].Serial); err != nil {
		t.Errorf("enrollment token for the claimed gateway: %v", err)
	}
	for _, tenant := range []string{"acme", "beta"} {
		if _, err := claim(n, tenant, ps[0].Serial, ps[0].ClaimCode); !registry.ErrClaimInvalid.Is(err) {
			t.Errorf("claim with the spent code by %s: %v", tenant, err)
		}
	}
	if _, ok := n.reg.Gateway("beta", ps[0].Serial); ok {
		t.Error("the other tenant got the gateway")
	}
	rec, _, _ := call2(n, ps[0].Serial)
	if rec.ClaimedBy != "acme" || rec.ClaimedAt == nil {
		t.Errorf("factory record after the claim: %+v", rec)
	}
}

func call3(n *node, tenant, serial string) (registry.EnrollmentToken, string, error) {
	c, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	return n.reg.CreateEnrollmentToken(c, tenant, serial, 0, "test")
}

// TestRegistryRacingClaimsOneWins: claims of one serial with its code by
// many tenants on two nodes at once: exactly one binds it, every other is
// ErrClaimInvalid, and only the winner holds the gateway.
func TestRegistryRacingClaimsOneWins(t *testing.T) {
	c := newCluster(t)
	a, b := c.open(), c.open()
	tenants := []string{"t1", "t2", "t3", "t4", "t5", "t6", "t7", "t8"}
	for _, id := range tenants {
		mustTenant(t, a, id)
	}
	tu.Eventually(t, 5*time.Second, 10*time.Millisecond, func() error {
		for _, id := range tenants {
			if _, ok := b.reg.Tenant(id); !ok {
				return errors.New("the second node does not know " + id + " yet")
			}
		}
		return nil
	})
	p := mustProvision(t, a, "TSGW06", 1)[0]
	var wg sync.WaitGroup
	errs := make([]error, len(tenants))
	for i, id := range tenants {
		n := a
		if i%2 == 1 {
			n = b
		}
		wg.Go(func() { _, errs[i] = claim(n, id, p.Serial, p.ClaimCode) })
	}
	wg.Wait()
	var winners []string
	for i, err := range errs {
		switch {
		case err == nil:
			winners = append(winners, tenants[i])
		case !registry.ErrClaimInvalid.Is(err):
			t.Errorf("claim by %s: %v", tenants[i], err)
		}
	}
	if len(winners) != 1 {
		t.Fatalf("winners %v", winners)
	}
	// A claim made through b reaches a's memory through its watch.
	tu.Eventually(t, 5*time.Second, 10*time.Millisecond, func() error {
		for _, id := range tenants {
			if _, ok := a.reg.Gateway(id, p.Serial); ok != (id == winners[0]) {
				return fmt.Errorf("tenant %s holds the gateway: %v (winner %s)", id, ok, winners[0])
			}
		}
		return nil
	})
}

package firmware_test

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/theupdateframework/go-tuf/v2/metadata"

	"github.com/iotransit/iotransit/client"
	"github.com/iotransit/iotransit/internal/firmware"
	"github.com/iotransit/iotransit/internal/firmware/firmwaretest"
	"github.com/iotransit/iotransit/internal/node"
	"github.com/iotransit/iotransit/internal/testutil/nodetest"
)

func ctx(t *testing.T) context.Context {
	c, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	t.Cleanup(cancel)
	return c
}

// code returns the problem code of err ("" for none).
func code(err error) string {
	var p *client.Problem
	if errors.As(err, &p) {
		return p.Code
	}
	if err != nil {
		return err.Error()
	}
	return ""
}

func TestFirmwarePublishChecksSignerVersionAndImage(t *testing.T) {
	n := nodetest.Start(t, nodetest.NoLimits)
	repo := firmwaretest.Init(t, n, "acme")
	c := repo.Client
	good := []byte("firmware image 1.0.0")
	if err := repo.Publish(good, "TSGW06", "1.0.0"); err != nil {
		t.Fatalf("good publish: %v", err)
	}
	img2 := []byte("firmware image 1.1.0")
	if _, err := c.UploadFirmwareImage(ctx(t), "acme", img2); err != nil {
		t.Fatal(err)
	}
	other := firmwaretest.Key(t)
	current := repo.Targets()
	for _, tc := range []struct {
		name    string
		targets func() []byte
		want    string
	}{
		{"wrong signer", func() []byte { return repo.Sign(img2, "TSGW06", "1.1.0", other) }, "firmware.signature_invalid"},
		{"signed by the root key", func() []byte { return repo.Sign(img2, "TSGW06", "1.1.0", repo.RootKey) }, "firmware.signature_invalid"},
		{"image not uploaded", func() []byte { return repo.Sign([]byte("never uploaded"), "TSGW06", "1.1.0", repo.TargetsKey) }, "firmware.image_mismatch"},
		{"bad hash of an uploaded length", func() []byte {
			return repo.Sign([]byte("firmware image 1.1.X"), "TSGW06", "1.1.0", repo.TargetsKey)
		}, "firmware.image_mismatch"},
		{"replayed current version", func() []byte { return current }, "firmware.version_not_newer"},
		{"bad model", func() []byte { return mustFail(t, "TS-GW", "1.1.0") }, ""},
		{"tampered after signing", func() []byte {
			b := repo.Sign(img2, "TSGW06", "1.1.0", repo.TargetsKey)
			return []byte(replace(string(b), `"1.1.0"`, `"9.9.9"`))
		}, "firmware.signature_invalid"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			b := tc.targets()
			if b == nil {
				return
			}
			_, err := c.PublishFirmware(ctx(t), "acme", b)
			if got := code(err); got != tc.want {
				t.Fatalf("publish: %q, want %q (%v)", got, tc.want, err)
			}
		})
	}
	got, err := c.GetFirmwareRepository(ctx(t), "acme")
	if err != nil {
		t.Fatal(err)
	}
	if got.Roles.Targets.Version != 2 || len(got.Targets) != 1 || got.Targets[0].Name != "TSGW06-1.0.0" {
		t.Fatalf("after refusals the repository changed: %+v", got)
	}
	sum := sha256.Sum256(good)
	if got.Targets[0].SHA256 != hex.EncodeToString(sum[:]) || got.Targets[0].Length != int64(len(good)) {
		t.Fatalf("target: %+v", got.Targets[0])
	}
	if got.Roles.Snapshot.Version != 2 || got.Roles.Timestamp.Version != 2 {
		t.Fatalf("snapshot and timestamp follow each publish: %+v", got.Roles)
	}
}

// mustFail checks that the publisher's side refuses a bad model or version
// before anything is signed.
func mustFail(t *testing.T, model, version string) []byte {
	t.Helper()
	if _, err := firmware.AddTarget([]byte("{}"), []byte("x"), model, version, time.Now(), firmwaretest.Key(t)); err == nil {
		t.Errorf("AddTarget(%q, %q) accepted", model, version)
	}
	return nil
}

func replace(s, old, new string) string {
	for i := 0; i+len(old) <= len(s); i++ {
		if s[i:i+len(old)] == old {
			return s[:i] + new + s[i+len(old):]
		}
	}
	return s
}

func TestFirmwareInitRefusesARootWithoutTheOnlineKeys(t *testing.T) {
	n := nodetest.Start(t, nodetest.NoLimits)
	if _, err := n.CreateTenant(context.Background(), "acme"); err != nil {
		t.Fatal(err)
	}
	c := nodetest.NewAPI(t, n).Client
	rk, tk := firmwaretest.Key(t), firmwaretest.Key(t)
	online, err := c.FirmwareOnlineKeys(ctx(t), "acme")
	if err != nil {
		t.Fatal(err)
	}
	// The publisher's own key in place of the server's timestamp key: the
	// server could not sign timestamps, and an online key would be offline.
	swapped := *online
	swapped.Timestamp = swapped.Snapshot
	root, targets, err := firmware.NewRepository(rk, tk, swapped, time.Now().AddDate(1, 0, 0), time.Now().AddDate(0, 1, 0))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.InitFirmware(ctx(t), "acme", client.InitFirmwareRequest{Root: root, Targets: targets}); code(err) != "firmware.metadata_invalid" {
		t.Fatalf("init with a wrong timestamp key: %v", err)
	}
	root, targets, err = firmware.NewRepository(rk, tk, *online, time.Now().AddDate(1, 0, 0), time.Now().AddDate(0, 1, 0))
	if err != nil {
		t.Fatal(err)
	}
	// Targets signed by the root key instead of the targets key.
	_, badTargets, _ := firmware.NewRepository(rk, rk, *online, time.Now().AddDate(1, 0, 0), time.Now().AddDate(0, 1, 0))
	if _, err := c.InitFirmware(ctx(t), "acme", client.InitFirmwareRequest{Root: root, Targets: badTargets}); code(err) != "firmware.signature_invalid" {
		t.Fatalf("init with targets of another key: %v", err)
	}
	if _, err := c.InitFirmware(ctx(t), "acme", client.InitFirmwareRequest{Root: root, Targets: targets}); err != nil {
		t.Fatal(err)
	}
	if _, err := c.InitFirmware(ctx(t), "acme", client.InitFirmwareRequest{Root: root, Targets: targets}); code(err) != "firmware.repository_exists" {
		t.Fatalf("second init: %v", err)
	}
	again, err := c.FirmwareOnlineKeys(ctx(t), "acme")
	if err != nil || *again != *online {
		t.Fatalf("online keys changed: %v %+v", err, again)
	}
}

func TestFirmwareScopes(t *testing.T) {
	n := nodetest.Start(t, nodetest.NoLimits)
	repo := firmwaretest.Init(t, n, "acme")
	op := repo.Client
	key := func(scopes ...string) *client.Client {
		k, err := op.CreateAPIKey(ctx(t), "acme", client.CreateAPIKeyRequest{Name: "k", Scopes: scopes, TTL: "1h"})
		if err != nil {
			t.Fatal(err)
		}
		return op.WithCredential(k.Key)
	}
	reader, gateways := key(client.ScopeFirmwareRead), key(client.ScopeGatewaysWrite)
	img := []byte("image")
	if _, err := reader.GetFirmwareRepository(ctx(t), "acme"); err != nil {
		t.Fatalf("firmware:read reads: %v", err)
	}
	for _, tc := range []struct {
		name string
		call func() error
	}{
		{"upload with firmware:read", func() error { _, err := reader.UploadFirmwareImage(ctx(t), "acme", img); return err }},
		{"publish with firmware:read", func() error { _, err := reader.PublishFirmware(ctx(t), "acme", repo.Targets()); return err }},
		{"rollout with firmware:read", func() error {
			_, err := reader.CreateRollout(ctx(t), "acme", client.CreateRolloutRequest{Target: "TSGW06", Version: "1", Serials: []string{"X"}})
			return err
		}},
		{"read with gateways:write", func() error { _, err := gateways.GetFirmwareRepository(ctx(t), "acme"); return err }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var p *client.Problem
			if err := tc.call(); !errors.As(err, &p) || p.Status != http.StatusForbidden || p.Code != "api.scope_missing" {
				t.Fatalf("want 403 api.scope_missing, got %v", err)
			}
		})
	}
}

func TestFirmwareGatewayReadsOnlyItsTenantsRepository(t *testing.T) {
	n := nodetest.Start(t, nodetest.NoLimits)
	acme := firmwaretest.Init(t, n, "acme")
	firmwaretest.Init(t, n, "globex")
	img := []byte("acme-only image")
	if err := acme.Publish(img, "TSGW06", "2.0.0"); err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256(img)
	name := hex.EncodeToString(sum[:]) + ".TSGW06-2.0.0"
	gw := func(tenant, serial string) *client.Client {
		cert := nodetest.Gateway(t, n, tenant, serial)
		c, err := client.New(client.Config{Server: "https://" + n.APIAddr(), CAPEM: n.ServerCAPEM(), Certificate: cert})
		if err != nil {
			t.Fatal(err)
		}
		return c
	}
	mine, foreign := gw("acme", "TSGW06ACME0000001"), gw("globex", "TSGW06GLBX0000001")
	if b, err := mine.GatewayFirmwareImage(ctx(t), name, 1<<20); err != nil || string(b) != string(img) {
		t.Fatalf("own tenant's image: %v", err)
	}
	acmeRoot, err := mine.GatewayTUF(ctx(t), "1.root.json", 1<<20)
	if err != nil || string(acmeRoot) != string(acme.Root) {
		t.Fatalf("own root: %v", err)
	}
	if _, err := foreign.GatewayFirmwareImage(ctx(t), name, 1<<20); code(err) != "firmware.not_found" {
		t.Fatalf("another tenant's image: %v", err)
	}
	if b, err := foreign.GatewayTUF(ctx(t), "1.root.json", 1<<20); err != nil || string(b) == string(acmeRoot) {
		t.Fatalf("a globex gateway got acme's root (or none of its own): %v", err)
	}
	anon, _ := client.New(client.Config{Server: "https://" + n.APIAddr(), CAPEM: n.ServerCAPEM()})
	if _, err := anon.GatewayTUF(ctx(t), "timestamp.json", 1<<20); code(err) != "api.client_certificate_required" {
		t.Fatalf("without a client certificate: %v", err)
	}
	// An image uploaded but never published is not served, even under a
	// published target's name.
	unpublished := []byte("uploaded, never signed")
	if _, err := acme.Client.UploadFirmwareImage(ctx(t), "acme", unpublished); err != nil {
		t.Fatal(err)
	}
	usum := sha256.Sum256(unpublished)
	if _, err := mine.GatewayFirmwareImage(ctx(t), hex.EncodeToString(usum[:])+".TSGW06-2.0.0", 1<<20); code(err) != "firmware.not_found" {
		t.Fatalf("an unpublished image: %v", err)
	}
	if _, err := mine.GatewayTUF(ctx(t), "../root.json", 1<<20); err == nil {
		t.Fatal("a path outside the metadata names answered")
	}
}

// TestFirmwareTimestampIsRefreshedBeforeItExpires drives the server's
// clock: past half of its life the timestamp gateways fetch is a new one,
// while a server that stopped refreshing (a freeze) would leave it to
// expire, which the updater's tests show gateways refuse.
func TestFirmwareTimestampIsRefreshedBeforeItExpires(t *testing.T) {
	var mu sync.Mutex
	now := time.Now()
	clock := func() time.Time { mu.Lock(); defer mu.Unlock(); return now }
	n := nodetest.Start(t, func(c *node.Config) {
		nodetest.NoLimits(c)
		c.Firmware.Now = clock
		c.Firmware.TimestampTTL = time.Hour
	})
	firmwaretest.Init(t, n, "acme")
	gw, err := client.New(client.Config{Server: "https://" + n.APIAddr(), CAPEM: n.ServerCAPEM(), Certificate: nodetest.Gateway(t, n, "acme", "TSGW06ACME0000001")})
	if err != nil {
		t.Fatal(err)
	}
	version := func() (int64, time.Time) {
		b, err := gw.GatewayTUF(ctx(t), "timestamp.json", 1<<14)
		if err != nil {
			t.Fatal(err)
		}
		ts, err := metadata.Timestamp().FromBytes(b)
		if err != nil {
			t.Fatal(err)
		}
		return ts.Signed.Version, ts.Signed.Expires
	}
	v1, exp1 := version()
	mu.Lock()
	now = now.Add(20 * time.Minute)
	mu.Unlock()
	if v, _ := version(); v != v1 {
		t.Fatalf("a timestamp with 40 of 60 minutes left was re-signed: %d → %d", v1, v)
	}
	mu.Lock()
	now = now.Add(15 * time.Minute)
	mu.Unlock()
	v2, exp2 := version()
	if v2 != v1+1 || !exp2.After(exp1) {
		t.Fatalf("a timestamp with 25 of 60 minutes left: version %d (was %d), expires %v (was %v)", v2, v1, exp2, exp1)
	}
}

func TestFirmwareRolloutsByLabelAndReportsOfOthers(t *testing.T) {
	n := nodetest.Start(t, nodetest.NoLimits)
	repo := firmwaretest.Init(t, n, "acme")
	if err := repo.Publish([]byte("img"), "TSGW06", "1.0.0"); err != nil {
		t.Fatal(err)
	}
	c := repo.Client
	certs := map[string]*client.Client{}
	for _, g := range []struct{ tenant, serial, site string }{
		{"acme", "TSGW06ACME0000001", "hq"}, {"acme", "TSGW06ACME0000002", "hq"}, {"acme", "TSGW06ACME0000003", "depot"},
		{"globex", "TSGW06GLBX0000001", "hq"},
	} {
		cert := nodetest.Gateway(t, n, g.tenant, g.serial)
		if _, err := n.Registry().SetLabels(context.Background(), g.tenant, g.serial, map[string]string{"site": g.site}); err != nil {
			t.Fatal(err)
		}
		gc, err := client.New(client.Config{Server: "https://" + n.APIAddr(), CAPEM: n.ServerCAPEM(), Certificate: cert})
		if err != nil {
			t.Fatal(err)
		}
		certs[g.serial] = gc
	}
	ro, err := c.CreateRollout(ctx(t), "acme", client.CreateRolloutRequest{Target: "TSGW06", Version: "1.0.0", Labels: map[string]string{"site": "hq"}})
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, g := range ro.Gateways {
		got = append(got, g.Serial)
	}
	if strings.Join(got, ",") != "TSGW06ACME0000001,TSGW06ACME0000002" {
		t.Fatalf("rollout by label site=hq: %v", got)
	}
	rep := client.FirmwareReport{RolloutID: ro.ID, State: client.FirmwareDownloading}
	for _, tc := range []struct {
		name, serial string
		rep          client.FirmwareReport
		want         string
	}{
		{"a gateway the rollout names", "TSGW06ACME0000001", rep, ""},
		{"a gateway of the tenant it does not name", "TSGW06ACME0000003", rep, "firmware.rollout_not_found"},
		{"another tenant's gateway", "TSGW06GLBX0000001", rep, "firmware.rollout_not_found"},
		{"a failure without a reason", "TSGW06ACME0000002", client.FirmwareReport{RolloutID: ro.ID, State: client.FirmwareFailed}, "firmware.report_invalid"},
		{"an unknown state", "TSGW06ACME0000002", client.FirmwareReport{RolloutID: ro.ID, State: "pending"}, "firmware.report_invalid"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if err := certs[tc.serial].ReportFirmware(ctx(t), tc.rep); code(err) != tc.want {
				t.Fatalf("report: %v, want %q", err, tc.want)
			}
		})
	}
	after, err := c.GetRollout(ctx(t), "acme", ro.ID)
	if err != nil {
		t.Fatal(err)
	}
	if after.Gateways[0].State != client.FirmwareDownloading || after.Gateways[1].State != client.FirmwarePending {
		t.Fatalf("rollout after the reports: %+v", after.Gateways)
	}
	if _, err := c.GetRollout(ctx(t), "globex", ro.ID); err == nil {
		t.Fatal("another tenant read the rollout")
	}
}

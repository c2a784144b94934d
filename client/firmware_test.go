package client_test

import (
	"crypto/ed25519"
	"crypto/sha256"
	"crypto/tls"
	"encoding/hex"
	"strconv"
	"testing"
	"time"

	"github.com/iotransit/iotransit/client"
	"github.com/iotransit/iotransit/internal/firmware"
	"github.com/iotransit/iotransit/internal/firmware/firmwaretest"
)

// firmware sets up the tenant's TUF repository, publishes an image, rolls
// it out to the enrolled gateway, and reads and reports as that gateway.
func (e *env) firmware(t *testing.T, gwCert *tls.Certificate) {
	online := must[*client.FirmwareOnlineKeys](t)(e.op.FirmwareOnlineKeys(ctx(t), tenant))
	e.sameAsSent(t, online)
	rk, tk := firmwaretest.Key(t), firmwaretest.Key(t)
	root, targets, err := firmware.NewRepository(rk, tk, *online, time.Now().AddDate(1, 0, 0), time.Now().AddDate(0, 1, 0))
	if err != nil {
		t.Fatal(err)
	}
	repo := must[*client.FirmwareRepository](t)(e.op.InitFirmware(ctx(t), tenant, client.InitFirmwareRequest{Root: root, Targets: targets}))
	e.sameAsSent(t, repo)
	image := []byte("client test firmware")
	img := must[*client.FirmwareImage](t)(e.op.UploadFirmwareImage(ctx(t), tenant, image))
	e.sameAsSent(t, img)
	cur := must[[]byte](t)(e.op.FirmwareMetadata(ctx(t), tenant, strconv.FormatInt(repo.Roles.Targets.Version, 10)+".targets.json"))
	next, err := firmware.AddTarget(cur, image, "TSGW06", "1.0.0", time.Now().AddDate(0, 1, 0), tk)
	if err != nil {
		t.Fatal(err)
	}
	repo = must[*client.FirmwareRepository](t)(e.op.PublishFirmware(ctx(t), tenant, next))
	if len(repo.Targets) != 1 || repo.Targets[0].SHA256 != img.SHA256 {
		t.Errorf("repository after publish %+v", repo)
	}
	_, err = e.op.PublishFirmware(ctx(t), tenant, next)
	wantProblem(t, err, 409, "firmware.version_not_newer")
	// A root rotation that keeps the keys needs no new targets.
	next2, err := firmware.NextRoot(root, rk, rk, tk.Public().(ed25519.PublicKey), time.Now().AddDate(1, 0, 0))
	if err != nil {
		t.Fatal(err)
	}
	if repo = must[*client.FirmwareRepository](t)(e.op.RotateFirmwareRoot(ctx(t), tenant, client.RotateFirmwareRootRequest{Root: next2})); repo.Roles.Root.Version != 2 {
		t.Errorf("root after rotation %+v", repo.Roles.Root)
	}
	got := must[*client.FirmwareRepository](t)(e.op.GetFirmwareRepository(ctx(t), tenant))
	e.sameAsSent(t, got)
	ro := must[*client.Rollout](t)(e.op.CreateRollout(ctx(t), tenant, client.CreateRolloutRequest{Target: "TSGW06", Version: "1.0.0", Serials: []string{serial}}))
	e.sameAsSent(t, ro)
	_, err = e.op.CreateRollout(ctx(t), tenant, client.CreateRolloutRequest{Target: "TSGW06", Version: "9.9.9", Serials: []string{serial}})
	wantProblem(t, err, 400, "firmware.rollout_invalid")

	gw, err := client.New(client.Config{Server: e.n.APIAddr(), CAPEM: e.n.ServerCAPEM(), Certificate: gwCert})
	if err != nil {
		t.Fatal(err)
	}
	defer gw.Close()
	if ts := must[[]byte](t)(gw.GatewayTUF(ctx(t), "timestamp.json", 1<<14)); len(ts) == 0 {
		t.Error("empty timestamp")
	}
	sum := sha256.Sum256(image)
	if b := must[[]byte](t)(gw.GatewayFirmwareImage(ctx(t), hex.EncodeToString(sum[:])+".TSGW06-1.0.0", 1<<20)); string(b) != string(image) {
		t.Errorf("image %q", b)
	}
	// An answer longer than the length the caller expects is refused.
	if _, err := gw.GatewayFirmwareImage(ctx(t), hex.EncodeToString(sum[:])+".TSGW06-1.0.0", 4); err == nil {
		t.Error("a longer image than asked for was read")
	}
	if err := gw.ReportFirmware(ctx(t), client.FirmwareReport{RolloutID: ro.ID, State: client.FirmwareFailed, Reason: "hash_mismatch"}); err != nil {
		t.Fatal(err)
	}
	e.called = append(e.called, "GET /v1/gw/tuf/{file}", "GET /v1/gw/tuf/targets/{name}", "POST /v1/gw/firmware/report")
	ro = must[*client.Rollout](t)(e.op.GetRollout(ctx(t), tenant, ro.ID))
	e.sameAsSent(t, ro)
	if len(ro.Gateways) != 1 || ro.Gateways[0].State != client.FirmwareFailed || ro.Gateways[0].Reason != "hash_mismatch" {
		t.Errorf("rollout %+v", ro)
	}
}

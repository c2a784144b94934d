package api_test

import (
	"context"
	"crypto/ed25519"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/iotransit/iotransit/apispec"
	"github.com/iotransit/iotransit/client"
	"github.com/iotransit/iotransit/internal/api"
	"github.com/iotransit/iotransit/internal/firmware"
	"github.com/iotransit/iotransit/internal/firmware/firmwaretest"
	"github.com/iotransit/iotransit/internal/testutil/nodetest"
)

// firmwareRequest fills a firmware route's path and body from the tenant's
// repository, made by the operator on first use (after the route that
// creates it, which comes first in the route table).
func (w *world) firmwareRequest(rt api.Route, tenant string) (path string, body any) {
	w.t.Helper()
	if w.fw == nil {
		w.fw = map[string]*firmwaretest.Repo{}
	}
	repo := w.fw[tenant]
	if repo == nil {
		repo = firmwaretest.New(w.t, w.api.Client, tenant)
		w.fw[tenant] = repo
	}
	ctx := context.Background()
	initialised := func() {
		if _, err := w.api.Client.GetFirmwareRepository(ctx, tenant); client.ErrorCode(err) == "firmware.repository_not_found" {
			if _, err := w.api.Client.InitFirmware(ctx, tenant, repo.InitRequest()); err != nil {
				w.t.Fatal(err)
			}
		}
	}
	version := func() string { return fmt.Sprintf("1.%d", w.seq.Add(1)) }
	path = strings.ReplaceAll(rt.Pattern, "{tenant}", tenant)
	switch {
	case strings.HasSuffix(rt.Pattern, "/repository") && rt.Method == "POST":
		body = repo.InitRequest()
	case strings.HasSuffix(rt.Pattern, "/online-keys"):
	case strings.Contains(rt.Pattern, "/images/"):
		image := []byte("image " + version())
		sum := sha256.Sum256(image)
		path = strings.ReplaceAll(path, "{sha256}", hex.EncodeToString(sum[:]))
		body = image
	case strings.HasSuffix(rt.Pattern, "/root"):
		initialised()
		root, err := firmware.NextRoot(repo.Root, repo.RootKey, repo.RootKey, repo.TargetsKey.Public().(ed25519.PublicKey), time.Now().AddDate(1, 0, 0))
		if err != nil {
			w.t.Fatal(err)
		}
		body = client.RotateFirmwareRootRequest{Root: root}
	case strings.HasSuffix(rt.Pattern, "/targets"):
		initialised()
		image := []byte("image " + version())
		if _, err := w.api.Client.UploadFirmwareImage(ctx, tenant, image); err != nil {
			w.t.Fatal(err)
		}
		body = client.PublishFirmwareRequest{Targets: json.RawMessage(repo.Sign(image, "TSGW06", version(), repo.TargetsKey))}
	default:
		initialised()
		v := version()
		if err := repo.Publish([]byte("image "+v), "TSGW06", v); err != nil {
			w.t.Fatal(err)
		}
		req := client.CreateRolloutRequest{Target: "TSGW06", Version: v, Serials: []string{w.gateway(tenant)}}
		body = req
		if strings.Contains(rt.Pattern, "{id}") {
			ro, err := w.api.Client.CreateRollout(ctx, tenant, req)
			if err != nil {
				w.t.Fatal(err)
			}
			path, body = strings.ReplaceAll(path, "{id}", ro.ID), nil
		}
		path = strings.ReplaceAll(path, "{file}", "1.root.json")
	}
	return path, body
}

// TestOpenAPIDescribesFirmwareAnswers drives the firmware routes, as the
// publisher and as a gateway over mutual TLS, and checks every answer
// (and refusal) against the document.
func TestOpenAPIDescribesFirmwareAnswers(t *testing.T) {
	s := parseSpec(t, apispec.OpenAPI)
	ops, _ := s.operations(t)
	n := nodetest.Start(t, nodetest.NoLimits)
	a := &apiClient{t: t, s: s, ops: ops, base: "https://" + n.APIAddr(),
		c: &http.Client{Timeout: 20 * time.Second, Transport: &http.Transport{TLSClientConfig: nodetest.ClientTLS(t, n, nil)}}}
	op := n.OperatorKey()
	const serial = "TSGW06ACM00000077"
	cert := nodetest.Gateway(t, n, "acme", serial)
	gw := *a
	gw.c = &http.Client{Timeout: 20 * time.Second, Transport: &http.Transport{TLSClientConfig: nodetest.ClientTLS(t, n, cert)}}
	js := func(v any) string {
		b, err := json.Marshal(v)
		if err != nil {
			t.Fatal(err)
		}
		return string(b)
	}
	base := "/v1/tenants/acme/firmware"
	a.call("GET /v1/tenants/{tenant}/firmware/repository", base+"/repository", op, "", "", 404)
	a.call("GET /v1/tenants/{tenant}/firmware/online-keys", base+"/online-keys", op, "", "", 200)
	repo := firmwaretest.New(t, nodetest.NewAPI(t, n).Client, "acme")
	a.call("POST /v1/tenants/{tenant}/firmware/repository", base+"/repository", op, "", js(repo.InitRequest()), 201)
	a.call("POST /v1/tenants/{tenant}/firmware/repository", base+"/repository", op, "", js(repo.InitRequest()), 409)
	img := []byte("openapi firmware")
	sum := sha256.Sum256(img)
	a.call("PUT /v1/tenants/{tenant}/firmware/images/{sha256}", base+"/images/"+hex.EncodeToString(sum[:]), op, "application/octet-stream", string(img), 200)
	a.call("PUT /v1/tenants/{tenant}/firmware/images/{sha256}", base+"/images/"+strings.Repeat("0", 64), op, "application/octet-stream", string(img), 400)
	a.call("GET /v1/tenants/{tenant}/firmware/metadata/{file}", base+"/metadata/1.targets.json", op, "", "", 200)
	a.call("GET /v1/tenants/{tenant}/firmware/metadata/{file}", base+"/metadata/9.targets.json", op, "", "", 404)
	targets := repo.Sign(img, "TSGW06", "1.0.0", repo.TargetsKey)
	a.call("POST /v1/tenants/{tenant}/firmware/targets", base+"/targets", op, "", js(client.PublishFirmwareRequest{Targets: targets}), 200)
	a.call("POST /v1/tenants/{tenant}/firmware/targets", base+"/targets", op, "", js(client.PublishFirmwareRequest{Targets: targets}), 409)
	a.call("POST /v1/tenants/{tenant}/firmware/targets", base+"/targets", op, "", js(client.PublishFirmwareRequest{Targets: repo.Sign(img, "TSGW06", "1.0.1", repo.RootKey)}), 403)
	a.call("GET /v1/tenants/{tenant}/firmware/repository", base+"/repository", op, "", "", 200)
	root2, err := firmware.NextRoot(repo.Root, repo.RootKey, repo.RootKey, repo.TargetsKey.Public().(ed25519.PublicKey), time.Now().AddDate(1, 0, 0))
	if err != nil {
		t.Fatal(err)
	}
	a.call("POST /v1/tenants/{tenant}/firmware/root", base+"/root", op, "", js(client.RotateFirmwareRootRequest{Root: root2}), 200)
	a.call("POST /v1/tenants/{tenant}/firmware/root", base+"/root", op, "", js(client.RotateFirmwareRootRequest{Root: root2}), 409)
	ro := a.call("POST /v1/tenants/{tenant}/firmware/rollouts", base+"/rollouts", op, "", js(client.CreateRolloutRequest{Target: "TSGW06", Version: "1.0.0", Serials: []string{serial}}), 201)
	a.call("POST /v1/tenants/{tenant}/firmware/rollouts", base+"/rollouts", op, "", js(client.CreateRolloutRequest{Target: "TSGW06", Version: "1.0.0"}), 400)
	id, _ := ro["id"].(string)
	gw.call("GET /v1/gw/tuf/{file}", "/v1/gw/tuf/timestamp.json", "", "", "", 200)
	gw.call("GET /v1/gw/tuf/{file}", "/v1/gw/tuf/2.root.json", "", "", "", 200)
	gw.call("GET /v1/gw/tuf/{file}", "/v1/gw/tuf/3.root.json", "", "", "", 404)
	a.call("GET /v1/gw/tuf/{file}", "/v1/gw/tuf/timestamp.json", "", "", "", 401)
	gw.call("GET /v1/gw/tuf/targets/{name}", "/v1/gw/tuf/targets/"+hex.EncodeToString(sum[:])+".TSGW06-1.0.0", "", "", "", 200)
	gw.call("GET /v1/gw/tuf/targets/{name}", "/v1/gw/tuf/targets/"+hex.EncodeToString(sum[:])+".TSGW06-9.0.0", "", "", "", 404)
	gw.call("POST /v1/gw/firmware/report", "/v1/gw/firmware/report", "", "", js(client.FirmwareReport{RolloutID: id, State: client.FirmwareInstalled}), 204)
	gw.call("POST /v1/gw/firmware/report", "/v1/gw/firmware/report", "", "", js(client.FirmwareReport{RolloutID: id, State: "bogus"}), 400)
	a.call("POST /v1/gw/firmware/report", "/v1/gw/firmware/report", "", "", js(client.FirmwareReport{RolloutID: id, State: client.FirmwareInstalled}), 401)
	got := a.call("GET /v1/tenants/{tenant}/firmware/rollouts/{id}", base+"/rollouts/"+id, op, "", "", 200)
	if gws, _ := got["gateways"].([]any); len(gws) != 1 || gws[0].(map[string]any)["state"] != "installed" {
		t.Errorf("rollout %v", got)
	}
	a.call("GET /v1/tenants/{tenant}/firmware/rollouts/{id}", base+"/rollouts/ro_0000000000000000", op, "", "", 404)
}

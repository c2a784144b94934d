package api_test

import (
	"context"
	"crypto/ed25519"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"strings"
	"time"

	"github.com/iotransit/iotransit/client"
	"github.com/iotransit/iotransit/internal/api"
	"github.com/iotransit/iotransit/internal/firmware"
	"github.com/iotransit/iotransit/internal/firmware/firmwaretest"
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

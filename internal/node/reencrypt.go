package node

import (
	"context"
	"strconv"
	"time"

	"github.com/iotransit/iotransit/client"
	"github.com/iotransit/iotransit/internal/audit"
	"github.com/iotransit/iotransit/internal/backbone/names"
	"github.com/iotransit/iotransit/internal/firmware"
	"github.com/iotransit/iotransit/internal/forward"
	"github.com/iotransit/iotransit/internal/kms"
	"github.com/iotransit/iotransit/internal/meshnet"
	"github.com/iotransit/iotransit/internal/reencrypt"
	"github.com/iotransit/iotransit/internal/registry"
)

// startReencryption starts the node's re-encryption service: it resumes
// the jobs this node left running (at once) and those of stopped nodes
// (once their lease expired), until the node closes.
func (n *Node) startReencryption(cfg reencrypt.Config) *reencrypt.Service {
	cfg.OnEnd = n.auditReencryption
	svc := reencrypt.New(cfg, n.keys, n.bb, n.bb.JS, n.sealedData, n.log)
	n.onClose(svc.Close)
	go svc.Run(n.ctx)
	return svc
}

// sealedData lists what a tenant keeps sealed under its data key: the
// records re-sealed after a rotation (the CA key in the tenant record,
// integration secrets, mesh network keys, firmware online keys) and the
// streams of sealed messages (accepted, rejected, each integration's dead
// letters). Firmware images are not sealed (TUF signs them; they are
// public to the tenant's gateways); API keys, enrollment tokens and claim
// codes are stored hashed.
func (n *Node) sealedData(ctx context.Context, tenant string) ([]reencrypt.Records, []reencrypt.Stream, error) {
	recs := []reencrypt.Records{
		{Kind: "tenant-ca", Bucket: names.TenantsBucket, Keys: []string{tenant},
			Reseal: func(_ string, b []byte, reseal kms.ResealFunc) ([]byte, bool, error) {
				return registry.ResealTenant(b, reseal)
			}},
		{Kind: "integrations", Bucket: names.IntegrationsBucket(tenant), Reseal: forward.ResealRecord},
		{Kind: "mesh", Bucket: names.MeshBucket, Keys: []string{meshnet.NetworkKey(tenant)},
			Reseal: func(_ string, b []byte, reseal kms.ResealFunc) ([]byte, bool, error) {
				return meshnet.ResealNetwork(tenant, b, reseal)
			}},
		{Kind: "firmware-keys", Bucket: names.FirmwareKeysBucket, Keys: firmware.OnlineKeyNames(tenant),
			Reseal: func(key string, b []byte, reseal kms.ResealFunc) ([]byte, bool, error) {
				return firmware.ResealOnlineKey(tenant, key, b, reseal)
			}},
	}
	streams := []reencrypt.Stream{
		{Kind: "messages", Name: names.MessageStream(tenant)},
		{Kind: "rejected", Name: names.RejectedStream(tenant)},
	}
	ins, err := n.fwdReg.List(ctx, tenant)
	if err != nil {
		return nil, nil, err
	}
	for _, in := range ins {
		streams = append(streams, reencrypt.Stream{Kind: "deadletters", Name: names.DeadLetterStream(tenant, in.ID)})
	}
	return recs, streams, nil
}

// auditReencryption records the end of a tenant's re-encryption job in its
// audit log (its start is audited by the API).
func (n *Node) auditReencryption(tenant string, j client.KMSReencryption) {
	resealed := 0
	for _, r := range j.Records {
		resealed += r.Resealed
	}
	ev := audit.Event{Actor: "system", Action: "kms.reencrypt.end", Target: "kms:data-key", Outcome: "ok",
		Detail: map[string]string{
			"state": j.State, "targetVersion": strconv.FormatUint(uint64(j.TargetVersion), 10),
			"pass": strconv.Itoa(j.Pass), "resealed": strconv.Itoa(resealed), "node": j.Node,
		}}
	if j.State == client.ReencryptFailed {
		ev.Outcome, ev.Detail["error"] = "reencrypt.failed", j.LastError
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := n.audit.Append(ctx, tenant, ev); err != nil {
		n.log.Warn("re-encryption: audit of its end failed", "tenant_id", tenant, "error", err)
	}
}

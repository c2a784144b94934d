package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"maps"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/iotransit/iotransit/client"
	"github.com/iotransit/iotransit/internal/securefile"
)

// meshAdmin is "iotransit mesh key|node": the tenant's sensor mesh network
// keys and authorized nodes (mesh-sim, in meshsim.go, is a command of its
// own).
func meshAdmin(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	groups := map[string]*group{"key": meshKeyGroup, "node": meshNodeGroup}
	if len(args) > 0 {
		if g, ok := groups[args[0]]; ok {
			return g.run(ctx, args[1:], stdout, stderr)
		}
	}
	if len(args) > 0 && !wantsHelp(args[:1]) {
		return unknownCommand("mesh command", args[0], []string{"key", "node"}, meshUsage, stderr)
	}
	w := stderr
	if len(args) > 0 {
		w = stdout
	}
	fmt.Fprint(w, meshUsage)
	if w == stdout {
		return nil
	}
	return flag.ErrHelp
}

const meshUsage = `iotransit mesh: the tenant's secured sensor mesh.

Usage:
  iotransit mesh key create|rotate|list|export   the network keys, by epoch
  iotransit mesh node add|list|remove            the authorized sensor nodes

See: iotransit mesh key -h, iotransit mesh node -h
`

// meshKeyGroup is "iotransit mesh key".
var meshKeyGroup = &group{
	name:    "mesh key",
	summary: "create, rotate, list and export the tenant's mesh network keys",
	cmds: []command{
		{name: "create", summary: "create the tenant's mesh network and its first key (epoch 1)", tenant: true,
			run: func(ctx context.Context, e *env, _ []string) error {
				// Only where there is no network: create must never rotate.
				_, err := e.api.MeshKeys(ctx, e.tenant)
				var p *client.Problem
				switch {
				case err == nil:
					return usageError("the tenant has a mesh network already: use iotransit mesh key rotate")
				case !errors.As(err, &p) || p.Code != "meshnet.network_not_found":
					return err
				}
				return rotateMesh(ctx, e, nil)
			}},
		{name: "rotate", synopsis: "[--grace 24h]", summary: "make a new key epoch current; the previous one stays accepted for the grace period", tenant: true,
			flags: func(fs *flag.FlagSet) action {
				grace := fs.Duration("grace", 24*time.Hour, "how long gateways keep accepting the previous epoch (0s: not at all; at most 720h)")
				return func(ctx context.Context, e *env, _ []string) error {
					if *grace < 0 || *grace%time.Second != 0 {
						return usageError("--grace must be whole seconds, not negative")
					}
					s := int64(*grace / time.Second)
					return rotateMesh(ctx, e, &s)
				}
			}},
		{name: "list", summary: "list the key epochs (never the keys)", tenant: true,
			run: func(ctx context.Context, e *env, _ []string) error {
				k, err := e.api.MeshKeys(ctx, e.tenant)
				if err != nil {
					return err
				}
				return e.show(k, meshKeysTable(*k))
			}},
		{name: "export", synopsis: "[--out FILE]", summary: "write the key file commissioning and mesh-sim --network-key-file read (0600; audited)", tenant: true,
			flags: func(fs *flag.FlagSet) action {
				out := fs.String("out", "", "file to write the key file to, replaced if it exists, mode 0600 (default: stdout)")
				return func(ctx context.Context, e *env, _ []string) error {
					b, err := e.api.ExportMeshKeys(ctx, e.tenant)
					if err != nil {
						return err
					}
					defer clear(b)
					if *out == "" {
						_, err := e.stdout.Write(b)
						return err
					}
					if err := securefile.WriteAtomic(*out, b, 0o600); err != nil {
						return fmt.Errorf("mesh key export: %w", err)
					}
					e.done("wrote the mesh key file %s (0600): it holds the network keys", *out)
					return nil
				}
			}},
	},
}

// rotateMesh creates or rotates the tenant's network and shows its epochs.
func rotateMesh(ctx context.Context, e *env, graceSeconds *int64) error {
	k, err := e.api.RotateMeshKey(ctx, e.tenant, client.MeshKeyRequest{GraceSeconds: graceSeconds})
	if err != nil {
		return err
	}
	return e.show(k, meshKeysTable(*k))
}

// meshKeysTable writes a network's epochs, one a row.
func meshKeysTable(k client.MeshKeys) func(w io.Writer) error {
	return func(w io.Writer) error {
		fmt.Fprintf(w, "network %d, key set version %d\n", k.NetworkID, k.Version)
		return rows([]string{"EPOCH", "CREATED", "ACCEPTED-UNTIL"}, k.Epochs, func(ep client.MeshEpoch) []string {
			until := "current"
			if ep.NotAfter != nil {
				until = fmtTime(ep.NotAfter)
			}
			return []string{strconv.FormatUint(uint64(ep.Epoch), 10), fmtTime(&ep.CreatedAt), until}
		})(w)
	}
}

// meshNodeGroup is "iotransit mesh node".
var meshNodeGroup = &group{
	name:    "mesh node",
	summary: "authorize, list and remove the tenant's mesh sensor nodes",
	cmds: []command{
		{name: "add", args: []string{"node-ids"}, summary: "authorize nodes (comma-separated ids, 1 to 4294967295)", tenant: true,
			run: func(ctx context.Context, e *env, args []string) error {
				ids, err := parseNodeIDs(args[0])
				if err != nil {
					return err
				}
				res, err := e.api.AddMeshNodes(ctx, e.tenant, ids)
				if err != nil {
					return err
				}
				return e.show(res, func(w io.Writer) error {
					_, err := fmt.Fprintf(w, "authorized %d new node(s) of %d; node list version %d\n", len(res.Added), len(ids), res.Version)
					return err
				})
			}},
		{name: "list", summary: "list the authorized nodes", tenant: true,
			run: func(ctx context.Context, e *env, _ []string) error {
				l, err := e.api.MeshNodes(ctx, e.tenant)
				if err != nil {
					return err
				}
				return e.show(l, rows([]string{"NODE"}, l.Nodes, func(id uint32) []string { return []string{strconv.FormatUint(uint64(id), 10)} }))
			}},
		{name: "remove", args: []string{"node-id"}, summary: "take a node off the authorized list", tenant: true,
			run: func(ctx context.Context, e *env, args []string) error {
				ids, err := parseNodeIDs(args[0])
				if err != nil || len(ids) != 1 {
					return usageError("mesh node remove takes one node id")
				}
				if err := e.api.DeleteMeshNode(ctx, e.tenant, ids[0]); err != nil {
					return err
				}
				e.done("removed node %d", ids[0])
				return nil
			}},
	},
}

// parseNodeIDs reads comma-separated node ids.
func parseNodeIDs(s string) ([]uint32, error) {
	var ids []uint32
	for f := range strings.SplitSeq(s, ",") {
		n, err := strconv.ParseUint(strings.TrimSpace(f), 10, 32)
		if err != nil || n == 0 {
			return nil, usageError("%q is not a node id (1 to 4294967295)", f)
		}
		ids = append(ids, uint32(n))
	}
	return ids, nil
}

// gatewayStatusRows adds what a gateway last said of itself to its table
// (iotransit gateway get): when it was last seen, its agent and firmware,
// its queue and its mesh counters.
func gatewayStatusRows(t *table, g *client.Gateway) {
	t.row("LAST-SEEN:", fmtTime(g.LastSeen))
	if g.StatusAt == nil {
		return
	}
	t.row("AGENT:", g.AgentVersion)
	if f := g.Firmware; f != nil {
		t.row("FIRMWARE:", f.Version+" (slot "+orDash(f.Slot)+")")
	}
	if g.QueueDepth != nil && g.QueueDropped != nil {
		t.row("QUEUE:", fmt.Sprintf("%d waiting, %d dropped", *g.QueueDepth, *g.QueueDropped))
	}
	if m := g.Mesh; m != nil {
		dropped := make([]string, 0, len(m.Dropped))
		for _, r := range slices.Sorted(maps.Keys(m.Dropped)) {
			dropped = append(dropped, fmt.Sprintf("%s=%d", r, m.Dropped[r]))
		}
		t.row("MESH:", fmt.Sprintf("%d accepted; dropped: %s", m.Accepted, orDash(strings.Join(dropped, ","))))
	}
}

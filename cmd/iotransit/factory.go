package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/iotransit/iotransit/client"
	"github.com/iotransit/iotransit/internal/securefile"
)

// factoryGroup is "iotransit factory": the operator's provisioning of
// gateways at the factory. A tenant claims them with "iotransit gateway
// claim" (claimCmd).
var factoryGroup = &group{
	name:    "factory",
	summary: "provision gateways at the factory: serials with one-time claim codes (operator key)",
	cmds: []command{
		{name: "provision", synopsis: "--count N --model TSGW06 --out DIR", summary: "make N unclaimed gateways of a model and write a label file (0600) per gateway and a manifest into DIR",
			flags: func(fs *flag.FlagSet) action {
				count := fs.Int("count", 0, "how many gateways to make, 1 to 1000 (required)")
				model := fs.String("model", "", "the model, the 6 characters the serials start with, e.g. TSGW06 (required)")
				out := fs.String("out", "", "directory to write the label files and the manifest to (made 0700 if missing; required)")
				return func(ctx context.Context, e *env, _ []string) error {
					if *count < 1 || *model == "" || *out == "" {
						return usageError("factory provision needs --count N (1 to 1000), --model and --out DIR")
					}
					return provision(ctx, e, client.ProvisionGatewaysRequest{Count: *count, Model: *model}, *out)
				}
			}},
	},
}

// labelFile is the name of a gateway's label file in the provisioning
// directory.
func labelFile(serial string) string { return serial + ".label" }

// manifest is what "factory provision" writes beside the label files: the
// batch and its gateways, without their claim codes (they are only in the
// label files).
type manifest struct {
	Batch     string          `json:"batch"`
	Model     string          `json:"model"`
	CreatedAt time.Time       `json:"createdAt"`
	Gateways  []manifestEntry `json:"gateways"`
}

type manifestEntry struct {
	Serial string `json:"serial"`
	Label  string `json:"label"`
}

// provision asks the server for a batch and writes its label files and
// manifest into dir. The directory is checked before the request: once the
// server answers, the codes exist nowhere else.
func provision(ctx context.Context, e *env, req client.ProvisionGatewaysRequest, dir string) error {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return err
	}
	probe, err := os.CreateTemp(dir, ".probe-*")
	if err != nil {
		return fmt.Errorf("--out %s is not writable: %w", dir, err)
	}
	probe.Close()
	os.Remove(probe.Name())

	b, err := e.api.ProvisionGateways(ctx, req)
	if err != nil {
		return err
	}
	m := manifest{Batch: b.Batch, Model: b.Model, CreatedAt: b.CreatedAt, Gateways: make([]manifestEntry, 0, len(b.Gateways))}
	for _, g := range b.Gateways {
		label := fmt.Sprintf("serial: %s\nmodel: %s\nclaim-code: %s\n", g.Serial, g.Model, g.ClaimCode)
		if err := securefile.WriteExcl(filepath.Join(dir, labelFile(g.Serial)), []byte(label), 0o600); err != nil {
			return fmt.Errorf("batch %s: write the label of %s (%d of %d written): %w", b.Batch, g.Serial, len(m.Gateways), len(b.Gateways), err)
		}
		m.Gateways = append(m.Gateways, manifestEntry{Serial: g.Serial, Label: labelFile(g.Serial)})
	}
	mb, err := json.MarshalIndent(m, "", "  ")
	if err != nil {
		return err
	}
	manifestPath := filepath.Join(dir, "manifest-"+b.Batch+".json")
	if err := securefile.WriteExcl(manifestPath, append(mb, '\n'), 0o600); err != nil {
		return err
	}
	return e.show(m, func(w io.Writer) error {
		t := newTable(w, "SERIAL", "MODEL", "LABEL")
		for _, g := range m.Gateways {
			t.row(g.Serial, m.Model, filepath.Join(dir, g.Label))
		}
		if err := t.flush(); err != nil {
			return err
		}
		fmt.Fprintf(w, "\nbatch %s: %d gateways, manifest %s\n", m.Batch, len(m.Gateways), manifestPath)
		fmt.Fprintf(w, "The claim codes are only in the label files (0600): print them on the devices' labels,\nthen destroy the files. A tenant claims a gateway with:\n  iotransit gateway claim --tenant T --serial SERIAL --code-file FILE\n")
		return nil
	})
}

// claimCmd is "iotransit gateway claim": a tenant binds a provisioned
// gateway with the claim code from its label.
var claimCmd = command{name: "claim", synopsis: "--serial S --code C|--code-file F", summary: "claim a factory-provisioned gateway with the claim code on its label", tenant: true,
	flags: func(fs *flag.FlagSet) action {
		serial := fs.String("serial", "", "the serial on the gateway's label (required)")
		code := newSecretFlag(fs, "code", "the claim code on the label (prefer --code-file)", "file holding the claim code, or a label file of 'factory provision'")
		return func(ctx context.Context, e *env, _ []string) error {
			if *serial == "" {
				return usageError("gateway claim needs --serial (or IOTRANSIT_SERIAL)")
			}
			c, err := code.Need(e.onCmdLine)
			if err != nil {
				return err
			}
			g, err := e.api.ClaimGateway(ctx, e.tenant, client.ClaimGatewayRequest{Serial: *serial, ClaimCode: labelCode(c)})
			if err != nil {
				return err
			}
			return e.show(g, gatewayTable(*g))
		}
	}}

// labelCode returns the claim code of a label file's text (its
// "claim-code:" line), or s itself when it is not one.
func labelCode(s string) string {
	for _, line := range strings.Split(s, "\n") {
		if v, ok := strings.CutPrefix(strings.TrimSpace(line), "claim-code:"); ok {
			return strings.TrimSpace(v)
		}
	}
	return s
}

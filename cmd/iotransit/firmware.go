package main

import (
	"context"
	"crypto/ed25519"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"strconv"
	"time"

	"github.com/iotransit/iotransit/client"
	"github.com/iotransit/iotransit/internal/firmware"
	"github.com/iotransit/iotransit/internal/securefile"
)

// firmwareCmd is "iotransit firmware": the repository commands, and
// "firmware rollout ..." for rollouts.
func firmwareCmd(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	if len(args) > 0 && args[0] == "rollout" {
		return rolloutGroup.run(ctx, args[1:], stdout, stderr)
	}
	return firmwareGroup.run(ctx, args, stdout, stderr)
}

// firmwareGroup is "iotransit firmware".
var firmwareGroup = &group{
	name: "firmware",
	summary: "signed firmware on The Update Framework: the tenant's repository (root and targets keys stay here, " +
		"offline; snapshot and timestamp keys are the server's); rollouts with: iotransit firmware rollout create|get",
	cmds: []command{
		{name: "init", synopsis: "--root-key FILE --targets-key FILE [--root-expires 8760h] [--targets-expires 2160h]",
			summary: "create the tenant's TUF repository: its keys made here (files 0600) when missing, root signed here", tenant: true,
			flags: func(fs *flag.FlagSet) action {
				rootKey := fs.String("root-key", "", "the root key file (Ed25519, PEM), made when missing; keep it offline")
				targetsKey := fs.String("targets-key", "", "the targets key file (Ed25519, PEM), made when missing")
				rootTTL := fs.Duration("root-expires", 365*24*time.Hour, "how long the root is valid")
				targetsTTL := fs.Duration("targets-expires", 90*24*time.Hour, "how long the first targets are valid")
				return func(ctx context.Context, e *env, _ []string) error {
					if *rootKey == "" || *targetsKey == "" || *rootKey == *targetsKey {
						return usageError("--root-key and --targets-key are required, two different files")
					}
					rk, err := firmware.LoadOrCreateKey(*rootKey)
					if err != nil {
						return fmt.Errorf("--root-key: %w", err)
					}
					tk, err := firmware.LoadOrCreateKey(*targetsKey)
					if err != nil {
						return fmt.Errorf("--targets-key: %w", err)
					}
					online, err := e.api.FirmwareOnlineKeys(ctx, e.tenant)
					if err != nil {
						return err
					}
					now := time.Now()
					root, targets, err := firmware.NewRepository(rk, tk, *online, now.Add(*rootTTL), now.Add(*targetsTTL))
					if err != nil {
						return err
					}
					repo, err := e.api.InitFirmware(ctx, e.tenant, client.InitFirmwareRequest{Root: root, Targets: targets})
					if err != nil {
						return err
					}
					return e.show(repo, func(w io.Writer) error {
						fmt.Fprintln(w, "Give each gateway this root.json at commissioning (its trust anchor):")
						_, err := fmt.Fprintf(w, "%s\n", root)
						return err
					})
				}
			}},
		{name: "publish", synopsis: "--file F --version V --target MODEL --sign-key FILE [--expires 2160h]",
			summary: "upload an image and publish it as MODEL's version V, the targets signed here with the targets key", tenant: true,
			flags: func(fs *flag.FlagSet) action {
				file := fs.String("file", "", "the firmware image")
				version := fs.String("version", "", "its version, such as 1.2.3")
				model := fs.String("target", "", "the gateway model it is for, such as TSGW06")
				signKey := fs.String("sign-key", "", "the targets key file (see firmware init)")
				ttl := fs.Duration("expires", 90*24*time.Hour, "how long the new targets metadata is valid")
				return func(ctx context.Context, e *env, _ []string) error {
					if *file == "" || *version == "" || *model == "" || *signKey == "" {
						return usageError("--file, --version, --target and --sign-key are required")
					}
					key, err := loadKey(*signKey)
					if err != nil {
						return fmt.Errorf("--sign-key: %w", err)
					}
					image, err := os.ReadFile(*file)
					if err != nil {
						return fmt.Errorf("--file: %w", err)
					}
					cur, err := currentMetadata(ctx, e, "targets")
					if err != nil {
						return err
					}
					next, err := firmware.AddTarget(cur, image, *model, *version, time.Now().Add(*ttl), key)
					if err != nil {
						return usageError("%v", err)
					}
					if _, err := e.api.UploadFirmwareImage(ctx, e.tenant, image); err != nil {
						return err
					}
					repo, err := e.api.PublishFirmware(ctx, e.tenant, next)
					if err != nil {
						return err
					}
					return e.show(repo, func(w io.Writer) error { return printRepository(w, repo) })
				}
			}},
		{name: "resign", synopsis: "--sign-key FILE [--expires 2160h]",
			summary: "sign the current targets again (a new version, a new expiry) before they expire", tenant: true,
			flags: func(fs *flag.FlagSet) action {
				signKey := fs.String("sign-key", "", "the targets key file")
				ttl := fs.Duration("expires", 90*24*time.Hour, "how long the new targets metadata is valid")
				return func(ctx context.Context, e *env, _ []string) error {
					if *signKey == "" {
						return usageError("--sign-key is required")
					}
					key, err := loadKey(*signKey)
					if err != nil {
						return fmt.Errorf("--sign-key: %w", err)
					}
					cur, err := currentMetadata(ctx, e, "targets")
					if err != nil {
						return err
					}
					next, err := firmware.Resign(cur, time.Now().Add(*ttl), key)
					if err != nil {
						return err
					}
					repo, err := e.api.PublishFirmware(ctx, e.tenant, next)
					if err != nil {
						return err
					}
					return e.show(repo, func(w io.Writer) error { return printRepository(w, repo) })
				}
			}},
		{name: "rotate-root", synopsis: "--root-key FILE --new-root-key FILE [--new-targets-key FILE] [--root-expires 8760h] [--targets-expires 2160h]",
			summary: "replace the root: signed by the current and the new root key; with --new-targets-key, the current targets signed again by it", tenant: true,
			flags: func(fs *flag.FlagSet) action {
				rootKey := fs.String("root-key", "", "the current root key file")
				newRootKey := fs.String("new-root-key", "", "the new root key file, made when missing (may be the current one)")
				newTargetsKey := fs.String("new-targets-key", "", "a new targets key file, made when missing (default: keep the targets key)")
				rootTTL := fs.Duration("root-expires", 365*24*time.Hour, "how long the new root is valid")
				targetsTTL := fs.Duration("targets-expires", 90*24*time.Hour, "how long the targets signed by a new targets key are valid")
				return func(ctx context.Context, e *env, _ []string) error {
					if *rootKey == "" || *newRootKey == "" {
						return usageError("--root-key and --new-root-key are required")
					}
					old, err := loadKey(*rootKey)
					if err != nil {
						return fmt.Errorf("--root-key: %w", err)
					}
					nk, err := firmware.LoadOrCreateKey(*newRootKey)
					if err != nil {
						return fmt.Errorf("--new-root-key: %w", err)
					}
					cur, err := currentMetadata(ctx, e, "root")
					if err != nil {
						return err
					}
					var req client.RotateFirmwareRootRequest
					targetsPub, err := firmware.TargetsKey(cur)
					if err != nil {
						return err
					}
					if *newTargetsKey != "" {
						tk, err := firmware.LoadOrCreateKey(*newTargetsKey)
						if err != nil {
							return fmt.Errorf("--new-targets-key: %w", err)
						}
						prev := targetsPub
						targetsPub = tk.Public().(ed25519.PublicKey)
						targets, err := currentMetadata(ctx, e, "targets")
						if err != nil {
							return err
						}
						if req.Targets, err = firmware.Rekey(targets, prev, time.Now().Add(*targetsTTL), tk); err != nil {
							return err
						}
					}
					if req.Root, err = firmware.NextRoot(cur, old, nk, targetsPub, time.Now().Add(*rootTTL)); err != nil {
						return err
					}
					repo, err := e.api.RotateFirmwareRoot(ctx, e.tenant, req)
					if err != nil {
						return err
					}
					return e.show(repo, func(w io.Writer) error { return printRepository(w, repo) })
				}
			}},
		{name: "list", summary: "the repository's roles (version, expiry) and firmware targets", tenant: true,
			run: func(ctx context.Context, e *env, _ []string) error {
				repo, err := e.api.GetFirmwareRepository(ctx, e.tenant)
				if err != nil {
					return err
				}
				return e.show(repo, func(w io.Writer) error { return printRepository(w, repo) })
			}},
	},
}

// rolloutGroup is "iotransit firmware rollout".
var rolloutGroup = &group{
	name:    "firmware rollout",
	summary: "roll published firmware out to gateways, and follow each gateway's state",
	cmds: []command{
		{name: "create", synopsis: "--target MODEL --version V (--serial S ... | --label k=v ...)",
			summary: "start a rollout to the gateways named, or to every gateway with all the labels", tenant: true,
			flags: func(fs *flag.FlagSet) action {
				var req client.CreateRolloutRequest
				fs.StringVar(&req.Target, "target", "", "the model")
				fs.StringVar(&req.Version, "version", "", "the published version")
				fs.Var(listFlag{list: &req.Serials, repeatable: true}, "serial", "a gateway (repeatable, or comma-separated)")
				labels := labelFlag{}
				fs.Var(labels, "label", "label key=value a gateway must have (repeatable)")
				return func(ctx context.Context, e *env, _ []string) error {
					if req.Target == "" || req.Version == "" || (len(req.Serials) == 0) == (len(labels) == 0) {
						return usageError("--target, --version and either --serial or --label are required")
					}
					if len(labels) > 0 {
						req.Labels = labels
					}
					ro, err := e.api.CreateRollout(ctx, e.tenant, req)
					if err != nil {
						return err
					}
					return e.show(ro, func(w io.Writer) error { return printRollout(w, ro) })
				}
			}},
		{name: "get", args: []string{"id"}, summary: "a rollout and each gateway's state", tenant: true,
			run: func(ctx context.Context, e *env, args []string) error {
				ro, err := e.api.GetRollout(ctx, e.tenant, args[0])
				if err != nil {
					return err
				}
				return e.show(ro, func(w io.Writer) error { return printRollout(w, ro) })
			}},
	},
}

// currentMetadata returns the repository's current root or targets
// metadata.
func currentMetadata(ctx context.Context, e *env, role string) ([]byte, error) {
	repo, err := e.api.GetFirmwareRepository(ctx, e.tenant)
	if err != nil {
		return nil, err
	}
	v := repo.Roles.Targets.Version
	if role == "root" {
		v = repo.Roles.Root.Version
	}
	return e.api.FirmwareMetadata(ctx, e.tenant, strconv.FormatInt(v, 10)+"."+role+".json")
}

// loadKey reads a key file that must exist and be private (0600).
func loadKey(path string) (ed25519.PrivateKey, error) {
	b, err := securefile.LoadOrCreate(path, func() ([]byte, error) { return nil, errors.New("no such key file") })
	if err != nil {
		return nil, err
	}
	return firmware.ParseKey(b)
}

func printRepository(w io.Writer, repo *client.FirmwareRepository) error {
	t := newTable(w, "ROLE", "VERSION", "EXPIRES")
	for _, r := range []struct {
		name string
		role client.FirmwareRole
	}{{"root", repo.Roles.Root}, {"targets", repo.Roles.Targets}, {"snapshot", repo.Roles.Snapshot}, {"timestamp", repo.Roles.Timestamp}} {
		t.row(r.name, strconv.FormatInt(r.role.Version, 10), r.role.Expires.UTC().Format(time.RFC3339))
	}
	if err := t.flush(); err != nil {
		return err
	}
	fmt.Fprintln(w)
	return rows([]string{"TARGET", "MODEL", "VERSION", "LENGTH", "SHA256"}, repo.Targets, func(f client.FirmwareTarget) []string {
		return []string{f.Name, f.Model, f.Version, strconv.FormatInt(f.Length, 10), f.SHA256}
	})(w)
}

func printRollout(w io.Writer, ro *client.Rollout) error {
	fmt.Fprintf(w, "rollout %s: %s %s (%s), created %s\n\n", ro.ID, ro.Target, ro.Version, ro.TargetName, ro.CreatedAt.UTC().Format(time.RFC3339))
	return rows([]string{"SERIAL", "STATE", "REASON", "UPDATED", "DETAIL"}, ro.Gateways, func(g client.RolloutGateway) []string {
		return []string{g.Serial, g.State, g.Reason, g.UpdatedAt.UTC().Format(time.RFC3339), g.Detail}
	})(w)
}

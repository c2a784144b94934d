package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"strconv"

	"github.com/iotransit/iotransit/client"
	"github.com/iotransit/iotransit/internal/node"
)

// kmsGroup is "iotransit kms".
var kmsGroup = &group{
	name:    "kms",
	summary: "a tenant's data keys (rotate, status, reencrypt) and the move to another root key (rewrap)",
	cmds: []command{
		{name: "rotate", summary: "make a new version of the tenant's data key: new data is sealed under it, older data still opens", tenant: true,
			run: func(ctx context.Context, e *env, _ []string) error {
				st, err := e.api.RotateKMSKey(ctx, e.tenant)
				if err != nil {
					return err
				}
				return e.show(st, kmsTable(*st))
			}},
		{name: "status", summary: "the tenant's data key versions and root key (never key material)", tenant: true,
			run: func(ctx context.Context, e *env, _ []string) error {
				st, err := e.api.KMSStatus(ctx, e.tenant)
				if err != nil {
					return err
				}
				return e.show(st, kmsStatusTable(*st))
			}},
		kmsReencryptCmd,
		{name: "rewrap", synopsis: "--data-dir DIR --previous-root-key-file F [root key flags]",
			summary: "move every wrapped key to a new root key or provider (on a stopped node's data dir, or --nats-url)",
			main:    kmsRewrap},
	},
}

// kmsStatusTable writes the tenant's data key versions and, when one was
// started, its re-encryption job.
func kmsStatusTable(st client.KMSStatus) func(w io.Writer) error {
	return func(w io.Writer) error {
		if err := kmsTable(st)(w); err != nil {
			return err
		}
		if st.Reencryption == nil {
			return nil
		}
		fmt.Fprintln(w)
		return reencryptTable(st.Reencryption)(w)
	}
}

// kmsTable writes a tenant's data key versions, one a row.
func kmsTable(st client.KMSStatus) func(w io.Writer) error {
	return rows([]string{"VERSION", "CURRENT", "CREATED", "ROOT-KEY"}, st.Versions, func(v client.KMSKeyVersion) []string {
		return []string{strconv.FormatUint(uint64(v.Version), 10), yesNo(v.Version == st.CurrentVersion), fmtTime(&v.CreatedAt), v.RootKeyID}
	})
}

// kmsFlags defines the root key flags of serve and kms rewrap on c: the
// current root (--kms-provider, --root-key-file, --pkcs11-*) and the
// previous one (--previous-*), which sets c.Previous when given.
func kmsFlags(fs *flag.FlagSet, c *node.KMSConfig) {
	if c.Provider == "" {
		c.Provider = node.KMSFile
	}
	fs.StringVar(&c.Provider, "kms-provider", c.Provider, "root key provider: file (a 0600 key file) or pkcs11 (an AES-256 key generated in a PKCS#11 token, never extractable; wrapping runs in the token)")
	fs.StringVar(&c.RootKeyFile, "root-key-file", c.RootKeyFile, "the file provider's root key (default <data-dir>/root.key); outside the data dir, nodes share one root and a backup of the data dir alone opens nothing")
	fs.StringVar(&c.PKCS11.Module, "pkcs11-module", "", "pkcs11 provider: path of the PKCS#11 library (e.g. /usr/lib/softhsm/libsofthsm2.so)")
	fs.StringVar(&c.PKCS11.Token, "pkcs11-token", "", "pkcs11 provider: label of the token")
	fs.StringVar(&c.PKCS11.PINFile, "pkcs11-pin-file", "", "pkcs11 provider: file holding the user PIN (0600)")
	fs.StringVar(&c.PKCS11.KeyLabel, "pkcs11-key-label", node.DefaultPKCS11KeyLabel, "pkcs11 provider: label of the root key in the token (generated at the first start)")
	prev := func(set func(p *node.KMSConfig, v string)) func(string) error {
		return func(v string) error {
			if c.Previous == nil {
				c.Previous = &node.KMSConfig{}
			}
			set(c.Previous, v)
			return nil
		}
	}
	fs.Func("previous-kms-provider", "the root key being replaced: its provider (file or pkcs11); keys wrapped under it are read and re-wrapped under the current root", prev(func(p *node.KMSConfig, v string) { p.Provider = v }))
	fs.Func("previous-root-key-file", "the root key being replaced: its key file", prev(func(p *node.KMSConfig, v string) { p.RootKeyFile = v }))
	fs.Func("previous-pkcs11-module", "the root key being replaced: its PKCS#11 library", prev(func(p *node.KMSConfig, v string) { p.PKCS11.Module = v }))
	fs.Func("previous-pkcs11-token", "the root key being replaced: its token's label", prev(func(p *node.KMSConfig, v string) { p.PKCS11.Token = v }))
	fs.Func("previous-pkcs11-pin-file", "the root key being replaced: its token's PIN file", prev(func(p *node.KMSConfig, v string) { p.PKCS11.PINFile = v }))
	fs.Func("previous-pkcs11-key-label", "the root key being replaced: its label in the token (default "+node.DefaultPKCS11KeyLabel+")", prev(func(p *node.KMSConfig, v string) { p.PKCS11.KeyLabel = v }))
}

// kmsRewrapUsage heads kms rewrap's help.
const kmsRewrapUsage = `Usage: iotransit kms rewrap --data-dir DIR --previous-root-key-file F [root key flags]
  Move every wrapped key (each tenant's data key versions, the platform's
  own and the root check) from the previous root key to the current one:
  each is unwrapped with the root it names and replaced, compare-and-set, by
  the same key wrapped under the current root. Nothing sealed with the data
  keys changes, so nothing is lost; a run cut short can simply run again.

  Two ways, both with the same flags as serve:
  - No downtime: restart each node with the new root key flags plus the
    --previous-* flags. A node reads keys under either root and re-wraps
    every key at its start. Once every node runs so, restart them without
    the --previous-* flags.
  - Offline: stop the node and run this command on its data directory (or
    with --nats-url on the cluster, while no node still runs with only the
    old root).

  Afterwards the node starts with the new root alone (a node given only the
  old root stops at its start, naming both root key ids), and the old root
  key file can be deleted (or the old token key destroyed).

  Example, file to SoftHSM2:
    iotransit kms rewrap --data-dir /var/lib/iotransit \
      --previous-root-key-file /etc/iotransit/root.key \
      --kms-provider pkcs11 --pkcs11-module /usr/lib/softhsm/libsofthsm2.so \
      --pkcs11-token iotransit --pkcs11-pin-file /etc/iotransit/pin

Flags:
`

// kmsRewrap is "iotransit kms rewrap".
func kmsRewrap(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlagSet("kms rewrap", kmsRewrapUsage, stderr)
	var cfg node.RewrapConfig
	fs.StringVar(&cfg.DataDir, "data-dir", "", "the node's data directory (required; with --nats-url, the directory of the root key file's default)")
	fs.Var(listFlag{list: &cfg.NATSURLs}, "nats-url", "comma-separated URLs of an external NATS JetStream cluster (default: the data dir's embedded store)")
	fs.StringVar(&cfg.NATSCreds, "nats-creds", "", "credentials file for --nats-url")
	fs.IntVar(&cfg.Replicas, "replicas", 1, "replicas of the kms bucket, as the nodes' --replicas")
	kmsFlags(fs, &cfg.KMS)
	logLevel := fs.String("log-level", "warn", "debug, info, warn or error")
	fs.VisitAll(func(fl *flag.Flag) { fl.Usage += " [$" + envVar(fl.Name) + "]" })
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	log, err := newLogger(stderr, *logLevel)
	if err != nil {
		return err
	}
	moved, rootID, err := node.Rewrap(ctx, cfg, log)
	if err != nil {
		return err
	}
	fmt.Fprintf(stdout, "rewrapped %d keys under root key %s\n", moved, rootID)
	return nil
}

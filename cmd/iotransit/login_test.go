package main

import (
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/iotransit/iotransit/client"
	"github.com/iotransit/iotransit/internal/node"
	"github.com/iotransit/iotransit/internal/testutil/nodetest"
	"go.yaml.in/yaml/v3"
)

// TestMain keeps the tests off the user's own login profiles: the
// configuration directory is an empty one of the run's.
func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "iotransit-config-")
	if err != nil {
		panic(err)
	}
	os.Setenv("XDG_CONFIG_HOME", dir)
	os.Unsetenv("IOTRANSIT_PROFILE")
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// useConfigDir gives the test a configuration directory of its own and
// returns the directory of the profiles in it.
func useConfigDir(t *testing.T) string {
	t.Helper()
	dir := t.TempDir()
	t.Setenv("XDG_CONFIG_HOME", dir)
	t.Setenv("IOTRANSIT_PROFILE", "")
	os.Unsetenv("IOTRANSIT_PROFILE") // restored by Setenv's cleanup
	return filepath.Join(dir, "iotransit", "profiles")
}

// TestLoginProfiles: login checks the credential against a real server
// before it writes a profile (0600 in a 0700 directory); a command then
// runs with nothing but the profile, picked by --profile, by
// IOTRANSIT_PROFILE or as the current one, with a flag beating the
// variable beating the profile; an API key's tenant, which login learns
// from the server, is implied; no output shows a secret; a profile others
// may read is refused.
func TestLoginProfiles(t *testing.T) {
	a := startAdminNode(t)
	profiles := useConfigDir(t)
	const serial = "TSGW06LOGIN000001"
	a.mustOp(t, "gateway", "register", serial, "--tenant", node.DevTenant)
	var key client.APIKey
	a.mustJSON(t, &key, "apikey", "create", "--tenant", node.DevTenant, "--scope", client.ScopeGatewaysRead, "--name", "login-test")
	keyFile := writeTemp(t, "api.key", key.Key+"\n")
	conn := []string{"--server", a.server, "--ca", a.caFile}

	// cli runs iotransit and checks that nothing shows the API key.
	cli := func(args ...string) (string, error) {
		t.Helper()
		out, errOut, err := a.cli(t, args...)
		all := out + errOut
		if err != nil {
			all += err.Error()
		}
		if strings.Contains(all, key.Key) {
			t.Fatalf("iotransit %s printed the API key", strings.Join(args, " "))
		}
		return out, err
	}
	mustCLI := func(args ...string) string {
		t.Helper()
		out, err := cli(args...)
		if err != nil {
			t.Fatalf("iotransit %s: %v", strings.Join(args, " "), err)
		}
		return out
	}
	wantErr := func(want string, args ...string) {
		t.Helper()
		if _, err := cli(args...); err == nil || !strings.Contains(err.Error(), want) {
			t.Fatalf("iotransit %s: %v; want an error with %q", strings.Join(args, " "), err, want)
		}
	}

	// Refused credentials write nothing.
	wrong := writeTemp(t, "wrong.key", "itk_0123456789ab_notthesecret\n")
	wantErr("api.unauthenticated", append([]string{"login", "--key-file", wrong, "--tenant", node.DevTenant}, conn...)...)
	wantErr("login refused, nothing written", append([]string{"login", "--key-file", wrong}, conn...)...)
	// An API key with another tenant than its own, the operator key with
	// a tenant that does not exist.
	wantErr("belongs to tenant "+node.DevTenant+", not other: leave --tenant out", append([]string{"login", "--key-file", keyFile, "--tenant", "other", "--profile", "acme"}, conn...)...)
	wantErr("registry.tenant_not_found", append([]string{"login", "--key-file", a.keyFile, "--tenant", "other", "--profile", "op"}, conn...)...)
	if _, err := os.Stat(profiles); !os.IsNotExist(err) {
		t.Fatalf("a refused login wrote %s: %v", profiles, err)
	}

	// The operator's profile, the first, becomes the current one.
	out := mustCLI(append([]string{"login", "--profile", "op", "--key-file", a.keyFile}, conn...)...)
	if !strings.Contains(out, "operator key") || !strings.Contains(out, "current profile") {
		t.Fatalf("login as the operator:\n%s", out)
	}
	// The API key's profile, with the tenant the server tells of the key.
	out = mustCLI(append([]string{"login", "--profile", "acme", "--key-file", keyFile}, conn...)...)
	if !strings.Contains(out, "API key "+key.ID) || !strings.Contains(out, "of tenant "+node.DevTenant) || !strings.Contains(out, "login use acme") {
		t.Fatalf("login with the API key:\n%s", out)
	}
	for path, want := range map[string]os.FileMode{
		filepath.Dir(profiles):                           0o700,
		profiles:                                         0o700,
		filepath.Join(profiles, "acme.json"):             0o600,
		filepath.Join(profiles, "op.json"):               0o600,
		filepath.Join(profiles, "..", "current-profile"): 0o600,
	} {
		st, err := os.Stat(path)
		if err != nil || st.Mode().Perm() != want {
			t.Fatalf("%s: %v, mode %v; want %v", path, err, st.Mode().Perm(), want)
		}
	}

	// --profile alone: the server, the CA, the key and the tenant.
	if out := mustCLI("gateway", "list", "--profile", "acme"); !strings.Contains(out, serial) {
		t.Fatalf("gateway list --profile acme:\n%s", out)
	}
	// The current profile (the operator's): no flags at all.
	if out := mustCLI("tenant", "list"); !strings.Contains(out, node.DevTenant) {
		t.Fatalf("tenant list with the current profile:\n%s", out)
	}
	// enroll, whose credential is its token, takes the server and the CA
	// from the profile too.
	var tok client.EnrollmentToken
	if err := json.Unmarshal([]byte(mustCLI("token", "create", serial, "--tenant", node.DevTenant, "-o", "json")), &tok); err != nil {
		t.Fatal(err)
	}
	gwDir := filepath.Join(t.TempDir(), "gw")
	if out := mustCLI("enroll", "--serial", serial, "--token-file", writeTemp(t, "token", tok.Token), "--out", gwDir); !strings.Contains(out, "enrolled gateway "+serial) {
		t.Fatalf("enroll with the profile:\n%s", out)
	}

	// IOTRANSIT_PROFILE beats the current profile; --profile beats it.
	t.Setenv("IOTRANSIT_PROFILE", "acme")
	if out := mustCLI("gateway", "list"); !strings.Contains(out, serial) {
		t.Fatalf("gateway list with IOTRANSIT_PROFILE=acme:\n%s", out)
	}
	wantErr("api.operator_only", "tenant", "list")
	mustCLI("tenant", "list", "--profile", "op")
	// A flag beats the profile: --tenant, and --key-file (the operator's).
	wantErr("registry.tenant_not_found", "gateway", "list", "--tenant", "other")
	mustCLI("tenant", "list", "--key-file", a.keyFile)
	// A named profile's credential goes to its own server only.
	wantErr("is not the server of profile", "gateway", "list", "--server", "https://127.0.0.1:1")
	os.Unsetenv("IOTRANSIT_PROFILE")

	// login use makes the current profile.
	mustCLI("login", "use", "acme")
	if out := mustCLI("gateway", "list", "-o", "json"); !strings.Contains(out, serial) {
		t.Fatalf("gateway list with the current profile acme:\n%s", out)
	}
	wantErr(`no such profile "nope"`, "login", "use", "nope")
	// With another --server, the current profile's credential stays home.
	wantErr("or log in once: iotransit login", "gateway", "list", "--server", "https://127.0.0.1:1", "--tenant", node.DevTenant)

	// login list: no secret (cli checks), both profiles, as data too.
	out = mustCLI("login", "list")
	for _, want := range []string{"op", "acme", "API key " + key.ID, "operator key", a.server} {
		if !strings.Contains(out, want) {
			t.Fatalf("login list lacks %q:\n%s", want, out)
		}
	}
	var list client.List[profileInfo]
	if err := yaml.Unmarshal([]byte(mustCLI("login", "list", "-o", "yaml")), &list); err != nil {
		t.Fatal(err)
	}
	if len(list.Items) != 2 || list.Items[0].Name != "acme" || !list.Items[0].Current || list.Items[0].Tenant != node.DevTenant {
		t.Fatalf("login list -o yaml: %+v", list)
	}
	b, _ := os.ReadFile(filepath.Join(profiles, "acme.json"))
	var p profile
	if err := json.Unmarshal(b, &p); err != nil || p.Key != key.Key || p.Server != a.server || p.CAPEM == "" {
		t.Fatalf("the profile file: %v\n%s", err, b)
	}

	// A profile others may read is refused, as ssh refuses a key.
	if err := os.Chmod(filepath.Join(profiles, "acme.json"), 0o644); err != nil {
		t.Fatal(err)
	}
	wantErr("others may read it (mode 0644): refused; make it private with: chmod 600", "gateway", "list")
	if err := os.Chmod(filepath.Join(profiles, "acme.json"), 0o600); err != nil {
		t.Fatal(err)
	}

	// logout removes the current profile; the default (none) is then used.
	mustCLI("logout")
	if _, err := os.Stat(filepath.Join(profiles, "acme.json")); !os.IsNotExist(err) {
		t.Fatalf("logout left the profile: %v", err)
	}
	wantErr(`no such profile "acme"`, "gateway", "list", "--profile", "acme")
	wantErr("or log in once: iotransit login", "gateway", "list", "--tenant", node.DevTenant)
	mustCLI("logout", "op")
	wantErr(`no such profile "op"`, "logout", "op")

	// A current profile whose file is gone (removed by hand) is no
	// profile: the flags still work, and do not fail on it.
	mustCLI(append([]string{"login", "--profile", "gone", "--key-file", a.keyFile}, conn...)...)
	mustCLI("login", "use", "gone")
	if err := os.Remove(filepath.Join(profiles, "gone.json")); err != nil {
		t.Fatal(err)
	}
	if out := mustCLI(append([]string{"tenant", "list", "--key-file", a.keyFile}, conn...)...); !strings.Contains(out, node.DevTenant) {
		t.Fatalf("tenant list with flags and a current profile gone:\n%s", out)
	}
	wantErr(`no such profile "gone"`, "tenant", "list", "--profile", "gone")
}

// TestTenantImplied: without --tenant, IOTRANSIT_TENANT or a profile, a
// command of a tenant runs on the tenant of its API key or access token,
// which the server tells (GET /v1/whoami); login without --tenant keeps
// it, and with the key's own tenant too. The operator key, of every
// tenant, still needs --tenant, and the error says so; a revoked key is
// refused as everywhere.
func TestTenantImplied(t *testing.T) {
	a := startAdminNode(t)
	profiles := useConfigDir(t)
	t.Setenv("IOTRANSIT_TENANT", "")
	os.Unsetenv("IOTRANSIT_TENANT") // restored by Setenv's cleanup
	const serial = "TSGW06IMPLY000001"
	a.mustOp(t, "gateway", "register", serial, "--tenant", node.DevTenant)
	var key client.APIKey
	a.mustJSON(t, &key, "apikey", "create", "--tenant", node.DevTenant, "--scope", client.ScopeGatewaysRead)
	keyFile := writeTemp(t, "api.key", key.Key+"\n")
	var cl client.OAuth2Client
	a.mustJSON(t, &cl, "oauth2-client", "create", "--tenant", node.DevTenant, "--scope", client.ScopeGatewaysRead)
	api, err := client.New(client.Config{Server: a.server, RootCAs: nodetest.ServerPool(t, a.n)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(api.Close)
	tok, err := api.Token(t.Context(), cl.ID, cl.ClientSecret)
	if err != nil {
		t.Fatal(err)
	}
	tokFile := writeTemp(t, "token", tok.AccessToken)
	conn := []string{"--server", a.server, "--ca", a.caFile}
	run := func(args ...string) (string, error) {
		t.Helper()
		out, _, err := a.cli(t, append(args, conn...)...)
		return out, err
	}

	tests := []struct {
		name string
		args []string
		want string // in the output, or in the error with usage
		// usage says the error is a usage error.
		usage bool
	}{
		{name: "API key", args: []string{"gateway", "list", "--key-file", keyFile}, want: serial},
		{name: "access token", args: []string{"gateway", "get", serial, "--key-file", tokFile}, want: serial},
		{name: "operator key", args: []string{"gateway", "list", "--key-file", a.keyFile}, usage: true,
			want: "gateway list needs --tenant (or IOTRANSIT_TENANT, or a login profile with a tenant): the operator key is of every tenant"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			out, err := run(tc.args...)
			switch {
			case tc.usage && (!errors.Is(err, errUsage) || !strings.Contains(err.Error(), tc.want)):
				t.Fatalf("iotransit %s: %v; want a usage error with %q", strings.Join(tc.args, " "), err, tc.want)
			case !tc.usage && err != nil:
				t.Fatalf("iotransit %s: %v", strings.Join(tc.args, " "), err)
			case !tc.usage && !strings.Contains(out, tc.want):
				t.Fatalf("iotransit %s:\n%s", strings.Join(tc.args, " "), out)
			}
		})
	}

	// login with the server, its CA and the key only: the profile keeps
	// the key's tenant, and commands run with the profile alone.
	if out, err := run("login", "--key-file", keyFile); err != nil || !strings.Contains(out, "of tenant "+node.DevTenant) {
		t.Fatalf("login with an API key and no --tenant: %v\n%s", err, out)
	}
	b, err := os.ReadFile(filepath.Join(profiles, defaultProfile+".json"))
	if err != nil {
		t.Fatal(err)
	}
	var p profile
	if err := json.Unmarshal(b, &p); err != nil || p.Tenant != node.DevTenant {
		t.Fatalf("the profile of an API key: %v, tenant %q", err, p.Tenant)
	}
	if out, _, err := a.cli(t, "gateway", "list"); err != nil || !strings.Contains(out, serial) {
		t.Fatalf("gateway list with the profile: %v\n%s", err, out)
	}
	// Its own tenant given is fine.
	if _, err := run("login", "--profile", "same", "--key-file", keyFile, "--tenant", node.DevTenant); err != nil {
		t.Fatalf("login with the key's own tenant: %v", err)
	}
	// The operator key's profile keeps no tenant: a command of a tenant
	// then needs --tenant.
	if _, err := run("login", "--profile", "op", "--key-file", a.keyFile); err != nil {
		t.Fatal(err)
	}
	if _, _, err := a.cli(t, "gateway", "list", "--profile", "op"); !errors.Is(err, errUsage) || !strings.Contains(err.Error(), "the operator key is of every tenant") {
		t.Fatalf("gateway list with the operator's profile: %v", err)
	}

	// A key given beside a profile of another key runs on its own tenant,
	// not on the profile's.
	const other, otherSerial = "implied2", "TSGW06IMPLY000002"
	a.mustOp(t, "tenant", "create", other)
	a.mustOp(t, "gateway", "register", otherSerial, "--tenant", other)
	var key2 client.APIKey
	a.mustJSON(t, &key2, "apikey", "create", "--tenant", other, "--scope", client.ScopeGatewaysRead)
	key2File := writeTemp(t, "api2.key", key2.Key+"\n")
	if out, _, err := a.cli(t, "gateway", "list", "--key-file", key2File); err != nil || !strings.Contains(out, otherSerial) {
		t.Fatalf("gateway list --key-file (another tenant's key) beside the profile of tenant %s: %v\n%s", node.DevTenant, err, out)
	}

	// A revoked key implies nothing: the server refuses it.
	a.mustOp(t, "apikey", "revoke", key.ID, "--tenant", node.DevTenant)
	_, err = run("gateway", "list", "--key-file", keyFile, "--profile", "op")
	wantProblem(t, err, "api.unauthenticated")
}

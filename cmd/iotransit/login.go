package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"runtime"
	"slices"
	"strings"

	"github.com/iotransit/iotransit/client"
	"github.com/iotransit/iotransit/internal/cli"
	"github.com/iotransit/iotransit/internal/credential"
	"github.com/iotransit/iotransit/internal/securefile"
)

// Login profiles, as kubectl's contexts and gh's hosts: "iotransit login"
// checks a server, its CA and a credential against the server and keeps
// them as a named profile in the user's configuration directory
// (os.UserConfigDir()/iotransit/profiles/NAME.json, the directories 0700,
// the file 0600). A profile holds the credential and the CA themselves, not
// the paths of their files: it keeps working from any directory and after
// a dev server's data directory is gone, as the AWS CLI's and gh's do; its
// file is refused when others may read it, as ssh refuses a key. The
// connection flags of every command (conn.go) take what neither the
// command line nor the environment sets from the profile that --profile
// (IOTRANSIT_PROFILE) names, else the current one ("login use"), else
// "default": a flag beats its variable, which beats the profile, which
// beats the default. A profile's credential is only sent to its own server.

// defaultProfile is the profile login writes without --profile, and the
// one used when none is current.
const defaultProfile = "default"

// profile is what a profile file holds.
type profile struct {
	Server string `json:"server"`
	// CAPEM verifies the server ("": the system's roots).
	CAPEM string `json:"caPem,omitempty"`
	// Key is the bearer credential: the secret this file guards.
	Key string `json:"key"`
	// Tenant is the tenant of the commands of a tenant ("" for the
	// operator without --tenant).
	Tenant string `json:"tenant,omitempty"`
	// Credential says what Key is without showing it: "operator key",
	// "API key ID", "access token".
	Credential string `json:"credential"`
}

// profileInfo is a profile as "login list" shows it: no secret.
type profileInfo struct {
	Name       string `json:"name"`
	Current    bool   `json:"current"`
	Server     string `json:"server"`
	Tenant     string `json:"tenant,omitempty"`
	Credential string `json:"credential"`
	CA         string `json:"ca"`
}

// info is the profile name as "login list" shows it.
func (p *profile) info(name string, current bool) profileInfo {
	ca := "system roots"
	if p.CAPEM != "" {
		ca = "pinned"
	}
	return profileInfo{Name: name, Current: current, Server: p.Server, Tenant: p.Tenant, Credential: p.Credential, CA: ca}
}

// validProfileName is what a profile may be called: it names a file.
var validProfileName = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$`)

// configDir is iotransit's directory in the user's configuration
// directory ($XDG_CONFIG_HOME/iotransit or ~/.config/iotransit on Linux).
func configDir() (string, error) {
	d, err := os.UserConfigDir()
	if err != nil {
		return "", fmt.Errorf("login profiles: %w", err)
	}
	return filepath.Join(d, "iotransit"), nil
}

// profilePath is the file of the profile name.
func profilePath(name string) (string, error) {
	if !validProfileName.MatchString(name) {
		return "", usageError("profile name %q: want letters, digits, '.', '_' or '-' (at most 64)", name)
	}
	d, err := configDir()
	if err != nil {
		return "", err
	}
	return filepath.Join(d, "profiles", name+".json"), nil
}

// currentFile holds the name of the current profile.
func currentFile() (string, error) {
	d, err := configDir()
	return filepath.Join(d, "current-profile"), err
}

// errNoProfile is the error of reading a profile that does not exist.
var errNoProfile = errors.New("no such profile")

// readPrivate reads a file that holds a secret: one that others may read
// is refused, as ssh refuses such a key.
func readPrivate(path string) ([]byte, error) {
	st, err := os.Stat(path)
	if err != nil {
		return nil, err
	}
	if perm := st.Mode().Perm(); perm&0o077 != 0 && runtime.GOOS != "windows" {
		return nil, fmt.Errorf("%s holds a credential and others may read it (mode %#o): refused; make it private with: chmod 600 %s", path, perm, path)
	}
	return os.ReadFile(path)
}

// readProfile reads the profile name (errNoProfile when there is none).
func readProfile(name string) (*profile, error) {
	path, err := profilePath(name)
	if err != nil {
		return nil, err
	}
	b, err := readPrivate(path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("%w %q (iotransit login list shows the profiles)", errNoProfile, name)
	}
	if err != nil {
		return nil, fmt.Errorf("profile %q: %w", name, err)
	}
	var p profile
	if err := json.Unmarshal(b, &p); err != nil {
		return nil, fmt.Errorf("profile %q: %s: %w", name, path, err)
	}
	return &p, nil
}

// currentProfile is the name of the current profile: the one "login use"
// chose, else "default".
func currentProfile() (string, error) {
	path, err := currentFile()
	if err != nil {
		return "", err
	}
	b, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return defaultProfile, nil
	}
	if err != nil {
		return "", err
	}
	if name := strings.TrimSpace(string(b)); name != "" {
		return name, nil
	}
	return defaultProfile, nil
}

// selectedProfile returns the profile a command uses: named (by --profile
// or IOTRANSIT_PROFILE), else the current one. A named profile that does
// not exist is an error; without any profile (a current one whose file is
// gone among them) it returns nil.
func selectedProfile(named string) (string, *profile, error) {
	name := strings.TrimSpace(named)
	if name == "" {
		var err error
		if name, err = currentProfile(); err != nil {
			return "", nil, err
		}
		p, err := readProfile(name)
		if errors.Is(err, errNoProfile) {
			return "", nil, nil
		}
		return name, p, err
	}
	p, err := readProfile(name)
	return name, p, err
}

// sameServer reports whether two --server values name the same API.
func sameServer(a, b string) bool {
	ua, err1 := client.ParseServerURL(a)
	ub, err2 := client.ParseServerURL(b)
	return err1 == nil && err2 == nil && ua.String() == ub.String()
}

// writeProfile writes the profile name, private to the user.
func writeProfile(name string, p *profile) (string, error) {
	path, err := profilePath(name)
	if err != nil {
		return "", err
	}
	if err := privateDir(filepath.Dir(path)); err != nil {
		return "", err
	}
	b, err := json.MarshalIndent(p, "", "  ")
	if err != nil {
		return "", err
	}
	return path, securefile.WriteAtomic(path, append(b, '\n'), 0o600)
}

// privateDir makes dir and its parent (iotransit's configuration
// directory) with mode 0700.
func privateDir(dir string) error {
	for _, d := range []string{filepath.Dir(dir), dir} {
		if err := os.MkdirAll(d, 0o700); err != nil {
			return err
		}
		if err := os.Chmod(d, 0o700); err != nil {
			return err
		}
	}
	return nil
}

// setCurrent makes name the current profile.
func setCurrent(name string) error {
	path, err := currentFile()
	if err != nil {
		return err
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return err
	}
	return securefile.WriteAtomic(path, []byte(name+"\n"), 0o600)
}

// describeCredential says what a bearer credential is without showing its
// secret.
func describeCredential(key string, operator bool) string {
	switch {
	case operator:
		return "operator key"
	case credential.IsAPIKeyToken(key):
		if id, _, ok := credential.ParseAPIKeyToken(key); ok {
			return "API key " + id
		}
		return "API key"
	case credential.IsJWT(key):
		return "access token"
	}
	return "credential"
}

const loginUsage = `Usage: iotransit login [--profile NAME] --server URL [--ca FILE] --key-file FILE [--tenant ID]
  Check the credential against the server, then keep the server, its CA, the
  credential and the tenant as the profile NAME (default "default") in the
  user's configuration directory: iotransit/profiles/NAME.json (0600) in
  $XDG_CONFIG_HOME or ~/.config on Linux, ~/Library/Application Support on
  macOS, %AppData% on Windows.
  Every command then takes what its flags and their environment variables do
  not set from the profile that --profile (IOTRANSIT_PROFILE) names, else the
  current profile. An API key or access token belongs to one tenant, which
  the server tells and the profile then implies; --tenant gives the operator
  key's profile a tenant. Nothing is written when the server refuses.

  iotransit login list        the profiles, without their secrets
  iotransit login use NAME    make NAME the current profile
  iotransit logout [NAME]     remove a profile (default: the current one)

Flags:
`

// login is "iotransit login", "login list" and "login use".
func login(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	if len(args) > 0 {
		switch args[0] {
		case "list":
			return loginList(args[1:], stdout, stderr)
		case "use":
			return loginUse(args[1:], stdout, stderr)
		}
	}
	fset := newFlagSet("iotransit login", loginUsage, stderr)
	conn := addConnFlags(fset, true, true)
	if helpAsked(fset, args, stdout) {
		cli.RecordCommands(stdout, "list", "use")
		return nil
	}
	pos, onCmdLine, err := parseArgs(fset, args)
	if err != nil {
		return err
	}
	if len(pos) > 0 {
		return cli.UnknownCommand("login command", pos[0], []string{"list", "use"})
	}
	if err := conn.checkOutput(); err != nil {
		return err
	}
	name := conn.profile
	if name == "" {
		name = defaultProfile
	}
	if _, err := profilePath(name); err != nil {
		return err
	}
	key, err := conn.key.Need(onCmdLine)
	if err != nil {
		return err
	}
	p := &profile{Server: conn.server, Key: key, Tenant: strings.TrimSpace(conn.tenant)}
	if conn.ca != "" {
		pem, err := os.ReadFile(conn.ca)
		if err != nil {
			return fmt.Errorf("--ca: %w", err)
		}
		p.CAPEM = string(pem)
	}
	api, err := conn.client(key)
	if err != nil {
		return err
	}
	defer api.Close()
	p.Server = api.Server()
	who, tenant, err := verifyLogin(ctx, api, key, p.Tenant)
	if err != nil {
		return err
	}
	p.Tenant = tenant
	p.Credential = describeCredential(key, who.Kind == client.KindOperator)
	path, err := writeProfile(name, p)
	if err != nil {
		return err
	}
	current, err := currentProfile()
	if err != nil {
		return err
	}
	if _, err := readProfile(current); errors.Is(err, errNoProfile) || current == name {
		if err := setCurrent(name); err != nil {
			return err
		}
		current = name
	}
	if conn.output != cli.FormatTable {
		return cli.PrintData(stdout, conn.output, p.info(name, current == name))
	}
	of := ""
	if p.Tenant != "" {
		of = " of tenant " + p.Tenant
	}
	fmt.Fprintf(stdout, "logged in to %s with the %s%s\nprofile %q saved in %s (0600)\n", p.Server, p.Credential, of, name, path)
	if current == name {
		fmt.Fprintf(stdout, "it is the current profile: every command uses it unless --profile or IOTRANSIT_PROFILE names another\n")
	} else {
		fmt.Fprintf(stdout, "use it with --profile %s, or make it the current profile: iotransit login use %s\n", name, name)
	}
	return nil
}

// verifyLogin checks the credential against the server and reports what it
// is (GET /v1/whoami) and the tenant the profile implies. An API key or an
// access token implies its own tenant: tenant, when given, must be it. The
// operator key implies none, and tenant, when given, must exist.
func verifyLogin(ctx context.Context, api *client.Client, key, tenant string) (*client.WhoAmI, string, error) {
	refused := func(err error) error {
		return fmt.Errorf("login refused, nothing written: %w", explain(err))
	}
	who, err := api.WhoAmI(ctx)
	if err != nil {
		return nil, "", refused(err)
	}
	switch {
	case who.Kind != client.KindOperator && tenant == "":
		tenant = who.Tenant
	case who.Kind != client.KindOperator && tenant != who.Tenant:
		return nil, "", usageError("the %s belongs to tenant %s, not %s: leave --tenant out (the credential implies its tenant) or log in with a credential of %s; nothing written",
			describeCredential(key, false), who.Tenant, tenant, tenant)
	case tenant != "":
		if _, err := api.GetTenant(ctx, tenant); err != nil {
			return nil, "", refused(err)
		}
	}
	return who, tenant, nil
}

// profiles lists the names of the profiles, sorted.
func profiles() ([]string, error) {
	d, err := configDir()
	if err != nil {
		return nil, err
	}
	files, err := filepath.Glob(filepath.Join(d, "profiles", "*.json"))
	if err != nil {
		return nil, err
	}
	var names []string
	for _, f := range files {
		if n := strings.TrimSuffix(filepath.Base(f), ".json"); validProfileName.MatchString(n) {
			names = append(names, n)
		}
	}
	slices.Sort(names)
	return names, nil
}

// loginList is "iotransit login list".
func loginList(args []string, stdout, stderr io.Writer) error {
	fset := newFlagSet("iotransit login list", "Usage: iotransit login list\n  Show the login profiles, without their secrets.\n\nFlags:\n", stderr)
	output := fset.String("o", cli.FormatTable, cli.OutputUsage)
	if helpAsked(fset, args, stdout) {
		return nil
	}
	if err := parseFlags(fset, args); err != nil {
		return err
	}
	if err := cli.CheckFormat(*output); err != nil {
		return err
	}
	names, err := profiles()
	if err != nil {
		return err
	}
	current, err := currentProfile()
	if err != nil {
		return err
	}
	infos := []profileInfo{}
	var errs []error
	for _, n := range names {
		p, err := readProfile(n)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		infos = append(infos, p.info(n, n == current))
	}
	if *output != cli.FormatTable {
		if err := cli.PrintData(stdout, *output, client.List[profileInfo]{Items: infos}); err != nil {
			return err
		}
		return errors.Join(errs...)
	}
	if len(infos) == 0 && len(errs) == 0 {
		fmt.Fprintln(stdout, "no profiles; make one with: iotransit login --server URL --key-file FILE")
		return nil
	}
	err = rows([]string{"CURRENT", "NAME", "SERVER", "TENANT", "CREDENTIAL", "CA"}, infos, func(i profileInfo) []string {
		cur := ""
		if i.Current {
			cur = "*"
		}
		return []string{cur, i.Name, i.Server, i.Tenant, i.Credential, i.CA}
	})(stdout)
	return errors.Join(append([]error{err}, errs...)...)
}

// loginUse is "iotransit login use NAME".
func loginUse(args []string, stdout, stderr io.Writer) error {
	pos, help, err := positional("iotransit login use", "Usage: iotransit login use NAME\n  Make the profile NAME the current one.\n", args, stdout, stderr)
	if help || err != nil {
		return err
	}
	if len(pos) != 1 {
		return usageError("login use takes the name of a profile; usage: iotransit login use NAME")
	}
	if _, err := readProfile(pos[0]); err != nil {
		return err
	}
	if err := setCurrent(pos[0]); err != nil {
		return err
	}
	fmt.Fprintf(stdout, "profile %q is the current profile\n", pos[0])
	return nil
}

const logoutUsage = `Usage: iotransit logout [NAME]
  Remove the login profile NAME (default: the current one) and its copy of
  the credential. The credential itself stays valid on the server: revoke it
  there if it may have leaked.
`

// logout is "iotransit logout [NAME]".
func logout(_ context.Context, args []string, stdout, stderr io.Writer) error {
	pos, help, err := positional("iotransit logout", logoutUsage, args, stdout, stderr)
	if help || err != nil {
		return err
	}
	if len(pos) > 1 {
		return usageError("logout takes at most one profile name, got %d", len(pos))
	}
	current, err := currentProfile()
	if err != nil {
		return err
	}
	name := current
	if len(pos) == 1 {
		name = pos[0]
	}
	path, err := profilePath(name)
	if err != nil {
		return err
	}
	if err := os.Remove(path); errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("%w %q (iotransit login list shows the profiles)", errNoProfile, name)
	} else if err != nil {
		return err
	}
	if name == current {
		cf, err := currentFile()
		if err != nil {
			return err
		}
		if err := os.Remove(cf); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return err
		}
	}
	fmt.Fprintf(stdout, "profile %q removed\n", name)
	return nil
}

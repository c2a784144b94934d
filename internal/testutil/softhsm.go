package testutil

import (
	"fmt"
	"os"
	"path/filepath"
	"testing"
)

// softHSMModules are where Debian and others install SoftHSM2's module.
var softHSMModules = []string{
	"/usr/lib/softhsm/libsofthsm2.so",
	"/usr/lib/x86_64-linux-gnu/softhsm/libsofthsm2.so",
	"/usr/lib/aarch64-linux-gnu/softhsm/libsofthsm2.so",
	"/usr/local/lib/softhsm/libsofthsm2.so",
}

// SoftHSM gives the test a SoftHSM2 token directory and configuration of
// its own (SOFTHSM2_CONF, so no token is shared across tests) and returns
// the PKCS#11 module's path, softhsm2-util's path and a directory for the
// test's other files. It skips the test when SoftHSM2 is not installed,
// unless IOTRANSIT_REQUIRE_PEERS=1.
func SoftHSM(t testing.TB) (module, util, dir string) {
	t.Helper()
	util = RequirePeer(t, "softhsm2-util")
	for _, m := range softHSMModules {
		if _, err := os.Stat(m); err == nil {
			module = m
			break
		}
	}
	if module == "" {
		t.Fatalf("softhsm2-util is installed but its module is in none of %v", softHSMModules)
	}
	dir = t.TempDir()
	tokens := filepath.Join(dir, "tokens")
	if err := os.Mkdir(tokens, 0o700); err != nil {
		t.Fatal(err)
	}
	conf := filepath.Join(dir, "softhsm2.conf")
	body := fmt.Sprintf("directories.tokendir = %s\nobjectstore.backend = file\nlog.level = ERROR\nslots.removable = false\n", tokens)
	if err := os.WriteFile(conf, []byte(body), 0o600); err != nil {
		t.Fatal(err)
	}
	t.Setenv("SOFTHSM2_CONF", conf)
	return module, util, dir
}

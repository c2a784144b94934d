package testutil

import (
	"os"
	"os/exec"
	"path/filepath"
	"testing"
)

// SoftHSMPIN is the user PIN of the tokens SoftHSMTokens makes.
const SoftHSMPIN = "1234"

// SoftHSMTokens is SoftHSM with a token initialized for each label (user
// PIN SoftHSMPIN) and a PIN file (0600) holding that PIN. It returns the
// module's path and the PIN file's.
func SoftHSMTokens(t testing.TB, labels ...string) (module, pinFile string) {
	t.Helper()
	module, util, dir := SoftHSM(t)
	for _, label := range labels {
		out, err := exec.Command(util, "--init-token", "--free", "--label", label, "--pin", SoftHSMPIN, "--so-pin", "5678").CombinedOutput()
		if err != nil {
			t.Fatalf("softhsm2-util --init-token: %v: %s", err, out)
		}
	}
	pinFile = filepath.Join(dir, "pin")
	if err := os.WriteFile(pinFile, []byte(SoftHSMPIN+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	return module, pinFile
}

// SoftHSMWrongPINFile returns a PIN file (0600) holding a PIN that is not
// SoftHSMPIN, which the tokens of SoftHSMTokens refuse.
func SoftHSMWrongPINFile(t testing.TB) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "wrong-pin")
	if err := os.WriteFile(path, []byte("9999\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

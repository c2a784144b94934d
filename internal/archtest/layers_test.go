package archtest

import (
	"os/exec"
	"slices"
	"strings"
	"testing"
)

// layers places every package of the module in a layer (docs/ARCHITECTURE.md,
// "Which package may import which"). A package may import packages of
// lower layers; within its own layer only what sameLayer lists.
var layers = map[string]int{
	// 0: foundations, which know no iotransit service.
	"apispec": 0, "client": 0, "receiver": 0,
	"internal/fault": 0, "internal/retry": 0, "internal/securefile": 0,
	"internal/backbone/names": 0, "internal/backbone/kverr": 0, "internal/thingsee": 0, "internal/pki": 0,
	"internal/kms": 0, "internal/forward/egress": 0, "internal/gwproto": 0,
	"internal/mesh": 0, "internal/cli": 0,
	"internal/pkcs11tok": 0,
	// 1: the domains, each over JetStream or the network.
	"internal/backbone": 1, "internal/registry": 1, "internal/credential": 1,
	"internal/store": 1, "internal/audit": 1, "internal/ingest": 1,
	"internal/forward": 1, "internal/forward/webhook": 1, "internal/forward/mqttout": 1,
	"internal/forward/azure": 1, "internal/forward/awsiot": 1, "internal/forward/seal": 1,
	"internal/gateway": 1, "internal/mosquitto": 1,
	"internal/gateway/keystore": 1, "internal/gateway/queue": 1,
	"internal/meshnet": 1, "internal/gwstate": 1,
	"internal/firmware": 1, "internal/gateway/updater": 1,
	"internal/reencrypt":     1,
	"internal/gateway/agent": 1,
	// 2: the HTTPS edge.
	"internal/api": 2,
	// 3: the wiring points: node for the cloud, agentcmd for the gateway.
	"internal/node": 3, "internal/gateway/agentcmd": 3,
	// 4: programs and test harnesses.
	"cmd/iotransit": 4, "cmd/iotransit-gateway": 4, "internal/bench": 4, "internal/testutil": 4,
	"internal/testutil/nodetest": 4, "internal/forward/mqttout/mosquittotest": 4,
	"internal/testutil/storetest": 4,
	"internal/testutil/lazyfs":    4,
	"internal/archtest":           4, "internal/hostile": 4,
	"internal/firmware/firmwaretest": 4,
	"internal/kms/kmstest":           4,
}

// sameLayer lists the imports allowed inside a layer, each for a reason.
var sameLayer = map[string][]string{
	"internal/thingsee": {"internal/fault"},
	"internal/pki":      {"internal/fault"},
	"internal/kms":      {"internal/securefile", "internal/backbone/kverr", "internal/pkcs11tok"},
	// The PIN file is a secret file.
	"internal/pkcs11tok":      {"internal/securefile"},
	"internal/forward/egress": {"internal/fault"},
	// The mesh keys travel sealed in the receiver's format.
	"internal/gwproto": {"receiver"},
	// Enrollment tokens are bearer secrets of the credential form.
	"internal/registry": {"internal/credential"},
	// The accept core authenticates against the registry and persists to the store.
	"internal/ingest": {"internal/registry", "internal/store"},
	// Delivery reads the store's messages.
	"internal/forward": {"internal/store"},
	// Targets plug into forward; AWS and Azure speak MQTT through mqttout.
	"internal/forward/webhook": {"internal/forward"},
	"internal/forward/mqttout": {"internal/forward"},
	"internal/forward/azure":   {"internal/forward", "internal/forward/mqttout"},
	"internal/forward/awsiot":  {"internal/forward", "internal/forward/mqttout"},
	"internal/forward/seal":    {"internal/forward"},
	// Firmware repositories keep their metadata, images and sealed online
	// keys on the backbone.
	"internal/firmware": {"internal/backbone"},
	// The agent runs the uplink, its key store and its queue.
	"internal/gateway/agent": {"internal/gateway", "internal/gateway/keystore", "internal/gateway/queue"},
	// The bench command drives the load generator.
	"cmd/iotransit": {"internal/bench"},
	// Test harnesses build on each other.
	"internal/testutil/nodetest":             {"internal/testutil"},
	"internal/testutil/storetest":            {"internal/testutil"},
	"internal/forward/mqttout/mosquittotest": {"internal/testutil"},
	"internal/firmware/firmwaretest":         {"internal/testutil/nodetest"},
}

// TestImportLayers keeps the dependency graph layered: no package imports a
// higher layer, and every package has a layer.
func TestImportLayers(t *testing.T) {
	const mod = "github.com/iotransit/iotransit/"
	cmd := exec.Command("go", "list", "-f", `{{.ImportPath}}{{range .Imports}} {{.}}{{end}}`, "./...")
	cmd.Dir = root(t)
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("go list: %v", err)
	}
	for _, line := range strings.Split(strings.TrimSpace(string(out)), "\n") {
		fields := strings.Fields(line)
		pkg := strings.TrimPrefix(fields[0], mod)
		layer, ok := layers[pkg]
		if !ok {
			t.Errorf("package %s has no layer: add it to layers (and to docs/ARCHITECTURE.md)", pkg)
			continue
		}
		for _, imp := range fields[1:] {
			if !strings.HasPrefix(imp, mod) {
				continue
			}
			dep := strings.TrimPrefix(imp, mod)
			dl, ok := layers[dep]
			switch {
			case !ok:
				// reported on its own line
			case dl > layer:
				t.Errorf("%s (layer %d) imports %s (layer %d): a lower layer must not depend on a higher one", pkg, layer, dep, dl)
			case dl == layer && !slices.Contains(sameLayer[pkg], dep):
				t.Errorf("%s imports %s of its own layer %d: list it in sameLayer with the reason, or move one of them", pkg, dep, layer)
			}
		}
	}
}

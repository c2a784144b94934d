package main

import (
	"bytes"
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"reflect"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/iotransit/iotransit/client"
	"github.com/iotransit/iotransit/internal/gateway"
	"github.com/iotransit/iotransit/internal/node"
	"github.com/iotransit/iotransit/internal/pki"
	tu "github.com/iotransit/iotransit/internal/testutil"
	"github.com/iotransit/iotransit/internal/testutil/nodetest"
)

var (
	whsecPattern = regexp.MustCompile(`whsec_[A-Za-z0-9+/=]+`)
	devTenant    = "--tenant=" + node.DevTenant
)

// writeTemp writes data to a new file in a test directory.
func writeTemp(t *testing.T, name, data string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(p, []byte(data), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

// integrationID returns the id in the table row of the integration named name.
func integrationID(t *testing.T, out, name string) string {
	t.Helper()
	m := regexp.MustCompile(`(?m)^([0-9a-f]{12})\s+` + regexp.QuoteMeta(name) + `\s`).FindStringSubmatch(out)
	if m == nil {
		t.Fatalf("no integration %s in:\n%s", name, out)
	}
	return m[1]
}

// noSecret fails the test if out shows any of the secrets.
func noSecret(t *testing.T, what, out string, secrets ...string) {
	t.Helper()
	for _, s := range secrets {
		if s != "" && strings.Contains(out, s) {
			t.Fatalf("%s shows a secret:\n%s", what, out)
		}
	}
}

// getRow runs integration get and returns the value cells of the row
// that starts with field (e.g. "DELIVERED:").
func (a *adminNode) getRow(t *testing.T, id, field string) []string {
	t.Helper()
	return tableRow(t, a.mustOp(t, "integration", "get", id, devTenant), field)[1:]
}

func (a *adminNode) getCount(t *testing.T, id, field string) int {
	t.Helper()
	n, err := strconv.Atoi(a.getRow(t, id, field)[0])
	if err != nil {
		t.Fatalf("%s is not a number: %v", field, err)
	}
	return n
}

// integrationGateway connects a gateway of the dev tenant over MQTT.
func integrationGateway(t *testing.T, a *adminNode, serial string) *gateway.Uplink {
	t.Helper()
	up, err := nodetest.Dial(t, a.n, nodetest.Gateway(t, a.n, node.DevTenant, serial), serial, nil)
	if err != nil {
		t.Fatal(err)
	}
	return up
}

func publish(t *testing.T, up *gateway.Uplink, tuid string) {
	t.Helper()
	res, err := up.Publish(context.Background(), []byte(tu.Thingsee(tuid, time.Now().Unix(), 21.5)), 1)
	if err != nil || res.ReasonCode != 0 {
		t.Fatalf("publish: %v, reason %#x %s", err, res.ReasonCode, res.Reason)
	}
}

// received reports whether one of the requests holds a message of tuid.
func received(ds []tu.Delivery, tuid string) bool {
	for _, d := range ds {
		if bytes.Contains(d.Body, []byte(`"tsmTuid":"`+tuid+`"`)) {
			return true
		}
	}
	return false
}

func answer(status int) func(http.ResponseWriter, *http.Request, []byte) bool {
	return func(w http.ResponseWriter, _ *http.Request, _ []byte) bool {
		w.WriteHeader(status)
		return true
	}
}

func TestAdminIntegrationWebhookLifecycle(t *testing.T) {
	a := startAdminNode(t)
	rcv := tu.NewReceiver(t)
	caFile := writeTemp(t, "receiver-ca.pem", rcv.CAPEM)
	const (
		serial = "TSGW06INTG0000001"
		tuid   = "TSEN01INT00000001"
	)
	up := integrationGateway(t, a, serial)

	// Flags before and after nothing positional; the secret is generated
	// and shown once, with its warning.
	out := a.mustOp(t, "integration", "add", "--name", "hook", "--type", "webhook", "--url", rcv.URL, "--target-ca-file", caFile, devTenant)
	wantLines(t, out, "ID", "NAME", "TYPE", "PAUSED", "TARGET", "shown only once")
	secret := whsecPattern.FindString(out)
	if secret == "" {
		t.Fatalf("add printed no whsec_ secret:\n%s", out)
	}
	id := integrationID(t, out, "hook")
	if row := tableRow(t, out, id); strings.Join(row, " ") != id+" hook webhook no "+rcv.URL {
		t.Fatalf("add row %q", row)
	}

	// No output after the creation shows the secret.
	out = a.mustOp(t, "integration", "list", devTenant)
	wantLines(t, out, "ID", "NAME", "TYPE", "HEALTH", "BACKLOG", "DEAD-LETTERS", "NEXT-RETRY", "TARGET", "LAST-ERROR")
	if row := tableRow(t, out, id); strings.Join(row, " ") != id+" hook webhook ok 0 0 - "+rcv.URL+" -" {
		t.Fatalf("list row %q", row)
	}
	noSecret(t, "list", out, secret)
	var list struct {
		Items []struct {
			ID         string   `json:"id"`
			SecretsSet []string `json:"secretsSet"`
		} `json:"items"`
	}
	a.mustJSON(t, &list, "integration", "list", devTenant)
	if len(list.Items) != 1 || list.Items[0].ID != id || strings.Join(list.Items[0].SecretsSet, ",") != "webhook.secret" {
		t.Fatalf("list -o json: %+v", list)
	}
	out = a.mustOp(t, "integration", "get", id, devTenant)
	wantLines(t, out, "NAME:", "hook", "TARGET:", rcv.URL, "AUTH:", "SERVER-CA:", "pinned CA", "SECRETS-SET:", "webhook.secret",
		"MAX-AGE:", "24h0m0s", "DELIVERED:", "FAILED-ATTEMPTS:", "DEAD-LETTERS:", "BACKLOG:", "LAST-ERROR:", "LAST-SUCCESS:")
	noSecret(t, "get", out, secret)
	jsonOut := a.mustOp(t, "integration", "get", id, devTenant, "-o", "json")
	noSecret(t, "get -o json", jsonOut, secret)

	// A message published by a gateway is delivered.
	publish(t, up, tuid)
	tu.Eventually(t, 30*time.Second, 100*time.Millisecond, func() error {
		if n := a.getCount(t, id, "DELIVERED:"); n < 1 {
			return fmt.Errorf("delivered %d", n)
		}
		return nil
	})
	if !received(rcv.Got(), tuid) {
		t.Fatal("the receiver did not get the message")
	}
	if got := a.getRow(t, id, "LAST-SUCCESS:")[0]; got == "-" {
		t.Fatal("get shows no last success after a delivery")
	}

	// test: ok, then a failing receiver makes it fail with the status.
	out = a.mustOp(t, "integration", "test", id, devTenant)
	wantLines(t, out, "ok: the test delivery was accepted in", " ms")
	rcv.Handle(answer(http.StatusInternalServerError))
	out, _, err := a.op(t, "integration", "test", id, devTenant)
	if !errors.Is(err, errTestFailed) || !strings.Contains(err.Error(), "HTTP 500") {
		t.Fatalf("test against a failing receiver: %v", err)
	}
	wantLines(t, out, "failed:", "HTTP 500")
	var res struct {
		OK    bool   `json:"ok"`
		Error string `json:"error"`
	}
	out, _, err = a.op(t, "integration", "test", id, devTenant, "-o", "json")
	if !errors.Is(err, errTestFailed) || json.Unmarshal([]byte(out), &res) != nil || res.OK || res.Error != "HTTP 500" {
		t.Fatalf("test -o json against a failing receiver: %v %q", err, out)
	}
	rcv.Handle(nil)

	// pause and resume.
	out = a.mustOp(t, "integration", "pause", id, devTenant)
	if row := tableRow(t, out, id); row[3] != "yes" {
		t.Fatalf("pause row %q", row)
	}
	if got := a.getRow(t, id, "PAUSED:")[0]; got != "yes" {
		t.Fatalf("get after pause: PAUSED %s", got)
	}
	out = a.mustOp(t, "integration", "resume", id, devTenant)
	if row := tableRow(t, out, id); row[3] != "no" {
		t.Fatalf("resume row %q", row)
	}

	// rotate-secret prints a new secret once, flags after the id.
	out = a.mustOp(t, "integration", "rotate-secret", id, devTenant, "--overlap", "1h")
	wantLines(t, out, "new webhook signing secret (shown only once", "previous secret keeps signing too until")
	secret2 := whsecPattern.FindString(out)
	if secret2 == "" || secret2 == secret {
		t.Fatalf("rotate-secret: no new secret:\n%s", out)
	}
	noSecret(t, "rotate-secret", out, secret)
	out = a.mustOp(t, "integration", "get", id, devTenant)
	wantLines(t, out, "PREVIOUS-SECRET:", "webhook.secret,webhook.previousSecret")
	noSecret(t, "get after rotation", out, secret, secret2)
	noSecret(t, "list after rotation", a.mustOp(t, "integration", "list", devTenant, "-o", "json"), secret, secret2)

	// A second integration of the name is refused with the API's code.
	_, _, err = a.op(t, "integration", "add", "--name", "hook", "--type", "webhook", "--url", rcv.URL, "--target-ca-file", caFile, devTenant)
	wantProblem(t, err, "forward.name_taken")

	out = a.mustOp(t, "integration", "delete", id, devTenant)
	wantLines(t, out, "integration "+id+" deleted")
	_, _, err = a.op(t, "integration", "get", id, devTenant)
	wantProblem(t, err, "forward.integration_not_found")
	_, _, err = a.op(t, "integration", "test", id, devTenant)
	wantProblem(t, err, "forward.integration_not_found")
}

func TestAdminIntegrationDeadLettersAndRedrive(t *testing.T) {
	a := startAdminNode(t)
	rcv := tu.NewReceiver(t)
	rcv.Handle(answer(http.StatusServiceUnavailable))
	caFile := writeTemp(t, "receiver-ca.pem", rcv.CAPEM)
	const (
		serial = "TSGW06INTG0000002"
		tuid   = "TSEN01INT00000002"
	)
	up := integrationGateway(t, a, serial)

	out := a.mustOp(t, "integration", "add", "--name", "fragile", "--type", "webhook", "--url", rcv.URL, "--target-ca-file", caFile, "--test=false",
		"--max-age", "1s", "--batch-wait", "10ms", "--batch-max", "10", devTenant)
	id := integrationID(t, out, "fragile")
	out = a.mustOp(t, "integration", "get", id, devTenant)
	wantLines(t, out, "up to 10 messages, waiting up to 10ms", "1s")

	out = a.mustOp(t, "integration", "dead-letters", id, devTenant)
	if lines := strings.Split(strings.TrimSpace(out), "\n"); len(lines) != 1 {
		t.Fatalf("dead letters before any message:\n%s", out)
	}

	publish(t, up, tuid)
	var row []string
	tu.Eventually(t, 30*time.Second, 200*time.Millisecond, func() error {
		out := a.mustOp(t, "integration", "dead-letters", id, devTenant)
		lines := strings.Split(strings.TrimSpace(out), "\n")
		if strings.Join(strings.Fields(lines[0]), " ") != "SEQ DEAD-AT REASON ATTEMPTS GATEWAY MESSAGE-ID" {
			t.Fatalf("dead-letters header %q", lines[0])
		}
		if len(lines) < 2 {
			return errors.New("no dead letter yet")
		}
		row = strings.Fields(lines[1])
		return nil
	})
	// SEQ DEAD-AT HTTP 503 ATTEMPTS GATEWAY MESSAGE-ID
	if len(row) != 7 || row[0] != "1" || row[2]+" "+row[3] != "HTTP 503" || row[5] != serial {
		t.Fatalf("dead letter row %q", row)
	}
	if n, err := strconv.Atoi(row[4]); err != nil || n < 1 {
		t.Fatalf("dead letter attempts %q", row[4])
	}
	if n := a.getCount(t, id, "DEAD-LETTERS:"); n != 1 {
		t.Fatalf("get: %d dead letters, want 1", n)
	}
	wantLines(t, strings.Join(a.getRow(t, id, "LAST-ERROR:"), " "), "HTTP 503")

	var page struct {
		Items []struct {
			Seq     uint64          `json:"seq"`
			Message json.RawMessage `json:"message"`
		} `json:"items"`
	}
	a.mustJSON(t, &page, "integration", "dead-letters", id, devTenant, "--limit", "1")
	if len(page.Items) != 1 || !bytes.Contains(page.Items[0].Message, []byte(tuid)) {
		t.Fatalf("dead-letters -o json: %+v", page)
	}

	// Re-drive to a receiver that accepts again: it gets the message.
	_, _, err := a.op(t, "integration", "redrive", id, devTenant, "--seq", "999")
	wantProblem(t, err, "forward.dead_letter_not_found")
	_, _, err = a.op(t, "integration", "redrive", id, devTenant, "--seq", "first")
	if !errors.Is(err, errUsage) {
		t.Fatalf("redrive --seq first: %v", err)
	}
	rcv.Handle(nil)
	before := len(rcv.Got())
	out = a.mustOp(t, "integration", "redrive", id, devTenant)
	wantLines(t, out, "re-drove 1 dead letter(s) of integration "+id)
	tu.Eventually(t, 30*time.Second, 100*time.Millisecond, func() error {
		if !received(rcv.Got()[before:], tuid) {
			return errors.New("the re-driven message has not arrived")
		}
		return nil
	})
	tu.Eventually(t, 10*time.Second, 100*time.Millisecond, func() error {
		if n := a.getCount(t, id, "DELIVERED:"); n < 1 {
			return fmt.Errorf("delivered %d", n)
		}
		return nil
	})
	if n := a.getCount(t, id, "DEAD-LETTERS:"); n != 0 {
		t.Fatalf("%d dead letters after redrive", n)
	}
}

func TestAdminIntegrationOtherTypesAndErrors(t *testing.T) {
	a := startAdminNode(t)

	t.Run("websocket with filters", func(t *testing.T) {
		out := a.mustOp(t, "integration", "add", devTenant, "--name", "live", "--type", "websocket",
			"--filter-tsmid", "12100", "--filter-tsmid", "13100", "--filter-device", "TSEN01ABC00000001", "--filter-gateway", node.DevGateway)
		id := integrationID(t, out, "live")
		if row := tableRow(t, out, id); strings.Join(row, " ") != id+" live websocket no -" {
			t.Fatalf("add row %q", row)
		}
		if strings.Contains(out, "shown only once") {
			t.Fatalf("a websocket integration has no secret to show:\n%s", out)
		}
		got := strings.Join(a.getRow(t, id, "FILTER:"), " ")
		if got != "tsmIds=12100,13100 devices=TSEN01ABC00000001 gateways="+node.DevGateway {
			t.Fatalf("FILTER %q", got)
		}
		_, _, err := a.op(t, "integration", "add", devTenant, "--name", "bad", "--type", "websocket", "--filter-device", "nope")
		wantProblem(t, err, "forward.integration_invalid")
	})

	t.Run("mqtt plaintext refused", func(t *testing.T) {
		_, _, err := a.op(t, "integration", "add", devTenant, "--name", "broker", "--type", "mqtt", "--broker", "mqtt://127.0.0.1:1883")
		wantProblem(t, err, "forward.target_invalid")
		if !strings.Contains(err.Error(), "plaintext mqtt://") {
			t.Fatalf("the refusal does not say why: %v", err)
		}
	})

	t.Run("secrets from files", func(t *testing.T) {
		pw := "mqtt-password-from-a-file"
		out := a.mustOp(t, "integration", "add", devTenant, "--name", "broker", "--type", "mqtt", "--broker", "mqtts://127.0.0.1:8883", "--test=false",
			"--username", "iot", "--password-file", writeTemp(t, "pw", pw+"\n"), "--topic", "sensors/{tsmTuid}")
		id := integrationID(t, out, "broker")
		noSecret(t, "add", out, pw)
		out = a.mustOp(t, "integration", "get", id, devTenant, "-o", "json")
		noSecret(t, "get", out, pw)
		var v struct {
			SecretsSet []string `json:"secretsSet"`
			MQTT       struct {
				Broker, Username, Topic string
			} `json:"mqtt"`
		}
		if err := json.Unmarshal([]byte(out), &v); err != nil {
			t.Fatal(err)
		}
		if strings.Join(v.SecretsSet, ",") != "mqtt.password" || v.MQTT.Username != "iot" || v.MQTT.Topic != "sensors/{tsmTuid}" {
			t.Fatalf("mqtt integration: %+v", v)
		}

		rcv := tu.NewReceiver(t)
		key, whsec := "api-key-from-a-file", "whsec_"+strings.Repeat("QUJD", 8)
		out = a.mustOp(t, "integration", "add", devTenant, "--name", "keyed", "--type", "webhook", "--url", rcv.URL,
			"--target-ca-file", writeTemp(t, "ca.pem", rcv.CAPEM), "--secret-file", writeTemp(t, "secret", whsec),
			"--auth", "apikey", "--header-name", "X-Key", "--header-value-file", writeTemp(t, "key", key))
		id = integrationID(t, out, "keyed")
		noSecret(t, "add with --secret-file", out, key, whsec)
		if strings.Contains(out, "shown only once") {
			t.Fatalf("add printed a secret it did not generate:\n%s", out)
		}
		out = a.mustOp(t, "integration", "get", id, devTenant)
		wantLines(t, out, "apikey (header X-Key)", "webhook.secret,auth.headerValue")
		noSecret(t, "get", out, key, whsec)
		out = a.mustOp(t, "integration", "test", id, devTenant)
		wantLines(t, out, "ok:")
		if got := rcv.Got(); len(got) != 2 || got[0].Header.Get("X-Key") != key || got[1].Header.Get("X-Key") != key { // add's test delivery and test's
			t.Fatalf("the receiver did not get the key: %d requests", len(got))
		}
	})

	t.Run("command line mistakes", func(t *testing.T) {
		tests := []struct {
			name string
			args []string
			want string
		}{
			{"wrong type", []string{"--name", "x", "--type", "ftp"}, `--type "ftp": want one of webhook, mqtt, azure-iothub, aws-iot, websocket`},
			{"no type", []string{"--name", "x"}, "needs --type"},
			{"no name", []string{"--type", "websocket"}, "needs --name"},
			{"flag of another type", []string{"--name", "x", "--type", "websocket", "--url", "https://example.com"}, "--url (or IOTRANSIT_URL) does not apply to --type websocket"},
			{"no url", []string{"--name", "x", "--type", "webhook"}, "--type webhook needs --url"},
			{"auth flag without auth", []string{"--name", "x", "--type", "webhook", "--url", "https://example.com", "--header-value", "k"}, "--header-value needs --auth apikey"},
			{"mtls without cert", []string{"--name", "x", "--type", "webhook", "--url", "https://example.com", "--auth", "mtls"}, "--auth mtls needs --client-cert and --client-key"},
			{"secret twice", []string{"--name", "x", "--type", "webhook", "--url", "https://example.com", "--secret", "whsec_x", "--secret-file", "f"}, "give --secret or --secret-file, not both"},
			{"bad tsmid", []string{"--name", "x", "--type", "websocket", "--filter-tsmid", "weather"}, `--filter-tsmid "weather"`},
		}
		for _, tc := range tests {
			t.Run(tc.name, func(t *testing.T) {
				_, _, err := a.op(t, append([]string{"integration", "add", devTenant}, tc.args...)...)
				if !errors.Is(err, errUsage) || !strings.Contains(err.Error(), tc.want) {
					t.Fatalf("error %v, want usage error with %q", err, tc.want)
				}
			})
		}
		_, _, err := a.op(t, "integration", "add", devTenant, "--name", "x", "--type", "webhook", "--url", "https://example.com", "--secret-file", filepath.Join(t.TempDir(), "missing"))
		if err == nil || !strings.Contains(err.Error(), "--secret-file") {
			t.Fatalf("missing --secret-file: %v", err)
		}
		_, _, err = a.op(t, "integration", "get", "not-an-id", devTenant)
		wantProblem(t, err, "forward.integration_not_found")
		_, _, err = a.op(t, "integration", "rotate-secret", integrationID(t, a.mustOp(t, "integration", "list", devTenant), "live"), devTenant)
		wantProblem(t, err, "forward.not_webhook")
	})

	t.Run("help", func(t *testing.T) {
		out, _, err := a.cli(t, "integration", "-h")
		if err != nil {
			t.Fatal(err)
		}
		for _, c := range []string{"add", "update <id>", "list", "get <id>", "pause <id>", "resume <id>", "retry-now <id>", "delete <id>", "test <id>", "rotate-secret <id>", "dead-letters <id>", "redrive <id>"} {
			wantLines(t, out, "iotransit integration "+c)
		}
		wantLines(t, out, "shell history")
		out, _, err = a.cli(t, "help")
		if err != nil {
			t.Fatal(err)
		}
		wantLines(t, out, "iotransit integration add|update|list|get")
	})
}

// TestAdminIntegrationRequestBodies checks the integrations that add asks
// for, of the types the tests cannot reach (Azure IoT Hub and AWS IoT Core
// need their clouds) among others.
func TestAdminIntegrationRequestBodies(t *testing.T) {
	cert, key, ca := writeTemp(t, "cert.pem", "CERT PEM"), writeTemp(t, "key.pem", "KEY PEM"), writeTemp(t, "ca.pem", "CA PEM")
	tests := []struct {
		name string
		args []string
		want client.Integration
	}{
		{name: "azure", args: []string{"--name", "az", "--type", "azure-iothub", "--hub-host", "myhub.azure-devices.net", "--device-id", "dev1", "--device-key-file", writeTemp(t, "dk", "c2VjcmV0\n"), "--port", "443"},
			want: client.Integration{Name: "az", Type: "azure-iothub", Azure: &client.AzureConfig{HostName: "myhub.azure-devices.net", DeviceID: "dev1", DeviceKey: "c2VjcmV0", Port: 443}}},
		{name: "aws", args: []string{"--name", "aws", "--type", "aws-iot", "--endpoint", "abc-ats.iot.eu-west-1.amazonaws.com", "--client-id", "thing", "--topic", "t/1", "--client-cert", cert, "--client-key", key, "--target-ca-file", ca},
			want: client.Integration{Name: "aws", Type: "aws-iot", AWS: &client.AWSConfig{Endpoint: "abc-ats.iot.eu-west-1.amazonaws.com", ClientID: "thing", Topic: "t/1", CertPEM: "CERT PEM", KeyPEM: "KEY PEM", CAPEM: "CA PEM"}}},
		{name: "oauth2 webhook", args: []string{"--name", "o", "--type", "webhook", "--url", "https://example.com/h", "--auth", "oauth2", "--token-url", "https://example.com/token", "--client-id", "cid", "--client-secret", "cs",
			"--scope", "a", "--scope", "b", "--batch-max", "5", "--batch-wait", "2s", "--max-age", "1h", "--filter-tsmid", "12100"},
			want: client.Integration{Name: "o", Type: "webhook", Filter: client.Filter{TsmIDs: []int{12100}},
				Batch: client.Batching{MaxMessages: 5, MaxWait: client.Duration(2 * time.Second)}, MaxAge: client.Duration(time.Hour),
				Webhook: &client.WebhookConfig{URL: "https://example.com/h", Auth: &client.WebhookAuth{Kind: "oauth2", TokenURL: "https://example.com/token", ClientID: "cid", ClientSecret: "cs", Scopes: []string{"a", "b"}}}}},
		{name: "oauth2 with its own CA", args: []string{"--name", "o2", "--type", "webhook", "--url", "https://example.com/h", "--auth", "oauth2", "--token-url", "https://idp.example.com/token", "--token-ca-file", ca, "--client-id", "cid", "--client-secret", "cs"},
			want: client.Integration{Name: "o2", Type: "webhook", Webhook: &client.WebhookConfig{URL: "https://example.com/h",
				Auth: &client.WebhookAuth{Kind: "oauth2", TokenURL: "https://idp.example.com/token", TokenCAPEM: "CA PEM", ClientID: "cid", ClientSecret: "cs"}}}},
		{name: "websocket", args: []string{"--name", "w", "--type", "websocket"}, want: client.Integration{Name: "w", Type: "websocket"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := integrationRequest(t, tc.args...)
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(*got, tc.want) {
				g, _ := json.Marshal(got)
				w, _ := json.Marshal(tc.want)
				t.Fatalf("integration\n %s\nwant\n %s", g, w)
			}
		})
	}
	_, err := integrationRequest(t, "--name", "aws", "--type", "aws-iot", "--endpoint", "e", "--client-id", "c", "--topic", "t")
	if !errors.Is(err, errUsage) || !strings.Contains(err.Error(), "--client-cert") {
		t.Fatalf("aws-iot without a certificate: %v", err)
	}
}

// integrationRequest parses the flags of integration add and returns the
// integration they ask for.
func integrationRequest(t *testing.T, args ...string) (*client.Integration, error) {
	t.Helper()
	fs := flag.NewFlagSet("add", flag.ContinueOnError)
	var f integrationAddFlags
	f.define(fs)
	pos, onCmdLine, err := parseArgs(fs, args)
	if err != nil || len(pos) > 0 {
		t.Fatalf("parse %q: %v, arguments %q", args, err, pos)
	}
	return f.request(onCmdLine, onCmdLine)
}

// TestAdminIntegrationUpdate changes a webhook's URL and filter with
// integration update: get shows them, the test delivery after saving goes
// to the new URL, and so do the messages the new filter selects (and not
// the others). Only the flags given change; the type cannot.
func TestAdminIntegrationUpdate(t *testing.T) {
	a := startAdminNode(t)
	oldRcv, newRcv := tu.NewReceiver(t), tu.NewReceiver(t)
	const (
		serial = "TSGW06INTG0000003"
		keep   = "TSEN01INT00000031"
		drop   = "TSEN01INT00000032"
	)
	up := integrationGateway(t, a, serial)
	out := a.mustOp(t, "integration", "add", "--name", "moving", "--type", "webhook", "--url", oldRcv.URL,
		"--target-ca-file", writeTemp(t, "old-ca.pem", oldRcv.CAPEM), "--filter-device", drop, "--batch-max", "7", devTenant)
	id := integrationID(t, out, "moving")

	out, errOut, err := a.op(t, "integration", "update", id, "--url", newRcv.URL, "--target-ca-file", writeTemp(t, "new-ca.pem", newRcv.CAPEM),
		"--filter-device", keep, devTenant)
	if err != nil {
		t.Fatalf("update: %v\n%s", err, errOut)
	}
	if row := tableRow(t, out, id); strings.Join(row, " ") != id+" moving webhook no "+newRcv.URL {
		t.Fatalf("update row %q", row)
	}
	wantLines(t, errOut, "test delivery: ok")
	if got := newRcv.Got(); len(got) != 1 || !received(got, "XXXX00TESTMESSAGE") {
		t.Fatalf("the new URL got %d requests, want the test delivery", len(got))
	}
	out = a.mustOp(t, "integration", "get", id, devTenant)
	wantLines(t, out, "TARGET:", newRcv.URL, "devices="+keep, "up to 7 messages", "SECRETS-SET:", "webhook.secret")
	if strings.Contains(out, drop) {
		t.Fatalf("get still shows the old filter:\n%s", out)
	}

	publish(t, up, drop)
	publish(t, up, keep)
	tu.Eventually(t, 30*time.Second, 100*time.Millisecond, func() error {
		if !received(newRcv.Got(), keep) {
			return errors.New("the new URL has not received the message of the new filter")
		}
		return nil
	})
	if received(newRcv.Got(), drop) || received(oldRcv.Got(), keep) || received(oldRcv.Got(), drop) {
		t.Fatal("a message went where the updated integration no longer sends it")
	}

	tests := []struct {
		name string
		args []string
		want string
	}{
		{"nothing to change", nil, "nothing to change"},
		{"type change", []string{"--type", "mqtt"}, "the type of an integration cannot change"},
		{"flag of another type", []string{"--broker", "mqtts://example.com"}, "--broker (or IOTRANSIT_BROKER) does not apply to --type webhook"},
		{"auth flag of another kind", []string{"--token-url", "https://example.com/token"}, "--token-url needs --auth oauth2"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, _, err := a.op(t, append([]string{"integration", "update", id, devTenant}, tc.args...)...)
			if !errors.Is(err, errUsage) || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("error %v, want a usage error with %q", err, tc.want)
			}
		})
	}
	_, _, err = a.op(t, "integration", "update", "0123456789ab", "--name", "x", devTenant)
	wantProblem(t, err, "forward.integration_not_found")
}

// tlsReceiver starts an HTTPS receiver at 127.0.0.1 whose certificate, from
// a CA of its own (returned as PEM), is for hosts and valid from notBefore
// for an hour.
func tlsReceiver(t *testing.T, notBefore time.Time, hosts ...string) (url, caPEM string) {
	t.Helper()
	ca, err := pki.NewCA("test target CA", 4*time.Hour, time.Now().Add(-3*time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	kp, err := ca.IssueServerKeyPair(hosts, time.Hour, notBefore)
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { w.WriteHeader(http.StatusNoContent) }))
	srv.TLS = &tls.Config{Certificates: []tls.Certificate{*kp}, MinVersion: tls.VersionTLS12}
	srv.Config.ErrorLog = log.New(io.Discard, "", 0) // the refused handshakes are the point
	srv.StartTLS()
	t.Cleanup(srv.Close)
	return srv.URL + "/hook", string(ca.CertPEM)
}

// TestAdminIntegrationTestsAtSave: add and update deliver a test message
// after saving. A TLS trust failure is explained with the flag that fixes
// it; the integration stays saved, and the command fails. --test=false
// skips the test.
func TestAdminIntegrationTestsAtSave(t *testing.T) {
	a := startAdminNode(t)
	rcv := tu.NewReceiver(t)
	otherURL, otherCA := tlsReceiver(t, time.Now(), "other.example")
	expiredURL, expiredCA := tlsReceiver(t, time.Now().Add(-2*time.Hour), "127.0.0.1")
	tests := []struct {
		name string
		args []string
		want []string
	}{
		{"unknown authority", []string{"--url", rcv.URL}, []string{"TLS: certificate not trusted", "--target-ca-file CA.pem", "--ca is the CA of the iotransit API"}},
		{"name mismatch", []string{"--url", otherURL, "--target-ca-file", writeTemp(t, "other.pem", otherCA)}, []string{"not for the host in --url", "update"}},
		{"expired", []string{"--url", expiredURL, "--target-ca-file", writeTemp(t, "expired.pem", expiredCA)}, []string{"expired or not yet valid"}},
	}
	for i, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			name := fmt.Sprintf("untrusted%d", i)
			out, errOut, err := a.op(t, append([]string{"integration", "add", "--name", name, "--type", "webhook", devTenant}, tc.args...)...)
			if !errors.Is(err, errTestFailed) || !strings.Contains(err.Error(), "is saved") {
				t.Fatalf("add: %v, want the test delivery's failure", err)
			}
			id := integrationID(t, out, name)
			wantLines(t, errOut, append([]string{"test delivery: failed", "iotransit integration update " + id}, tc.want...)...)
			wantLines(t, a.mustOp(t, "integration", "get", id, devTenant), "NAME:", name)
		})
	}
	var r client.TestResult
	id := integrationID(t, a.mustOp(t, "integration", "list", devTenant), "untrusted0")
	out, _, _ := a.op(t, "integration", "test", id, devTenant, "-o", "json")
	if err := json.Unmarshal([]byte(out), &r); err != nil || r.Code != client.TestTLSUnknownAuthority {
		t.Fatalf("test -o json: %v %q, want code %s", err, out, client.TestTLSUnknownAuthority)
	}

	// The fix the advice names works, and is tested on saving.
	_, errOut, err := a.op(t, "integration", "update", id, "--target-ca-file", writeTemp(t, "ca.pem", rcv.CAPEM), devTenant)
	if err != nil {
		t.Fatalf("update with the CA: %v\n%s", err, errOut)
	}
	wantLines(t, errOut, "test delivery: ok")

	// --test=false saves without a test delivery.
	before := len(rcv.Got())
	_, errOut, err = a.op(t, "integration", "add", "--name", "quiet", "--type", "webhook", "--url", rcv.URL, "--test=false", devTenant)
	if err != nil || strings.Contains(errOut, "test delivery") || len(rcv.Got()) != before {
		t.Fatalf("add --test=false: %v, %d requests\n%s", err, len(rcv.Got())-before, errOut)
	}

	// The flag's old name is refused, pointing at the new one.
	_, _, err = a.op(t, "integration", "add", "--name", "old", "--type", "webhook", "--url", rcv.URL, "--ca-file", "ca.pem", devTenant)
	if err == nil || !strings.Contains(err.Error(), "--ca-file is now --target-ca-file") {
		t.Fatalf("--ca-file: %v", err)
	}
}

// TestAdminIntegrationRetryNowAndListState: a receiver fails with an hour's
// Retry-After; list shows the integration failing, its backlog, next retry
// and last error. Once the receiver is healthy, retry-now delivers at once,
// and list shows the last error resolved.
func TestAdminIntegrationRetryNowAndListState(t *testing.T) {
	a := startAdminNode(t)
	rcv := tu.NewReceiver(t)
	down := rcv.Down(http.StatusServiceUnavailable, "3600") // an hour's backoff
	const (
		serial = "TSGW06INTG0000004"
		tuid   = "TSEN01INT00000041"
	)
	up := integrationGateway(t, a, serial)
	id := integrationID(t, a.mustOp(t, "integration", "add", "--name", "later", "--type", "webhook", "--url", rcv.URL,
		"--target-ca-file", writeTemp(t, "ca.pem", rcv.CAPEM), "--test=false", devTenant), "later")
	publish(t, up, tuid)
	var row []string
	tu.Eventually(t, 30*time.Second, 200*time.Millisecond, func() error {
		// ID NAME TYPE HEALTH BACKLOG DEAD-LETTERS NEXT-RETRY TARGET LAST-ERROR...
		row = tableRow(t, a.mustOp(t, "integration", "list", devTenant), id)
		if row[3] != "failing" || row[6] == "-" {
			return fmt.Errorf("list row %q", row)
		}
		return nil
	})
	if got := strings.Join(row[8:], " "); row[4] != "1" || !strings.HasPrefix(got, "HTTP 503 (since ") {
		t.Fatalf("failing row %q", row)
	}

	down.Store(false)
	out := a.mustOp(t, "integration", "retry-now", id, devTenant)
	wantLines(t, out, "tried again now")
	tu.Eventually(t, 15*time.Second, 100*time.Millisecond, func() error {
		if !received(rcv.Got(), tuid) {
			return errors.New("not delivered after retry-now")
		}
		return nil
	})
	tu.Eventually(t, 10*time.Second, 100*time.Millisecond, func() error {
		row = tableRow(t, a.mustOp(t, "integration", "list", devTenant), id)
		if row[3] != "ok" {
			return fmt.Errorf("list row %q", row)
		}
		return nil
	})
	if got := strings.Join(row[8:], " "); row[4] != "0" || row[6] != "-" || !strings.HasPrefix(got, "HTTP 503 (resolved ") {
		t.Fatalf("recovered row %q", row)
	}
	wantLines(t, a.mustOp(t, "integration", "get", id, devTenant), "HEALTH:", "ok", "(resolved ")

	a.mustOp(t, "integration", "pause", id, devTenant)
	_, _, err := a.op(t, "integration", "retry-now", id, devTenant)
	wantProblem(t, err, "forward.integration_paused")
}

// TestAdminIntegrationAddHelpGroupsFlagsByType: add -h (exit 0) lists the
// flags under a section per target type, then those of every type, then
// the connection's; update -h the same.
func TestAdminIntegrationAddHelpGroupsFlagsByType(t *testing.T) {
	sections := []string{"Webhook (--type webhook):", "MQTT broker (--type mqtt):", "Azure IoT Hub (--type azure-iothub):", "AWS IoT Core (--type aws-iot):", "Every type", "Connection flags"}
	// Each flag in the section it must be in (a flag of several types is in each).
	in := map[string][]string{
		"--url":            {"Webhook"},
		"--secret-file":    {"Webhook"},
		"--broker":         {"MQTT broker"},
		"--password-file":  {"MQTT broker"},
		"--hub-host":       {"Azure IoT Hub"},
		"--endpoint":       {"AWS IoT Core"},
		"--target-ca-file": {"Webhook", "MQTT broker", "Azure IoT Hub", "AWS IoT Core"},
		"--port":           {"Azure IoT Hub", "AWS IoT Core"},
		"--filter-tsmid":   {"Every type"},
		"--test":           {"Every type"},
		"--server":         {"Connection flags"},
	}
	for _, cmd := range []string{"add", "update"} {
		t.Run(cmd, func(t *testing.T) {
			var out, errb bytes.Buffer
			if err := run(context.Background(), []string{"integration", cmd, "-h"}, &out, &errb); err != nil {
				t.Fatalf("integration %s -h: %v", cmd, err)
			}
			help := out.String()
			parts := map[string]string{}
			rest := help
			for i, s := range sections {
				at := strings.Index(rest, "\n"+s)
				if at < 0 {
					t.Fatalf("no section %q (in this order) in:\n%s", s, help)
				}
				if i > 0 {
					parts[sections[i-1]] = rest[:at]
				}
				rest = rest[at+1:]
			}
			parts[sections[len(sections)-1]] = rest
			for flagName, want := range in {
				for sec, text := range parts {
					listed := regexp.MustCompile(`(?m)^  ` + regexp.QuoteMeta(flagName) + `\b`).MatchString(text)
					wanted := false
					for _, w := range want {
						wanted = wanted || strings.HasPrefix(sec, w)
					}
					if listed != wanted {
						t.Errorf("%s listed %v in %q, want %v", flagName, listed, sec, wanted)
					}
				}
			}
			if strings.Contains(help, "--ca-file") || !strings.Contains(help, "--test=false") {
				t.Errorf("help lists the renamed --ca-file or lacks --test=false:\n%s", help)
			}
		})
	}
}

// TestAdminIntegrationPatchBodies checks the changes update asks for: only
// the members of the flags given, a type's settings object whole (merged
// over the stored one by the server), secrets only when given.
func TestAdminIntegrationPatchBodies(t *testing.T) {
	ca := writeTemp(t, "ca.pem", "CA PEM")
	cur := func() *client.Integration {
		return &client.Integration{ID: "0123456789ab", Name: "n", Type: "webhook", Filter: client.Filter{Devices: []string{"TSEN01ABC00000001"}},
			Batch:   client.Batching{MaxMessages: 10, MaxWait: client.Duration(time.Second)},
			Webhook: &client.WebhookConfig{URL: "https://a.example/h", Auth: &client.WebhookAuth{Kind: "apikey", HeaderName: "X-Key"}}}
	}
	name := "renamed"
	tests := []struct {
		name string
		args []string
		want string // the JSON body
	}{
		{"name", []string{"--name", name}, `{"name":"renamed"}`},
		{"batch size keeps the wait", []string{"--batch-max", "5"}, `{"batch":{"maxMessages":5,"maxWait":"1s"}}`},
		{"filter list replaced", []string{"--filter-tsmid", "12100"}, `{"filter":{"tsmIds":[12100],"devices":["TSEN01ABC00000001"],"gateways":[]}}`},
		{"filter list emptied", []string{"--filter-device", ""}, `{"filter":{"tsmIds":[],"devices":[],"gateways":[]}}`},
		{"target CA", []string{"--target-ca-file", ca}, `{"webhook":{"url":"https://a.example/h","caPem":"CA PEM","auth":{"kind":"apikey","headerName":"X-Key"}}}`},
		{"secret of the current auth", []string{"--header-value", "k2"}, `{"webhook":{"url":"https://a.example/h","auth":{"kind":"apikey","headerName":"X-Key","headerValue":"k2"}}}`},
		{"another auth", []string{"--auth", "oauth2", "--token-url", "https://idp.example/t", "--client-id", "c", "--client-secret", "s"},
			`{"webhook":{"url":"https://a.example/h","auth":{"kind":"oauth2","tokenUrl":"https://idp.example/t","clientId":"c","clientSecret":"s"}},"clearSecrets":["auth.headerValue"]}`},
		{"no auth", []string{"--auth", "none"}, `{"webhook":{"url":"https://a.example/h","auth":{"kind":"none"}},"clearSecrets":["auth.headerValue"]}`},
		{"same auth", []string{"--auth", "apikey", "--header-value", "k3"}, `{"webhook":{"url":"https://a.example/h","auth":{"kind":"apikey","headerName":"X-Key","headerValue":"k3"}}}`},
		{"encryption removed", []string{"--public-key", ""}, `{"encryption":null}`},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			fs := flag.NewFlagSet("update", flag.ContinueOnError)
			var f integrationAddFlags
			f.define(fs)
			pos, onCmdLine, err := parseArgs(fs, tc.args)
			if err != nil || len(pos) > 0 {
				t.Fatalf("parse %q: %v, arguments %q", tc.args, err, pos)
			}
			p, err := f.patch(cur(), onCmdLine, onCmdLine)
			if err != nil {
				t.Fatal(err)
			}
			if b, _ := json.Marshal(p); string(b) != tc.want {
				t.Fatalf("patch\n %s\nwant\n %s", b, tc.want)
			}
		})
	}
	// An empty value the patch cannot send (the API keeps what is left
	// out) is refused, not dropped silently.
	for _, args := range [][]string{{"--target-ca-file", ""}, {"--header-name", ""}, {"--url", " "}} {
		fs := flag.NewFlagSet("update", flag.ContinueOnError)
		var f integrationAddFlags
		f.define(fs)
		_, onCmdLine, err := parseArgs(fs, args)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := f.patch(cur(), onCmdLine, onCmdLine); !errors.Is(err, errUsage) || !strings.Contains(err.Error(), args[0]) {
			t.Errorf("update %q: %v; want a usage error naming the flag", args, err)
		}
	}
}

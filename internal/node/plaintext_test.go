package node_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"fmt"
	"io/fs"
	"math/big"
	"os"
	"path/filepath"
	"testing"

	"github.com/iotransit/iotransit/client"
	"github.com/iotransit/iotransit/internal/node"
	"github.com/iotransit/iotransit/internal/testutil/nodetest"
)

// TestNodeKeepsNoSecretInPlaintextAtRest writes, through a real node whose
// root key file lives outside its data directory, messages carrying a
// unique marker, integration secrets (an auth header value and a webhook
// signing secret) and an enrollment token; then, the node stopped, it reads
// every file under the data directory and the root key file's directory:
// none of them holds a marker or a secret in plaintext. The gateway serial,
// which is kept in plaintext (subjects, registry), is found: the scan reads
// the files the node wrote.
func TestNodeKeepsNoSecretInPlaintextAtRest(t *testing.T) {
	dir, keyDir := t.TempDir(), t.TempDir()
	n := mustStartAt(t, dir, node.KMSConfig{RootKeyFile: filepath.Join(keyDir, "root.key")})
	ctx := context.Background()
	// A marker temperature: 8 random digits after the point, found
	// nowhere by chance.
	r, err := rand.Int(rand.Reader, big.NewInt(1e8))
	if err != nil {
		t.Fatal(err)
	}
	temp := 20 + float64(r.Int64())/1e9
	marker := fmt.Sprintf("%g", temp)
	headerSecret := "kms-scan-secret-" + rand.Text()
	d := writeData(t, n, "acme", []float64{temp, temp + 1}, headerSecret)
	api := nodetest.NewAPI(t, n).Client
	hook, err := api.CreateIntegration(ctx, "acme", client.Integration{Name: "signed", Type: "webhook", Webhook: &client.WebhookConfig{
		URL: d.receiver.URL, CAPEM: d.receiver.CAPEM,
	}})
	if err != nil {
		t.Fatal(err)
	}
	if hook.Webhook == nil || hook.Webhook.Secret == "" {
		t.Fatal("no generated webhook secret in the answer")
	}
	tok, err := api.CreateEnrollmentToken(ctx, "acme", client.CreateEnrollmentTokenRequest{Serial: d.serial})
	if err != nil {
		t.Fatal(err)
	}
	checkData(t, n, d) // everything was written and reads back
	n.Close()

	secrets := map[string]string{
		"message marker":         marker,
		"integration secret":     headerSecret,
		"webhook signing secret": hook.Webhook.Secret,
		"enrollment token":       tok.Token,
	}
	found := map[string][]string{}
	files := 0
	for _, root := range []string{dir, keyDir} {
		err := filepath.WalkDir(root, func(path string, e fs.DirEntry, err error) error {
			if err != nil || e.IsDir() {
				return err
			}
			b, err := os.ReadFile(path)
			if err != nil {
				return err
			}
			files++
			for name, s := range secrets {
				if bytes.Contains(b, []byte(s)) {
					found[name] = append(found[name], path)
				}
			}
			if bytes.Contains(b, []byte(d.serial)) {
				found["serial"] = append(found["serial"], path)
			}
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
	}
	t.Logf("scanned %d files", files)
	if len(found["serial"]) == 0 {
		t.Fatalf("the gateway serial %s is in none of the %d files: the scan missed the node's files", d.serial, files)
	}
	for name := range secrets {
		if len(found[name]) > 0 {
			t.Errorf("the %s is in plaintext in %v", name, found[name])
		}
	}
}

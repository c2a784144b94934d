package forward_test

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/iotransit/iotransit/internal/forward/mqttout/mosquittotest"
)

// TestForwardToCustomerMosquitto forwards through the API-configured mqtt
// integration to a real mosquitto broker, with TLS + password and with
// mTLS, received by a real subscriber on Thingsee's data-stream topics.
func TestForwardToCustomerMosquitto(t *testing.T) {
	cases := []struct {
		name string
		opts mosquittotest.Options
	}{
		{"TLS and password", mosquittotest.Options{Users: map[string]string{"iot": "s3cret-pw", "reader": "r"}}},
		{"mutual TLS", mosquittotest.Options{RequireCertificate: true}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			b := mosquittotest.Start(t, tc.opts)
			e := newEnv(t, nil)
			// The gateway's deployment group shapes the topic.
			if r := e.api.Do("PATCH", "/v1/tenants/"+tenant+"/gateways/"+gwSer, e.api.Key(), map[string]any{"deploymentGroupId": "prfi00samplegroup"}); r.Status != 200 {
				t.Fatalf("deploymentGroupId: %d %s", r.Status, r.Body)
			}
			mq := map[string]any{"broker": b.URL(), "caPem": b.CAPEM}
			var sub *mosquittotest.Subscriber
			if tc.opts.RequireCertificate {
				cert, key := b.ClientCert("iotransit")
				mq["clientCertPem"], mq["clientKeyPem"] = cert, key
				rc, rk := b.ClientCert("reader")
				sub = b.Subscribe("cloudext/#", "", "", rc, rk)
			} else {
				mq["username"], mq["password"] = "iot", "s3cret-pw"
				sub = b.Subscribe("cloudext/#", "reader", "r", "", "")
			}
			r := e.api.Do("POST", "/v1/tenants/"+tenant+"/integrations", e.api.Key(), map[string]any{"name": "broker", "type": "mqtt", "mqtt": mq})
			if r.Status != 201 {
				t.Fatalf("create: %d %s", r.Status, r.Body)
			}
			if strings.Contains(string(r.Body), "s3cret-pw") || strings.Contains(string(r.Body), "PRIVATE KEY") {
				t.Fatal("the answer shows a secret")
			}
			sent := e.publish(2)
			ctx := context.Background()
			for i := range sent {
				m, err := sub.Next(ctx, 10*time.Second)
				if err != nil {
					t.Fatalf("message %d: %v\n%s", i, err, b.Log())
				}
				var v map[string]any
				if err := json.Unmarshal(m.Payload, &v); err != nil {
					t.Fatalf("payload %s: %v", m.Payload, err)
				}
				want := fmt.Sprintf("cloudext/json/pr/fi/prfi00samplegroup/%s/13100", v["tsmTuid"])
				if m.Topic != want || v["deploymentGroupId"] != "prfi00samplegroup" {
					t.Errorf("topic %s (want %s), payload %s", m.Topic, want, m.Payload)
				}
			}
		})
	}
}

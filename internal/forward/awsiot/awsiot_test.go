package awsiot_test

import (
	"bytes"
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/iotransit/iotransit/internal/fault"
	"github.com/iotransit/iotransit/internal/forward"
	"github.com/iotransit/iotransit/internal/forward/awsiot"
	"github.com/iotransit/iotransit/internal/forward/egress"
	"github.com/iotransit/iotransit/internal/forward/mqttout/mosquittotest"
	"github.com/iotransit/iotransit/internal/pki"
)

var (
	weather = forward.Message{Seq: 1, ID: "m1", Gateway: "TSGW06GWA12345678", Tuid: "TSEN01ABC12345678", TsmID: 12100,
		Body: []byte(`{"tsmId":12100,"tsmEv":10,"tsmTs":1700000000,"tsmTuid":"TSEN01ABC12345678","temp":21.5,"deploymentGroupId":"prfi00samplegroup"}`)}
	co2 = forward.Message{Seq: 2, ID: "m2", Gateway: "TSGW06GWA12345678", Tuid: "TSAR01DEF12345678", TsmID: 24100,
		Body: []byte(`{"tsmId":24100,"tsmEv":10,"tsmTs":1700000003,"tsmTuid":"TSAR01DEF12345678","carbonDioxide":612,"status":0,"deploymentGroupId":"prfi00samplegroup"}`)}
)

func TestAWSIoTDeliversAnArrayPerBatchOverMutualTLS(t *testing.T) {
	// mosquitto requiring a client certificate stands in for AWS IoT Core:
	// the wire protocol is the same MQTT 3.1.1 over mutual TLS.
	b := mosquittotest.Start(t, mosquittotest.Options{RequireCertificate: true})
	subCert, subKey := b.ClientCert("receiver")
	sub := b.Subscribe("thingsee/#", "", "", subCert, subKey)
	cert, key := b.ClientCert("iotransit-thing")

	c := awsiot.Config{
		Endpoint: "127.0.0.1", Port: b.Port, ClientID: "iotransit-thing",
		CertPEM: cert, KeyPEM: key, CAPEM: b.CAPEM,
		Topic:  "thingsee/{tenant}/{deploymentGroupId}",
		Policy: egress.Policy{AllowPrivate: true},
	}
	if err := c.Validate(context.Background()); err != nil {
		t.Fatalf("Validate: %v", err)
	}
	tg, err := awsiot.New(context.Background(), c)
	if err != nil {
		t.Fatal(err)
	}
	defer tg.Close()

	bt := &forward.Batch{ID: "b1", Tenant: "acme", Integration: "aws1", Messages: []forward.Message{weather, co2}, Attempt: 1}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := tg.Deliver(ctx, bt); err != nil {
		t.Fatalf("Deliver: %v\n%s", err, b.Log())
	}
	got, err := sub.Next(ctx, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	if got.Topic != "thingsee/acme/prfi00samplegroup" {
		t.Errorf("topic %q", got.Topic)
	}
	want := []byte("[" + string(weather.Body) + "," + string(co2.Body) + "]")
	if !bytes.Equal(got.Payload, want) {
		t.Errorf("payload\n%s\nwant\n%s", got.Payload, want)
	}
	if err := sub.None(100 * time.Millisecond); err != nil {
		t.Error(err)
	}
}

func TestAWSIoTWithoutTheThingCertificateIsRefused(t *testing.T) {
	b := mosquittotest.Start(t, mosquittotest.Options{RequireCertificate: true})
	other, err := pki.NewCA("another account's CA", time.Hour, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	cert, key := mosquittotest.IssueClient(t, other, "iotransit-thing") // a CA the endpoint does not trust
	tg, err := awsiot.New(context.Background(), awsiot.Config{
		Endpoint: "127.0.0.1", Port: b.Port, CertPEM: cert, KeyPEM: key, CAPEM: b.CAPEM,
		Topic: "thingsee/{tenant}", Policy: egress.Policy{AllowPrivate: true},
	})
	if err != nil {
		t.Fatal(err)
	}
	defer tg.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	err = tg.Deliver(ctx, &forward.Batch{ID: "b1", Tenant: "acme", Messages: []forward.Message{weather}})
	var de *forward.DeliveryError
	if !errors.As(err, &de) || !strings.HasPrefix(de.Summary, "TLS: ") {
		t.Errorf("error %v, want a TLS DeliveryError", err)
	}
}

func codes(err error) []string {
	var out []string
	var walk func(error)
	walk = func(err error) {
		if j, ok := err.(interface{ Unwrap() []error }); ok {
			for _, e := range j.Unwrap() {
				walk(e)
			}
			return
		}
		if f, ok := fault.As(err); ok {
			out = append(out, f.Code())
		}
	}
	walk(err)
	return out
}

func TestAWSIoTValidateReportsEveryProblemAtOnce(t *testing.T) {
	c := awsiot.Config{
		Endpoint: "https://abc-ats.iot.eu-west-1.amazonaws.com/",
		Topic:    "a/b/c/d/e/f/g/h/{tsmId}",
		CAPEM:    "junk",
	}
	got := strings.Join(codes(c.Validate(context.Background())), " ")
	want := "forward.target_invalid forward.tls_invalid forward.mqtt_topic_invalid forward.tls_invalid"
	if got != want {
		t.Errorf("codes %q, want %q", got, want)
	}
	if _, err := awsiot.New(context.Background(), c); err == nil {
		t.Error("New accepted an invalid configuration")
	}

	basicIngest := awsiot.Config{Endpoint: "abc-ats.iot.eu-west-1.amazonaws.com", CertPEM: "x", KeyPEM: "y",
		Topic: "$aws/rules/thingsee_rule/a/b/c/d/e/f/{tsmId}", Policy: egress.Policy{AllowPrivate: true}}
	for _, code := range codes(basicIngest.Validate(context.Background())) {
		if code == "forward.mqtt_topic_invalid" {
			t.Errorf("a Basic Ingest prefix counted against the 7 slashes")
		}
	}
}

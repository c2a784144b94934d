package mqttout_test

import (
	"bytes"
	"context"
	"errors"
	"net"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/iotransit/iotransit/internal/forward"
	"github.com/iotransit/iotransit/internal/forward/egress"
	"github.com/iotransit/iotransit/internal/forward/mqttout"
	"github.com/iotransit/iotransit/internal/forward/mqttout/mosquittotest"
	"github.com/iotransit/iotransit/internal/pki"
)

const (
	pubUser, pubPass = "iotransit", "pub-Secret-7f3a"
	subUser, subPass = "receiver", "sub-Secret-91c2"
)

func batch(msgs ...forward.Message) *forward.Batch {
	return &forward.Batch{ID: "b1", Tenant: "acme", Integration: "mqtt1", Messages: msgs, Attempt: 1}
}

func testContext(t *testing.T) context.Context {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 8*time.Second)
	t.Cleanup(cancel)
	return ctx
}

func newTarget(t *testing.T, c mqttout.Config) *mqttout.Target {
	t.Helper()
	if err := c.Validate(context.Background()); err != nil {
		t.Fatalf("Validate: %v", err)
	}
	tg, err := mqttout.New(context.Background(), c)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	t.Cleanup(func() { _ = tg.Close() })
	return tg
}

func passwordBroker(t *testing.T) *mosquittotest.Broker {
	return mosquittotest.Start(t, mosquittotest.Options{Users: map[string]string{pubUser: pubPass, subUser: subPass}})
}

func passwordConfig(b *mosquittotest.Broker) mqttout.Config {
	return mqttout.Config{
		Broker:     b.URL(),
		Username:   pubUser,
		Password:   func() (string, error) { return pubPass, nil },
		TLS:        egress.TLSOptions{CAPEM: b.CAPEM},
		PerMessage: true,
		Policy:     egress.Policy{AllowPrivate: true},
	}
}

// expect reads want from the subscriber, in order, byte for byte.
func expect(t *testing.T, s *mosquittotest.Subscriber, want ...mosquittotest.Message) {
	t.Helper()
	for i, w := range want {
		got, err := s.Next(context.Background(), 5*time.Second)
		if err != nil {
			t.Fatalf("message %d: %v", i, err)
		}
		if got.Topic != w.Topic {
			t.Errorf("message %d on topic %q, want %q", i, got.Topic, w.Topic)
		}
		if !bytes.Equal(got.Payload, w.Payload) {
			t.Errorf("message %d payload\n%s\nwant\n%s", i, got.Payload, w.Payload)
		}
	}
}

func summary(t *testing.T, err error) string {
	t.Helper()
	var de *forward.DeliveryError
	if !errors.As(err, &de) {
		t.Fatalf("error %v (%T) is not a DeliveryError", err, err)
	}
	return de.Summary
}

func TestMQTTOutDeliversEachObjectOnItsThingseeTopicWithPassword(t *testing.T) {
	b := passwordBroker(t)
	sub := b.Subscribe("cloudext/#", subUser, subPass, "", "")
	tg := newTarget(t, passwordConfig(b))

	if err := tg.Deliver(testContext(t), batch(weather, battery, moves)); err != nil {
		t.Fatalf("Deliver: %v\n%s", err, b.Log())
	}
	expect(t, sub,
		mosquittotest.Message{Topic: "cloudext/json/pr/fi/prfi00samplegroup/TSEN01ABC12345678/12100", Payload: weather.Body},
		mosquittotest.Message{Topic: "cloudext/json/pr/fi/prfi00samplegroup/TSPR04XYZ98765432/1110", Payload: battery.Body},
		mosquittotest.Message{Topic: "cloudext/json/un/xx/unxx00/TSAN01QRS11122233/13100", Payload: moves.Body},
	)
	// The connection is kept: a second batch goes out on it.
	if err := tg.Deliver(testContext(t), batch(moves)); err != nil {
		t.Fatalf("second Deliver: %v", err)
	}
	expect(t, sub, mosquittotest.Message{Topic: "cloudext/json/un/xx/unxx00/TSAN01QRS11122233/13100", Payload: moves.Body})
	if err := sub.None(100 * time.Millisecond); err != nil {
		t.Error(err)
	}
}

func TestMQTTOutDeliversWithClientCertificate(t *testing.T) {
	b := mosquittotest.Start(t, mosquittotest.Options{RequireCertificate: true})
	subCert, subKey := b.ClientCert("receiver")
	sub := b.Subscribe("#", "", "", subCert, subKey)
	cert, key := b.ClientCert("iotransit")

	t.Run("one message per object", func(t *testing.T) {
		tg := newTarget(t, mqttout.Config{
			Broker: b.URL(), PerMessage: true, Policy: egress.Policy{AllowPrivate: true},
			TLS: egress.TLSOptions{CAPEM: b.CAPEM, CertPEM: cert, KeyPEM: key},
		})
		if err := tg.Deliver(testContext(t), batch(weather, moves)); err != nil {
			t.Fatalf("Deliver: %v\n%s", err, b.Log())
		}
		expect(t, sub,
			mosquittotest.Message{Topic: "cloudext/json/pr/fi/prfi00samplegroup/TSEN01ABC12345678/12100", Payload: weather.Body},
			mosquittotest.Message{Topic: "cloudext/json/un/xx/unxx00/TSAN01QRS11122233/13100", Payload: moves.Body},
		)
	})
	t.Run("one array per batch on the first message's topic", func(t *testing.T) {
		tg := newTarget(t, mqttout.Config{
			Broker: b.URL(), Topic: "tenants/{tenant}/{env}/{country}", Policy: egress.Policy{AllowPrivate: true},
			TLS: egress.TLSOptions{CAPEM: b.CAPEM, CertPEM: cert, KeyPEM: key},
		})
		bt := batch(weather, battery, moves)
		if err := tg.Deliver(testContext(t), bt); err != nil {
			t.Fatalf("Deliver: %v\n%s", err, b.Log())
		}
		want := []byte("[" + string(weather.Body) + "," + string(battery.Body) + "," + string(moves.Body) + "]")
		expect(t, sub, mosquittotest.Message{Topic: "tenants/acme/pr/fi", Payload: want})
	})
	t.Run("a client certificate from another CA is refused", func(t *testing.T) {
		other, err := pki.NewCA("other CA", time.Hour, time.Now())
		if err != nil {
			t.Fatal(err)
		}
		fcert, fkey := mosquittotest.IssueClient(t, other, "iotransit")
		tg := newTarget(t, mqttout.Config{
			Broker: b.URL(), Policy: egress.Policy{AllowPrivate: true},
			TLS: egress.TLSOptions{CAPEM: b.CAPEM, CertPEM: fcert, KeyPEM: fkey},
		})
		err = tg.Deliver(testContext(t), batch(weather))
		if s := summary(t, err); !strings.HasPrefix(s, "TLS: broker refused the handshake") {
			t.Errorf("summary %q, want the broker's TLS refusal (%v)", s, err)
		}
	})
}

func TestMQTTOutWrongPasswordIsNotAuthorized(t *testing.T) {
	b := passwordBroker(t)
	const wrong = "wrong-Passw0rd-d41d"
	c := passwordConfig(b)
	c.Password = func() (string, error) { return wrong, nil }
	tg := newTarget(t, c)

	err := tg.Deliver(testContext(t), batch(weather))
	if err == nil {
		t.Fatal("Deliver succeeded with a wrong password")
	}
	if s := summary(t, err); s != "connect refused: not authorized" {
		t.Errorf("summary %q, want connect refused: not authorized (%v)", s, err)
	}
	if strings.Contains(err.Error(), wrong) || strings.Contains(forward.Summary(err), wrong) {
		t.Errorf("the error shows the password: %v", err)
	}
}

func TestMQTTOutUntrustedBrokerIsTLSError(t *testing.T) {
	b := passwordBroker(t)
	other, err := pki.NewCA("other CA", time.Hour, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	c := passwordConfig(b)
	c.TLS.CAPEM = string(other.CertPEM)
	var asked atomic.Int32
	c.Password = func() (string, error) { asked.Add(1); return pubPass, nil }
	tg := newTarget(t, c)

	err = tg.Deliver(testContext(t), batch(weather))
	if s := summary(t, err); s != "TLS: certificate not trusted" {
		t.Errorf("summary %q, want TLS: certificate not trusted (%v)", s, err)
	}
}

func TestMQTTOutReconnectsWhenTheBrokerReturns(t *testing.T) {
	b := passwordBroker(t)
	tg := newTarget(t, passwordConfig(b))
	if err := tg.Deliver(testContext(t), batch(weather)); err != nil {
		t.Fatalf("Deliver: %v", err)
	}

	b.Stop()
	// The first attempt may still find the old connection (lost, or
	// closed by the broker); a reconnect is then refused.
	var last error
	for i := 0; i < 3; i++ {
		last = tg.Deliver(testContext(t), batch(weather))
		if last == nil {
			t.Fatal("Deliver succeeded with the broker stopped")
		}
		if summary(t, last) == "connection refused" {
			break
		}
	}
	if s := summary(t, last); s != "connection refused" {
		t.Fatalf("summary %q, want connection refused (%v)", s, last)
	}

	b.Restart()
	sub := b.Subscribe("cloudext/#", subUser, subPass, "", "")
	if err := tg.Deliver(testContext(t), batch(battery)); err != nil {
		t.Fatalf("Deliver after restart: %v", err)
	}
	expect(t, sub, mosquittotest.Message{Topic: "cloudext/json/pr/fi/prfi00samplegroup/TSPR04XYZ98765432/1110", Payload: battery.Body})
}

func TestMQTTOutReconnectAsksForAFreshPassword(t *testing.T) {
	b := passwordBroker(t)
	sub := b.Subscribe("cloudext/#", subUser, subPass, "", "")
	c := passwordConfig(b)
	var asked atomic.Int32
	c.Password = func() (string, error) { asked.Add(1); return pubPass, nil }
	c.Reconnect = time.Nanosecond // every delivery finds the connection too old
	tg := newTarget(t, c)

	for i := 0; i < 2; i++ {
		if err := tg.Deliver(testContext(t), batch(weather)); err != nil {
			t.Fatalf("Deliver %d: %v", i, err)
		}
		expect(t, sub, mosquittotest.Message{Topic: "cloudext/json/pr/fi/prfi00samplegroup/TSEN01ABC12345678/12100", Payload: weather.Body})
	}
	if n := asked.Load(); n != 2 {
		t.Errorf("Password called %d times, want 2 (one per connection)", n)
	}

	c.Reconnect = 0
	c.Password = func() (string, error) { return "", errors.New("vault sealed") }
	failing := newTarget(t, c)
	if s := summary(t, failing.Deliver(testContext(t), batch(weather))); s != "credentials unavailable" {
		t.Errorf("summary %q, want credentials unavailable", s)
	}
}

type prefixSealer struct{}

func (prefixSealer) Seal(p []byte) ([]byte, error) { return append([]byte("sealed:"), p...), nil }

func TestMQTTOutSealsEachPayload(t *testing.T) {
	b := passwordBroker(t)
	sub := b.Subscribe("cloudext/#", subUser, subPass, "", "")
	c := passwordConfig(b)
	c.Sealer = prefixSealer{}
	tg := newTarget(t, c)
	if err := tg.Deliver(testContext(t), batch(weather, moves)); err != nil {
		t.Fatalf("Deliver: %v", err)
	}
	expect(t, sub,
		mosquittotest.Message{Topic: "cloudext/json/pr/fi/prfi00samplegroup/TSEN01ABC12345678/12100", Payload: append([]byte("sealed:"), weather.Body...)},
		mosquittotest.Message{Topic: "cloudext/json/un/xx/unxx00/TSAN01QRS11122233/13100", Payload: append([]byte("sealed:"), moves.Body...)},
	)
}

func TestMQTTOutRefusesPrivateTargets(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var accepted atomic.Int32
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			accepted.Add(1)
			_ = c.Close()
		}
	}()
	c := mqttout.Config{Broker: "mqtts://" + ln.Addr().String(), Policy: egress.Policy{AllowPrivate: false}}

	err = c.Validate(context.Background())
	if !egress.ErrPrivateTarget.Is(err) {
		t.Errorf("Validate error %v, want %s", err, egress.ErrPrivateTarget.Code())
	}
	// A target made anyway (the policy changed, or the name now resolves
	// elsewhere) is stopped by the dialer on every connection.
	tg, err := mqttout.New(context.Background(), c)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	defer tg.Close()
	err = tg.Deliver(testContext(t), batch(weather))
	if s := summary(t, err); s != "target address not allowed" {
		t.Errorf("summary %q, want target address not allowed (%v)", s, err)
	}
	_ = ln.Close()
	<-done
	if n := accepted.Load(); n != 0 {
		t.Errorf("the listener accepted %d connections, want none", n)
	}
}

func TestMQTTOutRefusesBadTopicsWithoutConnecting(t *testing.T) {
	c := mqttout.Config{Broker: "mqtts://127.0.0.1:1", Topic: "x/{gateway}", Policy: egress.Policy{AllowPrivate: true}}
	tg, err := mqttout.New(context.Background(), c)
	if err != nil {
		t.Fatal(err)
	}
	defer tg.Close()
	err = tg.Deliver(testContext(t), batch(with(weather, func(m *forward.Message) { m.Gateway = "a/b" })))
	if s := summary(t, err); s != "topic invalid" {
		t.Errorf("summary %q, want topic invalid (%v)", s, err)
	}
	if !mqttout.ErrTopicInvalid.Is(err) {
		t.Errorf("error %v does not wrap %s", err, mqttout.ErrTopicInvalid.Code())
	}
}

func TestMQTTOutDeliverAfterCloseFails(t *testing.T) {
	tg, err := mqttout.New(context.Background(), mqttout.Config{Broker: "mqtts://127.0.0.1:1", Policy: egress.Policy{AllowPrivate: true}})
	if err != nil {
		t.Fatal(err)
	}
	if err := tg.Deliver(testContext(t), batch()); err != nil {
		t.Errorf("an empty batch: %v", err)
	}
	_ = tg.Close()
	if s := summary(t, tg.Deliver(testContext(t), batch(weather))); s != "target closed" {
		t.Errorf("summary %q, want target closed", s)
	}
}

func TestMQTTOutConnectTimesOutOnASilentPeer(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			defer c.Close() // accept, then say nothing
		}
	}()
	tg, err := mqttout.New(context.Background(), mqttout.Config{
		Broker: "mqtts://" + ln.Addr().String(), Policy: egress.Policy{AllowPrivate: true},
		ConnectTimeout: 200 * time.Millisecond,
	})
	if err != nil {
		t.Fatal(err)
	}
	defer tg.Close()
	start := time.Now()
	err = tg.Deliver(testContext(t), batch(weather))
	if s := summary(t, err); s != "TLS handshake timeout" {
		t.Errorf("summary %q, want TLS handshake timeout (%v)", s, err)
	}
	if d := time.Since(start); d > 2*time.Second {
		t.Errorf("Deliver took %s with a 200ms connect timeout", d)
	}
}

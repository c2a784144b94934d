package azure_test

import (
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"crypto/tls"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	mqtt "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/listeners"
	"github.com/mochi-mqtt/server/v2/packets"

	"github.com/iotransit/iotransit/internal/fault"
	"github.com/iotransit/iotransit/internal/forward"
	"github.com/iotransit/iotransit/internal/forward/azure"
	"github.com/iotransit/iotransit/internal/forward/egress"
	"github.com/iotransit/iotransit/internal/pki"
	tu "github.com/iotransit/iotransit/internal/testutil"
)

// deviceKey is 32 bytes 0x00..0x1f, base64.
const deviceKey = "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8="

func TestAzureSASTokenMatchesPythonReference(t *testing.T) {
	// Computed on the development machine with Python's standard library,
	// following Microsoft's sample (iot-hub-dev-guide-sas):
	//
	// python3 -c '
	// import hmac, hashlib, base64, urllib.parse
	// key = "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8="
	// uri = urllib.parse.quote_plus("myhub.azure-devices.net/devices/dev:01@hki")
	// se = 1767225600
	// sig = base64.b64encode(hmac.new(base64.b64decode(key), ("%s\n%d" % (uri, se)).encode(), hashlib.sha256).digest()).decode()
	// print("SharedAccessSignature " + urllib.parse.urlencode({"sr": "myhub.azure-devices.net/devices/dev:01@hki", "sig": sig, "se": str(se)}))
	// '
	const want = "SharedAccessSignature sr=myhub.azure-devices.net%2Fdevices%2Fdev%3A01%40hki&sig=Jt4zy%2BUFPRAfLvyx0WJQx1nxx5Sp0jhoEqbjJrgKZLc%3D&se=1767225600"
	got, err := azure.SASToken("myhub.azure-devices.net", "dev:01@hki", deviceKey, time.Unix(1767225600, 0))
	if err != nil {
		t.Fatal(err)
	}
	if got != want {
		t.Errorf("SAS token\n%s\nwant\n%s", got, want)
	}
	if _, err := azure.SASToken("myhub.azure-devices.net", "d", "not base64!", time.Now()); err == nil {
		t.Error("SASToken accepted a key that is not base64")
	}
}

// sasToken is a second, separately written implementation: url.Values
// encoding and an HMAC over a formatted string.
func sasToken(host, device, key string, se int64) string {
	k, _ := base64.StdEncoding.DecodeString(key)
	resource := strings.TrimPrefix(url.Values{"sr": {host + "/devices/" + device}}.Encode(), "sr=")
	mac := hmac.New(sha256.New, k)
	fmt.Fprintf(mac, "%s\n%d", resource, se)
	v := url.Values{}
	v.Set("sig", base64.StdEncoding.EncodeToString(mac.Sum(nil)))
	return "SharedAccessSignature sr=" + resource + "&" + v.Encode() + "&se=" + strconv.FormatInt(se, 10)
}

func TestAzureSASTokenMatchesAnIndependentImplementation(t *testing.T) {
	for _, tc := range []struct{ host, device string }{
		{"myhub.azure-devices.net", "gateway-1"},
		{"other-hub.azure-devices.net", "a.b_c(d)!e=f$g'h*i?j,k%l"},
		{"localhost", "TSGW06ABC12345678"},
	} {
		se := time.Now().Add(time.Hour).Unix()
		got, err := azure.SASToken(tc.host, tc.device, deviceKey, time.Unix(se, 0))
		if err != nil {
			t.Fatal(err)
		}
		if want := sasToken(tc.host, tc.device, deviceKey, se); got != want {
			t.Errorf("%s/%s: SAS token\n%s\nwant\n%s", tc.host, tc.device, got, want)
		}
	}
}

func TestAzureUsernameAndTopicFollowIoTHub(t *testing.T) {
	if got, want := azure.Username("myhub.azure-devices.net", "gw-1"), "myhub.azure-devices.net/gw-1/?api-version=2021-04-12"; got != want {
		t.Errorf("Username %q, want %q", got, want)
	}
	if got, want := azure.D2CTopic("gw-1"), "devices/gw-1/messages/events/"; got != want {
		t.Errorf("D2CTopic %q, want %q", got, want)
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

func TestAzureValidate(t *testing.T) {
	ctx := context.Background()
	ok := azure.Config{HostName: "myhub", DeviceID: "gw-1", DeviceKey: deviceKey, Policy: egress.Policy{AllowPrivate: true}}
	if _, err := azure.New(ctx, ok); err != nil {
		t.Errorf("New with a bare hub name: %v", err)
	}
	bad := azure.Config{HostName: "", DeviceID: "gw/1#", DeviceKey: "%%%", TokenTTL: -time.Second}
	got := strings.Join(codes(bad.Validate(ctx)), " ")
	want := "forward.target_invalid forward.azure_device_invalid forward.azure_device_invalid forward.azure_device_invalid"
	if got != want {
		t.Errorf("codes %q, want %q", got, want)
	}
	private := azure.Config{HostName: "127.0.0.1", DeviceID: "gw-1", DeviceKey: deviceKey}
	if err := private.Validate(ctx); !egress.ErrPrivateTarget.Is(err) {
		t.Errorf("Validate of a loopback hub: %v, want %s", err, egress.ErrPrivateTarget.Code())
	}
}

// connectSeen is one CONNECT the fake hub received.
type connectSeen struct {
	se       int64
	accepted bool
	reason   string
}

// published is one PUBLISH the fake hub received.
type published struct {
	topic   string
	payload []byte
}

// fakeHub is an IoT Hub stand-in speaking real MQTT 3.1.1 over TLS: it
// authenticates a device as the hub does (client id, user name, SAS token
// verified with the device key) and records device-to-cloud messages.
type fakeHub struct {
	mqtt.HookBase
	host, device string
	key          []byte

	mu       sync.Mutex
	connects []connectSeen
	messages []published
}

func (h *fakeHub) ID() string { return "fake-iothub" }

func (h *fakeHub) Provides(b byte) bool {
	return b == mqtt.OnConnectAuthenticate || b == mqtt.OnACLCheck || b == mqtt.OnPublish
}

// verify checks a CONNECT as IoT Hub would; "" means accepted.
func (h *fakeHub) verify(pk packets.Packet) (int64, string) {
	if pk.ProtocolVersion != 4 {
		return 0, "not MQTT 3.1.1"
	}
	if pk.Connect.ClientIdentifier != h.device {
		return 0, "client id is not the device id"
	}
	if got, want := string(pk.Connect.Username), h.host+"/"+h.device+"/?api-version=2021-04-12"; got != want {
		return 0, "user name " + got
	}
	const prefix = "SharedAccessSignature "
	pw := string(pk.Connect.Password)
	if !strings.HasPrefix(pw, prefix) {
		return 0, "password is not a SAS token"
	}
	q, err := url.ParseQuery(strings.TrimPrefix(pw, prefix))
	if err != nil {
		return 0, "SAS token does not parse"
	}
	if q.Has("skn") {
		return 0, "a device token has no key name"
	}
	if q.Get("sr") != h.host+"/devices/"+h.device {
		return 0, "sr is " + q.Get("sr")
	}
	se, err := strconv.ParseInt(q.Get("se"), 10, 64)
	if err != nil {
		return 0, "se is not a number"
	}
	if se <= time.Now().Unix() {
		return se, "token expired"
	}
	sig, err := base64.StdEncoding.DecodeString(q.Get("sig"))
	if err != nil {
		return se, "sig is not base64"
	}
	mac := hmac.New(sha256.New, h.key)
	mac.Write([]byte(url.QueryEscape(q.Get("sr")) + "\n" + q.Get("se")))
	if !hmac.Equal(sig, mac.Sum(nil)) {
		return se, "signature does not verify"
	}
	return se, ""
}

func (h *fakeHub) OnConnectAuthenticate(_ *mqtt.Client, pk packets.Packet) bool {
	se, reason := h.verify(pk)
	h.mu.Lock()
	defer h.mu.Unlock()
	h.connects = append(h.connects, connectSeen{se: se, accepted: reason == "", reason: reason})
	return reason == ""
}

func (h *fakeHub) OnACLCheck(cl *mqtt.Client, topic string, write bool) bool {
	return write && strings.HasPrefix(topic, "devices/"+cl.ID+"/messages/events/")
}

func (h *fakeHub) OnPublish(_ *mqtt.Client, pk packets.Packet) (packets.Packet, error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.messages = append(h.messages, published{pk.TopicName, append([]byte(nil), pk.Payload...)})
	return pk, nil
}

func (h *fakeHub) seen() ([]connectSeen, []published) {
	h.mu.Lock()
	defer h.mu.Unlock()
	return append([]connectSeen(nil), h.connects...), append([]published(nil), h.messages...)
}

// startHub starts a fake hub for device with a TLS certificate for
// "localhost" from a CA made here; it returns the port and the CA.
func startHub(t *testing.T, device string) (*fakeHub, int, string) {
	t.Helper()
	now := time.Now()
	ca, err := pki.NewCA("fake IoT Hub CA", time.Hour, now)
	if err != nil {
		t.Fatal(err)
	}
	cert := *tu.ServerCert(t, ca, "localhost")
	k, _ := base64.StdEncoding.DecodeString(deviceKey)
	hub := &fakeHub{host: "localhost", device: device, key: k}

	srv := mqtt.New(&mqtt.Options{Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err := srv.AddHook(hub, nil); err != nil {
		t.Fatal(err)
	}
	ln := listeners.NewTCP(listeners.Config{ID: "tls", Address: "127.0.0.1:0",
		TLSConfig: &tls.Config{MinVersion: tls.VersionTLS12, Certificates: []tls.Certificate{cert}}})
	if err := srv.AddListener(ln); err != nil {
		t.Fatal(err)
	}
	if err := srv.Serve(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = srv.Close() })
	_, port, err := net.SplitHostPort(ln.Address())
	if err != nil {
		t.Fatal(err)
	}
	p, _ := strconv.Atoi(port)
	return hub, p, string(ca.CertPEM)
}

var (
	weather = forward.Message{Seq: 1, ID: "m1", Gateway: "TSGW06GWA12345678", Tuid: "TSEN01ABC12345678", TsmID: 12100,
		Body: []byte(`{"tsmId":12100,"tsmEv":10,"tsmTs":1700000000,"tsmTuid":"TSEN01ABC12345678","temp":21.5,"deploymentGroupId":"prfi00samplegroup"}`)}
	moves = forward.Message{Seq: 2, ID: "m2", Gateway: "TSGW06GWB12345678", Tuid: "TSAN01QRS11122233", TsmID: 13100,
		Body: []byte(`{"tsmId":13100,"tsmEv":10,"tsmTs":1700000002,"tsmTuid":"TSAN01QRS11122233","moveCount":4}`)}
)

func batch(msgs ...forward.Message) *forward.Batch {
	return &forward.Batch{ID: "b1", Tenant: "acme", Integration: "hub1", Messages: msgs, Attempt: 1}
}

func hubConfig(port int, caPEM, device string) azure.Config {
	return azure.Config{
		HostName: "localhost.", DeviceID: device, DeviceKey: deviceKey, Port: port,
		TLS: egress.TLSOptions{CAPEM: caPEM}, Policy: egress.Policy{AllowPrivate: true},
	}
}

func newTarget(t *testing.T, c azure.Config) *azure.Target {
	t.Helper()
	tg, err := azure.New(context.Background(), c)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = tg.Close() })
	return tg
}

func deliver(t *testing.T, tg *azure.Target, b *forward.Batch) error {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	return tg.Deliver(ctx, b)
}

func TestAzureDeliversBatchAsOneD2CMessage(t *testing.T) {
	hub, port, caPEM := startHub(t, "iotransit-acme")
	tg := newTarget(t, hubConfig(port, caPEM, "iotransit-acme"))
	b := batch(weather, moves)
	if err := deliver(t, tg, b); err != nil {
		t.Fatalf("Deliver: %v", err)
	}
	connects, msgs := hub.seen()
	if len(connects) != 1 || !connects[0].accepted {
		t.Fatalf("CONNECTs %+v, want one accepted", connects)
	}
	if len(msgs) != 1 {
		t.Fatalf("hub received %d messages, want 1", len(msgs))
	}
	if msgs[0].topic != "devices/iotransit-acme/messages/events/" {
		t.Errorf("topic %q", msgs[0].topic)
	}
	want := []byte("[" + string(weather.Body) + "," + string(moves.Body) + "]")
	if !bytes.Equal(msgs[0].payload, want) || !bytes.Equal(msgs[0].payload, b.JSON()) {
		t.Errorf("payload\n%s\nwant\n%s", msgs[0].payload, want)
	}
}

func TestAzureRenewsTheTokenBeforeItExpires(t *testing.T) {
	hub, port, caPEM := startHub(t, "gw-renew")
	c := hubConfig(port, caPEM, "gw-renew")
	c.TokenTTL = 2 * time.Second // reconnect after 1.6s
	tg := newTarget(t, c)

	if err := deliver(t, tg, batch(weather)); err != nil {
		t.Fatalf("first Deliver: %v", err)
	}
	time.Sleep(3 * time.Second) // the first token has expired
	if err := deliver(t, tg, batch(moves)); err != nil {
		t.Fatalf("second Deliver: %v", err)
	}
	connects, msgs := hub.seen()
	if len(connects) != 2 || !connects[0].accepted || !connects[1].accepted {
		t.Fatalf("CONNECTs %+v, want two accepted", connects)
	}
	if connects[1].se <= connects[0].se {
		t.Errorf("second token expires at %d, not after the first (%d)", connects[1].se, connects[0].se)
	}
	if len(msgs) != 2 || !bytes.Equal(msgs[1].payload, batch(moves).JSON()) {
		t.Errorf("hub received %d messages, want both batches", len(msgs))
	}
}

func TestAzureWrongKeyIsRefused(t *testing.T) {
	hub, port, caPEM := startHub(t, "gw-1")
	c := hubConfig(port, caPEM, "gw-1")
	c.DeviceKey = base64.StdEncoding.EncodeToString([]byte("another key, 32 bytes long......"))
	tg := newTarget(t, c)

	err := deliver(t, tg, batch(weather))
	var de *forward.DeliveryError
	if !errors.As(err, &de) || !strings.HasPrefix(de.Summary, "connect refused") {
		t.Fatalf("error %v, want a DeliveryError: connect refused", err)
	}
	if strings.Contains(err.Error(), "SharedAccessSignature") || strings.Contains(err.Error(), c.DeviceKey) {
		t.Errorf("the error shows the credentials: %v", err)
	}
	connects, msgs := hub.seen()
	if len(connects) != 1 || connects[0].reason != "signature does not verify" || len(msgs) != 0 {
		t.Errorf("hub saw %+v and %d messages, want one CONNECT refused for its signature", connects, len(msgs))
	}
}

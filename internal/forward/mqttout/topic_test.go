package mqttout_test

import (
	"context"
	"strings"
	"testing"

	"github.com/iotransit/iotransit/internal/fault"
	"github.com/iotransit/iotransit/internal/forward"
	"github.com/iotransit/iotransit/internal/forward/egress"
	"github.com/iotransit/iotransit/internal/forward/mqttout"
)

// Thingsee objects as stored: the gateway's upload plus the cloud's
// deploymentGroupId (absent on the third: not assigned to a group).
var (
	weather = forward.Message{Seq: 1, ID: "m1", Gateway: "TSGW06GWA12345678", Tuid: "TSEN01ABC12345678", TsmID: 12100,
		Body: []byte(`{"tsmId":12100,"tsmEv":10,"tsmTs":1700000000,"tsmTuid":"TSEN01ABC12345678","tsmGw":"TSGW06GWA12345678","temp":21.5,"humd":40.2,"airp":101325,"deploymentGroupId":"prfi00samplegroup"}`)}
	battery = forward.Message{Seq: 2, ID: "m2", Gateway: "TSGW06GWA12345678", Tuid: "TSPR04XYZ98765432", TsmID: 1110,
		Body: []byte(`{"tsmId":1110,"tsmEv":10,"tsmTs":1700000001.25,"tsmTuid":"TSPR04XYZ98765432","batl":87,"chrg":0,"deploymentGroupId":"prfi00samplegroup"}`)}
	moves = forward.Message{Seq: 3, ID: "m3", Gateway: "TSGW06GWB12345678", Tuid: "TSAN01QRS11122233", TsmID: 13100,
		Body: []byte(`{"tsmId":13100,"tsmEv":10,"tsmTs":1700000002,"tsmTuid":"TSAN01QRS11122233","moveCount":4}`)}
)

func with(m forward.Message, f func(*forward.Message)) forward.Message {
	f(&m)
	return m
}

func TestMQTTOutTopicFollowsThingseeDataStream(t *testing.T) {
	tests := []struct {
		name     string
		template string
		msg      forward.Message
		want     string
	}{
		{"default template", mqttout.DefaultTopic, weather, "cloudext/json/pr/fi/prfi00samplegroup/TSEN01ABC12345678/12100"},
		{"no deployment group is unassigned", mqttout.DefaultTopic, moves, "cloudext/json/un/xx/unxx00/TSAN01QRS11122233/13100"},
		{"null deployment group is unassigned", mqttout.DefaultTopic,
			with(moves, func(m *forward.Message) { m.Body = []byte(`{"tsmId":13100,"deploymentGroupId":null}`) }),
			"cloudext/json/un/xx/unxx00/TSAN01QRS11122233/13100"},
		{"only the exact key counts", mqttout.DefaultTopic,
			with(moves, func(m *forward.Message) { m.Body = []byte(`{"tsmId":13100,"DeploymentGroupID":"prfi00x"}`) }),
			"cloudext/json/un/xx/unxx00/TSAN01QRS11122233/13100"},
		{"tenant and gateway", "t/{tenant}/{gateway}/{tsmTuid}", battery, "t/acme/TSGW06GWA12345678/TSPR04XYZ98765432"},
		{"static", "iotransit/data", battery, "iotransit/data"},
		{"dollar topics are the broker's business", "$aws/rules/thingsee/{tsmId}", battery, "$aws/rules/thingsee/1110"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := mqttout.Topic(tc.template, "acme", tc.msg)
			if err != nil {
				t.Fatal(err)
			}
			if got != tc.want {
				t.Errorf("topic %q, want %q", got, tc.want)
			}
		})
	}
}

func TestMQTTOutTopicRefusesValuesThatChangeLevels(t *testing.T) {
	tests := []struct {
		name     string
		template string
		msg      forward.Message
	}{
		{"slash in gateway", "x/{gateway}", with(weather, func(m *forward.Message) { m.Gateway = "a/b" })},
		{"plus in tuid", mqttout.DefaultTopic, with(weather, func(m *forward.Message) { m.Tuid = "TSEN01+" })},
		{"hash in tuid", mqttout.DefaultTopic, with(weather, func(m *forward.Message) { m.Tuid = "#" })},
		{"NUL in gateway", "x/{gateway}", with(weather, func(m *forward.Message) { m.Gateway = "a\x00" })},
		{"empty gateway", "x/{gateway}", with(weather, func(m *forward.Message) { m.Gateway = "" })},
		{"empty tenant", "x/{tenant}", weather},
		{"slash in deployment group", mqttout.DefaultTopic,
			with(weather, func(m *forward.Message) { m.Body = []byte(`{"deploymentGroupId":"prfi00a/b"}`) })},
		{"wildcard in deployment group", mqttout.DefaultTopic,
			with(weather, func(m *forward.Message) { m.Body = []byte(`{"deploymentGroupId":"pr+i00ab"}`) })},
		{"deployment group too short", mqttout.DefaultTopic,
			with(weather, func(m *forward.Message) { m.Body = []byte(`{"deploymentGroupId":"pr"}`) })},
		{"deployment group not a string", mqttout.DefaultTopic,
			with(weather, func(m *forward.Message) { m.Body = []byte(`{"deploymentGroupId":7}`) })},
		{"body not an object", mqttout.DefaultTopic, with(weather, func(m *forward.Message) { m.Body = []byte(`[1]`) })},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			tenant := "acme"
			if tc.name == "empty tenant" {
				tenant = ""
			}
			got, err := mqttout.Topic(tc.template, tenant, tc.msg)
			if err == nil {
				t.Fatalf("topic %q, want an error", got)
			}
			if !mqttout.ErrTopicInvalid.Is(err) {
				t.Errorf("error %v, want %s", err, mqttout.ErrTopicInvalid.Code())
			}
		})
	}
}

func TestMQTTOutTopicRefusesBadTemplates(t *testing.T) {
	for _, tmpl := range []string{"a/+/b", "a/#", "a/{unknown}", "a/{tsmId", "a/tsmId}", "a/\x00"} {
		t.Run(tmpl, func(t *testing.T) {
			if _, err := mqttout.Topic(tmpl, "acme", weather); !mqttout.ErrTopicInvalid.Is(err) {
				t.Errorf("Topic(%q) error %v, want %s", tmpl, err, mqttout.ErrTopicInvalid.Code())
			}
		})
	}
}

// codes returns the fault codes in a (joined) error.
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

func TestMQTTOutValidateReportsEveryProblemAtOnce(t *testing.T) {
	c := mqttout.Config{
		Broker:   "mqtts://broker.example.com:70000",
		Topic:    "a/{nope}/#",
		QoS:      2,
		Password: func() (string, error) { return "x", nil },
		TLS:      egress.TLSOptions{CAPEM: "not a certificate"},
		Policy:   egress.Policy{AllowPrivate: true},
	}
	err := c.Validate(context.Background())
	got := strings.Join(codes(err), " ")
	want := "forward.target_invalid forward.mqtt_topic_invalid forward.mqtt_topic_invalid forward.mqtt_setting_invalid forward.mqtt_setting_invalid forward.tls_invalid"
	if got != want {
		t.Errorf("codes %q, want %q (error: %v)", got, want, err)
	}
	if _, err := mqttout.New(context.Background(), c); err == nil {
		t.Error("New accepted an invalid configuration")
	}
}

func TestMQTTOutValidateBrokerURL(t *testing.T) {
	tests := []struct {
		name, broker string
		ok           bool
	}{
		{"mqtts with port", "mqtts://broker.example.com:8884", true},
		{"mqtts default port", "mqtts://broker.example.com", true},
		{"IPv6 literal", "mqtts://[2001:db8::1]:8883", true},
		{"plaintext refused", "mqtt://broker.example.com:1883", false},
		{"tcp refused", "tcp://broker.example.com:1883", false},
		{"https is not MQTT", "https://broker.example.com", false},
		{"credentials in URL", "mqtts://user:secret@broker.example.com", false},
		{"path", "mqtts://broker.example.com/x", false},
		{"no host", "mqtts://:8883", false},
		{"port zero", "mqtts://broker.example.com:0", false},
		{"empty", "", false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			c := mqttout.Config{Broker: tc.broker, Policy: egress.Policy{AllowPrivate: true}}
			err := c.Validate(context.Background())
			if tc.ok && err != nil {
				t.Errorf("Validate: %v", err)
			}
			if !tc.ok {
				if !egress.ErrTargetInvalid.Is(err) {
					t.Errorf("Validate error %v, want %s", err, egress.ErrTargetInvalid.Code())
				}
				if err != nil && strings.Contains(err.Error(), "secret") {
					t.Errorf("error shows the password: %v", err)
				}
			}
		})
	}
}

package mqttout

import (
	"encoding/json"
	"strconv"
	"strings"
	"unicode/utf8"

	"github.com/iotransit/iotransit/internal/forward"
)

// DefaultTopic is Thingsee's MQTT data stream topic: one JSON object per
// MQTT message, e.g.
// cloudext/json/pr/fi/prfi00samplegroup/TSEN01ABC12345678/12100.
const DefaultTopic = "cloudext/json/{env}/{country}/{deploymentGroupId}/{tsmTuid}/{tsmId}"

// unassignedGroup is the deployment group of a message the cloud has not
// assigned to one: env "un" (unassigned), country "xx" (unknown).
const unassignedGroup = "unxx00"

// maxTopicLen is the longest MQTT topic name, in bytes [MQTT-1.5.3].
const maxTopicLen = 65535

// The placeholders a topic template may hold.
const (
	phTenant            = "tenant"
	phGateway           = "gateway"
	phTuid              = "tsmTuid"
	phTsmID             = "tsmId"
	phDeploymentGroupID = "deploymentGroupId"
	phEnv               = "env"
	phCountry           = "country"
)

var placeholders = map[string]bool{
	phTenant: true, phGateway: true, phTuid: true, phTsmID: true,
	phDeploymentGroupID: true, phEnv: true, phCountry: true,
}

// segment is a piece of a parsed template: literal text, or a placeholder
// name when ph is set.
type segment struct {
	text string
	ph   bool
}

// template is a parsed topic template.
type template struct {
	segments []segment
	// group is set when the template needs the message's deployment group
	// (deploymentGroupId, env or country), which is read from the body.
	group bool
}

// parseTemplate parses a topic template, returning every problem found
// (each an ErrTopicInvalid).
func parseTemplate(s string) (template, []error) {
	var (
		t    template
		errs []error
	)
	if s == "" {
		return t, []error{ErrTopicInvalid.WithDetail("the topic template is empty")}
	}
	if !utf8.ValidString(s) {
		errs = append(errs, ErrTopicInvalid.WithDetail("the topic template is not valid UTF-8"))
	}
	if len(s) > maxTopicLen {
		errs = append(errs, ErrTopicInvalid.WithDetail("the topic template is longer than %d bytes", maxTopicLen))
	}
	// Wildcards are for subscriptions; a PUBLISH topic must not hold them
	// [MQTT-3.3.2-2], nor NUL [MQTT-1.5.3-2].
	if strings.ContainsAny(s, "+#") {
		errs = append(errs, ErrTopicInvalid.WithDetail("the topic template holds a wildcard (+ or #), which a published topic must not"))
	}
	if strings.ContainsRune(s, 0) {
		errs = append(errs, ErrTopicInvalid.WithDetail("the topic template holds a NUL character"))
	}
	rest := s
	for rest != "" {
		open := strings.IndexByte(rest, '{')
		closing := strings.IndexByte(rest, '}')
		if closing >= 0 && (open < 0 || closing < open) {
			errs = append(errs, ErrTopicInvalid.WithDetail("the topic template has a } without a {"))
			rest = rest[closing+1:]
			continue
		}
		if open < 0 {
			t.segments = append(t.segments, segment{text: rest})
			break
		}
		if open > 0 {
			t.segments = append(t.segments, segment{text: rest[:open]})
		}
		rest = rest[open+1:]
		end := strings.IndexByte(rest, '}')
		if end < 0 {
			errs = append(errs, ErrTopicInvalid.WithDetail("the topic template has a { without a }"))
			break
		}
		name := rest[:end]
		rest = rest[end+1:]
		if !placeholders[name] {
			errs = append(errs, ErrTopicInvalid.WithDetail("the topic template has the unknown placeholder {%s} (known: {tenant} {gateway} {tsmTuid} {tsmId} {deploymentGroupId} {env} {country})", truncate(name, 40)))
			continue
		}
		t.segments = append(t.segments, segment{text: name, ph: true})
		if name == phDeploymentGroupID || name == phEnv || name == phCountry {
			t.group = true
		}
	}
	return t, errs
}

// expand fills the template in for one message of tenant.
func (t template) expand(tenant string, m *forward.Message) (string, error) {
	var group string
	if t.group {
		g, err := deploymentGroup(m.Body)
		if err != nil {
			return "", err
		}
		group = g
	}
	var b strings.Builder
	for _, s := range t.segments {
		if !s.ph {
			b.WriteString(s.text)
			continue
		}
		var v string
		switch s.text {
		case phTenant:
			v = tenant
		case phGateway:
			v = m.Gateway
		case phTuid:
			v = m.Tuid
		case phTsmID:
			v = strconv.Itoa(m.TsmID)
		case phDeploymentGroupID:
			v = group
		case phEnv:
			v = prefix(group, 0, 2)
		case phCountry:
			v = prefix(group, 2, 4)
		}
		if err := checkValue(s.text, v); err != nil {
			return "", err
		}
		b.WriteString(v)
	}
	if b.Len() > maxTopicLen {
		return "", ErrTopicInvalid.WithDetail("the topic is longer than %d bytes", maxTopicLen)
	}
	return b.String(), nil
}

// prefix returns s[i:j], or "" when s is shorter than j.
func prefix(s string, i, j int) string {
	if len(s) < j {
		return ""
	}
	return s[i:j]
}

// checkValue refuses a placeholder value that would change the topic's
// levels or make it invalid: empty, a level separator, a wildcard, NUL or
// invalid UTF-8.
func checkValue(name, v string) error {
	switch {
	case v == "":
		return ErrTopicInvalid.WithDetail("the value of {%s} is empty", name)
	case strings.ContainsAny(v, "/+#\x00"):
		return ErrTopicInvalid.WithDetail("the value of {%s} holds / + # or NUL, which would change the topic's levels", name)
	case !utf8.ValidString(v):
		return ErrTopicInvalid.WithDetail("the value of {%s} is not valid UTF-8", name)
	}
	return nil
}

// deploymentGroup returns the message's deploymentGroupId (added by the
// cloud), or "unxx00" when it has none.
func deploymentGroup(body []byte) (string, error) {
	// A map, not a struct: encoding/json matches struct fields without
	// regard to case, and only the exact key is the cloud's field.
	var obj map[string]json.RawMessage
	if err := json.Unmarshal(body, &obj); err != nil {
		return "", ErrTopicInvalid.WithDetail("the message is not a JSON object, so its deploymentGroupId cannot be read")
	}
	raw, ok := obj["deploymentGroupId"]
	if !ok || string(raw) == "null" {
		return unassignedGroup, nil
	}
	var g string
	if err := json.Unmarshal(raw, &g); err != nil {
		return "", ErrTopicInvalid.WithDetail("the message's deploymentGroupId is not a string")
	}
	if len(g) < 4 {
		return "", ErrTopicInvalid.WithDetail("the message's deploymentGroupId %q is shorter than {env 2}{country 2}", truncate(g, 40))
	}
	return g, nil
}

// Topic returns the topic a message of tenant is published on with the
// template: {tenant}, {gateway} (the gateway that uploaded it), {tsmTuid}
// and {tsmId} (from the message), {deploymentGroupId} (from the body;
// "unxx00" when absent), {env} and {country} (its first two and next two
// characters). A value that is empty or holds / + # or NUL is refused, so a
// message can never pick its own topic levels.
func Topic(tmpl, tenant string, m forward.Message) (string, error) {
	t, errs := parseTemplate(tmpl)
	if len(errs) > 0 {
		return "", errs[0]
	}
	return t.expand(tenant, &m)
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	// Cut at a rune boundary so the detail stays valid UTF-8.
	for n > 0 && !utf8.RuneStart(s[n]) {
		n--
	}
	return s[:n] + "…"
}

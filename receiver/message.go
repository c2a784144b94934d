package receiver

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"math/big"
	"strconv"
)

// Message is one Thingsee message of a delivery: its envelope members,
// decoded, and the whole JSON object as delivered (its measurements depend
// on tsmId).
type Message struct {
	// TsmID is the message type (profile id × 1000 + data id).
	TsmID int `json:"-"`
	// TsmEv is the event that made the sensor send it.
	TsmEv int `json:"-"`
	// TsmTuid is the sensor.
	TsmTuid string `json:"tsmTuid"`
	// TsmTs is when the sensor measured, Unix seconds, in the exact text it
	// was delivered in.
	TsmTs json.Number `json:"tsmTs"`
	// TsmCloudTs is when the node received it, Unix seconds with
	// millisecond precision.
	TsmCloudTs json.Number `json:"tsmCloudTs"`
	// TsmGw is the serial of the gateway that uploaded it.
	TsmGw string `json:"tsmGw,omitempty"`
	// DeploymentGroupID is the gateway's Thingsee deployment group.
	DeploymentGroupID string `json:"deploymentGroupId,omitempty"`
	// Raw is the message's JSON object exactly as delivered.
	Raw json.RawMessage `json:"-"`
}

// UnmarshalJSON decodes a Thingsee message object, keeping it in Raw.
func (m *Message) UnmarshalJSON(b []byte) error {
	if t := bytes.TrimSpace(b); len(t) == 0 || t[0] != '{' {
		return errors.New("receiver: a message is not a JSON object")
	}
	type envelope Message
	var e struct {
		envelope
		// A whole number may come as 12100, 12100.0 or 1.21e4 (JSON does
		// not tell them apart; the node accepts each and delivers the text
		// as it came).
		TsmID json.Number `json:"tsmId"`
		TsmEv json.Number `json:"tsmEv"`
	}
	if err := json.Unmarshal(b, &e); err != nil {
		return fmt.Errorf("receiver: a message's envelope: %w", err)
	}
	*m = Message(e.envelope)
	var err error
	if m.TsmID, err = wholeNumber("tsmId", e.TsmID); err != nil {
		return err
	}
	if m.TsmEv, err = wholeNumber("tsmEv", e.TsmEv); err != nil {
		return err
	}
	m.Raw = append(json.RawMessage(nil), b...)
	return nil
}

// wholeNumber converts a JSON number that is a whole number, in any of its
// forms, exactly; an absent member is 0.
func wholeNumber(name string, n json.Number) (int, error) {
	if n == "" {
		return 0, nil
	}
	r, ok := new(big.Rat).SetString(string(n))
	if !ok || len(n) > 64 || !r.IsInt() || !r.Num().IsInt64() || r.Num().Int64() > math.MaxInt32 || r.Num().Int64() < math.MinInt32 {
		return 0, fmt.Errorf("receiver: a message's %s is not a whole number: %.32s", name, n)
	}
	return int(r.Num().Int64()), nil
}

// MarshalJSON writes the message as delivered (Raw), or its envelope when
// it has no Raw.
func (m Message) MarshalJSON() ([]byte, error) {
	if len(m.Raw) > 0 {
		return m.Raw, nil
	}
	type envelope Message
	return json.Marshal(struct {
		TsmID int `json:"tsmId"`
		TsmEv int `json:"tsmEv"`
		envelope
	}{m.TsmID, m.TsmEv, envelope(m)})
}

// Key is the key Thingsee advises receivers to de-duplicate on,
// tsmTuid:tsmId:tsmTs: a message delivered again has the same key. It is
// also what the WebSocket stream resumes after.
func (m Message) Key() string {
	return m.TsmTuid + ":" + strconv.Itoa(m.TsmID) + ":" + m.TsmTs.String()
}

// DecodeBatch decodes a delivery's body (opened, if it was sealed): a JSON
// array of Thingsee messages.
func DecodeBatch(body []byte) ([]Message, error) {
	if t := bytes.TrimSpace(body); len(t) == 0 || t[0] != '[' {
		return nil, errors.New("receiver: the body is not a JSON array of messages")
	}
	var msgs []Message
	if err := json.Unmarshal(body, &msgs); err != nil {
		return nil, fmt.Errorf("receiver: the body is not a JSON array of messages: %w", err)
	}
	return msgs, nil
}

package bench

import (
	"fmt"
	"strconv"
	"time"
)

// PayloadKind names what each publish carries.
type PayloadKind string

// Payload kinds.
const (
	// PayloadTypical is one Thingsee weather message (tsmId 12100), about
	// 150 bytes: what a gateway uploads most of the time.
	PayloadTypical PayloadKind = "typical"
	// PayloadArray10 is a JSON array of 10 weather messages of 10 sensors
	// (about 1.5 KB), as a gateway uploads after buffering.
	PayloadArray10 PayloadKind = "array10"
)

// ParsePayloadKind checks a --payload value.
func ParsePayloadKind(s string) (PayloadKind, error) {
	switch k := PayloadKind(s); k {
	case PayloadTypical, PayloadArray10:
		return k, nil
	}
	return "", fmt.Errorf("bench: payload %q: want %q or %q", s, PayloadTypical, PayloadArray10)
}

// Messages returns how many Thingsee messages one publish of kind carries.
func (k PayloadKind) Messages() int {
	if k == PayloadArray10 {
		return 10
	}
	return 1
}

// payloadGen makes the payloads of one gateway. Every message differs from
// every other of the run (sensor, tsmTs and a per-sensor sequence number in
// the values), so the server's content-id de-duplication never drops one.
// It is not safe for concurrent use.
type payloadGen struct {
	kind  PayloadKind
	gw    string
	tuids []string
	seq   int64
}

// newPayloadGen returns the generator of gateway number gi with serial gw.
func newPayloadGen(kind PayloadKind, gi int, gw string) *payloadGen {
	p := &payloadGen{kind: kind, gw: gw}
	for i := range kind.Messages() {
		// A TUID is 17 characters: 4 letters, 2 digits, 11 of A-Z0-9.
		p.tuids = append(p.tuids, fmt.Sprintf("TSEN01B%02d%08d", i, gi%100000000))
	}
	return p
}

// next returns a new payload (never reused: the MQTT session may hold it
// until acknowledged).
func (p *payloadGen) next(now time.Time) []byte {
	ts := now.Unix()
	seq := p.seq
	p.seq++
	if len(p.tuids) == 1 {
		return appendMessage(make([]byte, 0, 192), p.tuids[0], p.gw, ts, seq)
	}
	b := make([]byte, 0, 192*len(p.tuids))
	b = append(b, '[')
	for i, tuid := range p.tuids {
		if i > 0 {
			b = append(b, ',')
		}
		b = appendMessage(b, tuid, p.gw, ts, seq)
	}
	return append(b, ']')
}

// appendTenths appends v/10 with one decimal (v >= 0).
func appendTenths(b []byte, v int64) []byte {
	b = strconv.AppendInt(b, v/10, 10)
	return append(b, '.', byte('0'+v%10))
}

// appendMessage appends one valid Thingsee 12100 weather message whose
// values are derived from seq: (tsmTuid, tsmTs, lght) is unique for up to
// 200000 messages per sensor and second.
func appendMessage(b []byte, tuid, gw string, ts, seq int64) []byte {
	b = append(b, `{"tsmId":12100,"tsmEv":10,"airp":`...)
	b = appendTenths(b, 1013000+seq%500)
	b = append(b, `,"lght":`...)
	b = strconv.AppendInt(b, seq%200000, 10)
	b = append(b, `,"temp":`...)
	b = appendTenths(b, 150+seq%200)
	b = append(b, `,"humd":`...)
	b = appendTenths(b, 300+seq%400)
	b = append(b, `,"tsmTs":`...)
	b = strconv.AppendInt(b, ts, 10)
	b = append(b, `,"tsmTuid":"`...)
	b = append(b, tuid...)
	b = append(b, `","tsmGw":"`...)
	b = append(b, gw...)
	return append(b, `"}`...)
}

package thingsee

import (
	"math"
	"slices"
	"strconv"
)

// kind is the JSON shape a property must have.
type kind uint8

const (
	kindInt            kind = iota + 1 // an exact JSON integer within [imin, imax]
	kindNumber                         // any finite JSON number within [min, max]
	kindString                         // a string of at most maxStringBytes bytes
	kindEnum                           // a string, one of enum
	kindStringOrNumber                 // a string (as kindString) or a finite number
	kindTUID                           // a string in TUID format
	kindDist4x4                        // an array of 4 arrays of 4 numbers >= 0
	kindHeartbeats                     // an array of {tuid, slotBits} objects
)

// maxStringBytes bounds every string property.
const maxStringBytes = 256

// maxHeartbeats bounds the heartbeats array of tsmId 11200.
const maxHeartbeats = 1000

// Temperature range of the environment sensors, in °C.
const (
	tempMin = -40
	tempMax = 85
)

// prop is the schema of one property.
type prop struct {
	kind       kind
	min, max   float64 // kindNumber bounds; max is +Inf when unbounded
	imin, imax int64   // kindInt bounds
	enum       []string
	required   bool
}

// schema is the property schema of one tsmId.
type schema struct {
	what     string          // what the message is, for reasons
	props    map[string]prop // allowed properties
	required []string        // sorted names of required properties
	// atLeastOne requires at least one property when none is required.
	atLeastOne bool
	// extraNonNegative accepts any other property that is a number >= 0.
	extraNonNegative bool
	// names is the sorted list of property names, for reasons.
	names []string
}

func number(lo, hi float64) prop { return prop{kind: kindNumber, min: lo, max: hi} }
func nonNeg() prop               { return number(0, math.Inf(1)) }
func integer(lo, hi int64) prop  { return prop{kind: kindInt, imin: lo, imax: hi} }
func count() prop                { return integer(0, math.MaxInt64) }
func text() prop                 { return prop{kind: kindString} }
func enum(vals ...string) prop   { return prop{kind: kindEnum, enum: vals} }
func temperature() prop          { return number(tempMin, tempMax) }
func percent() prop              { return number(0, 100) }
func req(p prop) prop            { p.required = true; return p }

// schemaTable is the per-tsmId property schema of README.md "Uplink message
// ids". Header fields are checked separately and are allowed in every
// message. Judgement calls where the README is silent:
//
//   - Which properties are required: those the README marks required (batl,
//     wpnode, rssi, hall), plus the property of every single-purpose message
//     (uptime, moveCount, temp, dist, angle, carbonDioxide, tvoc, state,
//     result, heartbeats, tuid/slotBits of 11201, the three accelerations of
//     1111, count of 13102). Messages whose properties are all optional
//     (1100, 1220, 1400/1403, 1500, 12100, 13103, 16100) need at least one.
//     With tsmEv 9 (threshold exceeded) nothing is required, but at least
//     one property must be present.
//   - Counters (moveCount, hallCount, count, in/out/totalIn/totalOut,
//     histogramN, slotBits, slotBitCount, neighbour info) are exact integers
//     >= 0; measurements (temp, humd, airp, lght, dist, batl, uptime,
//     durations, intervals, energies) are any finite number. The 1111
//     accelerations are integers within ±4096 (the README says "about
//     ±2048": twice that leaves headroom for ±4 g ranges).
//   - Sanity bounds where the README gives none: airp 0..200000 Pa (sea level
//     is about 101325), lght 0..200000 lux (direct sunlight is about
//     120000), rssiDbm -255..255, 17200 status 0..255 (0 is ok, other codes
//     are sensor specific), nodeRole 0..4294967295 (a 32-bit field), diagType
//     an integer >= 0.
//   - 1200 rssiDbm, 17200 ambientRate/numberOfSPADs/signalPerSPAD, 1220
//     nodeAccessCycle/nodeVoltage are numbers; the 1220 "buffer/drop
//     counters", not named by the README, are any other property that is a
//     number >= 0 and whose name is an identifier (an ASCII letter, then up
//     to 63 letters, digits or underscores).
//   - 11200 and 11201 both allow slotInterval (number >= 0) and slotBitCount
//     (integer >= 0); 11200 requires heartbeats, 11201 requires tuid and
//     slotBits.
//   - Temperatures use the environment-sensor range -40..85 °C for every
//     temperature id (13101, 17210, 18101, 12100).
var schemaTable = buildSchemas([]schemaDef{
	{ids: []int{1100}, what: "system info", atLeastOne: true, props: map[string]prop{
		"swVersion": text(), "modelCode": text(), "psn": text(),
	}},
	{ids: []int{1110}, what: "battery", props: map[string]prop{
		"batl": req(percent()), "chrg": integer(0, 2),
	}},
	{ids: []int{1111}, what: "orientation", props: map[string]prop{
		"accx": req(integer(-4096, 4096)), "accy": req(integer(-4096, 4096)), "accz": req(integer(-4096, 4096)),
	}},
	{ids: []int{1112}, what: "uptime", props: map[string]prop{
		"uptime": req(nonNeg()),
	}},
	{ids: []int{1200}, what: "mesh neighbour", props: map[string]prop{
		"wpnode": req(text()), "rssi": req(integer(0, 255)), "rssiDbm": number(-255, 255), "neighNodeInfo": integer(1, 3),
	}},
	{ids: []int{1220}, what: "mesh node diagnostics", atLeastOne: true, extraNonNegative: true, props: map[string]prop{
		"nodeAccessCycle": nonNeg(), "nodeRole": integer(0, math.MaxUint32), "nodeVoltage": nonNeg(),
	}},
	{ids: []int{1301, 1303}, what: "firmware / OTAP status", props: map[string]prop{
		"result": req(enum("ok", "fail", "cancel")), "resultReason": {kind: kindStringOrNumber},
	}},
	{ids: []int{1400, 1403}, what: "diagnostics / error info", atLeastOne: true, props: map[string]prop{
		"diagGroup": integer(0, 5), "diagType": count(), "diagData": {kind: kindStringOrNumber},
		"errorType": {kind: kindStringOrNumber}, "errorCause": {kind: kindStringOrNumber},
	}},
	{ids: []int{1500}, what: "interval configuration", atLeastOne: true, props: map[string]prop{
		"measurementInterval": nonNeg(), "reportInterval": nonNeg(),
	}},
	{ids: []int{2100}, what: "occupancy", props: map[string]prop{
		"state": req(integer(0, 1)),
	}},
	{ids: []int{2101}, what: "jam detection", props: map[string]prop{
		"state": req(integer(0, 1)),
	}},
	{ids: []int{11200}, what: "gateway heartbeat summary", props: map[string]prop{
		"slotInterval": nonNeg(), "slotBitCount": count(), "heartbeats": req(prop{kind: kindHeartbeats}),
	}},
	{ids: []int{11201}, what: "gateway heartbeat change", props: map[string]prop{
		"slotInterval": nonNeg(), "slotBitCount": count(), "tuid": req(prop{kind: kindTUID}), "slotBits": req(count()),
	}},
	{ids: []int{12100}, what: "weather", atLeastOne: true, props: map[string]prop{
		"temp": temperature(), "humd": percent(), "airp": number(0, 200000), "lght": number(0, 200000),
	}},
	{ids: []int{12101}, what: "magnetic switch", props: map[string]prop{
		"hall": req(integer(0, 1)), "hallCount": count(),
	}},
	{ids: []int{12102}, what: "leakage", props: map[string]prop{
		"resistance": req(nonNeg()),
	}},
	{ids: []int{13100}, what: "movement count", props: map[string]prop{
		"moveCount": req(count()),
	}},
	{ids: []int{13101}, what: "temperature", props: map[string]prop{
		"temp": req(temperature()),
	}},
	{ids: []int{13102}, what: "occupancy count", props: map[string]prop{
		"count": req(count()), "duration": nonNeg(),
	}},
	{ids: []int{13103}, what: "people counter", atLeastOne: true, props: map[string]prop{
		"in": count(), "out": count(), "totalIn": count(), "totalOut": count(),
	}},
	{ids: []int{16100}, what: "vibration", atLeastOne: true, props: histogram(map[string]prop{
		"activityLevel": percent(), "energyLevel": nonNeg(),
	})},
	{ids: []int{17100}, what: "distance", props: map[string]prop{
		"dist": req(nonNeg()),
	}},
	{ids: []int{17200}, what: "distance 2", props: map[string]prop{
		"dist": req(nonNeg()), "status": integer(0, 255),
		"ambientRate": nonNeg(), "numberOfSPADs": nonNeg(), "signalPerSPAD": nonNeg(),
	}},
	{ids: []int{17201}, what: "distance 2D", props: map[string]prop{
		"dist": req(prop{kind: kindDist4x4}),
	}},
	{ids: []int{17210, 18101}, what: "sensor temperature", props: map[string]prop{
		"temp": req(temperature()),
	}},
	{ids: []int{18100}, what: "angle", props: map[string]prop{
		"angle": req(number(0, 360)),
	}},
	{ids: []int{24100}, what: "CO2", props: map[string]prop{
		"carbonDioxide": req(number(0, 40000)), "status": integer(-1, 2),
	}},
	{ids: []int{24101}, what: "TVOC", props: map[string]prop{
		"tvoc": req(number(0, 18000)),
	}},
})

// histogram adds histogram0..histogram9 (integers >= 0) to p.
func histogram(p map[string]prop) map[string]prop {
	for i := range 10 {
		p["histogram"+strconv.Itoa(i)] = count()
	}
	return p
}

// schemaDef is one row of the schema table, shared by the ids listed.
type schemaDef struct {
	ids              []int
	what             string
	atLeastOne       bool
	extraNonNegative bool
	props            map[string]prop
}

func buildSchemas(defs []schemaDef) map[int]*schema {
	t := make(map[int]*schema)
	for _, d := range defs {
		s := &schema{what: d.what, props: d.props, atLeastOne: d.atLeastOne, extraNonNegative: d.extraNonNegative}
		for name, p := range d.props {
			if headerOf(name) >= 0 {
				panic("thingsee: property " + name + " shadows a header field")
			}
			s.names = append(s.names, name)
			if p.required {
				s.required = append(s.required, name)
			}
		}
		slices.Sort(s.names)
		slices.Sort(s.required)
		for _, id := range d.ids {
			if _, dup := t[id]; dup {
				panic("thingsee: tsmId " + strconv.Itoa(id) + " defined twice")
			}
			t[id] = s
		}
	}
	return t
}

package main

import (
	"encoding/json"
	"fmt"
	"math"
	"math/rand/v2"
	"time"
)

// sensor is one simulated Thingsee sensor.
type sensor struct {
	tuid  string
	kind  int // tsmId of its main measurement
	temp  float64
	count int
	co2   float64
	batl  float64
}

// simulation makes realistic Thingsee messages for a few sensors.
type simulation struct {
	rng     *rand.Rand
	sensors []*sensor
	n       int
}

func newSimulation(seed uint64, sensors int) *simulation {
	s := &simulation{rng: rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15))}
	kinds := []struct {
		model string
		id    int
	}{{"TSEN01", 12100}, {"TSPR04", 13100}, {"TSAR01", 24100}, {"TSPD04", 2100}, {"TSEN01", 13101}}
	for i := 0; i < sensors; i++ {
		k := kinds[i%len(kinds)]
		s.sensors = append(s.sensors, &sensor{
			tuid: fmt.Sprintf("%sDEMO%07d", k.model, i+1), kind: k.id,
			temp: 20 + s.rng.Float64()*3, co2: 450 + s.rng.Float64()*100, batl: 100 - float64(i),
		})
	}
	return s
}

func round(v float64, decimals int) float64 {
	p := math.Pow(10, float64(decimals))
	return math.Round(v*p) / p
}

// message returns one message of sensor se at time ts.
func (s *simulation) message(se *sensor, ts time.Time) map[string]any {
	m := map[string]any{"tsmId": se.kind, "tsmEv": 10, "tsmTs": ts.Unix(), "tsmTuid": se.tuid}
	switch se.kind {
	case 12100:
		se.temp += s.rng.NormFloat64() * 0.1
		m["temp"], m["humd"], m["airp"], m["lght"] = round(se.temp, 1), round(40+s.rng.Float64()*5, 1), round(101325+s.rng.NormFloat64()*50, 1), s.rng.IntN(500)
	case 13100:
		se.count += s.rng.IntN(4)
		m["moveCount"] = se.count
	case 24100:
		se.co2 = math.Max(400, se.co2+s.rng.NormFloat64()*15)
		m["carbonDioxide"], m["status"] = int(se.co2), 0
	case 2100:
		m["tsmEv"] = 7
		m["state"] = s.rng.IntN(2)
	case 13101:
		se.temp += s.rng.NormFloat64() * 0.1
		m["temp"] = round(se.temp, 1)
	}
	return m
}

// next returns the next payload: usually one message, sometimes a buffered
// array (as after an outage), and now and then an invalid message when
// withInvalid is set, to show a rejection.
func (s *simulation) next(now time.Time, withInvalid bool) []byte {
	s.n++
	se := s.sensors[s.rng.IntN(len(s.sensors))]
	var v any
	switch {
	case withInvalid && s.n%20 == 0:
		m := s.message(s.sensors[0], now)
		m["temp"] = 130.5 // out of the sensor's range: rejected with a reason
		v = m
	case s.n%10 == 0:
		arr := make([]map[string]any, 3)
		for i := range arr {
			arr[i] = s.message(se, now.Add(time.Duration(i-3)*time.Minute))
		}
		se2 := s.sensors[s.rng.IntN(len(s.sensors))]
		arr = append(arr, s.message(se2, now))
		v = arr
	case s.n%15 == 0:
		se.batl = math.Max(0, se.batl-0.5)
		v = map[string]any{"tsmId": 1110, "tsmEv": 10, "tsmTs": now.Unix(), "tsmTuid": se.tuid, "batl": round(se.batl, 1)}
	default:
		v = s.message(se, now)
	}
	b, _ := json.Marshal(v)
	return b
}

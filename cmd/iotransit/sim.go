package main

import (
	"context"
	"crypto/tls"
	"errors"
	"io"
	"math"
	"math/rand/v2"
	"net/http"
	"sync/atomic"
	"time"

	"github.com/iotransit/iotransit/internal/forward"
	"github.com/iotransit/iotransit/internal/node"
	"github.com/iotransit/iotransit/internal/pki"
	"github.com/iotransit/iotransit/receiver"
)

// The demo's simulated sensors (mesh-sim's nodes carry them) and the
// customer's HTTPS receiver of a webhook integration.

// sensor is one simulated Thingsee sensor.
type sensor struct {
	tuid  string
	kind  int // tsmId of its main measurement
	temp  float64
	count int
	co2   float64
	batl  float64
}

// simulation makes realistic Thingsee messages (mesh-sim's nodes carry
// the sensors).
type simulation struct {
	rng *rand.Rand
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

// demoReceiver is the customer's side in the demo: an HTTPS endpoint that
// checks each batch's Standard Webhooks signature (receiver.Verifier) and
// prints it.
type demoReceiver struct {
	verifier atomic.Pointer[receiver.Verifier]
	srv      *http.Server
	say      func(string, ...any)
}

// startDemoReceiver starts the receiver on 127.0.0.1, with a certificate of
// its own CA, and creates the dev tenant's webhook integration to it.
func startDemoReceiver(ctx context.Context, n *node.Node, say func(string, ...any)) (_ *demoReceiver, err error) {
	now := time.Now()
	ca, err := pki.NewCA("demo receiver CA", 24*time.Hour, now)
	if err != nil {
		return nil, err
	}
	cert, err := ca.IssueServerKeyPair([]string{"127.0.0.1"}, 24*time.Hour, now)
	if err != nil {
		return nil, err
	}
	ln, err := tls.Listen("tcp", "127.0.0.1:0", &tls.Config{MinVersion: tls.VersionTLS12, Certificates: []tls.Certificate{*cert}})
	if err != nil {
		return nil, err
	}
	r := &demoReceiver{say: say}
	r.srv = &http.Server{Handler: r, ReadHeaderTimeout: 5 * time.Second}
	go func() { _ = r.srv.Serve(ln) }()
	defer func() {
		if err != nil {
			r.close()
		}
	}()

	url := "https://" + ln.Addr().String() + "/hook"
	in, shown, err := n.Forward().Create(ctx, node.DevTenant, forward.Integration{
		Name: "demo receiver", Type: forward.TypeWebhook,
		Webhook: &forward.WebhookConfig{URL: url, CAPEM: string(ca.CertPEM)},
		Batch:   forward.Batching{MaxMessages: 50, MaxWait: forward.Duration(500 * time.Millisecond)},
	})
	if err != nil {
		return nil, err
	}
	v, err := receiver.NewVerifier(shown["webhook.secret"])
	if err != nil {
		return nil, err
	}
	r.verifier.Store(v)
	say("integration %s forwards every message to %s (Standard Webhooks signed)", in.ID, url)
	return r, nil
}

// ServeHTTP verifies a delivery, says what came, and answers 200, or 401
// when the signature does not verify.
func (r *demoReceiver) ServeHTTP(w http.ResponseWriter, req *http.Request) {
	body, err := io.ReadAll(io.LimitReader(req.Body, 4<<20))
	if err != nil {
		w.WriteHeader(http.StatusBadRequest)
		return
	}
	err = errors.New("no secret yet")
	if v := r.verifier.Load(); v != nil {
		err = v.Verify(body, req.Header)
	}
	verdict := "signature ok"
	if err != nil {
		verdict = "SIGNATURE REFUSED: " + err.Error()
		w.WriteHeader(http.StatusUnauthorized)
	} else {
		w.WriteHeader(http.StatusOK)
	}
	batch, _ := receiver.DecodeBatch(body)
	r.say("webhook  %s  %d message(s), %s", req.Header.Get(receiver.HeaderID), len(batch), verdict)
}

// close stops the receiver.
func (r *demoReceiver) close() { _ = r.srv.Close() }

package main

import (
	"context"
	"crypto/subtle"
	"crypto/tls"
	"encoding/json"
	"errors"
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/iotransit/iotransit/internal/forward"
	"github.com/iotransit/iotransit/internal/forward/webhook"
	"github.com/iotransit/iotransit/internal/node"
	"github.com/iotransit/iotransit/internal/pki"
)

// demoReceiver is the customer's side in the demo: an HTTPS endpoint that
// checks each batch's Standard Webhooks signature and prints it.
type demoReceiver struct {
	url, caPEM string
	secret     atomic.Value // []byte
	srv        *http.Server
	say        func(string, ...any)
}

func startDemoReceiver(say func(string, ...any)) (*demoReceiver, error) {
	ca, err := pki.NewCA("demo receiver CA", 24*time.Hour, time.Now())
	if err != nil {
		return nil, err
	}
	key, err := pki.NewKey()
	if err != nil {
		return nil, err
	}
	leaf, _, err := ca.IssueServer(key.Public(), []string{"127.0.0.1"}, 24*time.Hour, time.Now())
	if err != nil {
		return nil, err
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	r := &demoReceiver{url: "https://" + ln.Addr().String() + "/hook", caPEM: string(ca.CertPEM), say: say}
	r.srv = &http.Server{Handler: r, ReadHeaderTimeout: 5 * time.Second}
	tl := tls.NewListener(ln, &tls.Config{MinVersion: tls.VersionTLS12, Certificates: []tls.Certificate{{Certificate: [][]byte{leaf.Raw}, PrivateKey: key}}})
	go func() { _ = r.srv.Serve(tl) }()
	return r, nil
}

func (r *demoReceiver) ServeHTTP(w http.ResponseWriter, req *http.Request) {
	body, err := io.ReadAll(io.LimitReader(req.Body, 4<<20))
	if err != nil {
		w.WriteHeader(http.StatusBadRequest)
		return
	}
	verdict := "signature ok"
	if err := r.verify(req.Header, body); err != nil {
		verdict = "SIGNATURE REFUSED: " + err.Error()
		w.WriteHeader(http.StatusUnauthorized)
	} else {
		w.WriteHeader(http.StatusOK)
	}
	var batch []json.RawMessage
	_ = json.Unmarshal(body, &batch)
	r.say("webhook  %s  %d message(s), %s", req.Header.Get("webhook-id"), len(batch), verdict)
}

// verify checks the Standard Webhooks signature as a receiver does.
func (r *demoReceiver) verify(h http.Header, body []byte) error {
	key, _ := r.secret.Load().([]byte)
	ts, err := strconv.ParseInt(h.Get("webhook-timestamp"), 10, 64)
	if err != nil || key == nil {
		return errors.New("no timestamp")
	}
	if d := time.Since(time.Unix(ts, 0)); d > 5*time.Minute || d < -5*time.Minute {
		return errors.New("timestamp too old")
	}
	want := webhook.Sign([][]byte{key}, h.Get("webhook-id"), time.Unix(ts, 0), body)
	for _, got := range strings.Fields(h.Get("webhook-signature")) {
		if subtle.ConstantTimeCompare([]byte(got), []byte(want)) == 1 {
			return nil
		}
	}
	return errors.New("no signature matches")
}

// connect creates the demo's webhook integration to this receiver.
func (r *demoReceiver) connect(ctx context.Context, n *node.Node) error {
	in, shown, err := n.Forward().Create(ctx, node.DevTenant, forward.Integration{
		Name: "demo receiver", Type: forward.TypeWebhook,
		Webhook: &forward.WebhookConfig{URL: r.url, CAPEM: r.caPEM},
		Batch:   forward.Batching{MaxMessages: 50, MaxWait: forward.Duration(500 * time.Millisecond)},
	})
	if err != nil {
		return err
	}
	key, err := webhook.ParseSecret(shown["webhook.secret"])
	if err != nil {
		return err
	}
	r.secret.Store(key)
	r.say("integration %s forwards every message to %s (Standard Webhooks signed)", in.ID, r.url)
	return nil
}

func (r *demoReceiver) close() { _ = r.srv.Close() }

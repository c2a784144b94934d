package receiver_test

import (
	"context"
	"fmt"
	"log"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/iotransit/iotransit/receiver"
)

// A receiver that takes a webhook integration's deliveries: it verifies
// them with the integration's signing secret, de-duplicates the messages on
// their Thingsee key, and stores the new ones. In a program,
// http.ListenAndServeTLS(":443", "cert.pem", "key.pem", h) serves it.
func ExampleHandler() {
	const secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw" // the integration's, shown once when it was created
	verifier, err := receiver.NewVerifier(secret)
	if err != nil {
		log.Fatal(err)
	}
	var mu sync.Mutex
	seen := map[string]bool{} // a real receiver keeps this in its database
	h := &receiver.Handler{
		Verifier: verifier,
		// Opener: from receiver.ParsePrivateKey, when the integration seals bodies.
		Deliver: func(ctx context.Context, d *receiver.Delivery) error {
			mu.Lock()
			defer mu.Unlock()
			for _, m := range d.Messages {
				if seen[m.Key()] {
					continue // delivered before: at least once
				}
				seen[m.Key()] = true
				fmt.Printf("store %s: %s\n", m.Key(), m.Raw)
			}
			return nil // an error answers 500: the node delivers the batch again later
		},
	}

	// A delivery as the node sends it, twice (a retry).
	body := []byte(`[{"tsmId":12100,"tsmEv":10,"temp":21.3,"tsmTs":1520416221,"tsmTuid":"TSEN01ABC12345678"}]`)
	key, _ := receiver.ParseSecret(secret)
	now := time.Now()
	for range 2 {
		r := httptest.NewRequest(http.MethodPost, "/iotransit", strings.NewReader(string(body)))
		r.Header.Set("Content-Type", "application/json")
		r.Header.Set(receiver.HeaderID, "msg_2x8kq0")
		r.Header.Set(receiver.HeaderTimestamp, strconv.FormatInt(now.Unix(), 10))
		r.Header.Set(receiver.HeaderSignature, receiver.Sign("msg_2x8kq0", now, body, key))
		w := httptest.NewRecorder()
		h.ServeHTTP(w, r)
		fmt.Println(w.Code)
	}
	// Output:
	// store TSEN01ABC12345678:12100:1520416221: {"tsmId":12100,"tsmEv":10,"temp":21.3,"tsmTs":1520416221,"tsmTuid":"TSEN01ABC12345678"}
	// 204
	// 204
}

// Opening a sealed body with the private key that goes with the
// integration's public key ("iotransit keygen" makes the pair).
func ExampleOpener() {
	privatePEM, publicPEM, err := receiver.GenerateKey()
	if err != nil {
		log.Fatal(err)
	}
	// What the node does with the public key...
	sealer, _ := receiver.ParsePublicKey(publicPEM)
	sealed, _ := sealer.Seal([]byte(`[{"tsmId":12100}]`))

	// ...and what the receiver does with the private key.
	opener, err := receiver.ParsePrivateKey(privatePEM)
	if err != nil {
		log.Fatal(err)
	}
	body, err := opener.Open(sealed)
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println(string(body))
	// Output: [{"tsmId":12100}]
}

package client_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log"
	"os"
	"time"

	"github.com/iotransit/iotransit/client"
	"github.com/iotransit/iotransit/receiver"
)

// The examples talk to a server, so they are compiled, not run.

// Creating a tenant with the operator key.
func ExampleClient_CreateTenant() {
	ca, err := os.ReadFile("/var/lib/iotransit/server-ca.pem")
	if err != nil {
		log.Fatal(err)
	}
	c, err := client.New(client.Config{
		Server:     "https://iot.example.com:8443",
		CAPEM:      ca,
		Credential: os.Getenv("IOTRANSIT_OPERATOR_KEY"),
	})
	if err != nil {
		log.Fatal(err)
	}
	defer c.Close()
	t, err := c.CreateTenant(context.Background(), "acme")
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println(t.ID, "created; its gateways' CA:", t.CACert)
}

// Registering a gateway and giving it an enrollment token, with the
// operator key (a tenant claims its gateways instead: ClaimGateway).
func ExampleClient_RegisterGateway() {
	c, err := client.New(client.Config{Server: "iot.example.com:8443", Credential: os.Getenv("IOTRANSIT_KEY")})
	if err != nil {
		log.Fatal(err)
	}
	ctx := context.Background()
	gw, err := c.RegisterGateway(ctx, "acme", client.RegisterGatewayRequest{
		Serial: "TSGW06ACM00000042",
		Labels: map[string]string{"site": "warehouse-3"},
	})
	if err != nil {
		log.Fatal(err)
	}
	tok, err := c.CreateEnrollmentToken(ctx, "acme", client.CreateEnrollmentTokenRequest{Serial: gw.Serial, TTL: (2 * time.Hour).String()})
	if err != nil {
		log.Fatal(err)
	}
	// The gateway spends the token once: iotransit gateway run --token ...
	fmt.Println("enroll", gw.Serial, "with", tok.Token, "before", tok.ExpiresAt)
}

// Paging through a day of a sensor's messages, oldest first: AllMessages
// follows the next cursors.
func ExampleClient_AllMessages() {
	c, err := client.New(client.Config{Server: "iot.example.com:8443", Credential: os.Getenv("IOTRANSIT_KEY")})
	if err != nil {
		log.Fatal(err)
	}
	q := client.MessageQuery{TsmTuid: "TSEN01ACM00000007", From: time.Now().Add(-24 * time.Hour), Oldest: true, Limit: 500}
	for m, err := range c.AllMessages(context.Background(), "acme", q) {
		if err != nil {
			log.Fatal(err)
		}
		fmt.Println(m.Seq, m.StoredAt, string(m.Message))
	}
}

// Receiving messages as they are stored, and resuming after the last one
// when the connection breaks.
func ExampleClient_OpenStream() {
	c, err := client.New(client.Config{Server: "iot.example.com:8443", Credential: os.Getenv("IOTRANSIT_KEY")})
	if err != nil {
		log.Fatal(err)
	}
	ctx := context.Background()
	last := "" // the Thingsee key (tsmTuid:tsmId:tsmTs) of the last message taken
	for {
		s, err := c.OpenStream(ctx, "acme", client.StreamOptions{After: last})
		if err != nil {
			log.Fatal(err)
		}
		for {
			m, err := s.Next(ctx)
			if err != nil {
				break // open it again after the last message
			}
			var msg receiver.Message
			if err := json.Unmarshal(m, &msg); err != nil {
				log.Fatal(err)
			}
			fmt.Println(msg.Key(), msg.TsmCloudTs)
			last = msg.Key()
		}
		s.Close()
	}
}

// Telling refusals apart: the problem's stable code says what to do, its
// request id is what to quote to the operator.
func ExampleProblem() {
	c, err := client.New(client.Config{Server: "iot.example.com:8443", Credential: os.Getenv("IOTRANSIT_KEY")})
	if err != nil {
		log.Fatal(err)
	}
	_, err = c.GetGateway(context.Background(), "acme", "TSGW06ACM00000042")
	var p *client.Problem
	var te *client.TransportError
	switch {
	case err == nil:
		fmt.Println("registered")
	case client.ErrorCode(err) == "registry.gateway_not_found":
		fmt.Println("not registered yet")
	case errors.As(err, &p):
		log.Fatalf("refused (%d): %v", p.Status, p) // code: title: detail (request id)
	case errors.As(err, &te) && te.Kind == client.TransportUnknownCA:
		log.Fatalf("%v: give the server's CA in Config.CAPEM", err)
	default:
		log.Fatal(err)
	}
}

// Claiming a factory-provisioned gateway with the serial and claim code on
// its label, with an API key holding gateways:write, then giving it an
// enrollment token.
func ExampleClient_ClaimGateway() {
	c, err := client.New(client.Config{Server: "iot.example.com:8443", Credential: os.Getenv("IOTRANSIT_KEY")})
	if err != nil {
		log.Fatal(err)
	}
	ctx := context.Background()
	gw, err := c.ClaimGateway(ctx, "acme", client.ClaimGatewayRequest{Serial: "TSGW06K4Q7Z2M9X1C", ClaimCode: "7KQ2M-9XW4T-H3N8B-RZ5CV"})
	if err != nil {
		log.Fatal(err) // 404 registry.claim_invalid: unknown serial or wrong code, alike
	}
	tok, err := c.CreateEnrollmentToken(ctx, "acme", client.CreateEnrollmentTokenRequest{Serial: gw.Serial})
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println("enroll", gw.Serial, "with", tok.Token)
}

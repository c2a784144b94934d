// Package client is the Go client of iotransit's HTTPS management API, and
// the one declaration of the API's JSON: the server's handlers decode
// requests into and encode answers from the types of this package, so a
// client built on it speaks exactly what the server does.
//
// It imports only the standard library (and github.com/coder/websocket for
// the message stream), so customers can use it as it is.
//
// # Usage
//
// Make a Client with the server's address, the CA that verifies it and a
// bearer credential (the operator key, an API key, or an OAuth2 access
// token), then call one method per route:
//
//	c, err := client.New(client.Config{
//		Server:     "https://iot.example.com:8443",
//		CAPEM:      caPEM, // nil: the system roots
//		Credential: os.Getenv("IOTRANSIT_KEY"),
//	})
//	if err != nil { ... }
//	gw, err := c.RegisterGateway(ctx, "acme", client.RegisterGatewayRequest{Serial: "TSGW06DEV00000042"})
//
// Methods are named VerbNoun in CRUD order (CreateTenant, ListTenants,
// GetTenant, ...). A list that pages has a List method for one page and an
// All method that walks every page (an iter.Seq2). OpenStream receives the
// tenant's messages over a WebSocket as they are stored.
//
// # Errors
//
// A refusal of the API is a *Problem (RFC 9457 problem details: a stable
// Code, a Title, a Detail and the RequestID to quote); the token endpoint's
// is an *OAuthError (RFC 6749 §5.2). A failure to reach the server is a
// *TransportError whose Kind says what went wrong (a timeout, an unknown CA,
// a refused connection, ...) and whose message names the server and what to
// check. Use errors.As, or ErrorCode for the code alone.
//
// # Raw answers
//
// Every answer type marshals back (encoding/json) to the JSON the server
// sent, so a program can print what it got. Do sends any request and returns
// the raw Answer, for what has no method.
//
// # Security
//
// Only https is spoken: a plain http server address is refused, since the
// credential would cross the network in the clear. TLS 1.2 is the minimum,
// redirects are never followed (they would carry the credential elsewhere),
// answers larger than MaxAnswer are refused, and each request is bounded by
// Config.Timeout.
package client

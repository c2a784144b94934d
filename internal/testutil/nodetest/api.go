package nodetest

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"testing"
	"time"

	"github.com/iotransit/iotransit/client"
	"github.com/iotransit/iotransit/internal/node"
	"github.com/iotransit/iotransit/internal/testutil"
)

// API reaches a node's management API as the operator: Client for typed
// calls through the public client package, and Get and Do for raw HTTP
// (tests of what the server does with malformed or unusual requests).
type API struct {
	// Client is the public API client, with the operator key.
	Client *client.Client
	t      testing.TB
	base   string
	key    string
	c      *http.Client
}

// Response is an API answer.
type Response = testutil.Response

// NewAPI returns a client of n's API using the operator key.
func NewAPI(t testing.TB, n *node.Node) *API {
	t.Helper()
	c, err := client.New(client.Config{Server: "https://" + n.APIAddr(), CAPEM: n.ServerCAPEM(), Credential: n.OperatorKey(), Timeout: 10 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Close)
	return &API{Client: c, t: t, base: "https://" + n.APIAddr(), key: n.OperatorKey(), c: &http.Client{
		Timeout:   10 * time.Second,
		Transport: &http.Transport{TLSClientConfig: ClientTLS(t, n, nil)},
	}}
}

// Get fetches path and decodes a JSON answer into out (when non-nil); it
// returns the status code.
func (a *API) Get(path string, out any) int {
	a.t.Helper()
	r := a.Do(http.MethodGet, path, a.key, nil)
	if out != nil && r.Status < 300 {
		if err := json.Unmarshal(r.Body, out); err != nil {
			a.t.Fatalf("GET %s: decode %s: %v", path, r.Body, err)
		}
	}
	return r.Status
}

// Messages lists the tenant's newest messages through the API.
func (a *API) Messages(tenant string, limit int) []client.Message {
	a.t.Helper()
	p, err := a.Client.ListMessages(context.Background(), tenant, client.MessageQuery{Limit: limit})
	if err != nil {
		a.t.Fatalf("list messages: %v", err)
	}
	return p.Items
}

// Rejected lists the tenant's newest rejected messages through the API.
func (a *API) Rejected(tenant string, limit int) []client.Rejected {
	a.t.Helper()
	p, err := a.Client.ListRejected(context.Background(), tenant, client.RejectedQuery{Limit: limit})
	if err != nil {
		a.t.Fatalf("list rejected: %v", err)
	}
	return p.Items
}

// Do sends a request with bearer credential key ("" for none) and body
// (nil for none; a []byte is sent as is, anything else as JSON).
func (a *API) Do(method, path, key string, body any) Response {
	a.t.Helper()
	var rd io.Reader
	var ct string
	switch b := body.(type) {
	case nil:
	case []byte:
		rd, ct = bytes.NewReader(b), "application/json"
	default:
		j, err := json.Marshal(b)
		if err != nil {
			a.t.Fatal(err)
		}
		rd, ct = bytes.NewReader(j), "application/json"
	}
	req, err := http.NewRequest(method, a.base+path, rd)
	if err != nil {
		a.t.Fatal(err)
	}
	if ct != "" {
		req.Header.Set("Content-Type", ct)
	}
	if key != "" {
		req.Header.Set("Authorization", "Bearer "+key)
	}
	return testutil.Send(a.t, a.c, req)
}

// Key returns the operator key of the API client.
func (a *API) Key() string { return a.key }

// Base returns the API's base URL.
func (a *API) Base() string { return a.base }

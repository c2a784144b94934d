package nodetest

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"testing"
	"time"

	"github.com/iotransit/iotransit/internal/node"
	"github.com/iotransit/iotransit/internal/testutil"
)

// API is an HTTPS client of a node's API.
type API struct {
	t    testing.TB
	base string
	key  string
	c    *http.Client
}

// Response is an API answer.
type Response = testutil.Response

// NewAPI returns a client of n's API using the operator key.
func NewAPI(t testing.TB, n *node.Node) *API {
	return &API{t: t, base: "https://" + n.APIAddr(), key: n.OperatorKey(), c: &http.Client{
		Timeout:   10 * time.Second,
		Transport: &http.Transport{TLSClientConfig: ClientTLS(t, n, nil)},
	}}
}

// Get fetches path and decodes a JSON answer into out (when non-nil); it
// returns the status code.
func (a *API) Get(path string, out any) int {
	a.t.Helper()
	req, err := http.NewRequest(http.MethodGet, a.base+path, nil)
	if err != nil {
		a.t.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer "+a.key)
	r := testutil.Send(a.t, a.c, req)
	if out != nil && r.Status < 300 {
		if err := json.Unmarshal(r.Body, out); err != nil {
			a.t.Fatalf("GET %s: decode %s: %v", path, r.Body, err)
		}
	}
	return r.Status
}

// Message is a stored message as the API lists it.
type Message struct {
	ID         string          `json:"id"`
	Seq        uint64          `json:"seq"`
	ReceivedAt time.Time       `json:"receivedAt"`
	Gateway    string          `json:"gateway"`
	Message    json.RawMessage `json:"message"`
}

// Rejected is a rejected message as the API lists it.
type Rejected struct {
	Gateway string          `json:"gateway"`
	Index   int             `json:"index"`
	Code    string          `json:"code"`
	Field   string          `json:"field"`
	Reason  string          `json:"reason"`
	Message json.RawMessage `json:"message"`
	Payload string          `json:"payload"`
}

// Messages lists the tenant's newest messages through the API.
func (a *API) Messages(tenant string, limit int) []Message {
	a.t.Helper()
	var out struct{ Items []Message }
	if code := a.Get(fmt.Sprintf("/v1/tenants/%s/messages?limit=%d", tenant, limit), &out); code != http.StatusOK {
		a.t.Fatalf("list messages: status %d", code)
	}
	return out.Items
}

// Rejected lists the tenant's newest rejected messages through the API.
func (a *API) Rejected(tenant string, limit int) []Rejected {
	a.t.Helper()
	var out struct{ Items []Rejected }
	if code := a.Get(fmt.Sprintf("/v1/tenants/%s/rejected?limit=%d", tenant, limit), &out); code != http.StatusOK {
		a.t.Fatalf("list rejected: status %d", code)
	}
	return out.Items
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

package testutil

import (
	"encoding/json"
	"io"
	"net/http"
	"testing"
)

// Response is an HTTP answer, read whole.
type Response struct {
	Status int
	Header http.Header
	Body   []byte
}

// Problem decodes a problem+json answer.
func (r Response) Problem() (code, requestID string) {
	var p struct{ Code, RequestID string }
	_ = json.Unmarshal(r.Body, &p)
	return p.Code, p.RequestID
}

// Decode decodes a JSON answer into out.
func (r Response) Decode(t testing.TB, out any) {
	t.Helper()
	if err := json.Unmarshal(r.Body, out); err != nil {
		t.Fatalf("decode %s: %v", r.Body, err)
	}
}

// Send sends req with c and reads the whole answer; a request that gets no
// answer fails the test.
func Send(t testing.TB, c *http.Client, req *http.Request) Response {
	t.Helper()
	resp, err := c.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", req.Method, req.URL.RequestURI(), err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return Response{Status: resp.StatusCode, Header: resp.Header, Body: b}
}

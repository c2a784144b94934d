package testutil

import (
	"crypto/rand"
	"encoding/base64"
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

// WebSocketHandshake sends a WebSocket opening handshake (RFC 6455 §4.1)
// to url with a bearer key and returns the answer; the connection is never
// upgraded on this side: for tests that need only the status.
func WebSocketHandshake(t testing.TB, c *http.Client, url, key string) Response {
	t.Helper()
	req, err := http.NewRequest("GET", url, nil)
	if err != nil {
		t.Fatal(err)
	}
	nonce := make([]byte, 16)
	_, _ = rand.Read(nonce)
	req.Header.Set("Authorization", "Bearer "+key)
	req.Header.Set("Connection", "Upgrade")
	req.Header.Set("Upgrade", "websocket")
	req.Header.Set("Sec-WebSocket-Version", "13")
	req.Header.Set("Sec-WebSocket-Key", base64.StdEncoding.EncodeToString(nonce))
	return Send(t, c, req)
}

package client

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"

	"github.com/coder/websocket"
)

// ErrSealedFrame is the error of Next for a sealed (HPKE) frame when
// StreamOptions.Open is nil.
var ErrSealedFrame = errors.New("client: the stream sent a sealed frame and no StreamOptions.Open is set")

// StreamOptions configure OpenStream.
type StreamOptions struct {
	// After resumes after a message, without a gap: its Seq (as the
	// messages list gives it) in decimal, or its Thingsee key
	// tsmTuid:tsmId:tsmTs (from the last message received). "" streams
	// the messages stored from now on. A message that is no longer stored
	// is refused (api.after_unknown).
	After string
	// Integration names a websocket integration whose filter applies, and
	// whose encryption key seals every frame.
	Integration string
	// Open opens a sealed frame (such as receiver.Opener's Open), for Next.
	Open func(sealed []byte) ([]byte, error)
}

// Stream receives a tenant's messages over a WebSocket (GET
// /v1/tenants/{tenant}/stream) as they are stored. Each frame is a JSON
// array of Thingsee messages as forwarded, or their sealed form (binary)
// when the integration has a key. Read it with Next, one message at a
// time, or with ReadFrame, a frame at a time; not both.
type Stream struct {
	conn    *websocket.Conn
	open    func([]byte) ([]byte, error)
	pending []json.RawMessage
}

// OpenStream opens the message stream of a tenant. Config.Timeout bounds
// the handshake; the stream then lasts until Close, the server ends it
// (its credential was revoked or expired) or the connection breaks:
// open it again with After to resume. Each message the server reads for
// the stream spends one read of the credential's read budget: a replay
// from an old message goes at the budget's rate, and a stream whose budget
// is spent waits for it rather than ending.
func (c *Client) OpenStream(ctx context.Context, tenant string, opt StreamOptions) (*Stream, error) {
	q := url.Values{}
	setString(q, "after", opt.After)
	setString(q, "integration", opt.Integration)
	u, err := c.url(path("tenants", tenant, "stream"), q)
	if err != nil {
		return nil, err
	}
	h := http.Header{}
	h.Set("User-Agent", c.agent)
	if c.cred != "" {
		h.Set("Authorization", "Bearer "+c.cred)
	}
	hctx, cancel := context.WithTimeout(ctx, c.timeout)
	defer cancel()
	conn, resp, err := websocket.Dial(hctx, u.String(), &websocket.DialOptions{HTTPClient: c.hc, HTTPHeader: h})
	if err != nil {
		if resp != nil && resp.StatusCode != http.StatusSwitchingProtocols {
			// The library kept the first 1024 bytes of the body: enough
			// for a problem.
			b, _ := io.ReadAll(resp.Body)
			return nil, refusal(resp, &Answer{Status: resp.StatusCode, Header: resp.Header, Body: b, RequestID: resp.Header.Get("X-Request-Id")})
		}
		return nil, c.explain(hctx, err)
	}
	conn.SetReadLimit(MaxAnswer)
	return &Stream{conn: conn, open: opt.Open}, nil
}

// ReadFrame returns the next frame: a JSON array of messages, or a sealed
// payload when sealed is true (open it with receiver.Opener). It waits
// until a frame comes or ctx ends.
func (s *Stream) ReadFrame(ctx context.Context) (payload []byte, sealed bool, err error) {
	typ, b, err := s.conn.Read(ctx)
	if err != nil {
		return nil, false, fmt.Errorf("stream: %w", err)
	}
	return b, typ == websocket.MessageBinary, nil
}

// Next returns the next message, a Thingsee message as forwarded. It waits
// until one comes or ctx ends.
func (s *Stream) Next(ctx context.Context) (json.RawMessage, error) {
	for len(s.pending) == 0 {
		b, sealed, err := s.ReadFrame(ctx)
		if err != nil {
			return nil, err
		}
		if sealed {
			if s.open == nil {
				return nil, ErrSealedFrame
			}
			if b, err = s.open(b); err != nil {
				return nil, fmt.Errorf("stream: open a sealed frame: %w", err)
			}
		}
		var msgs []json.RawMessage
		if err := json.Unmarshal(b, &msgs); err != nil {
			return nil, fmt.Errorf("stream: a frame is not a JSON array of messages: %w", err)
		}
		s.pending = msgs
	}
	m := s.pending[0]
	s.pending = s.pending[1:]
	return m, nil
}

// Close closes the stream normally.
func (s *Stream) Close() error {
	return s.conn.Close(websocket.StatusNormalClosure, "")
}

package client

import (
	"context"
	"encoding/json"
	"iter"
	"net/url"
	"time"
)

// Message is a stored Thingsee message.
type Message struct {
	// ID is the message id (the de-duplication id).
	ID string `json:"id"`
	// Seq is the message's position in the tenant's message stream; the
	// stream resumes after it (StreamOptions.After).
	Seq uint64 `json:"seq"`
	// ReceivedAt is when the node received it.
	ReceivedAt time.Time `json:"receivedAt"`
	// StoredAt is when it was stored (ReceivedAt plus the persist latency),
	// the clock of the query's From and To.
	StoredAt time.Time `json:"storedAt"`
	// Gateway is the serial of the gateway that sent it.
	Gateway string `json:"gateway"`
	// Message is the Thingsee message as received, with the members the
	// cloud adds (tsmCloudTs, ...).
	Message json.RawMessage `json:"message"`
}

// Rejected is a message the node refused, with the reason. Message holds it
// when it was a JSON object within the structural limits; otherwise
// Payload holds it as text (also a message refused for its structure, such
// as thingsee.too_deep), or PayloadBase64 when it is not UTF-8.
type Rejected struct {
	Seq        uint64    `json:"seq"`
	ReceivedAt time.Time `json:"receivedAt"`
	// StoredAt is when it was stored, the clock of the query's From and To.
	StoredAt time.Time `json:"storedAt"`
	Gateway  string    `json:"gateway"`
	// Index is the message's position in the published payload (0 for a
	// single message).
	Index int `json:"index"`
	// Code says why it was refused, a stable code.
	Code string `json:"code"`
	// Field is the field at fault, when there is one.
	Field         string          `json:"field,omitempty"`
	Reason        string          `json:"reason"`
	TsmID         int             `json:"tsmId,omitempty"`
	Tuid          string          `json:"tsmTuid,omitempty"`
	Message       json.RawMessage `json:"message,omitempty"`
	Payload       string          `json:"payload,omitempty"`
	PayloadBase64 string          `json:"payloadBase64,omitempty"`
}

// MessageQuery selects a page of stored messages. Zero members mean any.
type MessageQuery struct {
	// TsmID keeps one message type (1000 to 999999).
	TsmID int
	// TsmTuid keeps one sensor.
	TsmTuid string
	// Gateway keeps the messages one gateway sent.
	Gateway string
	// From and To bound the time a message was stored: [From, To).
	From, To time.Time
	// Limit is the page size, 1 to 1000 (0: the server's default, 100).
	Limit int
	// Oldest walks oldest first; the default is newest first.
	Oldest bool
	// Cursor is a previous page's Next (with the same filters and order).
	Cursor string
}

func (q MessageQuery) values() url.Values {
	v := url.Values{}
	setInt(v, "tsmId", q.TsmID)
	setString(v, "tsmTuid", q.TsmTuid)
	setString(v, "gateway", q.Gateway)
	setWindow(v, q.From, q.To, q.Limit, q.Oldest)
	setString(v, "cursor", q.Cursor)
	return v
}

// setWindow sets the paging and time range every stream list shares.
func setWindow(v url.Values, from, to time.Time, limit int, oldest bool) {
	setTime(v, "from", from)
	setTime(v, "to", to)
	setInt(v, "limit", limit)
	if oldest {
		v.Set("order", "oldest")
	}
}

// ListMessages returns a page of a tenant's stored messages.
func (c *Client) ListMessages(ctx context.Context, tenant string, q MessageQuery) (*Page[Message], error) {
	return get[Page[Message]](ctx, c, path("tenants", tenant, "messages"), q.values())
}

// AllMessages walks every page of a tenant's stored messages from
// q.Cursor on.
func (c *Client) AllMessages(ctx context.Context, tenant string, q MessageQuery) iter.Seq2[Message, error] {
	return walk(ctx, q.Cursor, func(ctx context.Context, cursor string) (*Page[Message], error) {
		q.Cursor = cursor
		return c.ListMessages(ctx, tenant, q)
	})
}

// RejectedQuery selects a page of rejected messages. Zero members mean any.
type RejectedQuery struct {
	// Gateway keeps the messages one gateway sent.
	Gateway string
	// Code keeps one rejection code (thingsee.* or ingest.*).
	Code string
	// From and To bound the time a message was stored: [From, To).
	From, To time.Time
	// Limit is the page size, 1 to 1000 (0: the server's default, 100).
	Limit int
	// Oldest walks oldest first; the default is newest first.
	Oldest bool
	// Cursor is a previous page's Next (with the same filters and order).
	Cursor string
}

func (q RejectedQuery) values() url.Values {
	v := url.Values{}
	setString(v, "gateway", q.Gateway)
	setString(v, "code", q.Code)
	setWindow(v, q.From, q.To, q.Limit, q.Oldest)
	setString(v, "cursor", q.Cursor)
	return v
}

// ListRejected returns a page of a tenant's rejected messages.
func (c *Client) ListRejected(ctx context.Context, tenant string, q RejectedQuery) (*Page[Rejected], error) {
	return get[Page[Rejected]](ctx, c, path("tenants", tenant, "rejected"), q.values())
}

// AllRejected walks every page of a tenant's rejected messages from
// q.Cursor on.
func (c *Client) AllRejected(ctx context.Context, tenant string, q RejectedQuery) iter.Seq2[Rejected, error] {
	return walk(ctx, q.Cursor, func(ctx context.Context, cursor string) (*Page[Rejected], error) {
		q.Cursor = cursor
		return c.ListRejected(ctx, tenant, q)
	})
}

package client

import (
	"context"
	"net/http"
	"net/url"
)

// DeviceErasure is what an erasure of one sensor's stored data removed
// (DELETE /v1/tenants/{tenant}/devices/{tsmTuid}/messages).
type DeviceErasure struct {
	Tuid string `json:"tsmTuid"`
	// Messages, Redriven, DeadLetters and Rejected count the records
	// deleted: accepted messages, their copies re-driven to integrations,
	// dead letters of every integration, rejected messages.
	Messages    int `json:"messages"`
	Redriven    int `json:"redriven"`
	DeadLetters int `json:"deadLetters"`
	Rejected    int `json:"rejected"`
	// Overwritten counts the records of those that were overwritten in
	// place on disk (secure erase); the others are deleted and their
	// bytes freed later (docs/SECURITY.md, "Erasing a device's data").
	Overwritten int `json:"overwritten"`
	// Complete is false when the request's time ran out first: call again
	// with Next to go on.
	Complete bool   `json:"complete"`
	Next     string `json:"next,omitempty"`
}

// EraseDeviceStep makes one erasure request for sensor tuid of tenant,
// going on from next (a previous answer's Next, "" to start).
func (c *Client) EraseDeviceStep(ctx context.Context, tenant, tuid, next string) (*DeviceErasure, error) {
	q := url.Values{}
	setString(q, "next", next)
	return call[DeviceErasure](ctx, c, request{method: http.MethodDelete, path: path("tenants", tenant, "devices", tuid, "messages"), query: q, auth: true})
}

// EraseDevice erases every stored record of sensor tuid of tenant: it
// repeats the request until the erasure is complete and returns the sum.
// On an error the sum so far comes with it (calling again finishes: an
// erasure is idempotent).
func (c *Client) EraseDevice(ctx context.Context, tenant, tuid string) (*DeviceErasure, error) {
	sum := &DeviceErasure{Tuid: tuid}
	for next := ""; ; {
		e, err := c.EraseDeviceStep(ctx, tenant, tuid, next)
		if err != nil {
			return sum, err
		}
		sum.Messages += e.Messages
		sum.Redriven += e.Redriven
		sum.DeadLetters += e.DeadLetters
		sum.Rejected += e.Rejected
		sum.Overwritten += e.Overwritten
		if e.Complete {
			sum.Complete = true
			return sum, nil
		}
		next = e.Next
	}
}

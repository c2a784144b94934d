package client

import (
	"context"
	"time"
)

// ProvisionGatewaysRequest is the body of POST /v1/factory/gateways.
type ProvisionGatewaysRequest struct {
	// Count is how many gateways to make, 1 to 1000.
	Count int `json:"count"`
	// Model is the 6 characters the serials start with, e.g. TSGW06.
	Model string `json:"model"`
}

// ProvisionedBatch is the answer of POST /v1/factory/gateways: the
// gateways made, each with its claim code. The codes are given only here;
// the server keeps their hashes.
type ProvisionedBatch struct {
	// Batch identifies the batch in the audit log.
	Batch     string               `json:"batch"`
	Model     string               `json:"model"`
	CreatedAt time.Time            `json:"createdAt"`
	Gateways  []ProvisionedGateway `json:"gateways"`
}

// ProvisionedGateway is a gateway made by factory provisioning, unclaimed.
type ProvisionedGateway struct {
	// Serial is 17 characters in Thingsee TUID form, starting with Model.
	Serial string `json:"serial"`
	Model  string `json:"model"`
	// ClaimCode is the one-time code a tenant claims the gateway with (20
	// characters of Crockford base32 in groups of 5).
	ClaimCode string `json:"claimCode"`
}

// ClaimGatewayRequest is the body of POST
// /v1/tenants/{tenant}/gateways/claim.
type ClaimGatewayRequest struct {
	Serial    string `json:"serial"`
	ClaimCode string `json:"claimCode"`
}

// ProvisionGateways makes unclaimed gateways of a model, each with a
// one-time claim code (operator only).
func (c *Client) ProvisionGateways(ctx context.Context, req ProvisionGatewaysRequest) (*ProvisionedBatch, error) {
	return post[ProvisionedBatch](ctx, c, path("factory", "gateways"), req)
}

// ClaimGateway binds an unclaimed gateway to the tenant with the claim
// code from its label; the code is spent. An unknown serial, a wrong or
// spent code and a serial held by another tenant all answer 404
// (registry.claim_invalid) alike; repeated failures answer 429.
func (c *Client) ClaimGateway(ctx context.Context, tenant string, req ClaimGatewayRequest) (*Gateway, error) {
	return post[Gateway](ctx, c, path("tenants", tenant, "gateways", "claim"), req)
}

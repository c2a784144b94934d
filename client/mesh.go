package client

import (
	"context"
	"net/http"
	"strconv"
	"time"
)

// MeshKeyRequest is the body of POST /v1/tenants/{tenant}/mesh/keys.
type MeshKeyRequest struct {
	// GraceSeconds is how long the previous epoch's key stays accepted
	// after a rotation (nil: 24 hours; 0 to 2592000).
	GraceSeconds *int64 `json:"graceSeconds,omitempty"`
}

// MeshEpoch is one key epoch of a tenant's mesh network (never its key).
type MeshEpoch struct {
	Epoch     uint32    `json:"epoch"`
	CreatedAt time.Time `json:"createdAt"`
	// NotAfter ends the epoch's grace period; absent for the current epoch.
	NotAfter *time.Time `json:"notAfter,omitempty"`
}

// MeshKeys is a tenant's mesh network as the API shows it: its id and key
// epochs, never the keys.
type MeshKeys struct {
	NetworkID uint32 `json:"networkId"`
	// Version rises with every change of the key set.
	Version uint64 `json:"version"`
	// Epochs are the keys kept, oldest first; the last is current.
	Epochs []MeshEpoch `json:"epochs"`
	// Created is true in the answer that created the network.
	Created bool `json:"created,omitempty"`
}

// MeshNode is an authorized sensor node of a tenant's mesh.
type MeshNode struct {
	NodeID uint32 `json:"nodeId"`
}

// MeshNodes is a tenant's authorized node list.
type MeshNodes struct {
	// Version rises with every change of the list.
	Version uint64   `json:"version"`
	Nodes   []uint32 `json:"nodes"`
}

// AddMeshNodesRequest is the body of POST /v1/tenants/{tenant}/mesh/nodes:
// several nodes at once (at most 1000).
type AddMeshNodesRequest struct {
	Nodes []uint32 `json:"nodes"`
}

// AddMeshNodesResult says which nodes of a bulk add were new.
type AddMeshNodesResult struct {
	Added   []uint32 `json:"added"`
	Version uint64   `json:"version"`
}

// RotateMeshKey creates the tenant's mesh network with its first key, or
// rotates it: a new epoch becomes current and the previous one stays
// accepted for the grace period. Needs mesh:write.
func (c *Client) RotateMeshKey(ctx context.Context, tenant string, req MeshKeyRequest) (*MeshKeys, error) {
	return post[MeshKeys](ctx, c, path("tenants", tenant, "mesh", "keys"), req)
}

// MeshKeys returns the tenant's mesh network and key epochs, without keys.
func (c *Client) MeshKeys(ctx context.Context, tenant string) (*MeshKeys, error) {
	return get[MeshKeys](ctx, c, path("tenants", tenant, "mesh", "keys"), nil)
}

// ExportMeshKeys returns the tenant's key file (the current key and those
// in their grace period, in the format of internal/mesh's KeySet, which
// commissioning and mesh-sim read). The answer holds the keys: write it
// 0600. Every export is audited. Needs mesh:write.
func (c *Client) ExportMeshKeys(ctx context.Context, tenant string) ([]byte, error) {
	a, err := c.send(ctx, request{method: http.MethodPost, path: path("tenants", tenant, "mesh", "keys", "export"), auth: true})
	if err != nil {
		return nil, err
	}
	return a.Body, nil
}

// PutMeshNode authorizes one sensor node. Needs mesh:write.
func (c *Client) PutMeshNode(ctx context.Context, tenant string, node uint32) (*MeshNode, error) {
	return call[MeshNode](ctx, c, request{method: http.MethodPut, path: path("tenants", tenant, "mesh", "nodes", strconv.FormatUint(uint64(node), 10)), auth: true})
}

// AddMeshNodes authorizes several sensor nodes at once. Needs mesh:write.
func (c *Client) AddMeshNodes(ctx context.Context, tenant string, nodes []uint32) (*AddMeshNodesResult, error) {
	return post[AddMeshNodesResult](ctx, c, path("tenants", tenant, "mesh", "nodes"), AddMeshNodesRequest{Nodes: nodes})
}

// GetMeshNode returns an authorized node; a Problem with status 404 when it
// is not authorized.
func (c *Client) GetMeshNode(ctx context.Context, tenant string, node uint32) (*MeshNode, error) {
	return get[MeshNode](ctx, c, path("tenants", tenant, "mesh", "nodes", strconv.FormatUint(uint64(node), 10)), nil)
}

// MeshNodes returns the tenant's authorized node list.
func (c *Client) MeshNodes(ctx context.Context, tenant string) (*MeshNodes, error) {
	return get[MeshNodes](ctx, c, path("tenants", tenant, "mesh", "nodes"), nil)
}

// DeleteMeshNode takes a node off the authorized list. Needs mesh:write.
func (c *Client) DeleteMeshNode(ctx context.Context, tenant string, node uint32) error {
	return c.noContent(ctx, request{method: http.MethodDelete, path: path("tenants", tenant, "mesh", "nodes", strconv.FormatUint(uint64(node), 10)), auth: true})
}

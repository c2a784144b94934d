package api

import (
	"context"
	"net/http"
	"strconv"
	"time"

	"github.com/iotransit/iotransit/client"
	"github.com/iotransit/iotransit/internal/gwstate"
	"github.com/iotransit/iotransit/internal/mesh"
	"github.com/iotransit/iotransit/internal/meshnet"
)

// Mesh manages the tenants' sensor mesh networks and node lists
// (meshnet.Service).
type Mesh interface {
	Rotate(ctx context.Context, tenant string, grace time.Duration) (meshnet.Network, bool, error)
	Network(ctx context.Context, tenant string) (meshnet.Network, error)
	KeySet(ctx context.Context, tenant string) (mesh.KeySet, error)
	Nodes(ctx context.Context, tenant string) ([]uint32, uint64, error)
	HasNode(ctx context.Context, tenant string, id uint32) (bool, error)
	AddNodes(ctx context.Context, tenant string, ids []uint32) ([]uint32, error)
	RemoveNode(ctx context.Context, tenant string, id uint32) error
}

// GatewayStates reads the gateways' live state (gwstate.Tracker).
type GatewayStates interface {
	Get(ctx context.Context, tenant, serial string) (gwstate.State, bool, error)
}

// maxBulkNodes bounds the nodes of one bulk add.
const maxBulkNodes = 1000

// withState adds a gateway's live state (last seen, last status) to its
// view. A read error leaves the view without it: the registry's record is
// still the answer.
func (s *Server) withState(ctx context.Context, v *client.Gateway) {
	if s.deps.GatewayStates == nil {
		return
	}
	st, ok, err := s.deps.GatewayStates.Get(ctx, v.Tenant, v.Serial)
	if err != nil {
		s.log.Warn("gateway state not read", "tenant_id", v.Tenant, "gateway_id", v.Serial, "error", err)
		return
	}
	if !ok || st.LastSeen.Before(v.CreatedAt) {
		return // never seen, or seen as an earlier gateway of this serial (deleted since)
	}
	seen := st.LastSeen
	v.LastSeen = &seen
	if g := st.Status; g != nil {
		at, depth, dropped := st.StatusAt, g.QueueDepth, g.QueueDropped
		v.StatusAt, v.QueueDepth, v.QueueDropped = &at, &depth, &dropped
		v.AgentVersion = g.AgentVersion
		if g.FirmwareVersion != "" || g.Slot != "" {
			v.Firmware = &client.GatewayFirmware{Version: g.FirmwareVersion, Slot: g.Slot}
		}
		v.Mesh = &client.GatewayMesh{Accepted: g.Mesh.Accepted, Dropped: g.Mesh.Dropped}
	}
}

// meshHandler is a handler of the mesh routes, given the Mesh.
type meshHandler func(w http.ResponseWriter, r *http.Request, p *Principal, m Mesh) error

// mesh adapts a mesh handler to a route: 404 when the node serves no mesh.
func (s *Server) mesh(h meshHandler) handlerFunc {
	return func(w http.ResponseWriter, r *http.Request, p *Principal) error {
		if s.deps.Mesh == nil {
			return ErrNotFound.New()
		}
		return h(w, r, p, s.deps.Mesh)
	}
}

func viewMeshKeys(n meshnet.Network) client.MeshKeys {
	v := client.MeshKeys{NetworkID: n.NetworkID, Version: n.Version, Epochs: []client.MeshEpoch{}}
	for _, e := range n.Epochs {
		v.Epochs = append(v.Epochs, client.MeshEpoch{Epoch: e.Epoch, CreatedAt: e.CreatedAt, NotAfter: e.NotAfter})
	}
	return v
}

// rotateMeshKey creates the tenant's network or rotates its key.
func (s *Server) rotateMeshKey(w http.ResponseWriter, r *http.Request, p *Principal, m Mesh) error {
	var req client.MeshKeyRequest
	if err := decodeJSON(w, r, s.cfg.MaxBody, &req, true); err != nil {
		return err
	}
	grace := meshnet.DefaultGrace
	if req.GraceSeconds != nil {
		if *req.GraceSeconds < 0 || *req.GraceSeconds > int64(meshnet.MaxGrace/time.Second) {
			return meshnet.CheckGrace(-1)
		}
		grace = time.Duration(*req.GraceSeconds) * time.Second
	}
	tenant := r.PathValue("tenant")
	n, created, err := m.Rotate(r.Context(), tenant, grace)
	action := "meshnet.keys.rotate"
	if created {
		action = "meshnet.keys.create"
	}
	detail := map[string]string{"graceSeconds": strconv.FormatInt(int64(grace/time.Second), 10)}
	if err == nil {
		detail["networkId"] = strconv.FormatUint(uint64(n.NetworkID), 10)
		detail["epoch"] = strconv.FormatUint(uint64(n.Epochs[len(n.Epochs)-1].Epoch), 10)
	}
	s.record(r.Context(), r, tenant, p, action, "mesh:keys", err, detail)
	if err != nil {
		return err
	}
	v := viewMeshKeys(n)
	v.Created = created
	status := http.StatusOK
	if created {
		status = http.StatusCreated
	}
	writeJSON(w, status, v)
	return nil
}

func (s *Server) getMeshKeys(w http.ResponseWriter, r *http.Request, _ *Principal, m Mesh) error {
	n, err := m.Network(r.Context(), r.PathValue("tenant"))
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, viewMeshKeys(n))
	return nil
}

// exportMeshKeys answers the key file: the only answer that holds key
// bytes, audited every time (the entry names the epochs, never a key).
func (s *Server) exportMeshKeys(w http.ResponseWriter, r *http.Request, p *Principal, m Mesh) error {
	if err := decodeJSON(w, r, s.cfg.MaxBody, &struct{}{}, true); err != nil {
		return err
	}
	tenant := r.PathValue("tenant")
	ks, err := m.KeySet(r.Context(), tenant)
	var b []byte
	if err == nil {
		b, err = ks.Marshal()
	}
	detail := map[string]string{}
	if err == nil {
		detail["networkId"] = strconv.FormatUint(uint64(ks.NetworkID), 10)
		detail["version"] = strconv.FormatUint(ks.Version, 10)
		epochs := ""
		for i, k := range ks.Keys {
			if i > 0 {
				epochs += ","
			}
			epochs += strconv.FormatUint(uint64(k.Epoch), 10)
		}
		detail["epochs"] = epochs
	}
	s.record(r.Context(), r, tenant, p, "meshnet.keys.export", "mesh:keys", err, detail)
	if err != nil {
		return err
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(http.StatusOK)
	_, _ = w.Write(b)
	clear(b)
	return nil
}

// nodeID reads the {nodeId} of a path.
func nodeID(r *http.Request) (uint32, error) {
	n, err := strconv.ParseUint(r.PathValue("nodeId"), 10, 64)
	if err != nil {
		return 0, meshnet.ErrNodeInvalid.New()
	}
	if err := meshnet.CheckNode(n); err != nil {
		return 0, err
	}
	return uint32(n), nil
}

func (s *Server) recordNode(r *http.Request, p *Principal, action string, id uint32, err error) {
	s.record(r.Context(), r, r.PathValue("tenant"), p, action, "node:"+strconv.FormatUint(uint64(id), 10), err, nil)
}

func (s *Server) putMeshNode(w http.ResponseWriter, r *http.Request, p *Principal, m Mesh) error {
	id, err := nodeID(r)
	if err != nil {
		return err
	}
	if err := decodeJSON(w, r, s.cfg.MaxBody, &struct{}{}, true); err != nil {
		return err
	}
	added, err := m.AddNodes(r.Context(), r.PathValue("tenant"), []uint32{id})
	if err != nil || len(added) > 0 {
		s.recordNode(r, p, "meshnet.node.add", id, err)
	}
	if err != nil {
		return err
	}
	status := http.StatusOK
	if len(added) > 0 {
		status = http.StatusCreated
	}
	writeJSON(w, status, client.MeshNode{NodeID: id})
	return nil
}

func (s *Server) addMeshNodes(w http.ResponseWriter, r *http.Request, p *Principal, m Mesh) error {
	var req client.AddMeshNodesRequest
	if err := decodeJSON(w, r, s.cfg.MaxBody, &req, false); err != nil {
		return err
	}
	if len(req.Nodes) == 0 || len(req.Nodes) > maxBulkNodes {
		return ErrBadParameter.WithDetail("nodes must list 1 to %d node ids", maxBulkNodes)
	}
	tenant := r.PathValue("tenant")
	added, err := m.AddNodes(r.Context(), tenant, req.Nodes)
	if err != nil {
		s.record(r.Context(), r, tenant, p, "meshnet.node.add", "mesh:nodes", err, map[string]string{"count": strconv.Itoa(len(req.Nodes))})
		return err
	}
	for _, id := range added {
		s.recordNode(r, p, "meshnet.node.add", id, nil)
	}
	_, version, err := m.Nodes(r.Context(), tenant)
	if err != nil {
		return err
	}
	if added == nil {
		added = []uint32{}
	}
	writeJSON(w, http.StatusOK, client.AddMeshNodesResult{Added: added, Version: version})
	return nil
}

func (s *Server) getMeshNode(w http.ResponseWriter, r *http.Request, _ *Principal, m Mesh) error {
	id, err := nodeID(r)
	if err != nil {
		return err
	}
	ok, err := m.HasNode(r.Context(), r.PathValue("tenant"), id)
	if err != nil {
		return err
	}
	if !ok {
		return meshnet.ErrNodeNotFound.New()
	}
	writeJSON(w, http.StatusOK, client.MeshNode{NodeID: id})
	return nil
}

func (s *Server) listMeshNodes(w http.ResponseWriter, r *http.Request, _ *Principal, m Mesh) error {
	nodes, version, err := m.Nodes(r.Context(), r.PathValue("tenant"))
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, client.MeshNodes{Version: version, Nodes: nodes})
	return nil
}

func (s *Server) deleteMeshNode(w http.ResponseWriter, r *http.Request, p *Principal, m Mesh) error {
	id, err := nodeID(r)
	if err != nil {
		return err
	}
	err = m.RemoveNode(r.Context(), r.PathValue("tenant"), id)
	if !meshnet.ErrNodeNotFound.Is(err) {
		s.recordNode(r, p, "meshnet.node.remove", id, err)
	}
	if err != nil {
		return err
	}
	w.WriteHeader(http.StatusNoContent)
	return nil
}

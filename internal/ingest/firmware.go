package ingest

import "github.com/iotransit/iotransit/internal/gwproto"

// RetainFirmwareNotice publishes a gateway's firmware notice on its
// down/firmware topic, retained, QoS 1, on this node's broker: a gateway
// connected here gets it now, one that subscribes later gets it then. The
// cluster's record of it is in KV; every node calls this for every change.
// (The broker keeps retained messages since the mesh delivery needed them
// too: caps.RetainAvailable in New, the same change as on that branch.)
func (s *Server) RetainFirmwareNotice(serial string, notice []byte) error {
	return s.broker.Publish(gwproto.FirmwareTopic(serial), notice, true, 1)
}

// Package firmware is each tenant's firmware repository in the cloud, on
// The Update Framework (TUF, through go-tuf's metadata package): the root
// and targets roles are signed offline by the publisher (their keys never
// reach the server), the snapshot and timestamp roles online by keys the
// server makes per tenant and keeps sealed by kms. The package checks what
// the publisher uploads (signatures and thresholds against the trusted
// root, version increase, each target's image, hashes and length), makes
// the snapshot and timestamp that follow, refreshes the short-lived
// timestamp, stores the images in a NATS object store, serves the metadata
// and images to the tenant's gateways, and keeps the rollouts and the state
// each gateway reports.
//
// Layout of a tenant's bucket (names.FirmwareBucket): "root.json" and
// "{n}.root.json" (every root version, for the clients' rotation walk),
// "{n}.targets.json" and "{n}.snapshot.json" (consistent snapshots: a
// gateway reads one coherent repository state even while a publish runs),
// "timestamp.json", and "rollout.{id}". Versioned keys are created, never
// overwritten, so two publishers racing for one version cannot both win.
package firmware

package names

// ReencryptBucket holds each tenant's re-encryption job (key: the tenant
// id): its state, progress and position, and the node running it.
const ReencryptBucket = "iotransit_reencrypt"

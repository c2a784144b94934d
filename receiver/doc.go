// Package receiver is what a customer's Go program needs to receive
// iotransit's deliveries: verify a webhook request's Standard Webhooks
// signature, open a body sealed to the customer's key (HPKE), decode the
// batch of Thingsee messages, and de-duplicate them on the key Thingsee
// advises. Handler does all four in front of a function of yours.
//
// It imports only the standard library.
//
// # Delivery
//
// A webhook delivery is an HTTPS POST whose body is a JSON array of Thingsee
// messages (Content-Type application/json), or that array sealed to the
// integration's public key (Content-Type application/octet-stream, header
// iotransit-encryption: hpke). It is signed per the Standard Webhooks
// specification (https://www.standardwebhooks.com): the headers webhook-id
// (the batch id, the same on every retry), webhook-timestamp (Unix seconds)
// and webhook-signature, one or more space-separated "v1,<base64
// HMAC-SHA256(key, id.timestamp.body)>" entries, one per secret while a
// secret is being rotated. Secrets are "whsec_" followed by the base64 of
// the key. Delivery is at least once: the same message can come again, and
// receivers de-duplicate on Message.Key, tsmTuid:tsmId:tsmTs.
//
// # Sealed bodies
//
// DHKEM(X25519, HKDF-SHA256), HKDF-SHA256, AES-256-GCM (RFC 9180 ids
// KEM 0x0020, KDF 0x0001, AEAD 0x0002), base mode (no PSK, no sender
// authentication), single-shot: one HPKE context per payload, one
// encryption with sequence number 0 and empty AAD.
//
// A sealed payload is, with integers big-endian:
//
//	offset  size  field
//	0       4     magic, the ASCII bytes "IOTH"
//	4       1     version, 0x01
//	5       2     KEM id, 0x0020
//	7       2     KDF id, 0x0001
//	9       2     AEAD id, 0x0002
//	11      8     key id: the first 8 bytes of SHA-256 of the recipient's
//	              raw 32-byte X25519 public key (RFC 9180 SerializePublicKey)
//	19      32    enc: the encapsulated (ephemeral) X25519 public key
//	51      n+16  ciphertext: the AES-256-GCM encryption of the n-byte
//	              payload followed by its 16-byte tag
//
// The header is bytes 0 to 18 (19 bytes). The HPKE info is the ASCII string
// "iotransit/forward/v1" followed by the 19 header bytes, so a header that
// was altered (another suite, another key id) makes decryption fail; no AAD
// is used beyond that.
//
// To open a payload elsewhere: check the magic, version and ids, compare the
// key id with your key's, then run RFC 9180 SetupBaseR(enc, skR, info) with
// info = "iotransit/forward/v1" || payload[0:19] and Open(aad="", ct) on
// payload[51:]. In Go that is hpke.Open(key, hpke.HKDFSHA256(),
// hpke.AES256GCM(), info, payload[19:]), which Opener does.
//
// Private keys are PKCS#8 PEM ("PRIVATE KEY"), public keys PKIX PEM
// ("PUBLIC KEY"), as OpenSSL writes them ("openssl genpkey -algorithm
// X25519" and "openssl pkey -pubout") and "iotransit keygen" makes them.
package receiver

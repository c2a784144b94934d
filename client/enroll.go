package client

import (
	"context"
	"net/http"
	"time"
)

// EnrollRequest is the body of POST /v1/enroll.
type EnrollRequest struct {
	// Token is the enrollment token (iet_…).
	Token string `json:"token"`
	// CSR is a PEM PKCS#10 certificate request whose subject common name
	// is the gateway serial.
	CSR string `json:"csr"`
}

// ReenrollRequest is the body of POST /v1/reenroll.
type ReenrollRequest struct {
	// CSR is a PEM PKCS#10 certificate request whose subject common name
	// is the gateway serial.
	CSR string `json:"csr"`
}

// Enrollment is what a gateway gets from enrollment and renewal (like EST
// simpleenroll, RFC 7030 §4.2): its certificate chain and the CA that
// verifies the server.
type Enrollment struct {
	// Certificate is the PEM chain: the gateway certificate followed by
	// the tenant CA.
	Certificate string `json:"certificate"`
	// CA is the PEM of the CA that verifies the server certificates (MQTT
	// and API).
	CA     string `json:"ca"`
	Tenant string `json:"tenant"`
	Serial string `json:"serial"`
	// CertificateSerial is the new certificate's serial number, lowercase
	// hex.
	CertificateSerial string    `json:"certificateSerial"`
	NotAfter          time.Time `json:"notAfter"`
	// UpTopic is the MQTT topic to publish to, v1/gw/{serial}/up.
	UpTopic string `json:"upTopic"`
	// MQTTPort is the port of the server's MQTT listener: the gateway
	// connects to the API's host on it. 0 when the server does not say
	// (then the default, 8883).
	MQTTPort int `json:"mqttPort,omitempty"`
}

// Enroll spends an enrollment token on a certificate request (POST
// /v1/enroll). It sends no credential: the token is one.
func (c *Client) Enroll(ctx context.Context, token string, csrPEM []byte) (*Enrollment, error) {
	return call[Enrollment](ctx, c, request{method: http.MethodPost, path: path("enroll"), body: EnrollRequest{Token: token, CSR: string(csrPEM)}})
}

// Reenroll renews a gateway's certificate (POST /v1/reenroll, RFC 7030
// §4.2.2) over mutual TLS with its current one, Config.Certificate.
func (c *Client) Reenroll(ctx context.Context, csrPEM []byte) (*Enrollment, error) {
	return call[Enrollment](ctx, c, request{method: http.MethodPost, path: path("reenroll"), body: ReenrollRequest{CSR: string(csrPEM)}})
}

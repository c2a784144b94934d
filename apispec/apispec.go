// Package apispec embeds the OpenAPI 3 document of the management API
// (openapi.yaml in this directory), served at /v1/openapi.yaml.
package apispec

import _ "embed"

// OpenAPI is the OpenAPI 3 document of the API.
//
//go:embed openapi.yaml
var OpenAPI []byte

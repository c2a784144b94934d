package api_test

import (
	"bytes"
	"context"
	"crypto"
	"crypto/hmac"
	"crypto/sha256"
	"crypto/tls"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"math"
	"net/http"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/coder/websocket"
	"go.yaml.in/yaml/v3"

	"github.com/iotransit/iotransit/apispec"
	"github.com/iotransit/iotransit/internal/api"
	"github.com/iotransit/iotransit/internal/credential"
	"github.com/iotransit/iotransit/internal/forward/seal"
	"github.com/iotransit/iotransit/internal/pki"
	tu "github.com/iotransit/iotransit/internal/testutil"
	"github.com/iotransit/iotransit/internal/testutil/nodetest"
)

// specFile names the document in failure messages.
const specFile = "apispec/openapi.yaml"

// serverRoutes returns the route table of a real api.Server. The table does
// not depend on the server's dependencies, so none are given.
func serverRoutes(t *testing.T) []api.Route {
	t.Helper()
	s, err := api.New(api.Config{Addr: "127.0.0.1:0", OperatorKey: strings.Repeat("k", 32)},
		&tls.Config{MinVersion: tls.VersionTLS12}, api.Deps{}, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatalf("api.New: %v", err)
	}
	s.Start() // so that Close releases the listener
	t.Cleanup(func() { _ = s.Close() })
	routes := s.Routes()
	if len(routes) == 0 {
		t.Fatal("the server has no routes")
	}
	return routes
}

var accessNames = map[api.Access]string{
	api.Public:   "public",
	api.Operator: "operator",
	api.Tenant:   "tenant",
	api.Gateway:  "gateway",
	// Any bearer credential, no scope (GET /v1/whoami).
	api.Credential: "credential",
}

// openAPIDoc is the part of an OpenAPI 3.1 document the test reads.
type openAPIDoc struct {
	OpenAPI string `yaml:"openapi"`
	// Components holds only what is checked by name. Paths are read from
	// the node tree, where $refs are resolved.
	Components struct {
		SecuritySchemes map[string]struct {
			Type  string `yaml:"type"`
			Flows struct {
				ClientCredentials struct {
					TokenURL string            `yaml:"tokenUrl"`
					Scopes   map[string]string `yaml:"scopes"`
				} `yaml:"clientCredentials"`
			} `yaml:"flows"`
		} `yaml:"securitySchemes"`
	} `yaml:"components"`
}

// upgrade reports whether the operation upgrades to a WebSocket: its
// success answer is 101 Switching Protocols.
func (op operation) upgrade() bool {
	_, ok := op.Responses["101"]
	return ok
}

// operation is the part of an Operation Object the test reads.
type operation struct {
	OperationID string                 `yaml:"operationId"`
	Summary     string                 `yaml:"summary"`
	Access      string                 `yaml:"x-iotransit-access"`
	Scope       string                 `yaml:"x-iotransit-scope"`
	Also        string                 `yaml:"x-iotransit-also-scope"`
	Security    *[]map[string][]string `yaml:"security"`
	// Read from the node tree (yaml.v3 does not decode into maps of nodes).
	Parameters  []*yaml.Node          `yaml:"-"`
	RequestBody *yaml.Node            `yaml:"-"`
	Responses   map[string]*yaml.Node `yaml:"-"`
}

var httpMethods = []string{"get", "put", "post", "delete", "options", "head", "patch", "trace"}

// spec is a parsed document with its node tree, for $ref resolution.
type spec struct {
	doc  openAPIDoc
	root *yaml.Node
}

func parseSpec(t *testing.T, b []byte) *spec {
	t.Helper()
	var root yaml.Node
	if err := yaml.Unmarshal(b, &root); err != nil {
		t.Fatalf("%s is not valid YAML: %v", specFile, err)
	}
	s := &spec{root: &root}
	if err := root.Decode(&s.doc); err != nil {
		t.Fatalf("%s does not have the shape of an OpenAPI document: %v", specFile, err)
	}
	if !strings.HasPrefix(s.doc.OpenAPI, "3.1.") {
		t.Fatalf("%s: openapi is %q, want 3.1.x", specFile, s.doc.OpenAPI)
	}
	return s
}

// child returns the value of key in mapping node n, or nil.
func child(n *yaml.Node, key string) *yaml.Node {
	if n == nil {
		return nil
	}
	if n.Kind == yaml.DocumentNode && len(n.Content) == 1 {
		n = n.Content[0]
	}
	if n.Kind != yaml.MappingNode {
		return nil
	}
	for i := 0; i+1 < len(n.Content); i += 2 {
		if n.Content[i].Value == key {
			return n.Content[i+1]
		}
	}
	return nil
}

// pointer follows a local JSON pointer ("#/components/schemas/Problem").
func (s *spec) pointer(ref string) (*yaml.Node, error) {
	p, ok := strings.CutPrefix(ref, "#/")
	if !ok {
		return nil, fmt.Errorf("$ref %q is not local (#/...)", ref)
	}
	n := s.root
	for _, tok := range strings.Split(p, "/") {
		tok = strings.ReplaceAll(strings.ReplaceAll(tok, "~1", "/"), "~0", "~")
		if n.Kind == yaml.SequenceNode {
			i, err := strconv.Atoi(tok)
			if err != nil || i < 0 || i >= len(n.Content) {
				return nil, fmt.Errorf("$ref %q: no item %q", ref, tok)
			}
			n = n.Content[i]
			continue
		}
		if n = child(n, tok); n == nil {
			return nil, fmt.Errorf("$ref %q points to nothing (no %q)", ref, tok)
		}
	}
	return n, nil
}

// resolve follows n's $ref chain, if any.
func (s *spec) resolve(n *yaml.Node) (*yaml.Node, error) {
	for i := 0; n != nil && i < 16; i++ {
		ref := child(n, "$ref")
		if ref == nil {
			return n, nil
		}
		var err error
		if n, err = s.pointer(ref.Value); err != nil {
			return nil, err
		}
	}
	if n == nil {
		return nil, fmt.Errorf("nil node")
	}
	return nil, fmt.Errorf("$ref chain too long")
}

// refs returns every $ref value in the document.
func (s *spec) refs() []string {
	var out []string
	var walk func(n *yaml.Node)
	walk = func(n *yaml.Node) {
		if n.Kind == yaml.MappingNode {
			for i := 0; i+1 < len(n.Content); i += 2 {
				if n.Content[i].Value == "$ref" && n.Content[i+1].Kind == yaml.ScalarNode {
					out = append(out, n.Content[i+1].Value)
				}
			}
		}
		for _, c := range n.Content {
			walk(c)
		}
	}
	walk(s.root)
	return out
}

// operations returns the spec's operations keyed "METHOD /path", and the
// parameters declared on each path item.
func (s *spec) operations(t *testing.T) (map[string]operation, map[string][]*yaml.Node) {
	t.Helper()
	ops := map[string]operation{}
	pathParams := map[string][]*yaml.Node{}
	paths := child(s.root, "paths")
	if paths == nil || paths.Kind != yaml.MappingNode {
		t.Fatalf("%s has no paths", specFile)
	}
	for i := 0; i+1 < len(paths.Content); i += 2 {
		path, item := paths.Content[i].Value, paths.Content[i+1]
		if item.Kind != yaml.MappingNode {
			t.Errorf("%s: path %s is not a mapping", specFile, path)
			continue
		}
		for j := 0; j+1 < len(item.Content); j += 2 {
			key, node := item.Content[j].Value, item.Content[j+1]
			switch {
			case key == "parameters":
				pathParams[path] = node.Content
			case slices.Contains(httpMethods, key):
				var op operation
				if err := node.Decode(&op); err != nil {
					t.Errorf("%s: %s %s: %v", specFile, strings.ToUpper(key), path, err)
					continue
				}
				if ps := child(node, "parameters"); ps != nil {
					op.Parameters = ps.Content
				}
				op.RequestBody = child(node, "requestBody")
				op.Responses = map[string]*yaml.Node{}
				if rs := child(node, "responses"); rs != nil && rs.Kind == yaml.MappingNode {
					for k := 0; k+1 < len(rs.Content); k += 2 {
						op.Responses[rs.Content[k].Value] = rs.Content[k+1]
					}
				}
				ops[strings.ToUpper(key)+" "+path] = op
			}
		}
	}
	return ops, pathParams
}

var patternParam = regexp.MustCompile(`\{([^}]*)\}`)

// patternParams returns the wildcard names of a ServeMux pattern.
func patternParams(pattern string) []string {
	var out []string
	for _, m := range patternParam.FindAllStringSubmatch(pattern, -1) {
		if name := strings.TrimSuffix(m[1], "..."); name != "$" {
			out = append(out, name)
		}
	}
	slices.Sort(out)
	return out
}

func securityString(sec *[]map[string][]string) string {
	if sec == nil {
		return "absent"
	}
	var parts []string
	for _, req := range *sec {
		for _, name := range slices.Sorted(maps.Keys(req)) {
			parts = append(parts, fmt.Sprintf("{%s: [%s]}", name, strings.Join(req[name], ", ")))
		}
	}
	return "[" + strings.Join(parts, ", ") + "]"
}

// TestOpenAPIMatchesRoutes checks apispec/openapi.yaml against the server's
// route table in both directions: every route is an operation with the
// route's access rule and scope, and every operation is a route.
func TestOpenAPIMatchesRoutes(t *testing.T) {
	routes := serverRoutes(t)
	s := parseSpec(t, apispec.OpenAPI)
	ops, pathParams := s.operations(t)

	for _, ref := range s.refs() {
		if _, err := s.pointer(ref); err != nil {
			t.Errorf("%s: %v", specFile, err)
		}
	}

	oauthScopes := s.doc.Components.SecuritySchemes["oauth2"].Flows.ClientCredentials.Scopes
	for name, typ := range map[string]string{"bearer": "http", "oauth2": "oauth2", "gatewayCert": "mutualTLS"} {
		if got := s.doc.Components.SecuritySchemes[name].Type; got != typ {
			t.Errorf("%s: security scheme %s has type %q, want %q", specFile, name, got, typ)
		}
	}
	if got, want := slices.Sorted(maps.Keys(oauthScopes)), slices.Sorted(slices.Values(credential.TenantScopes)); !slices.Equal(got, want) {
		t.Errorf("%s: the oauth2 scheme lists scopes %v, but credential.TenantScopes are %v", specFile, got, want)
	}

	// Routes to operations.
	seen := map[string]bool{}
	for _, rt := range routes {
		key := rt.Method + " " + rt.Pattern
		if seen[key] {
			t.Errorf("route %s is in the route table twice", key)
		}
		seen[key] = true
		op, ok := ops[key]
		if !ok {
			if child(child(s.root, "paths"), rt.Pattern) == nil {
				t.Errorf("route %s is not in %s (no path %s)", key, specFile, rt.Pattern)
			} else {
				t.Errorf("route %s is not in %s (path %s has no %s operation)", key, specFile, rt.Pattern, strings.ToLower(rt.Method))
			}
			continue
		}
		access, ok := accessNames[rt.Access]
		if !ok {
			t.Errorf("route %s has an access level (%d) this test does not know", key, rt.Access)
			continue
		}
		if op.Access != access {
			t.Errorf("%s: %s has x-iotransit-access %q, but the route is %s", specFile, key, op.Access, access)
		}
		var wantSec string
		switch rt.Access {
		case api.Public:
			wantSec = "[]"
		case api.Operator:
			wantSec = "[{bearer: []}]"
		case api.Gateway:
			wantSec = "[{gatewayCert: []}]"
		case api.Credential:
			if rt.Scope != "" {
				t.Errorf("route %s needs any credential, yet names scope %q", key, rt.Scope)
			}
			wantSec = "[{bearer: []}, {oauth2: []}]"
		case api.Tenant:
			if rt.Scope == "" {
				t.Errorf("route %s is a tenant route without a scope", key)
			}
			wantSec = fmt.Sprintf("[{bearer: []}, {oauth2: [%s]}]", rt.Scope)
			if _, ok := oauthScopes[rt.Scope]; !ok {
				t.Errorf("%s: route %s needs scope %q, which the oauth2 scheme does not list", specFile, key, rt.Scope)
			}
		}
		if got := securityString(op.Security); got != wantSec {
			t.Errorf("%s: %s has security %s, want %s (the route is %s, scope %q)", specFile, key, got, wantSec, access, rt.Scope)
		}
		if op.Scope != rt.Scope {
			t.Errorf("%s: %s has x-iotransit-scope %q, but the route needs %q", specFile, key, op.Scope, rt.Scope)
		}
		if op.Also != rt.Also {
			t.Errorf("%s: %s has x-iotransit-also-scope %q, but the route's second scope is %q", specFile, key, op.Also, rt.Also)
		}
		checkParams(t, s, key, rt.Pattern, append(slices.Clone(pathParams[rt.Pattern]), op.Parameters...))
		checkTenantParam(t, key, rt, append(slices.Clone(pathParams[rt.Pattern]), op.Parameters...))
		checkResponses(t, s, key, rt, op)
		checkRequestBody(t, s, key, op)
	}

	// Operations to routes, and what every operation needs.
	ids := map[string]string{}
	for _, key := range slices.Sorted(maps.Keys(ops)) {
		op := ops[key]
		if !seen[key] {
			t.Errorf("%s has %s, which is not a route of the server (routeTable in internal/api/server.go)", specFile, key)
		}
		if op.OperationID == "" {
			t.Errorf("%s: %s has no operationId", specFile, key)
		} else if prev, dup := ids[op.OperationID]; dup {
			t.Errorf("%s: operationId %s is used by %s and %s", specFile, op.OperationID, prev, key)
		} else {
			ids[op.OperationID] = key
		}
		if op.Summary == "" {
			t.Errorf("%s: %s has no summary", specFile, key)
		}
		has2xx := false
		for code := range op.Responses {
			has2xx = has2xx || len(code) == 3 && code[0] == '2'
		}
		if !has2xx && !op.upgrade() {
			t.Errorf("%s: %s has no 2xx response (nor a 101 WebSocket upgrade)", specFile, key)
		}
	}
}

// checkParams checks that the path parameters declared for an operation are
// exactly the wildcards of the route's pattern, each required.
func checkParams(t *testing.T, s *spec, key, pattern string, params []*yaml.Node) {
	t.Helper()
	var declared []string
	for _, p := range params {
		r, err := s.resolve(p)
		if err != nil {
			t.Errorf("%s: %s: parameter: %v", specFile, key, err)
			continue
		}
		if in := child(r, "in"); in == nil || in.Value != "path" {
			continue
		}
		name := child(r, "name")
		if name == nil {
			t.Errorf("%s: %s: a path parameter has no name", specFile, key)
			continue
		}
		declared = append(declared, name.Value)
		if req := child(r, "required"); req == nil || req.Value != "true" {
			t.Errorf("%s: %s: path parameter %s must be required: true", specFile, key, name.Value)
		}
	}
	slices.Sort(declared)
	if want := patternParams(pattern); !slices.Equal(declared, want) {
		t.Errorf("%s: %s declares path parameters %v, the route has %v", specFile, key, declared, want)
	}
}

// checkTenantParam checks that a route's {tenant} is the parameter that
// admits _system exactly when the operator may name it there (Route.System).
func checkTenantParam(t *testing.T, key string, rt api.Route, params []*yaml.Node) {
	t.Helper()
	if !slices.Contains(patternParams(rt.Pattern), "tenant") {
		return
	}
	want := "#/components/parameters/tenant"
	if rt.System {
		want = "#/components/parameters/auditTenant"
	}
	for _, p := range params {
		if ref := child(p, "$ref"); ref != nil && strings.HasPrefix(ref.Value, "#/components/parameters/") && strings.HasSuffix(strings.ToLower(ref.Value), "tenant") {
			if ref.Value != want {
				t.Errorf("%s: %s takes its tenant as %s, want %s (Route.System is %v)", specFile, key, ref.Value, want, rt.System)
			}
			return
		}
	}
	t.Errorf("%s: %s declares no tenant parameter by reference (want %s)", specFile, key, want)
}

// checkResponses checks the error responses an operation must declare:
// 429 with Retry-After and 500 everywhere, 401 where a credential is
// needed, 403 and 404 on tenant routes, each with a problem+json body (the
// token endpoint may answer RFC 6749 JSON instead, and the 426 of a
// WebSocket upgrade comes from the WebSocket layer in text/plain).
func checkResponses(t *testing.T, s *spec, key string, rt api.Route, op operation) {
	t.Helper()
	need := []string{"429", "500"}
	switch rt.Access {
	case api.Operator, api.Gateway:
		need = append(need, "401", "403")
	case api.Credential:
		need = append(need, "401")
	case api.Tenant:
		need = append(need, "401", "403", "404")
	}
	for _, code := range need {
		if _, ok := op.Responses[code]; !ok {
			t.Errorf("%s: %s does not declare its %s response", specFile, key, code)
		}
	}
	for code, n := range op.Responses {
		r, err := s.resolve(n)
		if err != nil {
			t.Errorf("%s: %s response %s: %v", specFile, key, code, err)
			continue
		}
		if code == "429" {
			if child(child(r, "headers"), "Retry-After") == nil {
				t.Errorf("%s: %s: the 429 response has no Retry-After header", specFile, key)
			}
		}
		if code[0] != '4' && code[0] != '5' {
			continue
		}
		content := child(r, "content")
		problem := child(content, "application/problem+json")
		oauth := rt.Pattern == "/oauth2/token" && child(content, "application/json") != nil
		handshake := code == "426" && op.upgrade() && child(content, "text/plain") != nil
		if problem == nil && !oauth && !handshake {
			t.Errorf("%s: %s response %s has no application/problem+json content", specFile, key, code)
			continue
		}
		if problem != nil {
			if ref := child(child(problem, "schema"), "$ref"); ref == nil || ref.Value != "#/components/schemas/Problem" {
				t.Errorf("%s: %s response %s: the problem+json schema must be #/components/schemas/Problem", specFile, key, code)
			}
		}
	}
}

// checkRequestBody checks that a JSON request body refuses unknown fields,
// as the server's decoder does.
func checkRequestBody(t *testing.T, s *spec, key string, op operation) {
	t.Helper()
	if op.RequestBody == nil {
		return
	}
	body, err := s.resolve(op.RequestBody)
	if err != nil {
		t.Errorf("%s: %s requestBody: %v", specFile, key, err)
		return
	}
	js := child(child(body, "content"), "application/json")
	if js == nil {
		return
	}
	schema, err := s.resolve(child(js, "schema"))
	if err != nil {
		t.Errorf("%s: %s requestBody schema: %v", specFile, key, err)
		return
	}
	if ap := child(schema, "additionalProperties"); ap == nil || ap.Value != "false" {
		t.Errorf("%s: %s: the JSON request body schema must have additionalProperties: false (the server refuses unknown fields)", specFile, key)
	}
}

// TestOpenAPIServed checks that a running node serves the embedded
// document unchanged at GET /v1/openapi.yaml, without a credential.
func TestOpenAPIServed(t *testing.T) {
	n := nodetest.Start(t, nil)
	c := &http.Client{Transport: &http.Transport{TLSClientConfig: nodetest.ClientTLS(t, n, nil)}}
	resp, err := c.Get("https://" + n.APIAddr() + "/v1/openapi.yaml")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("GET /v1/openapi.yaml: status %d: %.300s", resp.StatusCode, body)
	}
	if ct := resp.Header.Get("Content-Type"); ct != "application/yaml" {
		t.Errorf("GET /v1/openapi.yaml: Content-Type %q, want application/yaml", ct)
	}
	if !bytes.Equal(body, apispec.OpenAPI) {
		t.Fatalf("GET /v1/openapi.yaml served %d bytes that differ from the embedded %s (%d bytes)", len(body), specFile, len(apispec.OpenAPI))
	}
	parseSpec(t, body)
}

// checkValue checks a decoded JSON value against a schema of the document:
// types, required and declared properties (an object schema that declares
// properties is closed unless it has additionalProperties), allOf, oneOf,
// enum, pattern, minimum and date-time. It is enough to keep the response
// shapes of the document in step with the handlers. Values are answers, so
// a writeOnly property (a secret) must not be in them.
func (s *spec) checkValue(schema *yaml.Node, v any, at string, errs *[]string) {
	schema, err := s.resolve(schema)
	if err != nil {
		*errs = append(*errs, fmt.Sprintf("%s: %v", at, err))
		return
	}
	if one := child(schema, "oneOf"); one != nil {
		for _, branch := range one.Content {
			var e []string
			if s.checkValue(branch, v, at, &e); len(e) == 0 {
				return
			}
		}
		*errs = append(*errs, fmt.Sprintf("%s: %s matches no oneOf branch", at, short(v)))
		return
	}
	props, required, typ := s.objectView(schema)
	if typ == "" {
		return // any value
	}
	switch typ {
	case "object":
		m, ok := v.(map[string]any)
		if !ok {
			*errs = append(*errs, fmt.Sprintf("%s: %s is not an object", at, short(v)))
			return
		}
		for _, r := range required {
			if _, ok := m[r]; !ok {
				*errs = append(*errs, fmt.Sprintf("%s: required property %q is missing", at, r))
			}
		}
		if max := child(schema, "maxProperties"); max != nil {
			if n, _ := strconv.Atoi(max.Value); len(m) > n {
				*errs = append(*errs, fmt.Sprintf("%s: %d properties, at most %d", at, len(m), n))
			}
		}
		names := child(child(schema, "propertyNames"), "pattern")
		extra := child(schema, "additionalProperties")
		for _, k := range slices.Sorted(maps.Keys(m)) {
			if names != nil && !regexp.MustCompile(names.Value).MatchString(k) {
				*errs = append(*errs, fmt.Sprintf("%s: property name %q does not match %s", at, k, names.Value))
			}
			switch p := props[k]; {
			case p != nil && s.writeOnly(p):
				*errs = append(*errs, fmt.Sprintf("%s: write-only property %q is in an answer", at, k))
			case p != nil:
				s.checkValue(p, m[k], at+"."+k, errs)
			case extra != nil && extra.Kind == yaml.MappingNode:
				s.checkValue(extra, m[k], at+"."+k, errs)
			case extra != nil && extra.Value == "true":
			case len(props) > 0 || extra != nil && extra.Value == "false":
				*errs = append(*errs, fmt.Sprintf("%s: property %q is not in the schema", at, k))
			}
		}
	case "array":
		a, ok := v.([]any)
		if !ok {
			*errs = append(*errs, fmt.Sprintf("%s: %s is not an array", at, short(v)))
			return
		}
		for i, item := range a {
			s.checkValue(child(schema, "items"), item, fmt.Sprintf("%s[%d]", at, i), errs)
		}
	case "string":
		str, ok := v.(string)
		if !ok {
			*errs = append(*errs, fmt.Sprintf("%s: %s is not a string", at, short(v)))
			return
		}
		if p := child(schema, "pattern"); p != nil && !regexp.MustCompile(p.Value).MatchString(str) {
			*errs = append(*errs, fmt.Sprintf("%s: %q does not match %s", at, str, p.Value))
		}
		if f := child(schema, "format"); f != nil && f.Value == "date-time" {
			if _, err := time.Parse(time.RFC3339Nano, str); err != nil {
				*errs = append(*errs, fmt.Sprintf("%s: %q is not a date-time", at, str))
			}
		}
	case "integer", "number":
		f, ok := v.(float64)
		if !ok || typ == "integer" && f != math.Trunc(f) {
			*errs = append(*errs, fmt.Sprintf("%s: %s is not an %s", at, short(v), typ))
			return
		}
		if min := child(schema, "minimum"); min != nil {
			if m, _ := strconv.ParseFloat(min.Value, 64); f < m {
				*errs = append(*errs, fmt.Sprintf("%s: %v is below the minimum %v", at, f, m))
			}
		}
	case "boolean":
		if _, ok := v.(bool); !ok {
			*errs = append(*errs, fmt.Sprintf("%s: %s is not a boolean", at, short(v)))
		}
	case "null":
		if v != nil {
			*errs = append(*errs, fmt.Sprintf("%s: %s is not null", at, short(v)))
		}
	}
	if enum := child(schema, "enum"); enum != nil {
		for _, e := range enum.Content {
			if fmt.Sprint(v) == e.Value {
				return
			}
		}
		*errs = append(*errs, fmt.Sprintf("%s: %s is not one of the enum", at, short(v)))
	}
}

// writeOnly reports whether a property schema is marked writeOnly, on the
// property or on the schema it refers to.
func (s *spec) writeOnly(p *yaml.Node) bool {
	if w := child(p, "writeOnly"); w != nil {
		return w.Value == "true"
	}
	r, err := s.resolve(p)
	if err != nil {
		return false
	}
	w := child(r, "writeOnly")
	return w != nil && w.Value == "true"
}

// objectView returns a schema's type and, for objects, its properties and
// required names merged over allOf (a schema's own properties override
// those of its allOf, later allOf branches those of earlier ones).
func (s *spec) objectView(schema *yaml.Node) (props map[string]*yaml.Node, required []string, typ string) {
	props = map[string]*yaml.Node{}
	var add func(n *yaml.Node)
	add = func(n *yaml.Node) {
		n, err := s.resolve(n)
		if err != nil {
			return
		}
		if all := child(n, "allOf"); all != nil {
			for _, c := range all.Content {
				add(c)
			}
		}
		if t := child(n, "type"); t != nil && t.Kind == yaml.ScalarNode {
			typ = t.Value
		}
		if ps := child(n, "properties"); ps != nil {
			for i := 0; i+1 < len(ps.Content); i += 2 {
				props[ps.Content[i].Value] = ps.Content[i+1]
			}
		}
		if r := child(n, "required"); r != nil {
			for _, c := range r.Content {
				required = append(required, c.Value)
			}
		}
	}
	add(schema)
	return props, required, typ
}

func short(v any) string {
	b, _ := json.Marshal(v)
	if len(b) > 80 {
		return string(b[:80]) + "…"
	}
	return string(b)
}

// apiClient calls a node's API and checks every answer against the
// document: the status must be declared for the operation, and a JSON body
// must match the declared schema of its media type.
type apiClient struct {
	t    *testing.T
	s    *spec
	ops  map[string]operation
	base string
	c    *http.Client
	// header is sent with every request while set.
	header http.Header
}

// callWith is call with the extra request headers h.
func (a *apiClient) callWith(h http.Header, route, path, bearer string, want int) map[string]any {
	a.t.Helper()
	a.header = h
	defer func() { a.header = nil }()
	return a.call(route, path, bearer, "", "", want)
}

// call sends body (JSON unless contentType says otherwise) to the route
// "METHOD /pattern" at path, expects status want, and returns the decoded
// JSON answer (nil for none).
func (a *apiClient) call(route, path, bearer, contentType, body string, want int) map[string]any {
	a.t.Helper()
	method, _, _ := strings.Cut(route, " ")
	var rd io.Reader
	if body != "" {
		rd = strings.NewReader(body)
	}
	req, err := http.NewRequest(method, a.base+path, rd)
	if err != nil {
		a.t.Fatal(err)
	}
	if bearer != "" {
		req.Header.Set("Authorization", "Bearer "+bearer)
	}
	for k, v := range a.header {
		req.Header[k] = v
	}
	if body != "" {
		if contentType == "" {
			contentType = "application/json"
		}
		req.Header.Set("Content-Type", contentType)
	}
	resp := tu.Send(a.t, a.c, req)
	b := resp.Body
	if resp.Status != want {
		a.t.Fatalf("%s %s: status %d, want %d: %.300s", method, path, resp.Status, want, b)
	}
	op, ok := a.ops[route]
	if !ok {
		a.t.Fatalf("%s is not in %s", route, specFile)
	}
	code := strconv.Itoa(resp.Status)
	r, err := a.s.resolve(op.Responses[code])
	if err != nil || r == nil {
		a.t.Errorf("%s: %s answered %d, which the operation does not declare", specFile, route, resp.Status)
		return nil
	}
	if code == "429" && resp.Header.Get("Retry-After") == "" {
		a.t.Errorf("%s %s: 429 without Retry-After", method, path)
	}
	mt, _, _ := strings.Cut(resp.Header.Get("Content-Type"), ";")
	content := child(r, "content")
	if len(b) == 0 {
		if content != nil {
			a.t.Errorf("%s: %s %d declares a body, the answer has none", specFile, route, resp.Status)
		}
		return nil
	}
	media := child(content, strings.TrimSpace(mt))
	if media == nil {
		a.t.Errorf("%s: %s %d does not declare media type %q", specFile, route, resp.Status, mt)
		return nil
	}
	if !strings.HasSuffix(mt, "json") {
		return nil
	}
	var v any
	if err := json.Unmarshal(b, &v); err != nil {
		a.t.Fatalf("%s %s: answer is not JSON: %v: %.300s", method, path, err, b)
	}
	var errs []string
	a.s.checkValue(child(media, "schema"), v, "body", &errs)
	for _, e := range errs {
		a.t.Errorf("%s: %s %d (%s): %s", specFile, route, resp.Status, path, e)
	}
	m, _ := v.(map[string]any)
	return m
}

// TestOpenAPIDescribesAnswers drives the routes against a node, the ones
// scripts rely on first, and checks every answer against the document.
func TestOpenAPIDescribesAnswers(t *testing.T) {
	s := parseSpec(t, apispec.OpenAPI)
	ops, _ := s.operations(t)
	n := nodetest.Start(t, nil)
	a := &apiClient{t: t, s: s, ops: ops, base: "https://" + n.APIAddr(),
		c: &http.Client{Timeout: 20 * time.Second, Transport: &http.Transport{TLSClientConfig: nodetest.ClientTLS(t, n, nil)}}}
	op := n.OperatorKey()
	const tenant, serial = "acme", "TSGW06DEV00000042"
	gw := "/v1/tenants/" + tenant + "/gateways/" + serial
	str := func(m map[string]any, k string) string {
		t.Helper()
		v, _ := m[k].(string)
		if v == "" {
			t.Fatalf("answer has no %s: %v", k, m)
		}
		return v
	}

	// The contract of the issue.
	a.call("POST /v1/tenants", "/v1/tenants", op, "", `{"id":"acme"}`, 201)
	a.call("POST /v1/tenants/{tenant}/gateways", "/v1/tenants/acme/gateways", op, "", `{"serial":"`+serial+`","labels":{"site":"hq"}}`, 201)
	tok := a.call("POST /v1/tenants/{tenant}/enrollment-tokens", "/v1/tenants/acme/enrollment-tokens", op, "", `{"serial":"`+serial+`"}`, 201)
	csr, _ := tu.CSR(t, serial)
	enrollBody, _ := json.Marshal(map[string]string{"token": str(tok, "token"), "csr": string(csr)})
	enr := a.call("POST /v1/enroll", "/v1/enroll", "", "", string(enrollBody), 200)
	str(enr, "certificate")
	str(enr, "ca")
	a.call("POST /v1/enroll", "/v1/enroll", "", "", string(enrollBody), 401) // spent
	k := a.call("POST /v1/tenants/{tenant}/api-keys", "/v1/tenants/acme/api-keys", op, "", `{"scopes":["messages:read"]}`, 201)
	apiKey := str(k, "key")
	a.call("GET /v1/tenants/{tenant}/messages", "/v1/tenants/acme/messages", apiKey, "", "", 200)
	rep := a.call("GET /v1/tenants/{tenant}/audit/verify", "/v1/tenants/acme/audit/verify", op, "", "", 200)
	if ok, isBool := rep["ok"].(bool); !isBool || !ok {
		t.Errorf("audit verify: %v", rep)
	}

	// The rest of the routes.
	a.call("GET /healthz", "/healthz", "", "", "", 200)
	a.call("GET /readyz", "/readyz", "", "", "", 200)
	a.call("GET /v1/openapi.yaml", "/v1/openapi.yaml", "", "", "", 200)
	a.call("GET /metrics", "/metrics", op, "", "", 200)
	a.call("GET /metrics", "/metrics", apiKey, "", "", 403)
	a.call("POST /v1/tenants", "/v1/tenants", op, "", `{"id":"acme"}`, 409)
	a.call("POST /v1/tenants", "/v1/tenants", op, "", `{"id":"acme2","x":1}`, 400)
	a.call("POST /v1/tenants", "/v1/tenants", op, "text/plain", `{"id":"acme2"}`, 415)
	a.call("POST /v1/tenants", "/v1/tenants", "", "", `{"id":"acme2"}`, 401)
	a.call("GET /v1/tenants", "/v1/tenants", op, "", "", 200)
	a.call("GET /v1/tenants/{tenant}", "/v1/tenants/acme", op, "", "", 200)
	a.call("GET /v1/tenants/{tenant}/gateways", "/v1/tenants/acme/gateways?limit=1&state=active", op, "", "", 200)
	a.call("GET /v1/tenants/{tenant}/gateways", "/v1/tenants/acme/gateways", apiKey, "", "", 403)
	a.call("GET /v1/tenants/{tenant}/gateways/{serial}", gw, op, "", "", 200)
	a.call("PATCH /v1/tenants/{tenant}/gateways/{serial}", gw, op, "", `{"labels":{"site":"lab"}}`, 200)
	a.call("GET /v1/tenants/{tenant}/gateways/{serial}/certificates", gw+"/certificates", op, "", "", 200)
	a.call("GET /v1/tenants/{tenant}/enrollment-tokens", "/v1/tenants/acme/enrollment-tokens", op, "", "", 200)
	spare := a.call("POST /v1/tenants/{tenant}/enrollment-tokens", "/v1/tenants/acme/enrollment-tokens", op, "", `{"serial":"`+serial+`"}`, 201)
	const revokeToken = "POST /v1/tenants/{tenant}/enrollment-tokens/{id}/revoke"
	a.call(revokeToken, "/v1/tenants/acme/enrollment-tokens/"+str(spare, "id")+"/revoke", op, "", "", 200)
	a.call(revokeToken, "/v1/tenants/acme/enrollment-tokens/0123456789abcdef/revoke", op, "", "", 404)
	a.call("GET /v1/tenants/{tenant}/audit", "/v1/tenants/_system/audit?limit=2", op, "", "", 200)
	a.call("GET /v1/tenants/{tenant}/audit/verify", "/v1/tenants/_system/audit/verify", op, "", "", 200)
	a.call("GET /v1/tenants/{tenant}/messages", "/v1/tenants/dev/messages", apiKey, "", "", 404) // another tenant
	a.call("GET /v1/tenants/{tenant}/rejected", "/v1/tenants/acme/rejected?order=oldest", apiKey, "", "", 200)
	a.call("GET /v1/tenants/{tenant}/api-keys", "/v1/tenants/acme/api-keys", op, "", "", 200)
	a.call("GET /v1/tenants/{tenant}/api-keys/{id}", "/v1/tenants/acme/api-keys/"+str(k, "id"), op, "", "", 200)
	cl := a.call("POST /v1/tenants/{tenant}/oauth2-clients", "/v1/tenants/acme/oauth2-clients", op, "", `{"name":"auditor","scopes":["audit:read"]}`, 201)
	a.call("GET /v1/tenants/{tenant}/oauth2-clients", "/v1/tenants/acme/oauth2-clients", op, "", "", 200)
	a.call("GET /v1/tenants/{tenant}/oauth2-clients/{id}", "/v1/tenants/acme/oauth2-clients/"+str(cl, "clientId"), op, "", "", 200)
	form := "grant_type=client_credentials&client_id=" + str(cl, "clientId") + "&client_secret=" + str(cl, "clientSecret")
	const formType = "application/x-www-form-urlencoded"
	jwt := str(a.call("POST /oauth2/token", "/oauth2/token", "", formType, form, 200), "access_token")
	a.call("POST /oauth2/token", "/oauth2/token", "", formType, "grant_type=password", 400)
	a.call("POST /oauth2/token", "/oauth2/token", "", formType, "grant_type=client_credentials&client_id="+str(cl, "clientId")+"&client_secret=its_wrong", 401)
	a.call("GET /v1/tenants/{tenant}/audit", "/v1/tenants/acme/audit?limit=2", jwt, "", "", 200)
	a.call("GET /v1/tenants/{tenant}/audit/verify", "/v1/tenants/acme/audit/verify", jwt, "", "", 200)
	// Each credential learns who it is.
	for _, bearer := range []string{op, apiKey, jwt} {
		a.call("GET /v1/whoami", "/v1/whoami", bearer, "", "", 200)
	}
	a.call("GET /v1/whoami", "/v1/whoami", "", "", "", 401)

	// Integrations, made before the gateway below sends messages (an
	// integration receives the messages stored after its creation): a
	// webhook to a local HTTPS receiver, a webhook whose receiver always
	// fails (for dead letters), and two websocket integrations, one sealed.
	const ints = "/v1/tenants/acme/integrations"
	const intRoute = "/v1/tenants/{tenant}/integrations/{id}"
	js := func(v any) string {
		b, err := json.Marshal(v)
		if err != nil {
			t.Fatal(err)
		}
		return string(b)
	}
	obj := func(m map[string]any, k string) map[string]any {
		t.Helper()
		v, ok := m[k].(map[string]any)
		if !ok {
			t.Fatalf("answer has no object %s: %v", k, m)
		}
		return v
	}
	code := func(m map[string]any, want string) {
		t.Helper()
		if got, _ := m["code"].(string); got != want {
			t.Errorf("problem code %q, want %q: %v", got, want, m)
		}
	}
	rcv := tu.NewReceiver(t)
	hook := a.call("POST /v1/tenants/{tenant}/integrations", ints, op, "", js(map[string]any{
		"name": "hook", "type": "webhook", "batch": map[string]any{"maxWait": "20ms"},
		"webhook": map[string]any{"url": rcv.URL, "caPem": rcv.CAPEM},
	}), 201)
	hookID := str(hook, "id")
	secrets := []string{str(obj(hook, "webhook"), "secret")} // generated, shown once
	down := tu.NewReceiver(t)
	down.Handle(func(w http.ResponseWriter, _ *http.Request, _ []byte) bool {
		w.WriteHeader(http.StatusInternalServerError)
		return true
	})
	failing := a.call("POST /v1/tenants/{tenant}/integrations", ints, op, "", js(map[string]any{
		"name": "failing", "type": "webhook", "maxAge": "1s", "batch": map[string]any{"maxWait": "10ms"},
		"webhook": map[string]any{"url": down.URL, "caPem": down.CAPEM, "secret": "whsec_" + base64.StdEncoding.EncodeToString(bytes.Repeat([]byte{7}, 32))},
	}), 201)
	failingID := str(failing, "id")
	if _, shown := obj(failing, "webhook")["secret"]; shown {
		t.Errorf("a secret the client gave is in the answer: %v", failing)
	}
	liveID := str(a.call("POST /v1/tenants/{tenant}/integrations", ints, op, "", `{"name":"live","type":"websocket","filter":{"tsmIds":[12100]}}`, 201), "id")
	sealPriv, sealPub, err := seal.GenerateKey()
	if err != nil {
		t.Fatal(err)
	}
	sealed := a.call("POST /v1/tenants/{tenant}/integrations", ints, op, "", js(map[string]any{
		"name": "sealed", "type": "websocket", "encryption": map[string]any{"publicKeyPem": string(sealPub)},
	}), 201)
	sealedID := str(sealed, "id")
	str(obj(sealed, "encryption"), "keyId")
	code(a.call("POST /v1/tenants/{tenant}/integrations", ints, op, "", `{"name":"hook","type":"websocket"}`, 409), "forward.name_taken")
	code(a.call("POST /v1/tenants/{tenant}/integrations", ints, op, "", `{"name":"plain","type":"webhook","webhook":{"url":"http://example.com/hook"}}`, 400), "forward.target_invalid")
	code(a.call("POST /v1/tenants/{tenant}/integrations", ints, op, "", `{"name":"odd","type":"mqtt"}`, 400), "forward.integration_invalid")
	code(a.call("POST /v1/tenants/{tenant}/integrations", ints, op, "", `{"name":"odd","type":"websocket","x":1}`, 400), "api.json_invalid")
	a.call("POST /v1/tenants/{tenant}/integrations", ints, apiKey, "", `{"name":"odd","type":"websocket"}`, 403)
	a.call("GET /v1/tenants/{tenant}/integrations", ints, op, "", "", 200)
	a.call("GET "+intRoute, ints+"/"+hookID, op, "", "", 200)
	code(a.call("GET "+intRoute, ints+"/000000000000", op, "", "", 404), "forward.integration_not_found")
	code(a.call("GET "+intRoute, ints+"/NOT-AN-ID", op, "", "", 404), "forward.integration_not_found")
	patched := a.call("PATCH "+intRoute, ints+"/"+hookID, op, "", `{"batch":{"maxMessages":50},"webhook":{"auth":{"kind":"apikey","headerValue":"k-1"}}}`, 200)
	if set, _ := patched["secretsSet"].([]any); !slices.Contains(set, any("auth.headerValue")) || !slices.Contains(set, any("webhook.secret")) {
		t.Errorf("secretsSet after PATCH: %v", patched["secretsSet"])
	}
	code(a.call("PATCH "+intRoute, ints+"/"+hookID, op, "", `{"type":"mqtt"}`, 400), "forward.integration_invalid")
	code(a.call("PATCH "+intRoute, ints+"/"+hookID, op, "", `{"state":{}}`, 400), "api.json_invalid")
	code(a.call("PATCH "+intRoute, ints+"/"+hookID, op, "", `{"name":"live"}`, 409), "forward.name_taken")
	if res := a.call("POST "+intRoute+"/test", ints+"/"+hookID+"/test", op, "", "", 200); res["ok"] != true {
		t.Errorf("test delivery to the receiver: %v", res)
	}
	if res := a.call("POST "+intRoute+"/test", ints+"/"+failingID+"/test", op, "", "{}", 200); res["ok"] != false || res["error"] != "HTTP 500" {
		t.Errorf("test delivery to the failing receiver: %v", res)
	}
	code(a.call("POST "+intRoute+"/test", ints+"/"+liveID+"/test", op, "", "", 400), "forward.integration_invalid")
	rotated := a.call("POST "+intRoute+"/rotate-secret", ints+"/"+hookID+"/rotate-secret", op, "", `{"overlap":"1h"}`, 200)
	secrets = append(secrets, str(obj(rotated, "webhook"), "secret"))
	str(rotated, "previousSecretUntil")
	code(a.call("POST "+intRoute+"/rotate-secret", ints+"/"+liveID+"/rotate-secret", op, "", "", 400), "forward.not_webhook")
	code(a.call("POST "+intRoute+"/rotate-secret", ints+"/"+hookID+"/rotate-secret", op, "", `{"overlap":"soon"}`, 400), "forward.integration_invalid")
	if p := a.call("POST "+intRoute+"/pause", ints+"/"+liveID+"/pause", op, "", "", 200); p["paused"] != true {
		t.Errorf("pause: %v", p)
	}
	code(a.call("GET /v1/tenants/{tenant}/stream", "/v1/tenants/acme/stream?integration="+liveID, apiKey, "", "", 400), "api.bad_parameter")
	a.call("POST "+intRoute+"/resume", ints+"/"+liveID+"/resume", op, "", "{}", 200)
	a.call("GET "+intRoute+"/dead-letters", ints+"/"+hookID+"/dead-letters", op, "", "", 200)
	a.call("GET "+intRoute+"/dead-letters", ints+"/"+hookID+"/dead-letters?cursor=x", op, "", "", 400)
	a.call("GET "+intRoute+"/dead-letters", ints+"/"+hookID+"/dead-letters?limit=0", op, "", "", 400)

	// Renewal over mutual TLS, and messages of a connected gateway.
	const serial2 = "TSGW06DEV00000043"
	cert := nodetest.Gateway(t, n, tenant, serial2)
	gw2 := "/v1/tenants/" + tenant + "/gateways/" + serial2
	if g := a.call("PATCH /v1/tenants/{tenant}/gateways/{serial}", gw2, op, "", `{"deploymentGroupId":"prfi00acme"}`, 200); g["deploymentGroupId"] != "prfi00acme" {
		t.Errorf("deploymentGroupId not set: %v", g)
	}
	code(a.call("PATCH /v1/tenants/{tenant}/gateways/{serial}", gw2, op, "", `{"deploymentGroupId":"zzfi00acme"}`, 400), "registry.deployment_group_invalid")
	patch := "PATCH /v1/tenants/{tenant}/gateways/{serial}"
	a.call(patch, gw2, op, "", `{"labels":{"site":"hel","floor":"2"}}`, 200)
	if g := a.call(patch, gw2, op, "", `{"setLabels":{"floor":"3","room":"a1"},"removeLabels":["site","absent"]}`, 200); fmt.Sprint(g["labels"]) != "map[floor:3 room:a1]" {
		t.Errorf("setLabels/removeLabels: labels %v, want floor=3 room=a1", g["labels"])
	}
	code(a.call(patch, gw2, op, "", `{"labels":{},"setLabels":{"a":"b"}}`, 400), "registry.labels_invalid")
	code(a.call(patch, gw2, op, "", `{"setLabels":{"a":"b"},"removeLabels":["a"]}`, 400), "registry.labels_invalid")
	code(a.call(patch, gw2, op, "", `{"setLabels":{"Bad Key":"b"}}`, 400), "registry.labels_invalid")
	// A refused change is audited too, with its outcome.
	refusals := 0
	au := a.call("GET /v1/tenants/{tenant}/audit", "/v1/tenants/"+tenant+"/audit?action=registry.gateway.update&limit=100", op, "", "", 200)
	for _, it := range au["items"].([]any) {
		if e, _ := it.(map[string]any); e["outcome"] == "registry.labels_invalid" || e["outcome"] == "registry.deployment_group_invalid" {
			refusals++
		}
	}
	if refusals != 2 {
		t.Errorf("%d refused gateway updates in the audit log, want 2 (an invalid deployment group, invalid labels)", refusals)
	}
	csr2, err := pki.MakeCSR(cert.PrivateKey.(crypto.Signer), serial2)
	if err != nil {
		t.Fatal(err)
	}
	body2, _ := json.Marshal(map[string]string{"csr": string(csr2)})
	mtls := *a
	mtls.c = &http.Client{Timeout: 20 * time.Second, Transport: &http.Transport{TLSClientConfig: nodetest.ClientTLS(t, n, cert)}}
	mtls.call("POST /v1/reenroll", "/v1/reenroll", "", "", string(body2), 200)
	a.call("POST /v1/reenroll", "/v1/reenroll", "", "", string(body2), 401)
	up, err := nodetest.Dial(t, n, cert, serial2, nil)
	if err != nil {
		t.Fatal(err)
	}
	for _, msg := range []string{tu.Thingsee("TSEN01ABC12345678", 1700000000, 21.5), `{"tsmId":12100}`, "not json"} {
		if _, err := up.Publish(t.Context(), []byte(msg), 1); err != nil {
			t.Fatal(err)
		}
	}
	tu.Eventually(t, 10*time.Second, 50*time.Millisecond, func() error {
		if got := len(nodetest.NewAPI(t, n).Rejected(tenant, 10)); got < 2 {
			return fmt.Errorf("%d rejected messages", got)
		}
		if got := len(nodetest.NewAPI(t, n).Messages(tenant, 10)); got < 1 {
			return fmt.Errorf("%d messages", got)
		}
		return nil
	})
	a.call("GET /v1/tenants/{tenant}/messages", "/v1/tenants/acme/messages?limit=5&gateway="+serial2+"&tsmId=12100&order=oldest", apiKey, "", "", 200)
	a.call("GET /v1/tenants/{tenant}/rejected", "/v1/tenants/acme/rejected?limit=5", apiKey, "", "", 200)
	a.call("GET /v1/tenants/{tenant}/messages", "/v1/tenants/acme/messages?gateway=nope", apiKey, "", "", 400)

	// The gateway's status on the gateway, and the mesh routes.
	status := `{"agentVersion":"1.0","firmwareVersion":"2.0","slot":"a","queueDepth":1,"queueDropped":0,"mesh":{"accepted":5,"dropped":{"replay":1}},"time":"2026-12-07T10:00:00Z"}`
	if res, err := up.PublishTo(t.Context(), "v1/gw/"+serial2+"/status", []byte(status), 1); err != nil || res.ReasonCode != 0 {
		t.Fatalf("status: %v %+v", err, res)
	}
	tu.Eventually(t, 10*time.Second, 50*time.Millisecond, func() error {
		if g := a.call("GET /v1/tenants/{tenant}/gateways/{serial}", gw2, op, "", "", 200); g["agentVersion"] != "1.0" {
			return fmt.Errorf("no status on the gateway: %v", g)
		}
		return nil
	})
	const meshKeys, meshNodes = "/v1/tenants/acme/mesh/keys", "/v1/tenants/acme/mesh/nodes"
	const keysRoute, nodesRoute = "/v1/tenants/{tenant}/mesh/keys", "/v1/tenants/{tenant}/mesh/nodes"
	code(a.call("GET "+keysRoute, meshKeys, op, "", "", 404), "meshnet.network_not_found")
	a.call("POST "+keysRoute, meshKeys, op, "", "", 201)
	a.call("POST "+keysRoute, meshKeys, op, "", `{"graceSeconds":60}`, 200)
	code(a.call("POST "+keysRoute, meshKeys, op, "", `{"graceSeconds":-1}`, 400), "meshnet.grace_invalid")
	a.call("GET "+keysRoute, meshKeys, op, "", "", 200)
	a.call("POST "+keysRoute+"/export", meshKeys+"/export", op, "", "", 200)
	a.call("POST "+nodesRoute, meshNodes, op, "", `{"nodes":[1,2]}`, 200)
	code(a.call("POST "+nodesRoute, meshNodes, op, "", `{"nodes":[]}`, 400), "api.bad_parameter")
	a.call("GET "+nodesRoute, meshNodes, op, "", "", 200)
	a.call("PUT "+nodesRoute+"/{nodeId}", meshNodes+"/3", op, "", "", 201)
	a.call("PUT "+nodesRoute+"/{nodeId}", meshNodes+"/3", op, "", "", 200)
	a.call("GET "+nodesRoute+"/{nodeId}", meshNodes+"/3", op, "", "", 200)
	code(a.call("GET "+nodesRoute+"/{nodeId}", meshNodes+"/0", op, "", "", 400), "meshnet.node_invalid")
	a.call("DELETE "+nodesRoute+"/{nodeId}", meshNodes+"/3", op, "", "", 204)
	code(a.call("DELETE "+nodesRoute+"/{nodeId}", meshNodes+"/3", op, "", "", 404), "meshnet.node_not_found")

	// The stream: errors before the upgrade, then frames of the messages
	// above, plain and sealed.
	const streamRoute = "GET /v1/tenants/{tenant}/stream"
	const stream = "/v1/tenants/acme/stream"
	a.call(streamRoute, stream, apiKey, "", "", 426) // not a WebSocket request
	// Handshake violations are problem+json too, never the WebSocket
	// library's text/plain.
	upgrade := func(version, origin string, keys ...string) http.Header {
		h := http.Header{"Connection": {"keep-alive, Upgrade"}, "Upgrade": {"websocket"}, "Sec-Websocket-Version": {version}, "Sec-Websocket-Key": keys}
		if origin != "" {
			h.Set("Origin", origin)
		}
		return h
	}
	const wsKey = "dGhlIHNhbXBsZSBub25jZQ==" // RFC 6455 §1.3
	// Upgrade without Connection: Upgrade.
	code(a.callWith(http.Header{"Upgrade": {"websocket"}}, streamRoute, stream, apiKey, 426), "api.upgrade_required")
	code(a.callWith(upgrade("8", "", wsKey), streamRoute, stream, apiKey, 400), "api.websocket_handshake")
	code(a.callWith(upgrade("13", ""), streamRoute, stream, apiKey, 400), "api.websocket_handshake")
	code(a.callWith(upgrade("13", "", "c2hvcnQ="), streamRoute, stream, apiKey, 400), "api.websocket_handshake")
	code(a.callWith(upgrade("13", "", wsKey, wsKey), streamRoute, stream, apiKey, 400), "api.websocket_handshake")
	code(a.callWith(upgrade("13", "https://evil.example", wsKey), streamRoute, stream, apiKey, 403), "api.websocket_origin")
	code(a.callWith(upgrade("13", "null", wsKey), streamRoute, stream, apiKey, 403), "api.websocket_origin")
	a.call(streamRoute, stream, "", "", "", 401)
	code(a.call(streamRoute, stream+"?after=yesterday", apiKey, "", "", 400), "api.bad_parameter")
	// A resume point is looked up once the request is a WebSocket handshake
	// (it holds a stream slot meanwhile).
	code(a.callWith(upgrade("13", "", wsKey), streamRoute, stream+"?after=TSEN01ABC12345678:12100:1600000000", apiKey, 404), "api.after_unknown")
	code(a.call(streamRoute, stream+"?integration=000000000000", apiKey, "", "", 404), "forward.integration_not_found")
	code(a.call(streamRoute, stream+"?integration="+hookID, apiKey, "", "", 400), "api.bad_parameter")
	frame := a.frameSchema(streamRoute, "text")
	batch := func(b []byte, at string) []any {
		t.Helper()
		var v []any
		if err := json.Unmarshal(b, &v); err != nil {
			t.Fatalf("%s is not a JSON array: %v: %.300s", at, err, b)
		}
		var errs []string
		s.checkValue(frame, v, at, &errs)
		for _, e := range errs {
			t.Errorf("%s: %s", specFile, e)
		}
		return v
	}
	ws := a.dial(streamRoute, stream+"?after=0&integration="+liveID, apiKey)
	typ, b := a.read(ws)
	if typ != websocket.MessageText {
		t.Fatalf("stream frame of type %v, want text", typ)
	}
	msgs := batch(b, "stream frame")
	if m, _ := msgs[0].(map[string]any); m["tsmTuid"] != "TSEN01ABC12345678" || m["deploymentGroupId"] != "prfi00acme" || m["tsmGw"] != serial2 {
		t.Errorf("stream message: %v", m)
	}
	ws.Close(websocket.StatusNormalClosure, "")
	a.dial(streamRoute, stream+"?after=TSEN01ABC12345678:12100:1700000000", apiKey).Close(websocket.StatusNormalClosure, "")
	ws = a.dial(streamRoute, stream+"?after=0&integration="+sealedID, apiKey)
	if typ, b = a.read(ws); typ != websocket.MessageBinary {
		t.Fatalf("sealed stream frame of type %v, want binary", typ)
	}
	opener, err := seal.ParsePrivateKey(sealPriv)
	if err != nil {
		t.Fatal(err)
	}
	plain, err := opener.Open(b)
	if err != nil {
		t.Fatalf("open a sealed frame: %v", err)
	}
	batch(plain, "sealed stream frame")
	ws.Close(websocket.StatusNormalClosure, "")

	// The webhook deliveries, as the document's webhooks describe them.
	delivery := child(child(child(child(child(child(child(s.root, "webhooks"), "messages"), "post"), "requestBody"), "content"), "application/json"), "schema")
	if delivery == nil {
		t.Fatalf("%s has no webhooks.messages with an application/json body", specFile)
	}
	var got []tu.Delivery
	tu.Eventually(t, 10*time.Second, 50*time.Millisecond, func() error {
		if got = rcv.Got(); len(got) < 2 { // the test message and a batch
			return fmt.Errorf("%d deliveries", len(got))
		}
		return nil
	})
	for i, d := range got {
		at := fmt.Sprintf("delivery %d", i)
		s.checkHeaders(t, child(child(child(s.root, "webhooks"), "messages"), "post"), d.Header, at)
		var v any
		if err := json.Unmarshal(d.Body, &v); err != nil {
			t.Fatalf("%s is not JSON: %v", at, err)
		}
		var errs []string
		s.checkValue(delivery, v, at, &errs)
		for _, e := range errs {
			t.Errorf("%s: %s", specFile, e)
		}
		if !signedWith(d, secrets) {
			t.Errorf("%s: no webhook-signature verifies with the integration's secrets: %v", at, d.Header)
		}
	}

	// Dead letters of the failing integration.
	dl := ints + "/" + failingID + "/dead-letters"
	var page map[string]any
	tu.Eventually(t, 15*time.Second, 100*time.Millisecond, func() error {
		if page = a.call("GET "+intRoute+"/dead-letters", dl+"?limit=1", op, "", "", 200); len(page["items"].([]any)) == 0 {
			return fmt.Errorf("no dead letter yet")
		}
		return nil
	})
	next := str(page, "next")
	if rest := a.call("GET "+intRoute+"/dead-letters", dl+"?limit=1&cursor="+next, op, "", "", 200); len(rest["items"].([]any)) != 0 || rest["next"] != nil {
		t.Errorf("the page after the only dead letter: %v", rest)
	}
	if v := a.call("GET "+intRoute, ints+"/"+failingID, op, "", "", 200); obj(v, "state")["lastError"] != "HTTP 500" {
		t.Errorf("state of the failing integration: %v", v["state"])
	}
	seq := page["items"].([]any)[0].(map[string]any)["seq"]
	if r := a.call("POST "+intRoute+"/dead-letters/redrive", dl+"/redrive", op, "", js(map[string]any{"seqs": []any{seq}}), 200); r["redriven"] != float64(1) {
		t.Errorf("redrive: %v", r)
	}
	code(a.call("POST "+intRoute+"/dead-letters/redrive", dl+"/redrive", op, "", js(map[string]any{"seqs": []any{seq}}), 404), "forward.dead_letter_not_found")
	a.call("POST "+intRoute+"/dead-letters/redrive", dl+"/redrive", op, "", "", 200)

	// Lifecycle.
	a.call("POST /v1/tenants/{tenant}/gateways/{serial}/isolate", gw+"/isolate", op, "", "", 200)
	a.call("POST /v1/tenants/{tenant}/gateways/{serial}/activate", gw+"/activate", op, "", "{}", 200)
	a.call("POST /v1/tenants/{tenant}/gateways/{serial}/revoke", gw+"/revoke", op, "", "", 200)
	a.call("POST /v1/tenants/{tenant}/gateways/{serial}/activate", gw+"/activate", op, "", "", 403)
	a.call("POST /v1/tenants/{tenant}/api-keys/{id}/revoke", "/v1/tenants/acme/api-keys/"+str(k, "id")+"/revoke", op, "", "", 200)
	a.call("POST /v1/tenants/{tenant}/oauth2-clients/{id}/revoke", "/v1/tenants/acme/oauth2-clients/"+str(cl, "clientId")+"/revoke", op, "", "", 200)
	a.call("GET /v1/tenants/{tenant}/audit", "/v1/tenants/acme/audit", jwt, "", "", 401) // the client is revoked
	a.call("DELETE /v1/tenants/{tenant}/gateways/{serial}", gw, op, "", "", 204)
	a.call("GET /v1/tenants/{tenant}/gateways/{serial}", gw, op, "", "", 404)
	for _, id := range []string{hookID, failingID, liveID, sealedID} {
		a.call("DELETE "+intRoute, ints+"/"+id, op, "", "", 204)
	}
	a.call("DELETE "+intRoute, ints+"/"+hookID, op, "", "", 404)
	a.call("GET "+intRoute+"/dead-letters", dl, op, "", "", 404)
}

// dial opens the WebSocket of route at path and checks the upgrade answer
// against the document: 101 is declared, with X-Request-Id.
func (a *apiClient) dial(route, path, bearer string) *websocket.Conn {
	a.t.Helper()
	h := http.Header{}
	if bearer != "" {
		h.Set("Authorization", "Bearer "+bearer)
	}
	c, resp, err := websocket.Dial(a.t.Context(), "wss://"+strings.TrimPrefix(a.base, "https://")+path,
		&websocket.DialOptions{HTTPClient: a.c, HTTPHeader: h})
	if err != nil {
		a.t.Fatalf("WebSocket %s: %v", path, err)
	}
	a.t.Cleanup(func() { _ = c.CloseNow() })
	if resp.StatusCode != http.StatusSwitchingProtocols {
		a.t.Fatalf("WebSocket %s: status %d", path, resp.StatusCode)
	}
	if _, ok := a.ops[route].Responses["101"]; !ok {
		a.t.Errorf("%s: %s upgrades, but does not declare 101", specFile, route)
	}
	if resp.Header.Get("X-Request-Id") == "" {
		a.t.Errorf("WebSocket %s: 101 without X-Request-Id", path)
	}
	return c
}

// read returns the next frame of a WebSocket.
func (a *apiClient) read(c *websocket.Conn) (websocket.MessageType, []byte) {
	a.t.Helper()
	ctx, cancel := context.WithTimeout(a.t.Context(), 10*time.Second)
	defer cancel()
	typ, b, err := c.Read(ctx)
	if err != nil {
		a.t.Fatalf("read a frame: %v", err)
	}
	return typ, b
}

// frameSchema returns the schema the document declares for the frames of
// one kind (text, binary) of a WebSocket route (x-iotransit-frames of its
// 101 response).
func (a *apiClient) frameSchema(route, kind string) *yaml.Node {
	a.t.Helper()
	r, err := a.s.resolve(a.ops[route].Responses["101"])
	if err != nil || r == nil {
		a.t.Fatalf("%s: %s has no 101 response", specFile, route)
	}
	schema := child(child(child(r, "x-iotransit-frames"), kind), "schema")
	if schema == nil {
		a.t.Fatalf("%s: %s 101 declares no x-iotransit-frames.%s.schema", specFile, route, kind)
	}
	return schema
}

// checkHeaders checks the headers of a request the node sent against the
// header parameters of an operation of the document (a webhook): required
// ones are present, patterns and enums match.
func (s *spec) checkHeaders(t *testing.T, op *yaml.Node, h http.Header, at string) {
	t.Helper()
	ps := child(op, "parameters")
	if ps == nil {
		t.Fatalf("%s: %s: the operation declares no parameters", specFile, at)
	}
	for _, p := range ps.Content {
		p, err := s.resolve(p)
		if err != nil || child(p, "in").Value != "header" {
			continue
		}
		name := child(p, "name").Value
		v := h.Get(name)
		if v == "" {
			if req := child(p, "required"); req != nil && req.Value == "true" {
				t.Errorf("%s: required header %s is missing", at, name)
			}
			continue
		}
		schema, _ := s.resolve(child(p, "schema"))
		if pat := child(schema, "pattern"); pat != nil && !regexp.MustCompile(pat.Value).MatchString(v) {
			t.Errorf("%s: header %s: %q does not match %s", at, name, v, pat.Value)
		}
		if enum := child(schema, "enum"); enum != nil && !slices.ContainsFunc(enum.Content, func(e *yaml.Node) bool { return e.Value == v }) {
			t.Errorf("%s: header %s: %q is not one of the enum", at, name, v)
		}
	}
}

// signedWith reports whether one of the Standard Webhooks signatures of a
// delivery verifies with one of the secrets.
func signedWith(d tu.Delivery, secrets []string) bool {
	id, ts := d.Header.Get("webhook-id"), d.Header.Get("webhook-timestamp")
	for _, secret := range secrets {
		key, err := base64.StdEncoding.DecodeString(strings.TrimPrefix(secret, "whsec_"))
		if err != nil {
			continue
		}
		mac := hmac.New(sha256.New, key)
		mac.Write([]byte(id + "." + ts + "."))
		mac.Write(d.Body)
		want := "v1," + base64.StdEncoding.EncodeToString(mac.Sum(nil))
		if slices.Contains(strings.Fields(d.Header.Get("webhook-signature")), want) {
			return true
		}
	}
	return false
}

package api_test

import (
	"bytes"
	"crypto"
	"crypto/tls"
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

	"go.yaml.in/yaml/v3"

	"github.com/iotransit/iotransit/apispec"
	"github.com/iotransit/iotransit/internal/api"
	"github.com/iotransit/iotransit/internal/credential"
	"github.com/iotransit/iotransit/internal/pki"
	tu "github.com/iotransit/iotransit/internal/testutil"
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

// operation is the part of an Operation Object the test reads.
type operation struct {
	OperationID string                 `yaml:"operationId"`
	Summary     string                 `yaml:"summary"`
	Access      string                 `yaml:"x-iotransit-access"`
	Scope       string                 `yaml:"x-iotransit-scope"`
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
		checkParams(t, s, key, rt.Pattern, append(slices.Clone(pathParams[rt.Pattern]), op.Parameters...))
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
		if !has2xx {
			t.Errorf("%s: %s has no 2xx response", specFile, key)
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

// checkResponses checks the error responses an operation must declare:
// 429 with Retry-After and 500 everywhere, 401 where a credential is
// needed, 403 and 404 on tenant routes, each with a problem+json body (the
// token endpoint may answer RFC 6749 JSON instead).
func checkResponses(t *testing.T, s *spec, key string, rt api.Route, op operation) {
	t.Helper()
	need := []string{"429", "500"}
	switch rt.Access {
	case api.Operator, api.Gateway:
		need = append(need, "401", "403")
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
		if problem == nil && !oauth {
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
	n := tu.StartNode(t, nil)
	c := &http.Client{Transport: &http.Transport{TLSClientConfig: tu.ClientTLS(t, n, nil)}}
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
// shapes of the document in step with the handlers.
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
			case p != nil:
				s.checkValue(p, m[k], at+"."+k, errs)
			case extra != nil && extra.Kind == yaml.MappingNode:
				s.checkValue(extra, m[k], at+"."+k, errs)
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

// objectView returns a schema's type and, for objects, its properties and
// required names merged over allOf.
func (s *spec) objectView(schema *yaml.Node) (props map[string]*yaml.Node, required []string, typ string) {
	props = map[string]*yaml.Node{}
	var add func(n *yaml.Node)
	add = func(n *yaml.Node) {
		n, err := s.resolve(n)
		if err != nil {
			return
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
		if all := child(n, "allOf"); all != nil {
			for _, c := range all.Content {
				add(c)
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
	if body != "" {
		if contentType == "" {
			contentType = "application/json"
		}
		req.Header.Set("Content-Type", contentType)
	}
	resp, err := a.c.Do(req)
	if err != nil {
		a.t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		a.t.Fatal(err)
	}
	if resp.StatusCode != want {
		a.t.Fatalf("%s %s: status %d, want %d: %.300s", method, path, resp.StatusCode, want, b)
	}
	op, ok := a.ops[route]
	if !ok {
		a.t.Fatalf("%s is not in %s", route, specFile)
	}
	code := strconv.Itoa(resp.StatusCode)
	r, err := a.s.resolve(op.Responses[code])
	if err != nil || r == nil {
		a.t.Errorf("%s: %s answered %d, which the operation does not declare", specFile, route, resp.StatusCode)
		return nil
	}
	if code == "429" && resp.Header.Get("Retry-After") == "" {
		a.t.Errorf("%s %s: 429 without Retry-After", method, path)
	}
	mt, _, _ := strings.Cut(resp.Header.Get("Content-Type"), ";")
	content := child(r, "content")
	if len(b) == 0 {
		if content != nil {
			a.t.Errorf("%s: %s %d declares a body, the answer has none", specFile, route, resp.StatusCode)
		}
		return nil
	}
	media := child(content, strings.TrimSpace(mt))
	if media == nil {
		a.t.Errorf("%s: %s %d does not declare media type %q", specFile, route, resp.StatusCode, mt)
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
		a.t.Errorf("%s: %s %d (%s): %s", specFile, route, resp.StatusCode, path, e)
	}
	m, _ := v.(map[string]any)
	return m
}

// TestOpenAPIDescribesAnswers drives the routes against a node, the ones
// scripts rely on first, and checks every answer against the document.
func TestOpenAPIDescribesAnswers(t *testing.T) {
	s := parseSpec(t, apispec.OpenAPI)
	ops, _ := s.operations(t)
	n := tu.StartNode(t, nil)
	a := &apiClient{t: t, s: s, ops: ops, base: "https://" + n.APIAddr(),
		c: &http.Client{Timeout: 20 * time.Second, Transport: &http.Transport{TLSClientConfig: tu.ClientTLS(t, n, nil)}}}
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
	key, err := pki.NewKey()
	if err != nil {
		t.Fatal(err)
	}
	csr, err := pki.MakeCSR(key, serial)
	if err != nil {
		t.Fatal(err)
	}
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

	// Renewal over mutual TLS, and messages of a connected gateway.
	const serial2 = "TSGW06DEV00000043"
	cert := tu.Gateway(t, n, tenant, serial2)
	csr2, err := pki.MakeCSR(cert.PrivateKey.(crypto.Signer), serial2)
	if err != nil {
		t.Fatal(err)
	}
	body2, _ := json.Marshal(map[string]string{"csr": string(csr2)})
	mtls := *a
	mtls.c = &http.Client{Timeout: 20 * time.Second, Transport: &http.Transport{TLSClientConfig: tu.ClientTLS(t, n, cert)}}
	mtls.call("POST /v1/reenroll", "/v1/reenroll", "", "", string(body2), 200)
	a.call("POST /v1/reenroll", "/v1/reenroll", "", "", string(body2), 401)
	up, err := tu.Dial(t, n, cert, serial2, nil)
	if err != nil {
		t.Fatal(err)
	}
	for _, msg := range []string{tu.Thingsee("TSEN01ABC12345678", 1700000000, 21.5), `{"tsmId":12100}`, "not json"} {
		if _, err := up.Publish(t.Context(), []byte(msg), 1); err != nil {
			t.Fatal(err)
		}
	}
	tu.Eventually(t, 10*time.Second, 50*time.Millisecond, func() error {
		if got := len(tu.NewAPI(t, n).Rejected(tenant, 10)); got < 2 {
			return fmt.Errorf("%d rejected messages", got)
		}
		if got := len(tu.NewAPI(t, n).Messages(tenant, 10)); got < 1 {
			return fmt.Errorf("%d messages", got)
		}
		return nil
	})
	a.call("GET /v1/tenants/{tenant}/messages", "/v1/tenants/acme/messages?limit=5&gateway="+serial2+"&tsmId=12100&order=oldest", apiKey, "", "", 200)
	a.call("GET /v1/tenants/{tenant}/rejected", "/v1/tenants/acme/rejected?limit=5", apiKey, "", "", 200)
	a.call("GET /v1/tenants/{tenant}/messages", "/v1/tenants/acme/messages?gateway=nope", apiKey, "", "", 400)

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
}

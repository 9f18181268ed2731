package api

import (
	"encoding/json"
	"reflect"
	"regexp"
	"sort"
	"strings"
	"time"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
)

// OpenAPI builds the OpenAPI 3 document from the route table and the wire
// types (by reflection over their JSON tags). The committed openapi.json
// is its output; TestOpenAPI fails when they differ.
func (s *Server) OpenAPI() ([]byte, error) {
	g := &schemaGen{defs: map[string]any{}}
	paths := map[string]map[string]any{}
	param := regexp.MustCompile(`\{([a-z]+)\}`)
	for _, rt := range s.routes() {
		method, path, _ := strings.Cut(rt.pattern, " ")
		op := map[string]any{
			"summary":     rt.doc,
			"operationId": operationID(method, path),
			"security":    security(rt.access),
		}
		var params []any
		for _, m := range param.FindAllStringSubmatch(path, -1) {
			params = append(params, map[string]any{"name": m[1], "in": "path", "required": true, "schema": map[string]any{"type": "string"}})
		}
		for _, q := range rt.query {
			name, desc, _ := strings.Cut(q, ": ")
			params = append(params, map[string]any{"name": name, "in": "query", "description": desc, "schema": map[string]any{"type": "string"}})
		}
		if len(params) > 0 {
			op["parameters"] = params
		}
		if rt.in != nil {
			op["requestBody"] = map[string]any{"required": true, "content": map[string]any{"application/json": map[string]any{"schema": g.schema(reflect.TypeOf(rt.in))}}}
		}
		responses := map[string]any{
			"4XX": map[string]any{"description": "Bad input, authentication or conflict", "content": map[string]any{"application/json": map[string]any{"schema": map[string]any{"$ref": "#/components/schemas/Error"}}}},
		}
		ok := "200"
		switch {
		case method == "POST" && !strings.HasSuffix(path, "/rotate") && !strings.HasSuffix(path, "/preview") && !strings.HasSuffix(path, "/enrol") && !strings.HasSuffix(path, "/certificate"):
			ok = "201"
		case rt.out == nil && path != "/v1/openapi.json" && !strings.HasPrefix(path, "/v1/trust/"):
			ok = "204"
		}
		if rt.out != nil {
			responses[ok] = map[string]any{"description": "OK", "content": map[string]any{"application/json": map[string]any{"schema": g.schema(reflect.TypeOf(rt.out))}}}
		} else if ok == "204" {
			responses[ok] = map[string]any{"description": "Done"}
		} else {
			responses[ok] = map[string]any{"description": "OK", "content": map[string]any{"application/json": map[string]any{"schema": map[string]any{"type": "object"}}}}
		}
		if method == "GET" {
			responses["304"] = map[string]any{"description": "Not modified (If-None-Match matched the ETag; for the long-poll: nothing newer within wait)"}
		}
		if paths[path] == nil {
			paths[path] = map[string]any{}
		}
		paths[path][strings.ToLower(method)] = op
		op["responses"] = responses
	}
	g.schema(reflect.TypeOf(errorBody{}))
	doc := map[string]any{
		"openapi": "3.0.3",
		"info": map[string]any{
			"title":       "Misaki hub API",
			"version":     "v1",
			"description": "Chart catalog, vehicles, deployments and the digital twin. Operators use bearer tokens (scope read, admin or cloud-agent); vehicles use their client certificate and reach only their own state. docs/hub.md describes each endpoint.",
		},
		"paths": paths,
		"components": map[string]any{
			"schemas": g.defs,
			"securitySchemes": map[string]any{
				"operator": map[string]any{"type": "http", "scheme": "bearer"},
				"vehicle":  map[string]any{"type": "mutualTLS"},
			},
		},
	}
	b, err := json.MarshalIndent(doc, "", "  ")
	return append(b, '\n'), err
}

// errorBody names hubv1.Error "Error" in the document.
type errorBody struct{}

func operationID(method, path string) string {
	parts := []string{strings.ToLower(method)}
	for _, p := range strings.Split(strings.TrimPrefix(path, "/v1/"), "/") {
		p = strings.Trim(p, "{}")
		p = strings.ReplaceAll(strings.ReplaceAll(p, ".", "_"), "-", "_")
		if p != "" {
			parts = append(parts, p)
		}
	}
	return strings.Join(parts, "_")
}

func security(a access) []any {
	op := map[string]any{"operator": []any{}}
	veh := map[string]any{"vehicle": []any{}}
	switch a {
	case public:
		return []any{}
	case read, admin, feed:
		return []any{op}
	default:
		return []any{veh, op}
	}
}

type schemaGen struct {
	defs map[string]any
}

var (
	timeType = reflect.TypeOf(time.Time{})
	rawType  = reflect.TypeOf(json.RawMessage{})
)

func (g *schemaGen) schema(t reflect.Type) map[string]any {
	switch {
	case t == timeType:
		return map[string]any{"type": "string", "format": "date-time"}
	case t == rawType:
		return map[string]any{}
	case t == reflect.TypeOf(unstructured.Unstructured{}):
		return map[string]any{"type": "object", "description": "A Kubernetes object."}
	case t == reflect.TypeOf(errorBody{}):
		t = reflect.TypeOf(errorT{})
	}
	switch t.Kind() {
	case reflect.Pointer:
		return g.schema(t.Elem())
	case reflect.String:
		return map[string]any{"type": "string"}
	case reflect.Bool:
		return map[string]any{"type": "boolean"}
	case reflect.Int, reflect.Int32, reflect.Int64, reflect.Uint64:
		return map[string]any{"type": "integer", "format": "int64"}
	case reflect.Float64:
		return map[string]any{"type": "number"}
	case reflect.Interface:
		return map[string]any{}
	case reflect.Slice:
		if t.Elem().Kind() == reflect.Uint8 {
			return map[string]any{"type": "string", "format": "byte"}
		}
		return map[string]any{"type": "array", "items": g.schema(t.Elem())}
	case reflect.Map:
		return map[string]any{"type": "object", "additionalProperties": g.schema(t.Elem())}
	case reflect.Struct:
		name := schemaName(t)
		ref := map[string]any{"$ref": "#/components/schemas/" + name}
		if _, ok := g.defs[name]; ok {
			return ref
		}
		g.defs[name] = nil // guards recursion
		props := map[string]any{}
		var required []string
		for i := range t.NumField() {
			f := t.Field(i)
			if !f.IsExported() {
				continue
			}
			tag := f.Tag.Get("json")
			jname, opts, _ := strings.Cut(tag, ",")
			if jname == "-" {
				continue
			}
			if jname == "" {
				jname = f.Name
			}
			props[jname] = g.schema(f.Type)
			if !strings.Contains(opts, "omitempty") && !strings.Contains(opts, "omitzero") {
				required = append(required, jname)
			}
		}
		def := map[string]any{"type": "object", "properties": props}
		if len(required) > 0 {
			sort.Strings(required)
			def["required"] = required
		}
		g.defs[name] = def
		return ref
	}
	return map[string]any{}
}

// errorT mirrors hubv1.Error under the schema name "Error".
type errorT struct {
	Code    int    `json:"code"`
	Message string `json:"message"`
	Field   string `json:"field,omitempty"`
}

var genericName = regexp.MustCompile(`^([A-Za-z0-9]+)\[.*\.([A-Za-z0-9]+)\]$`)

func schemaName(t reflect.Type) string {
	n := t.Name()
	if t == reflect.TypeOf(errorT{}) {
		return "Error"
	}
	if m := genericName.FindStringSubmatch(n); m != nil {
		return m[2] + m[1] // List[...Vehicle] → VehicleList
	}
	return n
}

package api

import (
	"bytes"
	"encoding/json"
	"flag"
	"os"
	"strings"
	"testing"
)

var update = flag.Bool("update", false, "rewrite openapi.json")

// The committed openapi.json is what the route table and the wire types
// generate; every route is in it and nothing else.
func TestOpenAPI(t *testing.T) {
	s := &Server{}
	got, err := s.OpenAPI()
	if err != nil {
		t.Fatal(err)
	}
	if *update {
		if err := os.WriteFile("openapi.json", got, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	if !bytes.Equal(got, openAPI) {
		t.Fatal("openapi.json is stale: go test ./internal/hub/api -run TestOpenAPI -update")
	}
	var doc struct {
		Paths map[string]map[string]any `json:"paths"`
	}
	if err := json.Unmarshal(got, &doc); err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, rt := range s.routes() {
		method, path, _ := strings.Cut(rt.pattern, " ")
		if _, ok := doc.Paths[path][strings.ToLower(method)]; !ok {
			t.Errorf("%s is not in the document", rt.pattern)
		}
		n++
	}
	m := 0
	for _, ops := range doc.Paths {
		m += len(ops)
	}
	if m != n {
		t.Errorf("the document has %d operations, the route table %d", m, n)
	}
}

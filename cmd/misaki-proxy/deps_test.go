package main

import (
	"strings"
	"testing"

	"github.com/misaki-io/misaki/internal/depstest"
)

// TestOneYAMLLibrary: the sidecar reads its file, its xDS cache and the
// route options with go.yaml.in/yaml/v3 only; another YAML library would
// be a second parser of the same files (and some 200 KB of binary).
func TestOneYAMLLibrary(t *testing.T) {
	var yaml []string
	for _, p := range depstest.Of(t) {
		if strings.Contains(strings.ToLower(p), "yaml") {
			yaml = append(yaml, p)
		}
	}
	if len(yaml) != 1 || yaml[0] != "go.yaml.in/yaml/v3" {
		t.Errorf("misaki-proxy links %v, want go.yaml.in/yaml/v3 alone", yaml)
	}
}

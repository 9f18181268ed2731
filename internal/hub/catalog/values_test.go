package catalog_test

import (
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/misaki-io/misaki/internal/hub/catalog"
	"github.com/misaki-io/misaki/internal/hub/catalog/catalogtest"
)

// values decodes JSON the way the hub's API does (numbers are float64).
func values(t *testing.T, s string) map[string]any {
	t.Helper()
	var m map[string]any
	if err := json.Unmarshal([]byte(s), &m); err != nil {
		t.Fatalf("values %s: %v", s, err)
	}
	return m
}

func TestValidateValues(t *testing.T) {
	data, err := catalog.PackageDir(catalogtest.ShuttleChart(t))
	if err != nil {
		t.Fatal(err)
	}
	ch, err := catalog.Load(data)
	if err != nil {
		t.Fatal(err)
	}

	var golden strings.Builder
	for _, tc := range []struct {
		name   string
		layers []string
		paths  []string // failing paths the error must name; none: valid
	}{
		{name: "chart defaults"},
		{name: "overrides that fit", layers: []string{`{"replicas": 3, "image": {"tag": "2.5.0"}, "planner": {"placement": "cloud"}}`}},
		{name: "zero replicas", layers: []string{`{"replicas": 0}`}},
		{name: "negative replicas", layers: []string{`{"replicas": -1}`}, paths: []string{"/replicas"}},
		{name: "fractional replicas", layers: []string{`{"replicas": 1.5}`}, paths: []string{"/replicas"}},
		{name: "tag not a string", layers: []string{`{"image": {"tag": 5}}`}, paths: []string{"/image/tag"}},
		{name: "several problems", layers: []string{`{"replicas": "two", "planner": {"placement": "moon", "port": 70000}}`},
			paths: []string{"/replicas", "/planner/placement", "/planner/port"}},
		{name: "a later layer breaks it", layers: []string{`{"replicas": 3}`, `{"replicas": -2}`}, paths: []string{"/replicas"}},
		{name: "a later layer fixes it", layers: []string{`{"replicas": -2}`, `{"replicas": 2}`}},
		{name: "null removes a required default", layers: []string{`{"image": {"tag": null}}`}, paths: []string{"/image"}},
		{name: "nested maps merge across layers", layers: []string{`{"planner": {"image": {"tag": "x"}}}`, `{"planner": {"image": {"repository": "r"}}}`}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var layers []map[string]any
			for _, l := range tc.layers {
				layers = append(layers, values(t, l))
			}
			err := catalog.ValidateValues(ch, layers...)
			if len(tc.paths) == 0 {
				if err != nil {
					t.Fatalf("ValidateValues = %v, want nil", err)
				}
				return
			}
			var ve *catalog.ValuesError
			if !errors.As(err, &ve) {
				t.Fatalf("ValidateValues = %v, want a *ValuesError", err)
			}
			if ve.Chart != "shuttle 1.0.0" {
				t.Errorf("Chart = %q", ve.Chart)
			}
			for _, p := range tc.paths {
				if !strings.Contains(err.Error(), "'"+p+"'") {
					t.Errorf("error does not name %s:\n%v", p, err)
				}
			}
			golden.WriteString("== " + tc.name + "\n" + err.Error() + "\n")
		})
	}

	path := filepath.Join("testdata", "values-errors.golden")
	if *update {
		if err := os.WriteFile(path, []byte(golden.String()), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("%v (run with -update to write it)", err)
	}
	if diff := cmp.Diff(string(want), golden.String()); diff != "" {
		t.Errorf("value errors differ from %s (-want +got):\n%s", path, diff)
	}
}

func TestValidateValuesWithoutSchema(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "shuttle")
	if err := os.CopyFS(dir, os.DirFS(catalogtest.ShuttleChart(t))); err != nil {
		t.Fatal(err)
	}
	if err := os.Remove(filepath.Join(dir, "values.schema.json")); err != nil {
		t.Fatal(err)
	}
	data, err := catalog.PackageDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	ch, err := catalog.Load(data)
	if err != nil {
		t.Fatal(err)
	}
	if err := catalog.ValidateValues(ch, values(t, `{"replicas": -1}`)); err != nil {
		t.Fatalf("a chart without a schema refused values: %v", err)
	}
}

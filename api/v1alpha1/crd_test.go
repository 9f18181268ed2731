package v1alpha1_test

import (
	"fmt"
	"os"
	"testing"

	apiextv1 "k8s.io/apiextensions-apiserver/pkg/apis/apiextensions/v1"
	"sigs.k8s.io/yaml"
)

// TestCRDBoundsEveryStringAndList keeps the generated schema bounded, as
// the API server's CEL cost estimates and reviewers both want: every string
// has a maxLength (or an enum), every list a maxItems.
func TestCRDBoundsEveryStringAndList(t *testing.T) {
	b, err := os.ReadFile("../../config/crd/mesh.misaki.io_routes.yaml")
	if err != nil {
		t.Fatal(err)
	}
	var crd apiextv1.CustomResourceDefinition
	if err := yaml.UnmarshalStrict(b, &crd); err != nil {
		t.Fatal(err)
	}
	checked := 0
	var walk func(path string, s apiextv1.JSONSchemaProps)
	walk = func(path string, s apiextv1.JSONSchemaProps) {
		switch s.Type {
		case "string":
			checked++
			if s.MaxLength == nil && len(s.Enum) == 0 && s.Format != "date-time" {
				t.Errorf("%s: string without maxLength", path)
			}
		case "array":
			checked++
			if s.MaxItems == nil {
				t.Errorf("%s: list without maxItems", path)
			}
			if s.Items != nil && s.Items.Schema != nil {
				walk(path+"[]", *s.Items.Schema)
			}
		}
		for name, p := range s.Properties {
			if path == "" && (name == "metadata" || name == "apiVersion" || name == "kind") {
				continue // the API server's own
			}
			walk(fmt.Sprintf("%s.%s", path, name), p)
		}
	}
	for _, v := range crd.Spec.Versions {
		walk("", *v.Schema.OpenAPIV3Schema)
	}
	if checked < 40 {
		t.Fatalf("checked %d fields; is the schema there?", checked)
	}
}

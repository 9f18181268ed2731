package cli

import (
	"crypto/sha256"
	_ "embed"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"maps"
	"slices"
	"strings"

	apiextensionsv1 "k8s.io/apiextensions-apiserver/pkg/apis/apiextensions/v1"
	"sigs.k8s.io/yaml"
)

// routesCRDYAML is config/crd/mesh.misaki.io_routes.yaml as this CLI was
// built with: what misaki check compares the cluster's CRD with. Go cannot
// embed a file above the package, so this is a copy; TestEmbeddedCRDIsCurrent
// fails when it differs from config/crd (copy it after make generate).
//
//go:embed crds/mesh.misaki.io_routes.yaml
var routesCRDYAML []byte

// expectedRoutesCRD decodes routesCRDYAML.
func expectedRoutesCRD() (*apiextensionsv1.CustomResourceDefinition, error) {
	var crd apiextensionsv1.CustomResourceDefinition
	if err := yaml.UnmarshalStrict(routesCRDYAML, &crd); err != nil {
		return nil, fmt.Errorf("the embedded CRD: %w", err)
	}
	return &crd, nil
}

// schemaHash is a digest of a version's schema that does not depend on
// how it was written or stored: the schema is marshalled, decoded into
// plain maps and marshalled again, which sorts keys and spells numbers and
// embedded JSON (defaults, examples) one way. Two CRDs with the same hash
// validate, prune and default alike; descriptions count too, so the
// digest also tells apart releases that only documented a field anew.
func schemaHash(v *apiextensionsv1.CustomResourceValidation) (string, error) {
	b, err := canonicalJSON(v)
	if err != nil {
		return "", err
	}
	sum := sha256.Sum256(b)
	return "sha256:" + hex.EncodeToString(sum[:]), nil
}

func canonicalJSON(v any) ([]byte, error) {
	b, err := json.Marshal(v)
	if err != nil {
		return nil, err
	}
	var plain any
	if err := json.Unmarshal(b, &plain); err != nil {
		return nil, err
	}
	return json.Marshal(plain)
}

// schemaFields lists the field paths a schema declares, such as
// "spec.offline.grpc" ("[]" for a list's items), for telling a user which
// fields two versions of the CRD disagree on.
func schemaFields(v *apiextensionsv1.CustomResourceValidation) map[string]bool {
	out := map[string]bool{}
	if v == nil || v.OpenAPIV3Schema == nil {
		return out
	}
	var walk func(prefix string, s *apiextensionsv1.JSONSchemaProps)
	walk = func(prefix string, s *apiextensionsv1.JSONSchemaProps) {
		for name, p := range s.Properties {
			path := name
			if prefix != "" {
				path = prefix + "." + name
			}
			out[path] = true
			walk(path, &p)
		}
		if s.Items != nil && s.Items.Schema != nil {
			walk(prefix+"[]", s.Items.Schema)
		}
	}
	walk("", v.OpenAPIV3Schema)
	return out
}

// crdDifference says how the cluster's CRD differs from the one this CLI
// was built with, or "" when its versions, their served and storage flags
// and their schemas are the same.
func crdDifference(want, got *apiextensionsv1.CustomResourceDefinition) (string, error) {
	gotVersions := map[string]*apiextensionsv1.CustomResourceDefinitionVersion{}
	for i := range got.Spec.Versions {
		gotVersions[got.Spec.Versions[i].Name] = &got.Spec.Versions[i]
	}
	var problems []string
	for _, w := range want.Spec.Versions {
		g := gotVersions[w.Name]
		delete(gotVersions, w.Name)
		if g == nil {
			problems = append(problems, fmt.Sprintf("version %s is missing", w.Name))
			continue
		}
		if g.Served != w.Served || g.Storage != w.Storage {
			problems = append(problems, fmt.Sprintf("version %s is served=%t storage=%t, want served=%t storage=%t",
				w.Name, g.Served, g.Storage, w.Served, w.Storage))
		}
		wh, err := schemaHash(w.Schema)
		if err != nil {
			return "", err
		}
		gh, err := schemaHash(g.Schema)
		if err != nil {
			return "", err
		}
		if wh == gh {
			continue
		}
		wf, gf := schemaFields(w.Schema), schemaFields(g.Schema)
		var lacks, extra []string
		for f := range wf {
			if !gf[f] {
				lacks = append(lacks, f)
			}
		}
		for f := range gf {
			if !wf[f] {
				extra = append(extra, f)
			}
		}
		msg := fmt.Sprintf("version %s's schema differs (%s, want %s)", w.Name, shortDigest(gh), shortDigest(wh))
		if len(lacks) > 0 {
			msg += "; it lacks " + fieldList(lacks)
		}
		if len(extra) > 0 {
			msg += "; it has fields this CLI does not know: " + fieldList(extra)
		}
		if len(lacks) == 0 && len(extra) == 0 {
			msg += "; same fields, other validation or descriptions"
		}
		problems = append(problems, msg)
	}
	for _, name := range slices.Sorted(maps.Keys(gotVersions)) {
		problems = append(problems, fmt.Sprintf("version %s is not one this CLI knows", name))
	}
	return strings.Join(problems, "; "), nil
}

// fieldList is up to five paths, sorted, and how many more.
func fieldList(paths []string) string {
	slices.Sort(paths)
	// A missing object hides its fields: keep only the outermost.
	var top []string
	for _, p := range paths {
		if len(top) > 0 && (strings.HasPrefix(p, top[len(top)-1]+".") || strings.HasPrefix(p, top[len(top)-1]+"[]")) {
			continue
		}
		top = append(top, p)
	}
	if len(top) > 5 {
		return strings.Join(top[:5], ", ") + fmt.Sprintf(" and %d more", len(top)-5)
	}
	return strings.Join(top, ", ")
}

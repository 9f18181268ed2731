package render

import (
	"bytes"
	"errors"
	"fmt"
	"strings"

	"github.com/santhosh-tekuri/jsonschema/v6"
	chart "helm.sh/helm/v4/pkg/chart/v2"
)

// validateSchema checks values against the chart's values.schema.json and,
// for each dependency given values, the dependency's schema, as the SDK's
// util.ValidateAgainstSchema does for helm install, with the same error
// text ("- at '/api/replicas': got string, want integer"). The one
// difference: a $ref is resolved only within the schema document and
// JSON Schema's own meta-schemas (built into the validator); a $ref to an
// http, https or file URL is an error rather than a fetch, so rendering
// never reaches the network or the hub's disk. urn: refs are permissive,
// as the SDK's default resolver makes them.
func validateSchema(ch *chart.Chart, values map[string]any) error {
	var sb strings.Builder
	if len(ch.Schema) > 0 {
		if err := validateOne(values, ch.Schema); err != nil {
			fmt.Fprintf(&sb, "%s:\n%s\n", ch.Name(), err)
		}
	}
	for _, sub := range ch.Dependencies() {
		raw, ok := values[sub.Name()]
		if !ok || raw == nil {
			continue
		}
		subvals, ok := raw.(map[string]any)
		if !ok {
			fmt.Fprintf(&sb, "%s:\ninvalid type for values: expected object (map), got %T\n", sub.Name(), raw)
			continue
		}
		if err := validateSchema(sub, subvals); err != nil {
			sb.WriteString(strings.TrimPrefix(err.Error(), schemaErrPrefix))
		}
	}
	if sb.Len() > 0 {
		return errors.New(schemaErrPrefix + sb.String())
	}
	return nil
}

const schemaErrPrefix = "values don't meet the specifications of the schema(s) in the following chart(s):\n"

const schemaURL = "file:///values.schema.json"

func validateOne(values map[string]any, schemaJSON []byte) (err error) {
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("unable to validate schema: %v", r)
		}
	}()
	doc, err := jsonschema.UnmarshalJSON(bytes.NewReader(schemaJSON))
	if err != nil {
		return fmt.Errorf("values.schema.json: %w", err)
	}
	c := jsonschema.NewCompiler()
	c.UseLoader(offlineLoader{})
	if err := c.AddResource(schemaURL, doc); err != nil {
		return fmt.Errorf("values.schema.json: %w", err)
	}
	s, err := c.Compile(schemaURL)
	if err != nil {
		return fmt.Errorf("values.schema.json: %w", err)
	}
	if err := s.Validate(values); err != nil {
		msg := strings.TrimPrefix(err.Error(), "jsonschema validation failed with '"+schemaURL+"#'\n")
		return errors.New(msg)
	}
	return nil
}

// offlineLoader resolves what a schema refers to without I/O.
type offlineLoader struct{}

func (offlineLoader) Load(url string) (any, error) {
	if strings.HasPrefix(url, "urn:") {
		return true, nil // a boolean-true schema accepts anything
	}
	return nil, fmt.Errorf("%s: the renderer does not fetch schemas (only refs within values.schema.json are resolved)", url)
}

// ValidateSchema checks coalesced values against the chart's schemas (and
// its subcharts') as Render does: offline, no $ref fetched. The catalog
// uses it so a deployment's values are checked the same way at write time
// as at render time.
func ValidateSchema(ch *chart.Chart, values map[string]any) error {
	return validateSchema(ch, values)
}

package config

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"reflect"
	"strings"

	"go.yaml.in/yaml/v3"
)

// Load reads, defaults and validates the YAML file at path.
func Load(path string) (*Config, error) { return LoadWith(path, Overrides{}) }

// LoadWith is Load with settings from outside the file applied before
// defaults and validation.
func LoadWith(path string, o Overrides) (*Config, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("config: %w", err)
	}
	c, err := parse(b, o)
	if err != nil {
		return nil, fmt.Errorf("config %s: %w", path, err)
	}
	return c, nil
}

// Parse decodes YAML, rejects unknown fields (naming the closest known one),
// sets defaults and validates.
func Parse(b []byte) (*Config, error) { return parse(b, Overrides{}) }

// ParseWith is Parse with settings from outside the file applied before
// defaults and validation.
func ParseWith(b []byte, o Overrides) (*Config, error) { return parse(b, o) }

// Overrides are the settings that come from outside the file: the command
// line's and the pod's environment's, which misaki-proxy reads. This
// package reads neither.
type Overrides struct {
	// Role, when set, replaces role (the --role flag).
	Role string
	// Node is xds.node when the file sets none and names an xds.server:
	// the injected sidecar's $POD_NAMESPACE/$POD_NAME.
	Node string
}

func parse(b []byte, o Overrides) (*Config, error) {
	var doc yaml.Node
	dec := yaml.NewDecoder(bytes.NewReader(b))
	if err := dec.Decode(&doc); err != nil {
		if errors.Is(err, io.EOF) {
			return nil, errors.New("the file is empty; see docs/config.md for an example")
		}
		return nil, err
	}
	var extra yaml.Node
	if err := dec.Decode(&extra); !errors.Is(err, io.EOF) {
		return nil, errors.New("the file holds more than one YAML document; keep one")
	}
	root := &doc
	if root.Kind == yaml.DocumentNode && len(root.Content) == 1 {
		root = root.Content[0]
	}
	if root.Kind != yaml.MappingNode {
		return nil, fmt.Errorf("line %d: the top level must be a mapping (listen:, routes:, ...)", root.Line)
	}
	if err := checkFields(root, reflect.TypeFor[Config](), ""); err != nil {
		return nil, err
	}
	var c Config
	if err := root.Decode(&c); err != nil {
		return nil, err
	}
	if o.Role != "" {
		c.Role = o.Role
	}
	if o.Node != "" && c.XDS.Server != "" && c.XDS.Node == "" {
		c.XDS.Node = o.Node
	}
	if c.Gateway.VehicleServices == nil && hasKey(root, "gateway", "vehicleServices") {
		// Present with nothing under it: on, with every default.
		c.Gateway.VehicleServices = &VehicleServices{}
	}
	c.SetDefaults()
	err := c.Validate()
	if c.XDS.Server != "" && len(c.Routes) > 0 {
		err = errors.Join(err, errors.New("routes: come from the controller when xds.server is set; remove the routes or the xds block"))
	}
	if err != nil {
		return nil, err
	}
	return &c, nil
}

var unmarshalerType = reflect.TypeFor[yaml.Unmarshaler]()

// checkFields walks the YAML tree beside the Go type and reports every key
// that no field carries, with its YAML path, line, and the closest known name.
func checkFields(n *yaml.Node, t reflect.Type, path string) error {
	for t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	if reflect.PointerTo(t).Implements(unmarshalerType) {
		return nil
	}
	var errs []error
	switch {
	case t.Kind() == reflect.Struct && n.Kind == yaml.MappingNode:
		fields := map[string]reflect.Type{}
		var names []string
		for i := range t.NumField() {
			f := t.Field(i)
			name, _, _ := strings.Cut(f.Tag.Get("yaml"), ",")
			if name == "" || name == "-" {
				continue
			}
			fields[name] = f.Type
			names = append(names, name)
		}
		for i := 0; i+1 < len(n.Content); i += 2 {
			k, v := n.Content[i], n.Content[i+1]
			p := join(path, k.Value)
			ft, ok := fields[k.Value]
			if !ok {
				msg := fmt.Sprintf("%s: unknown field (line %d)", p, k.Line)
				if s := closest(k.Value, names); s != "" {
					msg += fmt.Sprintf("; did you mean %q?", s)
				} else {
					msg += fmt.Sprintf("; known fields here: %s", strings.Join(names, ", "))
				}
				errs = append(errs, errors.New(msg))
				continue
			}
			errs = append(errs, checkFields(v, ft, p))
		}
	case t.Kind() == reflect.Slice && n.Kind == yaml.SequenceNode:
		for i, e := range n.Content {
			errs = append(errs, checkFields(e, t.Elem(), fmt.Sprintf("%s[%d]", path, i)))
		}
	case t.Kind() == reflect.Struct && n.Kind != yaml.MappingNode && !isNull(n):
		errs = append(errs, fmt.Errorf("%s: want a mapping (line %d)", path, n.Line))
	case t.Kind() == reflect.Slice && n.Kind != yaml.SequenceNode && !isNull(n):
		errs = append(errs, fmt.Errorf("%s: want a list (line %d); write it like [a, b]", path, n.Line))
	}
	return errors.Join(errs...)
}

// hasKey reports whether the mapping n has the key path, whatever its value.
func hasKey(n *yaml.Node, path ...string) bool {
	for _, k := range path {
		if n.Kind != yaml.MappingNode {
			return false
		}
		var next *yaml.Node
		for i := 0; i+1 < len(n.Content); i += 2 {
			if n.Content[i].Value == k {
				next = n.Content[i+1]
			}
		}
		if next == nil {
			return false
		}
		n = next
	}
	return true
}

func isNull(n *yaml.Node) bool { return n.Kind == yaml.ScalarNode && n.Tag == "!!null" }

func join(path, key string) string {
	if path == "" {
		return key
	}
	return path + "." + key
}

// closest returns the known name nearest to s (case-insensitive match or edit
// distance at most 2), or "".
func closest(s string, names []string) string {
	best, bestD := "", 3
	for _, n := range names {
		if strings.EqualFold(n, s) {
			return n
		}
		if d := editDistance(strings.ToLower(s), strings.ToLower(n)); d < bestD {
			best, bestD = n, d
		}
	}
	return best
}

func editDistance(a, b string) int {
	prev := make([]int, len(b)+1)
	cur := make([]int, len(b)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(a); i++ {
		cur[0] = i
		for j := 1; j <= len(b); j++ {
			cost := 1
			if a[i-1] == b[j-1] {
				cost = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+cost)
		}
		prev, cur = cur, prev
	}
	return prev[len(b)]
}

// DecodeRouteNode decodes one entry of routes: from a YAML tree, parsed
// from text (the xDS client's cache) or built from another source of the
// same shape (the xDS client's TypedStruct), rejecting fields no route
// has. It sets no defaults; WithRoutes does.
func DecodeRouteNode(n *yaml.Node) (Route, error) {
	if n.Kind == yaml.DocumentNode && len(n.Content) == 1 {
		n = n.Content[0]
	}
	if n.Kind != yaml.MappingNode {
		return Route{}, errors.New("a route must be a mapping")
	}
	if err := checkFields(n, reflect.TypeFor[Route](), ""); err != nil {
		return Route{}, err
	}
	var r Route
	if err := n.Decode(&r); err != nil {
		return Route{}, err
	}
	return r, nil
}

// WithRoutes returns a copy of c whose routes are routes, with defaults set
// and validated as if they had been in the file. c must have been loaded
// (defaults set); routes are not modified.
func (c *Config) WithRoutes(routes []Route) (*Config, error) {
	n := *c
	if v := c.Gateway.VehicleServices; v != nil {
		vc := *v
		n.Gateway.VehicleServices = &vc
	}
	n.Routes = make([]Route, len(routes))
	for i, r := range routes {
		n.Routes[i] = r.clone()
	}
	n.SetDefaults()
	if err := n.Validate(); err != nil {
		return nil, err
	}
	return &n, nil
}

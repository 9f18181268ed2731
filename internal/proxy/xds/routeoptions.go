package xds

import (
	"fmt"
	"maps"
	"math"
	"slices"
	"strconv"

	"go.yaml.in/yaml/v3"
	"google.golang.org/protobuf/types/known/structpb"

	"github.com/misaki-io/misaki/internal/proxy/config"
)

// The route options are the fields of a route that Envoy's resources have
// no place for (upstream URL and TLS, the response-header and idle
// timeouts, limits, probe, offline policy). They travel in the virtual
// host's typed_per_filter_config under RouteOptionsKey, as a TypedStruct
// whose value is shaped like an entry of routes: in the proxy's file with
// the fields the route sets, such as
//
//	{"upstream": "https://gw.example.com:8443",
//	 "offline": {"hold": "30s", "spool": true, "quota": {"bytes": "64MiB"}}}
//
// The controller writes them with RouteOptions and the proxy reads them
// with decodeRouteOptions. Both go through the route model's YAML tree
// (config.Route's yaml tags, its Duration and ByteSize forms), so they
// agree by construction, and a proxy reads the options exactly as strictly
// as its file.

// RouteOptions is the TypedStruct value for r: r as in the proxy's file,
// less the fields the virtual host, its route entries and its cluster
// carry (name, hosts, matches, timeouts.connect and timeouts.request).
// Durations are strings ("30s"), sizes strings with a unit ("64MiB").
func RouteOptions(r config.Route) (*structpb.Struct, error) {
	r.Name, r.Hosts, r.Matches = "", nil, nil
	r.Timeouts.Connect, r.Timeouts.Request = 0, 0
	var n yaml.Node
	if err := n.Encode(r); err != nil {
		return nil, err
	}
	v, err := protoValue(&n)
	if err != nil {
		return nil, fmt.Errorf("route options: %w", err)
	}
	return v.GetStructValue(), nil
}

// decodeRouteOptions is the route that a TypedStruct's value carries.
func decodeRouteOptions(s *structpb.Struct) (config.Route, error) {
	return config.DecodeRouteNode(yamlNode(structpb.NewStructValue(s)))
}

// protoValue is the protobuf value of a YAML tree: a mapping as a Struct,
// a sequence as a list, a scalar by its tag.
func protoValue(n *yaml.Node) (*structpb.Value, error) {
	switch n.Kind {
	case yaml.MappingNode:
		s := &structpb.Struct{Fields: make(map[string]*structpb.Value, len(n.Content)/2)}
		for i := 0; i+1 < len(n.Content); i += 2 {
			v, err := protoValue(n.Content[i+1])
			if err != nil {
				return nil, err
			}
			s.Fields[n.Content[i].Value] = v
		}
		return structpb.NewStructValue(s), nil
	case yaml.SequenceNode:
		l := &structpb.ListValue{Values: make([]*structpb.Value, len(n.Content))}
		for i, e := range n.Content {
			v, err := protoValue(e)
			if err != nil {
				return nil, err
			}
			l.Values[i] = v
		}
		return structpb.NewListValue(l), nil
	case yaml.ScalarNode:
		switch n.ShortTag() {
		case "!!str":
			return structpb.NewStringValue(n.Value), nil
		case "!!bool":
			b, err := strconv.ParseBool(n.Value)
			return structpb.NewBoolValue(b), err
		case "!!int", "!!float":
			var f float64
			err := n.Decode(&f)
			return structpb.NewNumberValue(f), err
		case "!!null":
			return structpb.NewNullValue(), nil
		}
	}
	return nil, fmt.Errorf("YAML tag %s has no protobuf value", n.ShortTag())
}

// yamlNode is the YAML tree of a protobuf value, the inverse of
// protoValue: a whole number is an !!int, a string always an !!str.
func yamlNode(v *structpb.Value) *yaml.Node {
	switch k := v.GetKind().(type) {
	case *structpb.Value_StructValue:
		n := &yaml.Node{Kind: yaml.MappingNode, Tag: "!!map"}
		fields := k.StructValue.GetFields()
		for _, key := range slices.Sorted(maps.Keys(fields)) {
			n.Content = append(n.Content, &yaml.Node{Kind: yaml.ScalarNode, Tag: "!!str", Value: key}, yamlNode(fields[key]))
		}
		return n
	case *structpb.Value_ListValue:
		n := &yaml.Node{Kind: yaml.SequenceNode, Tag: "!!seq"}
		for _, e := range k.ListValue.GetValues() {
			n.Content = append(n.Content, yamlNode(e))
		}
		return n
	case *structpb.Value_StringValue:
		return &yaml.Node{Kind: yaml.ScalarNode, Tag: "!!str", Value: k.StringValue}
	case *structpb.Value_BoolValue:
		return &yaml.Node{Kind: yaml.ScalarNode, Tag: "!!bool", Value: strconv.FormatBool(k.BoolValue)}
	case *structpb.Value_NumberValue:
		if f := k.NumberValue; f == math.Trunc(f) && math.Abs(f) < 1<<63 {
			return &yaml.Node{Kind: yaml.ScalarNode, Tag: "!!int", Value: strconv.FormatInt(int64(f), 10)}
		}
		return &yaml.Node{Kind: yaml.ScalarNode, Tag: "!!float", Value: strconv.FormatFloat(k.NumberValue, 'g', -1, 64)}
	default:
		return &yaml.Node{Kind: yaml.ScalarNode, Tag: "!!null", Value: "null"}
	}
}

package controller

import (
	"bytes"
	"testing"

	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	"github.com/envoyproxy/go-control-plane/pkg/cache/types"
	cachev3 "github.com/envoyproxy/go-control-plane/pkg/cache/v3"
	"github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"google.golang.org/protobuf/proto"

	meshv1 "github.com/misaki-io/misaki/api/v1alpha1"
	"github.com/misaki-io/misaki/internal/controller/translate"
)

// TestPremarshalSameWire: a premarshalled resource encodes to the bytes
// of the original, decodes to an equal message, and keeps its name for the
// cache; the snapshot built from it is consistent.
func TestPremarshalSameWire(t *testing.T) {
	out := translate.Namespace(translate.Input{Namespace: "apps", Routes: []meshv1.Route{{
		Spec: meshv1.RouteSpec{Hosts: []meshv1.Host{"a.mesh"}, Destination: meshv1.Destination{URL: "http://10.0.0.1:80"},
			Offline: &meshv1.Offline{Hold: "30s", Links: []meshv1.LinkClass{"wifi"}}}}}})
	out.Resources[resource.RouteType][0].(*routev3.RouteConfiguration).Name = "misaki-routes"
	opts := proto.MarshalOptions{Deterministic: true}
	for _, typ := range []resource.Type{resource.RouteType, resource.EndpointType} {
		for _, r := range out.Resources[typ] {
			p, err := premarshal(r)
			if err != nil {
				t.Fatal(err)
			}
			want, _ := opts.Marshal(r)
			got, _ := opts.Marshal(p)
			if !bytes.Equal(got, want) {
				t.Errorf("%s: premarshalled bytes differ", typ)
			}
			back := r.ProtoReflect().New().Interface()
			if err := proto.Unmarshal(got, back); err != nil || !proto.Equal(back, r) {
				t.Errorf("%s: decodes to a different message (%v)", typ, err)
			}
			if types.Resource(p) == nil || cachev3.GetResourceName(p) != cachev3.GetResourceName(r) || cachev3.GetResourceName(r) == "" {
				t.Errorf("%s: name %q, want %q", typ, cachev3.GetResourceName(p), cachev3.GetResourceName(r))
			}
		}
	}
	snap, err := newSnapshot(out.Resources)
	if err != nil {
		t.Fatal(err)
	}
	if err := snap.Consistent(); err != nil {
		t.Errorf("snapshot of premarshalled resources: %v", err)
	}
}

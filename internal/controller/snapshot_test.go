package controller

import (
	"bytes"
	"testing"

	"github.com/envoyproxy/go-control-plane/pkg/cache/types"
	cachev3 "github.com/envoyproxy/go-control-plane/pkg/cache/v3"
	"github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"google.golang.org/protobuf/proto"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	meshv1 "github.com/misaki-io/misaki/api/v1alpha1"
	"github.com/misaki-io/misaki/internal/controller/translate"
)

// TestPremarshalSameWire: a premarshalled resource encodes to the bytes
// of the original, decodes to an equal message, and keeps its name for the
// cache; the snapshot built from it is consistent.
func TestPremarshalSameWire(t *testing.T) {
	ready := true
	port := int32(9000)
	out := translate.Namespace(translate.Input{Namespace: "apps",
		Routes: []meshv1.Route{
			{ObjectMeta: metav1.ObjectMeta{Name: "gw"}, Spec: meshv1.RouteSpec{Hosts: []meshv1.Host{"a.mesh"},
				Destination: meshv1.Destination{URL: "http://10.0.0.1:80"},
				Offline:     &meshv1.Offline{Hold: "30s", Links: []meshv1.LinkClass{"wifi"}}}},
			{ObjectMeta: metav1.ObjectMeta{Name: "svc"}, Spec: meshv1.RouteSpec{Hosts: []meshv1.Host{"b.mesh"},
				Destination: meshv1.Destination{Service: &meshv1.ServiceDestination{Name: "b", Port: 80}}}},
		},
		Services: []corev1.Service{{ObjectMeta: metav1.ObjectMeta{Name: "b", Namespace: "apps"},
			Spec: corev1.ServiceSpec{Ports: []corev1.ServicePort{{Name: "http", Port: 80}}}}},
		Slices: []discoveryv1.EndpointSlice{{ObjectMeta: metav1.ObjectMeta{Name: "b-1", Namespace: "apps", Labels: map[string]string{discoveryv1.LabelServiceName: "b"}},
			Ports:     []discoveryv1.EndpointPort{{Name: &[]string{"http"}[0], Port: &port}},
			Endpoints: []discoveryv1.Endpoint{{Addresses: []string{"10.1.0.5"}, Conditions: discoveryv1.EndpointConditions{Ready: &ready}}}}},
	})
	opts := proto.MarshalOptions{Deterministic: true}
	for _, typ := range []resource.Type{resource.RouteType, resource.EndpointType} {
		if len(out.Resources[typ]) == 0 {
			t.Fatalf("no %s to premarshal", typ)
		}
		for _, r := range out.Resources[typ] {
			want, _ := opts.Marshal(r)
			p := premarshal(r, want)
			if p == r {
				t.Fatalf("%s: not premarshalled", typ)
			}
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

// Package v1alpha1 is the mesh.misaki.io/v1alpha1 API: the Route kind, which
// maps mesh host names to a destination with the offline policy the proxy
// applies when no usable link exists (docs/control-plane.md).
//
// The field names of the offline policy, probe, timeouts and limits are the
// ones of the proxy's YAML file (docs/config.md), so a route reads the same
// as a Kubernetes object and in a file.
//
// +kubebuilder:object:generate=true
// +groupName=mesh.misaki.io
package v1alpha1

import (
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
)

var (
	// GroupVersion is the API's group and version.
	GroupVersion = schema.GroupVersion{Group: "mesh.misaki.io", Version: "v1alpha1"}

	// SchemeBuilder registers the API's kinds with a scheme.
	SchemeBuilder = runtime.NewSchemeBuilder(addKnownTypes)

	// AddToScheme adds the API's kinds to a scheme.
	AddToScheme = SchemeBuilder.AddToScheme
)

// addKnownTypes registers Route and RouteList under GroupVersion, with the
// meta/v1 options types (ListOptions and the rest) a client sends with them.
func addKnownTypes(s *runtime.Scheme) error {
	s.AddKnownTypes(GroupVersion, &Route{}, &RouteList{})
	metav1.AddToGroupVersion(s, GroupVersion)
	return nil
}

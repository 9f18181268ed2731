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
	"k8s.io/apimachinery/pkg/runtime/schema"
	"sigs.k8s.io/controller-runtime/pkg/scheme"
)

var (
	// GroupVersion is the API's group and version.
	GroupVersion = schema.GroupVersion{Group: "mesh.misaki.io", Version: "v1alpha1"}

	// SchemeBuilder registers the API's kinds with a scheme.
	SchemeBuilder = &scheme.Builder{GroupVersion: GroupVersion}

	// AddToScheme adds the API's kinds to a scheme.
	AddToScheme = SchemeBuilder.AddToScheme
)

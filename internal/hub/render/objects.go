package render

import (
	"bytes"
	"fmt"
	"maps"
	"sort"
	"strings"

	releaseutil "helm.sh/helm/v4/pkg/release/v1/util"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	utiljson "k8s.io/apimachinery/pkg/util/json"
	"sigs.k8s.io/yaml"
)

// builtinClusterScoped are the cluster-scoped kinds Render knows without a
// cluster to ask (helm asks the API server's RESTMapper instead). An object
// of any other kind is namespaced, unless the render itself defines its
// kind with a CustomResourceDefinition whose spec.scope is Cluster. A
// cluster-scoped kind missing here would wrongly get the release
// namespace; an object that sets metadata.namespace itself is never
// changed.
var builtinClusterScoped = map[schema.GroupKind]bool{
	{Group: "", Kind: "Namespace"}:                                                    true,
	{Group: "", Kind: "Node"}:                                                         true,
	{Group: "", Kind: "PersistentVolume"}:                                             true,
	{Group: "apiextensions.k8s.io", Kind: "CustomResourceDefinition"}:                 true,
	{Group: "apiregistration.k8s.io", Kind: "APIService"}:                             true,
	{Group: "rbac.authorization.k8s.io", Kind: "ClusterRole"}:                         true,
	{Group: "rbac.authorization.k8s.io", Kind: "ClusterRoleBinding"}:                  true,
	{Group: "scheduling.k8s.io", Kind: "PriorityClass"}:                               true,
	{Group: "storage.k8s.io", Kind: "StorageClass"}:                                   true,
	{Group: "storage.k8s.io", Kind: "CSIDriver"}:                                      true,
	{Group: "storage.k8s.io", Kind: "CSINode"}:                                        true,
	{Group: "storage.k8s.io", Kind: "VolumeAttachment"}:                               true,
	{Group: "admissionregistration.k8s.io", Kind: "ValidatingWebhookConfiguration"}:   true,
	{Group: "admissionregistration.k8s.io", Kind: "MutatingWebhookConfiguration"}:     true,
	{Group: "admissionregistration.k8s.io", Kind: "ValidatingAdmissionPolicy"}:        true,
	{Group: "admissionregistration.k8s.io", Kind: "ValidatingAdmissionPolicyBinding"}: true,
	{Group: "networking.k8s.io", Kind: "IngressClass"}:                                true,
	{Group: "node.k8s.io", Kind: "RuntimeClass"}:                                      true,
	{Group: "certificates.k8s.io", Kind: "CertificateSigningRequest"}:                 true,
	{Group: "flowcontrol.apiserver.k8s.io", Kind: "FlowSchema"}:                       true,
	{Group: "flowcontrol.apiserver.k8s.io", Kind: "PriorityLevelConfiguration"}:       true,
}

// ClusterScoped reports whether Render treats objects of gk as
// cluster-scoped when no CRD in the render says otherwise.
func ClusterScoped(gk schema.GroupKind) bool { return builtinClusterScoped[gk] }

// clusterScoped returns the built-in cluster-scoped kinds plus the kinds
// that CRDs among objs define with scope Cluster.
func clusterScoped(objs []*unstructured.Unstructured) map[schema.GroupKind]bool {
	scopes := builtinClusterScoped
	for _, o := range objs {
		if o.GroupVersionKind().GroupKind() != (schema.GroupKind{Group: "apiextensions.k8s.io", Kind: "CustomResourceDefinition"}) {
			continue
		}
		scope, _, _ := unstructured.NestedString(o.Object, "spec", "scope")
		group, _, _ := unstructured.NestedString(o.Object, "spec", "group")
		kind, _, _ := unstructured.NestedString(o.Object, "spec", "names", "kind")
		if scope != "Cluster" || kind == "" {
			continue
		}
		if len(scopes) == len(builtinClusterScoped) {
			scopes = maps.Clone(builtinClusterScoped)
		}
		scopes[schema.GroupKind{Group: group, Kind: kind}] = true
	}
	return scopes
}

// finish gives a namespaced object without a namespace the release
// namespace, and sets Misaki's labels.
func finish(obj *unstructured.Unstructured, clusterScoped map[schema.GroupKind]bool, release, namespace string) {
	if obj.GetNamespace() == "" && !clusterScoped[obj.GroupVersionKind().GroupKind()] {
		obj.SetNamespace(namespace)
	}
	labels := obj.GetLabels()
	if labels == nil {
		labels = map[string]string{}
	}
	labels[LabelManagedBy] = ManagedBy
	labels[LabelDeployment] = release
	obj.SetLabels(labels)
}

// parseManifests parses the YAML documents of one rendered file (or CRD
// file) into objects, skipping empty documents. Each object must have
// apiVersion, kind and metadata.name; errors name the file.
func parseManifests(file, content string) ([]*unstructured.Unstructured, error) {
	docs := releaseutil.SplitManifests(content)
	keys := make([]string, 0, len(docs))
	for k := range docs {
		keys = append(keys, k)
	}
	sort.Sort(releaseutil.BySplitManifestsOrder(keys))

	var out []*unstructured.Unstructured
	for _, k := range keys {
		j, err := yaml.YAMLToJSON([]byte(docs[k]))
		if err != nil {
			return nil, fmt.Errorf("%s: YAML does not parse: %w", file, err)
		}
		if j = bytes.TrimSpace(j); bytes.Equal(j, []byte("null")) {
			continue // only comments, or nothing
		}
		if j[0] != '{' {
			return nil, fmt.Errorf("%s: a document is not a YAML mapping (a Kubernetes object): %.60q", file, docs[k])
		}
		var m map[string]any
		// apimachinery's json keeps integers as int64, as unstructured does.
		if err := utiljson.Unmarshal(j, &m); err != nil {
			return nil, fmt.Errorf("%s: %w", file, err)
		}
		obj := &unstructured.Unstructured{Object: m}
		if err := checkObject(obj); err != nil {
			return nil, fmt.Errorf("%s: %w", file, err)
		}
		out = append(out, obj)
	}
	return out, nil
}

// checkObject reports an object without apiVersion, kind or metadata.name.
func checkObject(obj *unstructured.Unstructured) error {
	for _, f := range [][]string{{"apiVersion"}, {"kind"}, {"metadata", "name"}} {
		v, found, err := unstructured.NestedFieldNoCopy(obj.Object, f...)
		s, ok := v.(string)
		if err != nil || !found || !ok || s == "" {
			return fmt.Errorf("%s has no %s (every object needs apiVersion, kind and metadata.name)", describe(obj), strings.Join(f, "."))
		}
	}
	return nil
}

// describe names an object as well as its fields allow.
func describe(obj *unstructured.Unstructured) string {
	kind, _ := obj.Object["kind"].(string)
	name, _, _ := unstructured.NestedString(obj.Object, "metadata", "name")
	switch {
	case kind != "" && name != "":
		return fmt.Sprintf("%s %q", kind, name)
	case kind != "":
		return "a " + kind
	case name != "":
		return fmt.Sprintf("object %q", name)
	}
	return "an object"
}

// checkDuplicates reports two objects with the same group, kind,
// namespace and name: applying both would keep only one.
func checkDuplicates(objs []*unstructured.Unstructured) error {
	seen := make(map[string]bool, len(objs))
	for _, o := range objs {
		gk := o.GroupVersionKind().GroupKind()
		id := gk.String() + " " + o.GetNamespace() + "/" + o.GetName()
		if seen[id] {
			return fmt.Errorf("two objects are %s %s/%s", gk, o.GetNamespace(), o.GetName())
		}
		seen[id] = true
	}
	return nil
}

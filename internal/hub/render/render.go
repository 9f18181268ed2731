// Package render turns a Helm chart, a vehicle's values and the vehicle's
// facts into the Kubernetes objects the vehicle should run (issue 17, item 5).
//
// It follows the steps `helm install` takes (helm.sh/helm/v4 pkg/action
// install.go) without a cluster: the chart archive is loaded with the SDK,
// value layers are merged as several -f files are, dependencies are
// enabled or disabled by their conditions and tags, the merged values are
// checked against the chart's values.schema.json, the chart's kubeVersion
// constraint is checked, and the templates are executed by the SDK's
// engine with the vehicle's Kubernetes version and API versions as
// .Capabilities (as `helm template --kube-version --api-versions` does).
// The rendered manifests are split and ordered with the SDK's
// SortManifests in InstallOrder; CRDs from crds/ come first, test hooks
// are dropped, other hooks are returned apart, and NOTES.txt becomes
// Output.Notes.
//
// Rendering is pure: no cluster, no network (the `lookup` template
// function sees an empty cluster, getHostByName answers "", and a schema
// $ref to an http, https or file URL is an error instead of a fetch), no
// disk. The same Input always gives the same Output, provided the chart's
// templates are deterministic (a chart that calls randAlphaNum or now is
// not, and the Cache then pins the first answer).
//
// Cache memoizes Render by (chart digest, release, namespace, value
// layers, capabilities), so thousands of alike vehicles cost one render.
package render

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"slices"
	"strings"

	"helm.sh/helm/v4/pkg/chart/common"
	"helm.sh/helm/v4/pkg/chart/common/util"
	chart "helm.sh/helm/v4/pkg/chart/v2"
	"helm.sh/helm/v4/pkg/chart/v2/loader"
	chartutil "helm.sh/helm/v4/pkg/chart/v2/util"
	"helm.sh/helm/v4/pkg/engine"
	release "helm.sh/helm/v4/pkg/release/v1"
	releaseutil "helm.sh/helm/v4/pkg/release/v1/util"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/util/validation"

	hubv1 "github.com/misaki-io/misaki/api/hub/v1"
)

// Labels Render sets on every object and hook (a value the chart gave
// them is replaced). Annotations are left as the chart wrote them.
const (
	LabelManagedBy  = "app.kubernetes.io/managed-by"
	ManagedBy       = "misaki"
	LabelDeployment = "misaki.io/deployment"
)

// DefaultNamespace is the release namespace when Input.Namespace is empty,
// as it is for helm with no namespace configured.
const DefaultNamespace = "default"

// Input is one render request.
type Input struct {
	// Chart is the chart archive (.tgz) bytes.
	Chart []byte
	// Digest is "sha256:<hex>" of Chart. Render checks it when it is set;
	// Cache uses it as the chart's part of the key (and computes it when
	// it is empty).
	Digest string
	// Release is the release name (the hub's deployment name); it must be
	// a valid Helm release name.
	Release string
	// Namespace is the release namespace ("" means DefaultNamespace).
	Namespace string
	// Layers are value layers merged in order over the chart's defaults:
	// the deployment's values, then each matching customization's. A later
	// layer wins; maps merge key by key, anything else is replaced; a null
	// deletes the key from the chart's defaults (Helm's semantics for
	// several -f files). Render does not modify them.
	Layers []map[string]any
	// Facts supply .Capabilities: KubernetesVersion ("v1.37.2"; "" means
	// the SDK's default, which is the Kubernetes minor the SDK was built
	// against, v1.37.0 here, and v1.20.0 under `go test`) and APIVersions
	// (added to the SDK's built-in set). The other facts do not affect
	// rendering.
	Facts hubv1.Facts
}

// Output is a rendered release. An Output returned by a Cache is shared by
// every caller that asked for the same key: callers must not modify it
// (use DeepCopyObjects for objects to change).
type Output struct {
	// Objects are what the agent applies: the CRDs from the chart's crds/
	// directories first (in chart file order, parent chart before
	// subcharts; Helm installs them before anything else and never
	// templates them), then the templates' objects in Helm's InstallOrder
	// (by kind, then template path, then position in the file; kinds Helm
	// does not know come last, by kind name). Each namespaced object without a
	// namespace has the release namespace, and every object has the
	// LabelManagedBy and LabelDeployment labels.
	Objects []*unstructured.Unstructured
	// Hooks are the chart's non-test hooks (helm.sh/hook: pre-install and
	// so on), ordered as Helm runs them (weight, then name), with the same
	// namespace and labels as Objects. They are not in Objects, and the
	// agent does not run them in this version; they are returned so the
	// hub can show them. Test hooks (only the test event) are dropped, and
	// so, as helm does, are hooks with an event helm does not know.
	Hooks []*unstructured.Unstructured
	// Values are the merged values the templates saw (chart defaults and
	// layers, coalesced).
	Values map[string]any
	// Notes is the chart's rendered templates/NOTES.txt (subcharts' notes
	// are not included, as helm install does by default).
	Notes string
}

// DeepCopyObjects returns copies of o.Objects that the caller may modify.
func (o *Output) DeepCopyObjects() []*unstructured.Unstructured {
	out := make([]*unstructured.Unstructured, len(o.Objects))
	for i, obj := range o.Objects {
		out[i] = obj.DeepCopy()
	}
	return out
}

// Render renders in.Chart for one release with in.Layers and in.Facts.
// Errors name what is wrong: the Input field, the value path that fails
// the chart's schema, or the template file that fails to execute or
// yields an object that does not parse or lacks apiVersion, kind or
// metadata.name.
func Render(in Input) (*Output, error) {
	ns := in.Namespace
	if ns == "" {
		ns = DefaultNamespace
	}
	if err := chartutil.ValidateReleaseName(in.Release); err != nil {
		return nil, fmt.Errorf("render: Input.Release %q: %w", in.Release, err)
	}
	if errs := validation.IsDNS1123Label(ns); len(errs) > 0 {
		return nil, fmt.Errorf("render: Input.Namespace %q: %s", ns, strings.Join(errs, "; "))
	}
	if in.Digest != "" {
		if got := Digest(in.Chart); got != in.Digest {
			return nil, fmt.Errorf("render: Input.Digest is %s but the chart's bytes have %s", in.Digest, got)
		}
	}
	caps, err := capabilities(in.Facts)
	if err != nil {
		return nil, err
	}

	ch, err := loader.LoadArchive(bytes.NewReader(in.Chart))
	if err != nil {
		return nil, fmt.Errorf("render: load chart archive: %w", err)
	}
	name := ch.Name()
	if c := ch.Metadata.KubeVersion; c != "" && !chartutil.IsCompatibleRange(c, caps.KubeVersion.String()) {
		return nil, fmt.Errorf("render: chart %s requires kubeVersion %s, which Kubernetes %s (Facts.KubernetesVersion) does not meet",
			name, c, caps.KubeVersion.Version)
	}

	if ch.Metadata.Type == "library" {
		return nil, fmt.Errorf("render: chart %s is a library chart, which is not installable", name)
	}
	// helm install refuses a chart whose Chart.yaml names a dependency
	// that its charts/ directory does not have (action.CheckDependencies).
	for _, d := range ch.Metadata.Dependencies {
		if !slices.ContainsFunc(ch.Dependencies(), func(c *chart.Chart) bool { return c.Name() == d.Name }) {
			return nil, fmt.Errorf("render: chart %s: dependency %s is in Chart.yaml but missing from charts/", name, d.Name)
		}
	}

	vals := mergeLayers(in.Layers)
	if err := chartutil.ProcessDependencies(ch, vals); err != nil {
		return nil, fmt.Errorf("render: chart %s: dependencies: %w", name, err)
	}
	opts := common.ReleaseOptions{Name: in.Release, Namespace: ns, Revision: 1, IsInstall: true}
	// Schema validation is ours (validateSchema), not the SDK's, which would
	// follow a schema's http(s) and file $refs.
	top, err := util.ToRenderValuesWithSchemaValidation(ch, vals, opts, caps, true)
	if err != nil {
		return nil, fmt.Errorf("render: chart %s: values: %w", name, err)
	}
	coalesced, _ := top["Values"].(common.Values)
	if err := validateSchema(ch, coalesced); err != nil {
		return nil, fmt.Errorf("render: chart %s: %w", name, err)
	}

	// The zero Engine has no cluster: lookup answers an empty map, and
	// DNS lookups are off.
	files, err := engine.Engine{}.RenderWithContext(context.Background(), ch, top)
	if err != nil {
		return nil, fmt.Errorf("render: chart %s: templates: %w", name, err)
	}
	notes := files[name+"/templates/NOTES.txt"]
	for f := range files {
		if strings.HasSuffix(f, "/NOTES.txt") {
			delete(files, f)
		}
	}
	hooks, manifests, err := releaseutil.SortManifests(files, nil, releaseutil.InstallOrder)
	if err != nil {
		return nil, fmt.Errorf("render: chart %s: %w", name, err)
	}

	out := &Output{Values: map[string]any(coalesced), Notes: notes}
	for _, crd := range ch.CRDObjects() {
		objs, err := parseManifests(crd.Filename, string(crd.File.Data))
		if err != nil {
			return nil, fmt.Errorf("render: chart %s: %w", name, err)
		}
		out.Objects = append(out.Objects, objs...)
	}
	for _, m := range manifests {
		objs, err := parseManifests(m.Name, m.Content)
		if err != nil {
			return nil, fmt.Errorf("render: chart %s: %w", name, err)
		}
		out.Objects = append(out.Objects, objs...)
	}
	slices.SortStableFunc(hooks, func(a, b *release.Hook) int {
		if a.Weight != b.Weight {
			return a.Weight - b.Weight
		}
		return strings.Compare(a.Name, b.Name)
	})
	for _, h := range hooks {
		if isTestHook(h) {
			continue
		}
		objs, err := parseManifests(h.Path, h.Manifest)
		if err != nil {
			return nil, fmt.Errorf("render: chart %s: hook: %w", name, err)
		}
		out.Hooks = append(out.Hooks, objs...)
	}

	scopes := clusterScoped(out.Objects)
	for _, obj := range slices.Concat(out.Objects, out.Hooks) {
		finish(obj, scopes, in.Release, ns)
	}
	if err := checkDuplicates(out.Objects); err != nil {
		return nil, fmt.Errorf("render: chart %s: %w", name, err)
	}
	return out, nil
}

// Digest returns "sha256:<hex>" of a chart archive's bytes, the form
// Input.Digest and hubv1.ChartVersion.Digest have.
func Digest(archive []byte) string {
	sum := sha256.Sum256(archive)
	return "sha256:" + hex.EncodeToString(sum[:])
}

// capabilities builds .Capabilities from a vehicle's facts as helm
// template does from --kube-version and --api-versions: the SDK's
// defaults, the kube version replaced, the API versions appended. The API
// versions added are sorted and deduplicated, so facts that list the same
// set render the same (the Cache keys on the sorted set).
func capabilities(f hubv1.Facts) (*common.Capabilities, error) {
	caps := common.DefaultCapabilities.Copy()
	if f.KubernetesVersion != "" {
		kv, err := common.ParseKubeVersion(f.KubernetesVersion)
		if err != nil {
			return nil, fmt.Errorf("render: Facts.KubernetesVersion %q: %w", f.KubernetesVersion, err)
		}
		caps.KubeVersion = *kv
	}
	// A fresh slice: DefaultCapabilities' set is shared by every render.
	caps.APIVersions = slices.Concat(caps.APIVersions, sortedSet(f.APIVersions))
	return caps, nil
}

// sortedSet returns the distinct non-empty strings of s, sorted.
func sortedSet(s []string) []string {
	out := slices.DeleteFunc(slices.Clone(s), func(v string) bool { return v == "" })
	slices.Sort(out)
	return slices.Compact(out)
}

// mergeLayers merges value layers as helm does with several -f files
// (pkg/cli/values: loader.MergeMaps in order). Nulls stay in the result;
// coalescing with the chart's defaults then deletes those keys. The layers
// are deep-copied first, so nothing downstream can modify the caller's
// maps.
func mergeLayers(layers []map[string]any) map[string]any {
	vals := map[string]any{}
	for _, l := range layers {
		if l != nil {
			vals = loader.MergeMaps(vals, deepCopy(l).(map[string]any))
		}
	}
	return vals
}

// deepCopy copies the maps and slices of a values tree; other values
// (scalars) are shared.
func deepCopy(v any) any {
	switch v := v.(type) {
	case map[string]any:
		m := make(map[string]any, len(v))
		for k, e := range v {
			m[k] = deepCopy(e)
		}
		return m
	case []any:
		s := make([]any, len(v))
		for i, e := range v {
			s[i] = deepCopy(e)
		}
		return s
	default:
		return v
	}
}

// isTestHook reports whether a hook runs only for helm test.
func isTestHook(h *release.Hook) bool {
	return len(h.Events) > 0 && !slices.ContainsFunc(h.Events, func(e release.HookEvent) bool {
		return e != release.HookTest
	})
}

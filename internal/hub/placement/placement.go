// Package placement splits a vehicle's rendered deployments into the part
// that runs on the vehicle and the part that runs in the cloud, component
// by component, and connects the two halves with mesh Routes. It is pure:
// objects in, objects and a placement table out, no I/O.
//
// # Components
//
// A component is a workload (apps Deployment, StatefulSet, DaemonSet, batch
// Job, CronJob) and the objects it uses. Its name is the workload's
// misaki.io/component annotation, else the workload's name; workloads with
// the same name form one component. Another object joins component X when
// it carries misaki.io/component: X (even if no workload has that name:
// then X is a component without workloads). Otherwise, in the object's
// namespace:
//
//   - a Service joins the components whose pod template labels its
//     selector matches (a Service without a selector joins none);
//   - a ConfigMap or Secret joins the components whose pod spec uses it:
//     configMap, secret and projected volumes, env valueFrom, envFrom, and,
//     for Secrets, imagePullSecrets (of app, init and ephemeral containers);
//   - a PersistentVolumeClaim joins those that mount it as a
//     persistentVolumeClaim volume (a StatefulSet's volumeClaimTemplates are
//     part of the StatefulSet);
//   - a ServiceAccount joins those that run as it (serviceAccountName).
//
// An object can be in several components. Objects in none (RBAC, CRDs,
// Namespaces, Ingresses, anything else) and built-in cluster-scoped
// objects, annotated or not, go to the vehicle half: the cloud half is a
// single namespace, and a chart must not grant itself rights in the shared
// cloud cluster. A cloud component that needs the Kubernetes API gets its
// RBAC from the cloud's operator.
//
// # Requests
//
// A component's requests are the sum over its workloads of the pod's
// effective requests (as the scheduler counts them: containers' requests,
// limits standing in for missing requests, init and sidecar containers,
// pod-level resources, overhead) times the pods that run at once: a
// Deployment's or StatefulSet's replicas (default 1); a DaemonSet's 1, as
// it runs one pod per node and a vehicle counts as one node; a Job's
// parallelism (default 1) capped at its completions; a CronJob's job
// template likewise, counting one Job at a time. Resource names are
// Kubernetes' own (cpu, memory, ephemeral-storage, nvidia.com/gpu).
//
// # Policy
//
// Each component's policy is Deployment.Placement[component], else the
// misaki.io/placement annotation of its workloads, else
// Deployment.DefaultPlacement, else auto. A policy other than vehicle,
// cloud or auto is an error that names the deployment, component and
// value.
//
//   - vehicle and cloud are obeyed. A vehicle component that does not fit
//     (or whose workloads need another CPU architecture) still goes to the
//     vehicle, and its reason says so.
//   - auto puts the component on the vehicle when, for every resource it
//     requests, the request is at most what is free: the vehicle's
//     Allocatable (a resource it does not list has none) minus what was
//     placed on it before. A component that pins kubernetes.io/arch (node
//     selector, or required node affinity) to an architecture other than
//     the vehicle's Facts.Arch goes to the cloud; so does every auto
//     component of a vehicle that has reported no allocatable resources.
//
// Decisions are made in a fixed order: deployments in the order given
// (callers sort them by name), and within a deployment the components
// pinned to the vehicle first, then the auto ones, each in object order.
// So what a deployment gets never depends on deployments after it, and
// the same input always gives the same output.
//
// # Halves and Routes
//
// The vehicle half is every deployment's objects that are in no component
// or in a component on the vehicle, as rendered, followed by the
// deployment's Routes. The cloud half, when any component runs in the
// cloud, is a Namespace object for the vehicle's cloud namespace
// (Options.CloudNamespace) followed by the cloud components' objects with
// their metadata.namespace set to it. An object that components in both
// places use is in both halves. Two objects that would become one in the
// cloud namespace (Service a/api and Service b/api) are an error.
//
// For each Service in the cloud half, when the vehicle half has a workload
// to call it, the vehicle half gets a Route (mesh.misaki.io/v1alpha1)
// named misaki-cloud-<service> in the Service's namespace. Its hosts are
// the names a pod in that namespace may call the Service by:
// <svc>.<ns>.svc.<cluster domain>, <svc>.<ns>.svc, <svc>.<ns> and <svc>.
// The Route CRD's host pattern allows a single label, and the proxy
// matches a request's Host exactly, so the bare name works: the pod's
// resolver expands it through its search path to the first host, which
// the proxy's DNS answers. Its destination is Options.GatewayURL. The
// cloud gateway, knowing the vehicle from its client certificate, maps
// those hosts to the same Service in the vehicle's cloud namespace, and
// the Host header keeps the port, so an app calls the same name and port
// wherever its peer runs. The Route's offline policy is the Service's
// misaki.io/offline annotation (a JSON Offline object), else
// Options.RouteOffline.
//
// A Service that a vehicle component uses as well (its selector matches
// pods on both sides) stays in the vehicle half and gets no Route: the
// vehicle's calls go to the vehicle's own pods, which is what it would do
// if the peer were local, and the cloud copy serves the cloud half. The
// cloud component's reason says so. With no GatewayURL no Routes are made,
// and each cloud component with a Service the vehicle would call says so
// in its reason.
//
// An object rendered without a metadata.namespace is taken to be in the
// deployment's namespace (Deployment.Namespace, default "default"), where
// the agent applies it: that is the namespace used to match it with
// workloads, in the placement table's Kind/namespace/name entries, and for
// a Service's Route and hosts. The vehicle half keeps it without one.
//
// Limits, by design: a Route serves the proxies of its namespace (the
// controller publishes Routes per namespace), so only meshed pods in the
// Service's namespace reach a cloud Service by it; cloud components reach each other by bare name (the
// cloud namespace's search path), not by names that spell the vehicle's
// namespace; and nothing routes calls from the cloud into the vehicle.
package placement

import (
	"encoding/json"
	"fmt"
	"maps"
	"regexp"
	"slices"
	"strings"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/util/validation"

	hubv1 "github.com/misaki-io/misaki/api/hub/v1"
	"github.com/misaki-io/misaki/api/v1alpha1"
)

// DeploymentObjects is one deployment and its rendered objects. Place
// never modifies the objects; they may be shared with a render cache.
type DeploymentObjects struct {
	Deployment hubv1.Deployment
	Objects    []*unstructured.Unstructured
}

// Options configure Place. The zero value takes the defaults, except that
// without GatewayURL no Routes are made.
type Options struct {
	// GatewayURL is the cloud gateway vehicles reach the cloud half
	// through (http://, https:// or h2c:// with host and optional port):
	// the destination of every generated Route.
	GatewayURL string
	// GatewayTLS is the Routes' destination TLS (files in the proxy's pod);
	// nil for none.
	GatewayTLS *v1alpha1.UpstreamTLS
	// RouteOffline is the Routes' offline policy unless a Service's
	// misaki.io/offline annotation gives its own. Default: hold 30s.
	RouteOffline *v1alpha1.Offline
	// CloudNamespace names a vehicle's namespace in the cloud cluster.
	// Default "misaki-v-" + the vehicle ID.
	CloudNamespace func(vehicle string) string
	// ClusterDomain is the vehicle cluster's DNS domain. Default
	// cluster.local.
	ClusterDomain string
}

// DefaultRouteHold is the hold window of generated Routes when neither
// Options.RouteOffline nor the Service says otherwise.
const DefaultRouteHold v1alpha1.Duration = "30s"

// gatewayURL is the Route CRD's pattern for destination.url.
var gatewayURL = regexp.MustCompile(`^(http|https|h2c)://[^/?#@\s]+/?$`)

// withDefaults returns o with its defaults set; the one place they are.
func (o Options) withDefaults() Options {
	if o.RouteOffline == nil {
		o.RouteOffline = &v1alpha1.Offline{Hold: DefaultRouteHold}
	}
	if o.CloudNamespace == nil {
		o.CloudNamespace = func(id string) string { return "misaki-v-" + id }
	}
	if o.ClusterDomain == "" {
		o.ClusterDomain = "cluster.local"
	}
	return o
}

// Validate checks the options without I/O.
func (o Options) Validate() error {
	if o.GatewayURL != "" && !gatewayURL.MatchString(o.GatewayURL) {
		return fmt.Errorf("placement: Options.GatewayURL %q: want http://, https:// or h2c:// with a host and optional port, no path", o.GatewayURL)
	}
	if o.ClusterDomain != "" && len(validation.IsDNS1123Subdomain(o.ClusterDomain)) > 0 {
		return fmt.Errorf("placement: Options.ClusterDomain %q is not a DNS name such as cluster.local", o.ClusterDomain)
	}
	return nil
}

// Result is one vehicle's placement.
type Result struct {
	// Vehicle and Cloud are the halves' objects, copies of the input (see
	// the package doc for their order). Cloud is empty when no component
	// runs in the cloud.
	Vehicle, Cloud []*unstructured.Unstructured
	// Placement has one entry per component: deployments in input order,
	// components in object order.
	Placement []hubv1.ComponentPlacement
	// CloudNamespace is the vehicle's namespace in the cloud cluster, set
	// whether or not Cloud has objects.
	CloudNamespace string
}

// source is where a component's policy came from, for reasons.
type source string

const (
	fromDeployment source = "deployment placement"
	fromAnnotation source = AnnotationPlacement + " annotation"
	fromDefault    source = "deployment defaultPlacement"
	fromNothing    source = "default"
)

// placed is one deployment's state during Place.
type placed struct {
	dep    *DeploymentObjects
	an     *analysis
	policy []string // by component
	src    []source
	place  []string
	reason []string
	// vehicle and cloud say which halves each object goes to.
	vehicle, cloud []bool
}

// Place decides where each component of each of the vehicle's deployments
// runs, and builds both halves. deps are the vehicle's deployments in the
// order their components claim the vehicle's resources; callers sort them
// by name so that order is stable.
func Place(v hubv1.Vehicle, deps []DeploymentObjects, opts Options) (*Result, error) {
	if err := opts.Validate(); err != nil {
		return nil, err
	}
	opts = opts.withDefaults()
	if v.ID == "" {
		return nil, fmt.Errorf("placement: vehicle has no ID")
	}
	cloudNS := opts.CloudNamespace(v.ID)
	if errs := validation.IsDNS1123Label(cloudNS); len(errs) > 0 {
		return nil, fmt.Errorf("placement: vehicle %s: cloud namespace %q: %s", v.ID, cloudNS, strings.Join(errs, "; "))
	}
	alloc, err := parseList(v.Allocatable)
	if err != nil {
		return nil, fmt.Errorf("placement: vehicle %s: allocatable %w", v.ID, err)
	}
	f := &fitter{alloc: alloc, none: len(v.Allocatable) == 0, used: corev1.ResourceList{}, arch: v.Facts.Arch}

	ps := make([]*placed, len(deps))
	for di := range deps {
		p, err := decide(&deps[di], f)
		if err != nil {
			return nil, fmt.Errorf("placement: deployment %s: %w", deps[di].Deployment.Name, err)
		}
		ps[di] = p
	}

	res := &Result{CloudNamespace: cloudNS}
	vehicleWorkload, anyCloud := false, false
	for _, p := range ps {
		p.halves()
		for i := range p.dep.Objects {
			vehicleWorkload = vehicleWorkload || p.vehicle[i] && p.an.workload[i]
			anyCloud = anyCloud || p.cloud[i]
		}
	}
	for _, p := range ps {
		routes, err := p.routes(vehicleWorkload, opts)
		if err != nil {
			return nil, fmt.Errorf("placement: deployment %s: %w", p.dep.Deployment.Name, err)
		}
		for i, u := range p.dep.Objects {
			if p.vehicle[i] {
				res.Vehicle = append(res.Vehicle, u.DeepCopy())
			}
		}
		res.Vehicle = append(res.Vehicle, routes...)
		res.Placement = append(res.Placement, p.table()...)
	}
	if anyCloud {
		res.Cloud, err = cloudHalf(v.ID, cloudNS, ps)
		if err != nil {
			return nil, fmt.Errorf("placement: vehicle %s: %w", v.ID, err)
		}
	}
	return res, nil
}

// decide groups one deployment's objects and places its components.
func decide(d *DeploymentObjects, f *fitter) (*placed, error) {
	dep := &d.Deployment
	for _, name := range slices.Sorted(maps.Keys(dep.Placement)) {
		if !validPolicy(dep.Placement[name]) {
			return nil, fmt.Errorf("component %s: invalid placement %q (placement[%s]); want vehicle, cloud or auto", name, dep.Placement[name], name)
		}
	}
	an, err := analyze(d.Objects, dep.Namespace)
	if err != nil {
		return nil, err
	}
	n := len(an.comps)
	p := &placed{dep: d, an: an, policy: make([]string, n), src: make([]source, n), place: make([]string, n), reason: make([]string, n)}
	for ci, c := range an.comps {
		pol, src := dep.Placement[c.name], fromDeployment
		if pol == "" {
			pol, src = c.policy, fromAnnotation
		}
		if pol == "" {
			pol, src = dep.DefaultPlacement, fromDefault
		}
		if pol == "" {
			pol, src = hubv1.PlaceAuto, fromNothing
		}
		if !validPolicy(pol) {
			return nil, fmt.Errorf("component %s: invalid placement %q (%s); want vehicle, cloud or auto", c.name, pol, src)
		}
		p.policy[ci], p.src[ci] = pol, src
	}
	set := func(src source, name string) string {
		if src == fromDeployment {
			return fmt.Sprintf("set by deployment placement[%s]", name)
		}
		return "set by " + string(src)
	}
	for _, pol := range []string{hubv1.PlaceVehicle, hubv1.PlaceAuto, hubv1.PlaceCloud} {
		for ci, c := range an.comps {
			if p.policy[ci] != pol {
				continue
			}
			switch pol {
			case hubv1.PlaceCloud:
				p.place[ci], p.reason[ci] = hubv1.PlaceCloud, "cloud: "+set(p.src[ci], c.name)
			case hubv1.PlaceVehicle:
				p.place[ci] = hubv1.PlaceVehicle
				p.reason[ci] = "vehicle: " + set(p.src[ci], c.name)
				if why := f.archMismatch(c); why != "" {
					p.reason[ci] += "; warning: " + why
				}
				if f.none {
					p.reason[ci] += "; warning: vehicle has reported no allocatable resources, fit not checked"
				} else if ok, why := f.fits(c.requests); !ok {
					p.reason[ci] += "; warning: exceeds free resources: " + why
				}
				f.take(c.requests)
			case hubv1.PlaceAuto:
				p.place[ci], p.reason[ci] = f.auto(c)
			}
		}
	}
	return p, nil
}

func validPolicy(p string) bool {
	return p == hubv1.PlaceVehicle || p == hubv1.PlaceCloud || p == hubv1.PlaceAuto
}

// halves works out which half each object goes to.
func (p *placed) halves() {
	n := len(p.dep.Objects)
	p.vehicle, p.cloud = make([]bool, n), make([]bool, n)
	for i := range n {
		if len(p.an.memberOf[i]) == 0 {
			p.vehicle[i] = true
			continue
		}
		for _, ci := range p.an.memberOf[i] {
			if p.place[ci] == hubv1.PlaceVehicle {
				p.vehicle[i] = true
			} else {
				p.cloud[i] = true
			}
		}
	}
}

// table is the deployment's placement records, components in object order.
func (p *placed) table() []hubv1.ComponentPlacement {
	out := make([]hubv1.ComponentPlacement, 0, len(p.an.comps))
	for ci, c := range p.an.comps {
		cp := hubv1.ComponentPlacement{
			Deployment: p.dep.Deployment.Name,
			Component:  c.name,
			Policy:     p.policy[ci],
			Place:      p.place[ci],
			Reason:     p.reason[ci],
			Requests:   toWire(c.requests),
		}
		for _, i := range slices.Sorted(slices.Values(append(slices.Clone(c.workloads), c.members...))) {
			cp.Objects = append(cp.Objects, ref(p.dep.Objects[i], p.an.ns[i]))
		}
		out = append(out, cp)
	}
	return out
}

// cloudHalf is the Namespace and the cloud components' objects moved into
// it.
func cloudHalf(vehicle, ns string, ps []*placed) ([]*unstructured.Unstructured, error) {
	nsObj := &unstructured.Unstructured{}
	nsObj.SetAPIVersion("v1")
	nsObj.SetKind("Namespace")
	nsObj.SetName(ns)
	nsObj.SetLabels(map[string]string{"misaki.io/vehicle": vehicle})
	out := []*unstructured.Unstructured{nsObj}
	// seen maps an object's identity in the cloud namespace to its
	// original, to refuse two objects that would become one.
	seen := map[string]string{}
	for _, p := range ps {
		for i, u := range p.dep.Objects {
			if !p.cloud[i] {
				continue
			}
			orig := p.dep.Deployment.Name + ": " + ref(u, p.an.ns[i])
			key := u.GroupVersionKind().GroupKind().String() + "/" + u.GetName()
			if prev, ok := seen[key]; ok {
				return nil, fmt.Errorf("cloud namespace %s: %s and %s would both be %s; rename one or place one on the vehicle",
					ns, prev, orig, ref(u, ns))
			}
			seen[key] = orig
			c := u.DeepCopy()
			c.SetNamespace(ns)
			out = append(out, c)
		}
	}
	return out, nil
}

// fitter tracks the vehicle's resources as components claim them.
type fitter struct {
	alloc corev1.ResourceList
	none  bool                // the vehicle reported no allocatable resources
	used  corev1.ResourceList // requests of everything placed on the vehicle so far
	arch  string
}

func (f *fitter) take(reqs corev1.ResourceList) { addList(f.used, reqs) }

func (f *fitter) free(name corev1.ResourceName) resource.Quantity {
	free := f.alloc[name].DeepCopy()
	if u, ok := f.used[name]; ok {
		free.Sub(u)
	}
	return free
}

// fits reports whether reqs fit what is free and, either way, why.
func (f *fitter) fits(reqs corev1.ResourceList) (bool, string) {
	var ok, short []string
	for _, name := range names(reqs) {
		q := reqs[name]
		if q.Sign() == 0 {
			continue
		}
		free := f.free(name)
		a, has := f.alloc[name]
		switch {
		case !has:
			short = append(short, fmt.Sprintf("%s %s requested, vehicle has none allocatable", name, q.String()))
		case q.Cmp(free) > 0:
			used := f.used[name]
			short = append(short, fmt.Sprintf("%s %s requested, %s free (allocatable %s, %s placed)",
				name, q.String(), free.String(), a.String(), quantity(used)))
		default:
			ok = append(ok, fmt.Sprintf("%s %s of %s free", name, q.String(), free.String()))
		}
	}
	if len(short) > 0 {
		return false, strings.Join(short, "; ")
	}
	if len(ok) == 0 {
		return true, "requests no resources"
	}
	return true, strings.Join(ok, ", ")
}

func quantity(q resource.Quantity) string {
	if q.IsZero() {
		return "0"
	}
	return q.String()
}

// auto places an auto component.
func (f *fitter) auto(c *component) (place, reason string) {
	if why := f.archMismatch(c); why != "" {
		return hubv1.PlaceCloud, "auto: " + why
	}
	if f.none {
		return hubv1.PlaceCloud, "auto: vehicle has reported no allocatable resources"
	}
	ok, why := f.fits(c.requests)
	if !ok {
		return hubv1.PlaceCloud, "auto: " + why
	}
	f.take(c.requests)
	return hubv1.PlaceVehicle, "auto: fits (" + why + ")"
}

// archLabels are the node labels that carry the CPU architecture.
var archLabels = []string{corev1.LabelArchStable, "beta.kubernetes.io/arch"}

// archMismatch says why a component's workloads cannot run on the
// vehicle's architecture, or "" (also when the vehicle's is unknown).
func (f *fitter) archMismatch(c *component) string {
	if f.arch == "" {
		return ""
	}
	for k, pod := range c.pods {
		if why := podArch(pod, f.arch); why != "" {
			return fmt.Sprintf("%s needs %s; vehicle is %s", c.wrefs[k], why, f.arch)
		}
	}
	return ""
}

// podArch says what architecture a pod needs when arch is not allowed, or
// "". Only the arch labels are looked at; other terms are assumed to
// match some node.
func podArch(pod *corev1.PodSpec, arch string) string {
	for _, l := range archLabels {
		if v, ok := pod.NodeSelector[l]; ok && v != arch {
			return fmt.Sprintf("nodeSelector %s=%s", l, v)
		}
	}
	aff := pod.Affinity
	if aff == nil || aff.NodeAffinity == nil || aff.NodeAffinity.RequiredDuringSchedulingIgnoredDuringExecution == nil {
		return ""
	}
	terms := aff.NodeAffinity.RequiredDuringSchedulingIgnoredDuringExecution.NodeSelectorTerms
	var needs []string
	for _, t := range terms {
		why := termArch(t, arch)
		if why == "" {
			return "" // the terms are ORed: this one can match
		}
		needs = append(needs, why)
	}
	if len(needs) == 0 {
		return ""
	}
	return "required node affinity " + strings.Join(needs, " or ")
}

// termArch says why a node selector term cannot match a node of arch, or "".
func termArch(t corev1.NodeSelectorTerm, arch string) string {
	for _, e := range t.MatchExpressions {
		if !slices.Contains(archLabels, e.Key) {
			continue
		}
		ok := true
		switch e.Operator {
		case corev1.NodeSelectorOpIn:
			ok = slices.Contains(e.Values, arch)
		case corev1.NodeSelectorOpNotIn:
			ok = !slices.Contains(e.Values, arch)
		case corev1.NodeSelectorOpDoesNotExist:
			ok = false // every node has the label
		case corev1.NodeSelectorOpGt, corev1.NodeSelectorOpLt:
			ok = false // an architecture is not a number
		}
		if !ok {
			return fmt.Sprintf("%s %s [%s]", e.Key, e.Operator, strings.Join(e.Values, ","))
		}
	}
	return ""
}

// parseOffline reads a Service's misaki.io/offline annotation.
func parseOffline(s string) (*v1alpha1.Offline, error) {
	var o v1alpha1.Offline
	dec := json.NewDecoder(strings.NewReader(s))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&o); err != nil {
		return nil, err
	}
	if dec.More() {
		return nil, fmt.Errorf("text after the JSON object")
	}
	return &o, nil
}

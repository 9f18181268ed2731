package placement

import (
	"fmt"
	"maps"
	"slices"
	"strings"

	appsv1 "k8s.io/api/apps/v1"
	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"

	hubv1 "github.com/misaki-io/misaki/api/hub/v1"
)

// Annotations a chart sets on its objects.
const (
	// AnnotationComponent names the component an object belongs to. On a
	// workload it is the component's name (default: the workload's name);
	// on any other namespaced object it joins that component explicitly,
	// instead of by what the workloads reference.
	AnnotationComponent = "misaki.io/component"
	// AnnotationPlacement on a workload is its component's default policy:
	// vehicle, cloud or auto. Deployment.Placement overrides it.
	AnnotationPlacement = "misaki.io/placement"
	// AnnotationOffline on a Service is a JSON v1alpha1.Offline object: the
	// offline policy of the Route that sends the vehicle's calls to the
	// Service when it runs in the cloud, instead of Options.RouteOffline.
	AnnotationOffline = "misaki.io/offline"
)

// Component is a workload, or several sharing one component name, and the
// objects they use.
type Component struct {
	Name string
	// Workloads are the component's Deployments, StatefulSets, DaemonSets,
	// Jobs and CronJobs; Objects the other objects that belong to it (an
	// object several components use is in each of them). Both are copies,
	// in input order.
	Workloads, Objects []*unstructured.Unstructured
	// Requests are the workloads' effective pod requests × replicas
	// (see the package doc), summed.
	Requests hubv1.ResourceList
	// Policy is the workloads' misaki.io/placement annotation, or "" when
	// none has it. It is not checked here; Place checks the policy it uses.
	Policy string
}

// Components groups a rendered manifest set into components, by the rules
// in the package doc. namespace is where objects without a
// metadata.namespace go ("" means "default"), as Deployment.Namespace.
// Objects in no component are not returned.
func Components(objs []*unstructured.Unstructured, namespace string) ([]Component, error) {
	an, err := analyze(objs, namespace)
	if err != nil {
		return nil, fmt.Errorf("placement: %w", err)
	}
	out := make([]Component, 0, len(an.comps))
	for _, c := range an.comps {
		oc := Component{Name: c.name, Policy: c.policy, Requests: toWire(c.requests)}
		for _, i := range c.workloads {
			oc.Workloads = append(oc.Workloads, objs[i].DeepCopy())
		}
		for _, i := range c.members {
			oc.Objects = append(oc.Objects, objs[i].DeepCopy())
		}
		out = append(out, oc)
	}
	return out, nil
}

// component is a component found in one deployment's objects; ints index
// the objects.
type component struct {
	name      string
	workloads []int
	members   []int             // non-workload objects, ascending
	pods      []*corev1.PodSpec // by workload
	wrefs     []string          // by workload: Kind/namespace/name
	requests  corev1.ResourceList
	policy    string
}

// analysis is one deployment's objects grouped into components.
type analysis struct {
	comps    []*component
	memberOf [][]int // object index → indexes of the components it belongs to
	workload []bool  // object index → is a workload of some component
	ns       []string
}

// workload is what grouping and placement need from one workload.
type workload struct {
	labels map[string]string // pod template labels
	pod    *corev1.PodSpec
	// mult is how many pods run at once: replicas, parallelism, or 1.
	mult int64
}

// workloadKinds are the kinds with a pod template, by group.
var workloadKinds = map[schema.GroupKind]bool{
	{Group: "apps", Kind: "Deployment"}:  true,
	{Group: "apps", Kind: "StatefulSet"}: true,
	{Group: "apps", Kind: "DaemonSet"}:   true,
	{Group: "batch", Kind: "Job"}:        true,
	{Group: "batch", Kind: "CronJob"}:    true,
}

// clusterScoped are the built-in kinds that have no namespace. They never
// join a component, so they stay on the vehicle whatever they are
// annotated with; a CRD's cluster-scoped kind is not known here and is
// treated as namespaced.
var clusterScoped = map[string]bool{
	"Namespace": true, "Node": true, "PersistentVolume": true, "ComponentStatus": true,
	"ClusterRole": true, "ClusterRoleBinding": true,
	"CustomResourceDefinition": true, "APIService": true,
	"StorageClass": true, "CSIDriver": true, "CSINode": true, "VolumeAttachment": true, "VolumeAttributesClass": true,
	"PriorityClass": true, "RuntimeClass": true, "IngressClass": true,
	"ValidatingWebhookConfiguration": true, "MutatingWebhookConfiguration": true,
	"ValidatingAdmissionPolicy": true, "ValidatingAdmissionPolicyBinding": true,
	"MutatingAdmissionPolicy": true, "MutatingAdmissionPolicyBinding": true,
	"FlowSchema": true, "PriorityLevelConfiguration": true,
	"CertificateSigningRequest": true, "ClusterTrustBundle": true,
	"DeviceClass": true, "ResourceSlice": true, "IPAddress": true, "ServiceCIDR": true,
}

func isWorkload(u *unstructured.Unstructured) bool {
	return workloadKinds[u.GroupVersionKind().GroupKind()]
}

func isCore(u *unstructured.Unstructured, kind string) bool {
	gvk := u.GroupVersionKind()
	return gvk.Group == "" && gvk.Kind == kind
}

// ref names an object for messages and ComponentPlacement.Objects:
// Kind/namespace/name.
func ref(u *unstructured.Unstructured, ns string) string {
	return u.GetKind() + "/" + ns + "/" + u.GetName()
}

// analyze groups objs into components. namespace defaults objects without
// one. Nothing in objs is modified.
func analyze(objs []*unstructured.Unstructured, namespace string) (*analysis, error) {
	if namespace == "" {
		namespace = "default"
	}
	an := &analysis{
		memberOf: make([][]int, len(objs)),
		workload: make([]bool, len(objs)),
		ns:       make([]string, len(objs)),
	}
	byName := map[string]*component{}
	get := func(name string) *component {
		c := byName[name]
		if c == nil {
			c = &component{name: name, requests: corev1.ResourceList{}}
			byName[name] = c
			an.comps = append(an.comps, c)
		}
		return c
	}
	wls := map[int]*workload{}
	for i, u := range objs {
		an.ns[i] = u.GetNamespace()
		if an.ns[i] == "" && !clusterScoped[u.GetKind()] {
			an.ns[i] = namespace
		}
		annotations := u.GetAnnotations()
		name := strings.TrimSpace(annotations[AnnotationComponent])
		if !isWorkload(u) {
			if name != "" && !clusterScoped[u.GetKind()] {
				get(name) // an explicit member; joins below, in object order
			}
			continue
		}
		w, err := decodeWorkload(u)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", ref(u, an.ns[i]), err)
		}
		wls[i] = w
		if name == "" {
			name = u.GetName()
		}
		c := get(name)
		c.workloads = append(c.workloads, i)
		c.pods = append(c.pods, w.pod)
		c.wrefs = append(c.wrefs, ref(u, an.ns[i]))
		an.workload[i] = true
		an.memberOf[i] = []int{slices.Index(an.comps, c)}
		reqs, err := podRequests(w.pod)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", ref(u, an.ns[i]), err)
		}
		for r, q := range reqs {
			q.Mul(w.mult) // exact: Mul falls back to inf.Dec past int64
			add(c.requests, r, q)
		}
		if p := annotations[AnnotationPlacement]; p != "" {
			if c.policy != "" && c.policy != p {
				return nil, fmt.Errorf("component %s: workloads disagree on %s: %q and %q (%s); give them one value",
					c.name, AnnotationPlacement, c.policy, p, ref(u, an.ns[i]))
			}
			c.policy = p
		}
	}
	index := map[*component]int{}
	for ci, c := range an.comps {
		index[c] = ci
	}
	// Workload indexes in object order, for deterministic membership.
	wIdx := slices.Sorted(maps.Keys(wls))
	for i, u := range objs {
		if an.workload[i] || clusterScoped[u.GetKind()] {
			continue
		}
		if name := strings.TrimSpace(u.GetAnnotations()[AnnotationComponent]); name != "" {
			an.join(i, index[byName[name]], byName[name])
			continue
		}
		uses, err := usedBy(u, an.ns, i, wIdx, wls)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", ref(u, an.ns[i]), err)
		}
		for _, w := range uses {
			ci := an.memberOf[w][0]
			an.join(i, ci, an.comps[ci])
		}
	}
	return an, nil
}

// join makes object i a member of component c (index ci), once.
func (an *analysis) join(i, ci int, c *component) {
	if slices.Contains(an.memberOf[i], ci) {
		return
	}
	an.memberOf[i] = append(an.memberOf[i], ci)
	c.members = append(c.members, i)
}

// usedBy returns the workloads (object indexes) that use object i without
// naming it in an annotation: a Service whose selector matches their pod
// template labels, or a ConfigMap, Secret, PersistentVolumeClaim or
// ServiceAccount their pod spec references, in the same namespace.
func usedBy(u *unstructured.Unstructured, ns []string, i int, wIdx []int, wls map[int]*workload) ([]int, error) {
	var match func(w *workload) bool
	name := u.GetName()
	switch {
	case isCore(u, "Service"):
		var svc corev1.Service
		if err := runtime.DefaultUnstructuredConverter.FromUnstructured(u.Object, &svc); err != nil {
			return nil, fmt.Errorf("decode: %w", err)
		}
		sel := svc.Spec.Selector
		if len(sel) == 0 {
			return nil, nil // no selector: endpoints are managed by hand, nothing to follow
		}
		match = func(w *workload) bool {
			for k, v := range sel {
				if l, ok := w.labels[k]; !ok || l != v {
					return false
				}
			}
			return true
		}
	case isCore(u, "ConfigMap"):
		match = func(w *workload) bool { return refsConfigMap(w.pod, name) }
	case isCore(u, "Secret"):
		match = func(w *workload) bool { return refsSecret(w.pod, name) }
	case isCore(u, "PersistentVolumeClaim"):
		match = func(w *workload) bool {
			return slices.ContainsFunc(w.pod.Volumes, func(v corev1.Volume) bool {
				return v.PersistentVolumeClaim != nil && v.PersistentVolumeClaim.ClaimName == name
			})
		}
	case isCore(u, "ServiceAccount"):
		match = func(w *workload) bool {
			sa := w.pod.ServiceAccountName
			if sa == "" {
				sa = w.pod.DeprecatedServiceAccount
			}
			return sa == name
		}
	default:
		return nil, nil
	}
	var out []int
	for _, wi := range wIdx {
		if ns[wi] == ns[i] && match(wls[wi]) {
			out = append(out, wi)
		}
	}
	return out, nil
}

// decodeWorkload reads a workload's pod template and how many pods of it
// run at once.
func decodeWorkload(u *unstructured.Unstructured) (*workload, error) {
	from := func(obj any) error {
		if err := runtime.DefaultUnstructuredConverter.FromUnstructured(u.Object, obj); err != nil {
			return fmt.Errorf("decode: %w", err)
		}
		return nil
	}
	replicas := func(r *int32) int64 {
		if r == nil {
			return 1
		}
		return int64(*r)
	}
	// A Job runs parallelism pods at once, never more than its completions.
	job := func(s *batchv1.JobSpec) int64 {
		n := replicas(s.Parallelism)
		if s.Completions != nil && int64(*s.Completions) < n {
			n = int64(*s.Completions)
		}
		return n
	}
	switch u.GetKind() {
	case "Deployment":
		var d appsv1.Deployment
		if err := from(&d); err != nil {
			return nil, err
		}
		return &workload{d.Spec.Template.Labels, &d.Spec.Template.Spec, replicas(d.Spec.Replicas)}, nil
	case "StatefulSet":
		var s appsv1.StatefulSet
		if err := from(&s); err != nil {
			return nil, err
		}
		return &workload{s.Spec.Template.Labels, &s.Spec.Template.Spec, replicas(s.Spec.Replicas)}, nil
	case "DaemonSet":
		var d appsv1.DaemonSet
		if err := from(&d); err != nil {
			return nil, err
		}
		return &workload{d.Spec.Template.Labels, &d.Spec.Template.Spec, 1}, nil
	case "Job":
		var j batchv1.Job
		if err := from(&j); err != nil {
			return nil, err
		}
		return &workload{j.Spec.Template.Labels, &j.Spec.Template.Spec, job(&j.Spec)}, nil
	case "CronJob":
		var c batchv1.CronJob
		if err := from(&c); err != nil {
			return nil, err
		}
		t := &c.Spec.JobTemplate.Spec
		return &workload{t.Template.Labels, &t.Template.Spec, job(t)}, nil
	}
	return nil, fmt.Errorf("not a workload kind")
}

// containers calls f for every container of the pod, init and ephemeral
// ones too.
func containers(p *corev1.PodSpec, f func(env []corev1.EnvVar, from []corev1.EnvFromSource) bool) bool {
	for _, c := range p.InitContainers {
		if f(c.Env, c.EnvFrom) {
			return true
		}
	}
	for _, c := range p.Containers {
		if f(c.Env, c.EnvFrom) {
			return true
		}
	}
	for _, c := range p.EphemeralContainers {
		if f(c.Env, c.EnvFrom) {
			return true
		}
	}
	return false
}

// refsConfigMap reports whether the pod uses ConfigMap name: a configMap
// or projected volume, env valueFrom or envFrom.
func refsConfigMap(p *corev1.PodSpec, name string) bool {
	for _, v := range p.Volumes {
		if v.ConfigMap != nil && v.ConfigMap.Name == name {
			return true
		}
		if v.Projected != nil {
			for _, s := range v.Projected.Sources {
				if s.ConfigMap != nil && s.ConfigMap.Name == name {
					return true
				}
			}
		}
	}
	return containers(p, func(env []corev1.EnvVar, from []corev1.EnvFromSource) bool {
		for _, e := range env {
			if e.ValueFrom != nil && e.ValueFrom.ConfigMapKeyRef != nil && e.ValueFrom.ConfigMapKeyRef.Name == name {
				return true
			}
		}
		for _, f := range from {
			if f.ConfigMapRef != nil && f.ConfigMapRef.Name == name {
				return true
			}
		}
		return false
	})
}

// refsSecret reports whether the pod uses Secret name: a secret or
// projected volume, env valueFrom, envFrom or imagePullSecrets.
func refsSecret(p *corev1.PodSpec, name string) bool {
	for _, s := range p.ImagePullSecrets {
		if s.Name == name {
			return true
		}
	}
	for _, v := range p.Volumes {
		if v.Secret != nil && v.Secret.SecretName == name {
			return true
		}
		if v.Projected != nil {
			for _, s := range v.Projected.Sources {
				if s.Secret != nil && s.Secret.Name == name {
					return true
				}
			}
		}
	}
	return containers(p, func(env []corev1.EnvVar, from []corev1.EnvFromSource) bool {
		for _, e := range env {
			if e.ValueFrom != nil && e.ValueFrom.SecretKeyRef != nil && e.ValueFrom.SecretKeyRef.Name == name {
				return true
			}
		}
		for _, f := range from {
			if f.SecretRef != nil && f.SecretRef.Name == name {
				return true
			}
		}
		return false
	})
}

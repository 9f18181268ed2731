package placement

import (
	"fmt"
	"maps"
	"slices"
	"strings"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"

	hubv1 "github.com/misaki-io/misaki/api/hub/v1"
)

// podRequests is a pod's effective requests as the scheduler counts them
// (k8s.io/component-helpers/resource.PodRequests, with the API server's
// defaulting applied first):
//
//   - a container's request for a resource it only has a limit for is the
//     limit;
//   - the app containers and the restartable (sidecar) init containers are
//     summed; each ordinary init container counts with the sidecars started
//     before it; the pod requests the larger of the two, per resource;
//   - pod-level requests (spec.resources) replace that for the resources
//     they may set (cpu, memory, hugepages-*), and pod-level limits stand in
//     for requests nothing else sets;
//   - spec.overhead is added.
//
// It is written out here rather than imported so the hub does not take on
// another Kubernetes module for forty lines.
func podRequests(p *corev1.PodSpec) (corev1.ResourceList, error) {
	out := corev1.ResourceList{}
	for _, c := range p.Containers {
		addList(out, containerRequests(c))
	}
	sidecars, inits := corev1.ResourceList{}, corev1.ResourceList{}
	for _, c := range p.InitContainers {
		req := containerRequests(c)
		use := corev1.ResourceList{}
		if c.RestartPolicy != nil && *c.RestartPolicy == corev1.ContainerRestartPolicyAlways {
			addList(out, req)
			addList(sidecars, req)
			addList(use, sidecars)
		} else {
			addList(use, req)
			addList(use, sidecars)
		}
		maxList(inits, use)
	}
	maxList(out, inits)
	if r := p.Resources; r != nil {
		for name, q := range r.Requests {
			if podLevel(name) {
				out[name] = q.DeepCopy()
			}
		}
		for name, q := range r.Limits {
			if _, ok := out[name]; !ok && podLevel(name) {
				out[name] = q.DeepCopy()
			}
		}
	}
	addList(out, p.Overhead)
	for name, q := range out {
		if q.Sign() < 0 {
			return nil, fmt.Errorf("negative %s request %s", name, q.String())
		}
	}
	return out, nil
}

// podLevel reports whether spec.resources may set name.
func podLevel(name corev1.ResourceName) bool {
	return name == corev1.ResourceCPU || name == corev1.ResourceMemory || strings.HasPrefix(string(name), corev1.ResourceHugePagesPrefix)
}

func containerRequests(c corev1.Container) corev1.ResourceList {
	out := corev1.ResourceList{}
	for name, q := range c.Resources.Requests {
		out[name] = q.DeepCopy()
	}
	for name, q := range c.Resources.Limits {
		if _, ok := out[name]; !ok {
			out[name] = q.DeepCopy()
		}
	}
	return out
}

// add adds q to list[name]. Quantities share their inf.Dec, so every
// value stored is a copy.
func add(list corev1.ResourceList, name corev1.ResourceName, q resource.Quantity) {
	if v, ok := list[name]; ok {
		v = v.DeepCopy()
		v.Add(q)
		list[name] = v
		return
	}
	list[name] = q.DeepCopy()
}

func addList(list, more corev1.ResourceList) {
	for name, q := range more {
		add(list, name, q)
	}
}

func maxList(list, other corev1.ResourceList) {
	for name, q := range other {
		if v, ok := list[name]; !ok || q.Cmp(v) > 0 {
			list[name] = q.DeepCopy()
		}
	}
}

// parseList reads a wire resource list.
func parseList(l hubv1.ResourceList) (corev1.ResourceList, error) {
	out := make(corev1.ResourceList, len(l))
	for _, name := range slices.Sorted(maps.Keys(l)) {
		q, err := resource.ParseQuantity(l[name])
		if err != nil {
			return nil, fmt.Errorf("%s %q: %w", name, l[name], err)
		}
		out[corev1.ResourceName(name)] = q
	}
	return out, nil
}

// toWire writes a resource list as quantity strings; nil when empty.
func toWire(l corev1.ResourceList) hubv1.ResourceList {
	if len(l) == 0 {
		return nil
	}
	out := make(hubv1.ResourceList, len(l))
	for name, q := range l {
		out[string(name)] = q.String()
	}
	return out
}

// names returns a list's resource names, sorted.
func names(l corev1.ResourceList) []corev1.ResourceName {
	return slices.Sorted(maps.Keys(l))
}

// Package facts collects what the vehicle agent reports about its cluster
// (PUT /v1/vehicles/{id}/reported): the Kubernetes version, the served
// API versions and kinds and the installed CRDs, which the hub gives Helm
// as .Capabilities when it renders the vehicle's charts (internal/hub/
// render), and the nodes' architecture and resources, by which it places
// components on the vehicle or in the cloud (internal/hub/placement).
//
// The hub renders a vehicle again whenever its reported facts change, so a
// Snapshot is deterministic: every list is sorted and de-duplicated and
// every quantity is summed in node-name order and written in its canonical
// form. Two collections of an unchanged cluster are equal.
//
// The agent runs on small vehicle computers, so collecting keeps nothing
// between calls: no informers and no caches, only /version, aggregated
// discovery (/api and /apis, two requests on a server that serves it), a
// paginated list of CRDs' metadata (names only, not their schemas) and a
// paginated list of nodes.
//
// # Which nodes count
//
// Capacity and Allocatable are summed over the schedulable nodes only: a
// node cordoned (spec.unschedulable, as kubectl cordon and drain set it)
// takes no new pods, so what the hub places by these numbers could not
// start on it. A vehicle whose only node is cordoned therefore reports no
// resources, and the hub places its auto components in the cloud until
// the node is uncordoned. Arch is counted over every node: a cordon
// changes what can be scheduled, not the hardware, and the architecture
// does not flap with maintenance. NotReady nodes count like Ready ones:
// readiness comes and goes with a node's heartbeat, and facts that
// followed it would re-render the vehicle on every hiccup.
package facts

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"maps"
	"path"
	"slices"
	"strings"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/client-go/discovery"
	corev1client "k8s.io/client-go/kubernetes/typed/core/v1"
	"k8s.io/client-go/metadata"
	"k8s.io/client-go/rest"

	hubv1 "github.com/misaki-io/misaki/api/hub/v1"
)

// pageSize bounds the objects one list response holds, so a cluster with
// many CRDs or nodes never costs the agent more than a page of them.
const pageSize = 250

var crdResource = schema.GroupVersionResource{Group: "apiextensions.k8s.io", Version: "v1", Resource: "customresourcedefinitions"}

// Snapshot is one collection.
type Snapshot struct {
	Facts hubv1.Facts
	// Capacity and Allocatable are summed over the schedulable nodes;
	// nil when there are none.
	Capacity, Allocatable hubv1.ResourceList
	// Unavailable are the group versions ("metrics.k8s.io/v1beta1") whose
	// discovery failed, typically an aggregated API whose server is down;
	// sorted, nil when discovery was whole. Their kinds are missing from
	// Facts.APIVersions. It is not part of the report: the caller logs it.
	Unavailable []string
}

// Collector collects Snapshots from one cluster. It is safe for
// concurrent use.
type Collector struct {
	disc  *discovery.DiscoveryClient
	nodes corev1client.NodeInterface
	meta  metadata.Interface
}

// New returns a Collector for the cluster cfg reaches. It does no I/O. Its
// clients share one HTTP client (one connection pool).
func New(cfg *rest.Config) (*Collector, error) {
	hc, err := rest.HTTPClientFor(cfg)
	if err != nil {
		return nil, fmt.Errorf("facts: HTTP client: %w", err)
	}
	disc, err := discovery.NewDiscoveryClientForConfigAndClient(cfg, hc)
	if err != nil {
		return nil, fmt.Errorf("facts: discovery client: %w", err)
	}
	core, err := corev1client.NewForConfigAndClient(cfg, hc)
	if err != nil {
		return nil, fmt.Errorf("facts: core client: %w", err)
	}
	meta, err := metadata.NewForConfigAndClient(cfg, hc)
	if err != nil {
		return nil, fmt.Errorf("facts: metadata client: %w", err)
	}
	return &Collector{disc: disc, nodes: core.Nodes(), meta: meta}, nil
}

// Collect reads the cluster's facts and resources. A group version whose
// discovery fails is left out and named in Snapshot.Unavailable; any other
// failure (the version, discovery as a whole, the CRD or node list) is an
// error, and no partial Snapshot is returned with it.
func (c *Collector) Collect(ctx context.Context) (Snapshot, error) {
	var s Snapshot
	v, err := c.disc.ServerVersionWithContext(ctx)
	if err != nil {
		return Snapshot{}, fmt.Errorf("facts: server version: %w", err)
	}
	s.Facts.KubernetesVersion = v.GitVersion

	if s.Facts.APIVersions, s.Unavailable, err = c.apiVersions(ctx); err != nil {
		return Snapshot{}, err
	}
	if s.Facts.CRDs, err = c.crds(ctx); err != nil {
		return Snapshot{}, err
	}
	if err := c.fromNodes(ctx, &s); err != nil {
		return Snapshot{}, err
	}
	return s, nil
}

// apiVersions returns Helm's .Capabilities.APIVersions for the cluster,
// made as helm's own action.GetVersionSet makes it: every served group
// version ("apps/v1", "v1") and every kind in it ("apps/v1/Deployment",
// "v1/Pod"). Subresources ("deployments/status", whose kind is the
// parent's, or "deployments/scale", whose kind is autoscaling's Scale) are
// left out: they are not kinds a chart can create.
func (c *Collector) apiVersions(ctx context.Context) (versions, unavailable []string, err error) {
	groups, lists, err := c.disc.ServerGroupsAndResourcesWithContext(ctx)
	if failed, ok := errors.AsType[*discovery.ErrGroupDiscoveryFailed](err); ok {
		for gv := range failed.Groups {
			unavailable = append(unavailable, gv.String())
		}
		slices.Sort(unavailable)
	} else if err != nil {
		return nil, nil, fmt.Errorf("facts: discovery: %w", err)
	}
	for _, g := range groups {
		for _, gv := range g.Versions {
			versions = append(versions, gv.GroupVersion)
		}
	}
	for _, l := range lists {
		for _, r := range l.APIResources {
			if r.Kind == "" || strings.Contains(r.Name, "/") {
				continue
			}
			versions = append(versions, path.Join(l.GroupVersion, r.Kind))
		}
	}
	return sortedSet(versions), unavailable, nil
}

// crds returns the names of the CustomResourceDefinitions, sorted. Only
// their metadata is fetched: a CRD's schema can be hundreds of kilobytes.
func (c *Collector) crds(ctx context.Context) ([]string, error) {
	var names []string
	opts := metav1.ListOptions{Limit: pageSize}
	for {
		l, err := c.meta.Resource(crdResource).List(ctx, opts)
		if err != nil {
			return nil, fmt.Errorf("facts: list %s: %w", crdResource.GroupResource(), err)
		}
		for _, o := range l.Items {
			names = append(names, o.Name)
		}
		if opts.Continue = l.Continue; opts.Continue == "" {
			return sortedSet(names), nil
		}
	}
}

// fromNodes sets s.Facts.Arch, s.Capacity and s.Allocatable from the nodes
// (see the package doc for which nodes count).
func (c *Collector) fromNodes(ctx context.Context, s *Snapshot) error {
	var nodes []nodeSummary
	opts := metav1.ListOptions{Limit: pageSize}
	for {
		l, err := c.nodes.List(ctx, opts)
		if err != nil {
			return fmt.Errorf("facts: list nodes: %w", err)
		}
		for i := range l.Items {
			nodes = append(nodes, summarize(&l.Items[i]))
		}
		if opts.Continue = l.Continue; opts.Continue == "" {
			break
		}
	}
	s.Facts.Arch, s.Capacity, s.Allocatable = summarizeNodes(nodes)
	return nil
}

// nodeSummary is what a Snapshot needs of one node; the rest of the Node
// (images, conditions, managed fields) is dropped page by page.
type nodeSummary struct {
	name                  string
	arch                  string
	schedulable           bool
	capacity, allocatable corev1.ResourceList
}

func summarize(n *corev1.Node) nodeSummary {
	return nodeSummary{
		name:        n.Name,
		arch:        n.Status.NodeInfo.Architecture,
		schedulable: !n.Spec.Unschedulable,
		capacity:    n.Status.Capacity,
		allocatable: n.Status.Allocatable,
	}
}

// summarizeNodes returns the most common architecture of the nodes (ties:
// the first in sorted order; nodes that report none are not counted) and
// the schedulable nodes' capacity and allocatable resources, summed.
func summarizeNodes(nodes []nodeSummary) (arch string, capacity, allocatable hubv1.ResourceList) {
	// Sums in name order: a sum takes the format of its first term
	// (resource.Quantity.Add), so the order fixes the canonical string.
	slices.SortFunc(nodes, func(a, b nodeSummary) int { return cmp.Compare(a.name, b.name) })
	count := map[string]int{}
	var capSum, allocSum corev1.ResourceList
	for _, n := range nodes {
		if n.arch != "" {
			count[n.arch]++
		}
		if n.schedulable {
			capSum = addList(capSum, n.capacity)
			allocSum = addList(allocSum, n.allocatable)
		}
	}
	best := 0
	for _, a := range slices.Sorted(maps.Keys(count)) {
		if count[a] > best {
			arch, best = a, count[a]
		}
	}
	return arch, toWire(capSum), toWire(allocSum)
}

func addList(sum, l corev1.ResourceList) corev1.ResourceList {
	for name, q := range l {
		if sum == nil {
			sum = corev1.ResourceList{}
		}
		// The first term is copied, so Add never changes a node's
		// quantity through a shared inf.Dec.
		if have, ok := sum[name]; ok {
			have.Add(q)
			sum[name] = have
		} else {
			sum[name] = q.DeepCopy()
		}
	}
	return sum
}

// toWire writes quantities in canonical form; nil when l is empty.
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

// sortedSet returns the distinct non-empty strings of s, sorted (as
// internal/hub/render keys them).
func sortedSet(s []string) []string {
	s = slices.DeleteFunc(s, func(v string) bool { return v == "" })
	slices.Sort(s)
	return slices.Clip(slices.Compact(s))
}

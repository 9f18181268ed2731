// Package apply puts a verified desired state on a cluster and takes off
// what a newer one dropped (issue 18, items 4 and 5).
//
// Applying is Flux's server-side apply engine, github.com/fluxcd/pkg/ssa
// (pinned at v0.78.0: later versions need a newer Go): a server-side
// dry-run of every object, a real apply only of the objects that drifted
// (so an unchanged object's resourceVersion does not move), and stages:
// CustomResourceDefinitions, Namespaces and ClusterRoles first, waited on
// until established, then the rest. The field manager is "misaki-agent".
//
// Three rules are Misaki's, not the library's:
//
//   - Conflicts are reported, then overridden. Before a revision is
//     applied, each object gets a server-side dry-run without forcing;
//     a 409 names the other field manager and fields, and that message
//     is kept in the object's Result. The forced apply then goes ahead:
//     the signed desired state wins, as it does in Flux. Drift passes skip
//     the probe (the conflict was reported when the revision arrived).
//   - An immutable field change (a Deployment's selector, a Service's
//     clusterIP) fails the apply, unless the object carries the annotation
//     misaki.io/recreate: "true", in which case it is deleted and created.
//   - Prune deletes only objects carrying this agent's ownership labels
//     (set on everything it applies), never a CustomResourceDefinition, a
//     Namespace or a PersistentVolumeClaim unless the last applied
//     manifest said misaki.io/prune: "true", and never an object whose
//     manifest said misaki.io/prune: "false". Deleting a CRD deletes every
//     custom resource of it; deleting a Namespace, all it holds; deleting
//     a PVC, the data: none of that happens because a chart was edited.
//
// A namespace the objects live in but the set does not define is created
// if it is missing (as helm install --create-namespace does), and is
// never in the inventory, so never pruned.
//
// Which objects are stale is not decided here: the caller passes the
// refs a newer verified revision no longer lists (internal/agent keeps
// the inventory).
package apply

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/fluxcd/cli-utils/pkg/kstatus/polling"
	"github.com/fluxcd/pkg/ssa"
	ssaerrors "github.com/fluxcd/pkg/ssa/errors"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"sigs.k8s.io/controller-runtime/pkg/client"
)

// FieldManager is the server-side apply field manager of every write.
const FieldManager = "misaki-agent"

// Annotations read from the manifests.
const (
	// AnnotationRecreate: "true" lets an immutable field change delete
	// and re-create the object.
	AnnotationRecreate = "misaki.io/recreate"
	// AnnotationPrune: "true" lets a CRD, Namespace or PVC be pruned;
	// "false" keeps any object from being pruned.
	AnnotationPrune = "misaki.io/prune"
)

// Ownership labels set on every applied object. Prune deletes only
// objects that carry both with this agent's values.
const (
	LabelVehicle = "agent.misaki.io/vehicle"
	LabelHalf    = "agent.misaki.io/half"
)

// Ref names one object: what the inventory keeps.
type Ref struct {
	APIVersion string `json:"apiVersion"`
	Kind       string `json:"kind"`
	Namespace  string `json:"namespace,omitempty"`
	Name       string `json:"name"`
}

// RefOf is o's Ref.
func RefOf(o *unstructured.Unstructured) Ref {
	return Ref{APIVersion: o.GetAPIVersion(), Kind: o.GetKind(), Namespace: o.GetNamespace(), Name: o.GetName()}
}

// GroupKind is the ref's group and kind (the version is not part of an
// object's identity).
func (r Ref) GroupKind() schema.GroupKind {
	return schema.FromAPIVersionAndKind(r.APIVersion, r.Kind).GroupKind()
}

// ID is the ref without its version: two refs with the same ID are the
// same object.
func (r Ref) ID() string {
	gk := r.GroupKind()
	return gk.Group + "/" + gk.Kind + "/" + r.Namespace + "/" + r.Name
}

// String is kind/namespace/name (kind/name when cluster-scoped), as the
// hub names objects.
func (r Ref) String() string {
	if r.Namespace == "" {
		return r.Kind + "/" + r.Name
	}
	return r.Kind + "/" + r.Namespace + "/" + r.Name
}

// Action is what happened to one object.
type Action string

// Actions.
const (
	Created    Action = "created"
	Configured Action = "configured"
	Unchanged  Action = "unchanged"
	Deleted    Action = "deleted"
	// Kept: stale, but the prune rules keep it (Reason says which).
	Kept   Action = "kept"
	Failed Action = "failed"
)

// Entry is one object's outcome.
type Entry struct {
	Ref    Ref
	Action Action
	// Conflict is the API server's message when a field of the object was
	// owned by another manager (the apply took it over).
	Conflict string
	// Reason says why an object failed or was kept.
	Reason string
}

// Result is an apply's or a prune's outcome per object, in order.
type Result struct {
	Entries []Entry
}

// Changed counts the entries whose object was written or deleted.
func (r Result) Changed() int {
	n := 0
	for _, e := range r.Entries {
		if e.Action == Created || e.Action == Configured || e.Action == Deleted {
			n++
		}
	}
	return n
}

// Error is an apply that stopped at one object.
type Error struct {
	Ref Ref
	Err error
	// Hint says what the user can do, when there is something.
	Hint string
}

func (e *Error) Error() string {
	if e.Hint != "" {
		return fmt.Sprintf("apply %s: %v (%s)", e.Ref, e.Err, e.Hint)
	}
	return fmt.Sprintf("apply %s: %v", e.Ref, e.Err)
}
func (e *Error) Unwrap() error { return e.Err }

// Transient reports whether err may pass if the apply is tried again: the
// API server unreachable, overloaded or timing out (a vehicle's API server
// starting after a reboot), as opposed to the server refusing an object
// (invalid, forbidden, an immutable field), which the same objects will
// meet again.
func Transient(err error) bool {
	if meta.IsNoMatchError(err) {
		return false // a kind the cluster does not serve
	}
	var st apierrors.APIStatus
	if !errors.As(err, &st) {
		return !errors.Is(err, context.Canceled)
	}
	if ssaerrors.IsImmutableError(err) {
		return false
	}
	switch code := st.Status().Code; {
	case code == 0, code == 408, code == 429, code >= 500:
		return true
	}
	return false
}

// Options configure an Applier.
type Options struct {
	// Vehicle and Half are the ownership label values.
	Vehicle, Half string
	// Namespace, when set, confines every object to it: a namespaced
	// object elsewhere, or a cluster-scoped object other than the
	// Namespace itself, is refused (the cloud half of a vehicle).
	Namespace string
	// StageTimeout bounds the wait for CRDs and Namespaces to be ready
	// before the objects that need them (default 2m).
	StageTimeout time.Duration
	// Concurrency of the dry-runs (default 4).
	Concurrency int
}

// Applier applies object sets to one cluster. It keeps no state between
// calls but the API server's RESTMapper cache.
type Applier struct {
	c    client.Client
	rm   *ssa.ResourceManager
	opts Options
}

// New returns an Applier writing through c (a controller-runtime client
// without a cache, whose RESTMapper re-discovers on a miss, so CRDs
// applied in the first stage are known in the second).
func New(c client.Client, opts Options) *Applier {
	if opts.StageTimeout <= 0 {
		opts.StageTimeout = 2 * time.Minute
	}
	if opts.Concurrency <= 0 {
		opts.Concurrency = 4
	}
	poller := polling.NewStatusPoller(c, c.RESTMapper(), polling.Options{})
	rm := ssa.NewResourceManager(c, poller, ssa.Owner{Field: FieldManager, Group: "agent.misaki.io"})
	rm.SetConcurrency(opts.Concurrency)
	return &Applier{c: c, rm: rm, opts: opts}
}

// Prepare copies objs with the ownership labels set, checking the
// Namespace confinement. The copies are what Apply takes.
func (a *Applier) Prepare(objs []*unstructured.Unstructured) ([]*unstructured.Unstructured, error) {
	out := make([]*unstructured.Unstructured, 0, len(objs))
	for _, o := range objs {
		if err := a.confine(o); err != nil {
			return nil, err
		}
		c := o.DeepCopy()
		l := c.GetLabels()
		if l == nil {
			l = map[string]string{}
		}
		l[LabelVehicle] = a.opts.Vehicle
		l[LabelHalf] = a.opts.Half
		c.SetLabels(l)
		out = append(out, c)
	}
	return out, nil
}

func (a *Applier) confine(o *unstructured.Unstructured) error {
	ns := a.opts.Namespace
	if ns == "" {
		return nil
	}
	if o.GetKind() == "Namespace" && o.GroupVersionKind().Group == "" {
		if o.GetName() != ns {
			return &Error{Ref: RefOf(o), Err: fmt.Errorf("outside this half's namespace %s", ns)}
		}
		return nil
	}
	if o.GetNamespace() != ns {
		return &Error{Ref: RefOf(o), Err: fmt.Errorf("not in this half's namespace %s (cluster-scoped objects other than the namespace are refused)", ns)}
	}
	return nil
}

// Apply applies objs (from Prepare) in stages. probe runs the conflict
// dry-runs first. On an error the Result holds the entries up to it and
// the error is an *Error naming the object when one is at fault.
func (a *Applier) Apply(ctx context.Context, objs []*unstructured.Unstructured, probe bool) (Result, error) {
	if err := a.ensureNamespaces(ctx, objs); err != nil {
		return Result{}, err
	}
	var conflicts map[string]string
	if probe {
		conflicts = a.probeConflicts(ctx, objs)
	}
	// ssa sorts in place; keep the caller's order.
	work := slices.Clone(objs)
	opts := ssa.DefaultApplyOptions()
	opts.ForceSelector = map[string]string{AnnotationRecreate: "true"}
	opts.WaitInterval = time.Second
	opts.WaitTimeout = a.opts.StageTimeout
	cs, err := a.rm.ApplyAllStaged(ctx, work, opts)
	var res Result
	if cs != nil {
		for _, e := range cs.Entries {
			ref := Ref{APIVersion: e.GroupVersion, Kind: e.ObjMetadata.GroupKind.Kind, Namespace: e.ObjMetadata.Namespace, Name: e.ObjMetadata.Name}
			en := Entry{Ref: ref, Action: action(e.Action)}
			en.Conflict = conflicts[ref.ID()]
			res.Entries = append(res.Entries, en)
		}
	}
	if err != nil {
		return res, a.describe(err)
	}
	return res, nil
}

// ensureNamespaces creates the namespaces objs use and do not define.
func (a *Applier) ensureNamespaces(ctx context.Context, objs []*unstructured.Unstructured) error {
	defined := map[string]bool{}
	for _, o := range objs {
		if o.GetKind() == "Namespace" && o.GroupVersionKind().Group == "" {
			defined[o.GetName()] = true
		}
	}
	done := map[string]bool{}
	for _, o := range objs {
		ns := o.GetNamespace()
		if ns == "" || defined[ns] || done[ns] {
			continue
		}
		done[ns] = true
		n := &unstructured.Unstructured{}
		n.SetAPIVersion("v1")
		n.SetKind("Namespace")
		err := a.c.Get(ctx, client.ObjectKey{Name: ns}, n)
		if err == nil {
			continue
		}
		if !apierrors.IsNotFound(err) {
			return &Error{Ref: Ref{APIVersion: "v1", Kind: "Namespace", Name: ns}, Err: err}
		}
		n = &unstructured.Unstructured{}
		n.SetAPIVersion("v1")
		n.SetKind("Namespace")
		n.SetName(ns)
		n.SetLabels(map[string]string{"app.kubernetes.io/created-by": FieldManager})
		if err := a.c.Create(ctx, n, client.FieldOwner(FieldManager)); err != nil && !apierrors.IsAlreadyExists(err) {
			return &Error{Ref: Ref{APIVersion: "v1", Kind: "Namespace", Name: ns}, Err: fmt.Errorf("create: %w", err)}
		}
	}
	return nil
}

func action(a ssa.Action) Action {
	switch a {
	case ssa.CreatedAction:
		return Created
	case ssa.ConfiguredAction:
		return Configured
	case ssa.DeletedAction:
		return Deleted
	case ssa.SkippedAction:
		return Kept
	}
	return Unchanged
}

// describe turns ssa's error into an *Error naming the object.
func (a *Applier) describe(err error) error {
	var dr *ssaerrors.DryRunErr
	if errors.As(err, &dr) && dr.InvolvedObject() != nil {
		e := &Error{Ref: RefOf(dr.InvolvedObject()), Err: dr.Unwrap()}
		if ssaerrors.IsImmutableError(dr.Unwrap()) {
			e.Hint = fmt.Sprintf("if an immutable field changed, annotate the object %s: \"true\" to let the agent re-create it", AnnotationRecreate)
		}
		return e
	}
	return err
}

// probeConflicts returns, by Ref.ID, the conflict messages of the objects
// whose fields another manager owns. Only objects that exist and list
// another manager for the object itself (not its status) are dry-run
// without forcing ownership; which those are comes from one metadata-only
// list per kind and namespace, so a first install or an upgrade of objects
// only this agent manages costs a few lists, not a request per object.
func (a *Applier) probeConflicts(ctx context.Context, objs []*unstructured.Unstructured) map[string]string {
	type group struct {
		gvk schema.GroupVersionKind
		ns  string
	}
	groups := map[group]map[string]bool{} // names of objects with other managers, once listed
	var candidates []*unstructured.Unstructured
	for _, o := range objs {
		g := group{o.GroupVersionKind(), o.GetNamespace()}
		others, ok := groups[g]
		if !ok {
			others = a.othersManaging(ctx, g.gvk, g.ns)
			groups[g] = others
		}
		if others[o.GetName()] {
			candidates = append(candidates, o)
		}
	}
	out := map[string]string{}
	var mu sync.Mutex
	sem := make(chan struct{}, a.opts.Concurrency)
	var wg sync.WaitGroup
	for _, o := range candidates {
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			ac := client.ApplyConfigurationFromUnstructured(o.DeepCopy())
			err := a.c.Apply(ctx, ac, client.DryRunAll, client.FieldOwner(FieldManager))
			if apierrors.IsConflict(err) {
				mu.Lock()
				out[RefOf(o).ID()] = err.Error()
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	return out
}

// othersManaging lists the objects of one kind in one namespace (all of
// them for a cluster-scoped kind) by metadata and returns the names of
// those with a field manager other than this agent on the object itself.
// An error (a kind not served yet: its CRD is in this revision) lists
// nothing: such objects do not exist yet.
func (a *Applier) othersManaging(ctx context.Context, gvk schema.GroupVersionKind, ns string) map[string]bool {
	l := &metav1.PartialObjectMetadataList{}
	l.SetGroupVersionKind(gvk.GroupVersion().WithKind(gvk.Kind + "List"))
	var opts []client.ListOption
	if ns != "" {
		opts = append(opts, client.InNamespace(ns))
	}
	if err := a.c.List(ctx, l, opts...); err != nil {
		return nil
	}
	out := map[string]bool{}
	for _, it := range l.Items {
		for _, mf := range it.ManagedFields {
			if mf.Manager != FieldManager && mf.Subresource == "" {
				out[it.Name] = true
				break
			}
		}
	}
	return out
}

// Prune deletes the stale objects, following the rules in the package
// doc. manifests are the stale objects' last applied manifests, by
// Ref.ID (for their annotations); a stale ref with no manifest is pruned
// by the default rules. Objects already gone count as deleted.
func (a *Applier) Prune(ctx context.Context, stale []Ref, manifests map[string]*unstructured.Unstructured) (Result, error) {
	var res Result
	var errs []error
	// Delete namespaced objects before the namespaces and CRDs they may
	// live in (those are kept by default anyway), in a stable order.
	stale = slices.Clone(stale)
	sort.SliceStable(stale, func(i, j int) bool { return !clusterScoped(stale[i]) && clusterScoped(stale[j]) })
	for _, r := range stale {
		m := manifests[r.ID()]
		if keep, why := keepRule(r, m); keep {
			res.Entries = append(res.Entries, Entry{Ref: r, Action: Kept, Reason: why})
			continue
		}
		e, err := a.delete(ctx, r)
		res.Entries = append(res.Entries, e)
		if err != nil {
			errs = append(errs, err)
		}
	}
	return res, errors.Join(errs...)
}

func clusterScoped(r Ref) bool { return r.Namespace == "" }

// keepRule reports whether a stale object must be kept, and why.
func keepRule(r Ref, m *unstructured.Unstructured) (bool, string) {
	ann := ""
	if m != nil {
		ann = m.GetAnnotations()[AnnotationPrune]
	}
	if ann == "false" {
		return true, AnnotationPrune + ": \"false\""
	}
	gk := r.GroupKind()
	guarded := gk == schema.GroupKind{Group: "apiextensions.k8s.io", Kind: "CustomResourceDefinition"} ||
		gk == schema.GroupKind{Kind: "Namespace"} || gk == schema.GroupKind{Kind: "PersistentVolumeClaim"}
	if guarded && ann != "true" {
		return true, fmt.Sprintf("a %s is pruned only when annotated %s: \"true\"", gk.Kind, AnnotationPrune)
	}
	return false, ""
}

// delete removes r if it still carries this agent's labels.
func (a *Applier) delete(ctx context.Context, r Ref) (Entry, error) {
	live := &unstructured.Unstructured{}
	live.SetAPIVersion(r.APIVersion)
	live.SetKind(r.Kind)
	err := a.c.Get(ctx, client.ObjectKey{Namespace: r.Namespace, Name: r.Name}, live)
	if apierrors.IsNotFound(err) || meta.IsNoMatchError(err) {
		return Entry{Ref: r, Action: Deleted, Reason: "already gone"}, nil
	}
	if err != nil {
		return Entry{Ref: r, Action: Failed, Reason: err.Error()}, fmt.Errorf("prune %s: %w", r, err)
	}
	l := live.GetLabels()
	if l[LabelVehicle] != a.opts.Vehicle || l[LabelHalf] != a.opts.Half {
		return Entry{Ref: r, Action: Kept, Reason: "no longer carries this agent's labels (someone else owns it now)"}, nil
	}
	if live.GetDeletionTimestamp() != nil {
		return Entry{Ref: r, Action: Deleted, Reason: "already being deleted"}, nil
	}
	err = a.c.Delete(ctx, live, client.PropagationPolicy(metav1.DeletePropagationBackground),
		client.Preconditions{UID: ptr(live.GetUID())})
	if err != nil && !apierrors.IsNotFound(err) {
		return Entry{Ref: r, Action: Failed, Reason: err.Error()}, fmt.Errorf("prune %s: %w", r, err)
	}
	return Entry{Ref: r, Action: Deleted}, nil
}

func ptr[T any](v T) *T { return &v }

// Summary is a one-line account of a Result, such as "3 created, 1
// configured, 40 unchanged".
func (r Result) Summary() string {
	counts := map[Action]int{}
	for _, e := range r.Entries {
		counts[e.Action]++
	}
	var parts []string
	for _, a := range []Action{Created, Configured, Unchanged, Deleted, Kept, Failed} {
		if counts[a] > 0 {
			parts = append(parts, fmt.Sprintf("%d %s", counts[a], a))
		}
	}
	if len(parts) == 0 {
		return "nothing"
	}
	return strings.Join(parts, ", ")
}

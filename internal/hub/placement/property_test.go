package placement

import (
	"fmt"
	"math/rand/v2"
	"slices"
	"testing"

	"github.com/google/go-cmp/cmp"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"

	hubv1 "github.com/misaki-io/misaki/api/hub/v1"
)

// generated is a random vehicle and deployments, with what the generator
// knows about them independently of the package: each component's
// requests and whether its workloads pin another architecture.
type generated struct {
	vehicle  hubv1.Vehicle
	deps     []DeploymentObjects
	requests map[string]corev1.ResourceList // "deployment/component"
	wrongCPU map[string]bool                // "deployment/component"
}

var (
	kinds  = []string{"Deployment", "StatefulSet", "DaemonSet", "Job", "CronJob"}
	arches = []string{"", "arm64", "amd64"}
	pols   = []string{hubv1.PlaceVehicle, hubv1.PlaceCloud, hubv1.PlaceAuto}
)

func generate(seed uint64) generated {
	r := rand.New(rand.NewPCG(seed, seed*0x9e3779b97f4a7c15+1))
	g := generated{requests: map[string]corev1.ResourceList{}, wrongCPU: map[string]bool{}}
	g.vehicle = hubv1.Vehicle{ID: "car", Facts: hubv1.Facts{Arch: arches[r.IntN(len(arches))]}}
	if r.IntN(10) > 0 {
		g.vehicle.Allocatable = hubv1.ResourceList{
			"cpu":    fmt.Sprintf("%dm", r.IntN(4000)+1),
			"memory": fmt.Sprintf("%dMi", r.IntN(8192)+1),
		}
		if r.IntN(3) == 0 {
			g.vehicle.Allocatable["nvidia.com/gpu"] = fmt.Sprint(r.IntN(2))
		}
	}
	for d := range r.IntN(3) + 1 {
		dep := hubv1.Deployment{Name: fmt.Sprintf("d%d", d), Namespace: fmt.Sprintf("ns%d", d)}
		if r.IntN(5) == 0 {
			dep.DefaultPlacement = pols[r.IntN(3)]
		}
		annotation := map[string]string{} // component → its workloads' placement annotation
		var objs []*unstructured.Unstructured
		for w := range r.IntN(5) + 1 {
			name := fmt.Sprintf("%s-w%d", dep.Name, w) // unique across the cloud namespace
			comp := name
			ann := map[string]any{}
			if r.IntN(3) == 0 {
				comp = fmt.Sprintf("c%d", r.IntN(2))
				ann[AnnotationComponent] = comp
			}
			if _, ok := annotation[comp]; !ok {
				annotation[comp] = ""
				if r.IntN(3) == 0 {
					annotation[comp] = pols[r.IntN(3)]
				}
			}
			if a := annotation[comp]; a != "" {
				ann[AnnotationPlacement] = a
			}
			if r.IntN(5) == 0 {
				if dep.Placement == nil {
					dep.Placement = map[string]string{}
				}
				dep.Placement[comp] = pols[r.IntN(3)]
			}
			key := dep.Name + "/" + comp
			pod, perPod := randomPod(r)
			if sel, ok := pod["nodeSelector"].(map[string]any); ok && g.vehicle.Facts.Arch != "" && sel[corev1.LabelArchStable] != g.vehicle.Facts.Arch {
				g.wrongCPU[key] = true
			}
			kind := kinds[r.IntN(len(kinds))]
			obj, mult := workloadObject(r, kind, name, dep.Namespace, ann, pod)
			if g.requests[key] == nil {
				g.requests[key] = corev1.ResourceList{}
			}
			for n, q := range perPod {
				q = q.DeepCopy()
				q.Mul(mult)
				add(g.requests[key], n, q)
			}
			objs = append(objs, obj)
		}
		g.deps = append(g.deps, DeploymentObjects{Deployment: dep, Objects: objs})
	}
	return g
}

// randomPod returns a pod spec and its per-pod requests, worked out the
// simple way: the larger of the app containers' sum and the init
// container, limits standing in for missing requests.
func randomPod(r *rand.Rand) (map[string]any, corev1.ResourceList) {
	resources := func() (map[string]any, corev1.ResourceList) {
		reqs, lims := map[string]any{}, map[string]any{}
		want := corev1.ResourceList{}
		set := func(name, q string) {
			want[corev1.ResourceName(name)] = resource.MustParse(q)
			if r.IntN(5) == 0 {
				lims[name] = q
			} else {
				reqs[name] = q
			}
		}
		if n := r.IntN(1500); n > 0 {
			set("cpu", fmt.Sprintf("%dm", n))
		}
		if n := r.IntN(1024); n > 0 {
			set("memory", fmt.Sprintf("%dMi", n))
		}
		if r.IntN(10) == 0 {
			set("nvidia.com/gpu", "1")
		}
		return map[string]any{"requests": reqs, "limits": lims}, want
	}
	var ctrs []any
	app := corev1.ResourceList{}
	for c := range r.IntN(2) + 1 {
		res, want := resources()
		ctrs = append(ctrs, map[string]any{"name": fmt.Sprintf("c%d", c), "image": "x", "resources": res})
		addList(app, want)
	}
	pod := map[string]any{"containers": ctrs, "restartPolicy": "OnFailure"}
	if r.IntN(3) == 0 {
		res, want := resources()
		pod["initContainers"] = []any{map[string]any{"name": "init", "image": "x", "resources": res}}
		maxList(app, want)
	}
	if r.IntN(8) == 0 {
		pod["nodeSelector"] = map[string]any{corev1.LabelArchStable: arches[1+r.IntN(2)]}
	}
	return pod, app
}

// workloadObject wraps a pod in a workload of kind and returns how many
// of its pods run at once.
func workloadObject(r *rand.Rand, kind, name, ns string, ann map[string]any, pod map[string]any) (*unstructured.Unstructured, int64) {
	template := map[string]any{"metadata": map[string]any{"labels": map[string]any{"app": name}}, "spec": pod}
	spec := map[string]any{"selector": map[string]any{"matchLabels": map[string]any{"app": name}}, "template": template}
	mult := int64(1)
	job := func() map[string]any {
		js := map[string]any{"template": template}
		par, comp := int64(1), int64(-1)
		if r.IntN(2) == 0 {
			par = int64(r.IntN(4))
			js["parallelism"] = par
		}
		if r.IntN(2) == 0 {
			comp = int64(r.IntN(3) + 1)
			js["completions"] = comp
		}
		mult = par
		if comp >= 0 && comp < par {
			mult = comp
		}
		return js
	}
	apiVersion := "apps/v1"
	switch kind {
	case "Deployment", "StatefulSet":
		if r.IntN(2) == 0 {
			mult = int64(r.IntN(4))
			spec["replicas"] = mult
		}
	case "Job":
		apiVersion, spec = "batch/v1", job()
	case "CronJob":
		apiVersion, spec = "batch/v1", map[string]any{"schedule": "@hourly", "jobTemplate": map[string]any{"spec": job()}}
	}
	return &unstructured.Unstructured{Object: map[string]any{
		"apiVersion": apiVersion, "kind": kind,
		"metadata": map[string]any{"name": name, "namespace": ns, "annotations": ann},
		"spec":     spec,
	}}, mult
}

// FuzzPlace checks Place against an independent model on random inputs:
// each component's requests are what the generator put in; an auto
// component goes to the vehicle exactly when it fits what the components
// decided before it left free; so the auto components on the vehicle
// never request more than the vehicle has. It also checks that every
// input object lands in a half and that Place is deterministic. The seeds
// run as a unit test; go test -fuzz=FuzzPlace explores further.
func FuzzPlace(f *testing.F) {
	for s := range 300 {
		f.Add(uint64(s))
	}
	f.Fuzz(func(t *testing.T, seed uint64) {
		g := generate(seed)
		res, err := Place(g.vehicle, g.deps, Options{GatewayURL: testGateway})
		if err != nil {
			t.Fatalf("seed %d: %v", seed, err)
		}
		alloc, err := parseList(g.vehicle.Allocatable)
		if err != nil {
			t.Fatal(err)
		}

		byDep := map[string][]hubv1.ComponentPlacement{}
		for _, cp := range res.Placement {
			key := cp.Deployment + "/" + cp.Component
			got, err := parseList(cp.Requests)
			if err != nil {
				t.Fatalf("%s: requests: %v", key, err)
			}
			if !sameList(got, g.requests[key]) {
				t.Errorf("%s: requests %v, generator put in %v", key, cp.Requests, toWire(g.requests[key]))
			}
			byDep[cp.Deployment] = append(byDep[cp.Deployment], cp)
		}
		if len(res.Placement) != len(g.requests) {
			t.Errorf("%d components placed, generator made %d", len(res.Placement), len(g.requests))
		}

		// Replay the decisions in Place's documented order.
		used, autoOnVehicle := corev1.ResourceList{}, corev1.ResourceList{}
		for _, d := range g.deps {
			cps := byDep[d.Deployment.Name]
			for _, pol := range []string{hubv1.PlaceVehicle, hubv1.PlaceAuto} {
				for _, cp := range cps {
					if cp.Policy != pol {
						continue
					}
					key := cp.Deployment + "/" + cp.Component
					reqs := g.requests[key]
					want := hubv1.PlaceVehicle
					if pol == hubv1.PlaceAuto {
						switch {
						case len(g.vehicle.Allocatable) == 0, g.wrongCPU[key]:
							want = hubv1.PlaceCloud
						case !fitsModel(reqs, alloc, used):
							want = hubv1.PlaceCloud
						}
					}
					if cp.Place != want {
						t.Errorf("%s (%s): placed %s, want %s; requests %v, allocatable %v, used before %v; reason %q",
							key, pol, cp.Place, want, toWire(reqs), g.vehicle.Allocatable, toWire(used), cp.Reason)
					}
					if cp.Place == hubv1.PlaceVehicle {
						addList(used, reqs)
						if pol == hubv1.PlaceAuto {
							addList(autoOnVehicle, reqs)
						}
					}
				}
			}
		}
		for name, q := range autoOnVehicle {
			a := alloc[name]
			if q.Sign() > 0 && q.Cmp(a) > 0 {
				t.Errorf("auto components on the vehicle request %s %s; allocatable %s", name, q.String(), a.String())
			}
		}

		// Every input object is in a half.
		in := map[string]bool{}
		for _, u := range res.Vehicle {
			in[ref(u, u.GetNamespace())] = true
		}
		for _, u := range res.Cloud {
			in[u.GetKind()+"/"+u.GetName()] = true
		}
		for _, d := range g.deps {
			for _, u := range d.Objects {
				if !in[ref(u, u.GetNamespace())] && !in[u.GetKind()+"/"+u.GetName()] {
					t.Errorf("%s is in neither half", ref(u, u.GetNamespace()))
				}
			}
		}

		again, err := Place(g.vehicle, g.deps, Options{GatewayURL: testGateway})
		if err != nil {
			t.Fatal(err)
		}
		if diff := cmp.Diff(res, again); diff != "" {
			t.Errorf("the same input placed twice differs:\n%s", diff)
		}
	})
}

// fitsModel is the fit rule written out plainly: every nonzero request is
// at most allocatable minus used, a resource not allocatable having 0.
func fitsModel(reqs, alloc, used corev1.ResourceList) bool {
	for name, q := range reqs {
		if q.Sign() == 0 {
			continue
		}
		free := resource.MustParse("0")
		if a, ok := alloc[name]; ok {
			free = a.DeepCopy()
		}
		if u, ok := used[name]; ok {
			free.Sub(u)
		}
		if q.Cmp(free) > 0 {
			return false
		}
	}
	return true
}

// sameList compares resource lists by value, a missing entry being 0.
func sameList(a, b corev1.ResourceList) bool {
	for _, name := range slices.Concat(names(a), names(b)) {
		x, y := a[name], b[name]
		if x.Cmp(y) != 0 {
			return false
		}
	}
	return true
}

package system

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"slices"
	"strings"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/client-go/dynamic"

	hubv1 "github.com/misaki-io/misaki/api/hub/v1"
)

// story plays the demo's story, each step recording its checks. An error
// stops it, since each step builds on the one before.
func (d *run) story(ctx context.Context) error {
	if err := d.setUp(ctx); err != nil {
		return fmt.Errorf("set-up: %w", err)
	}
	d.setLive(true)
	steps := []struct {
		name string
		do   func(context.Context) error
	}{
		{"enrolment", d.enrolled},
		{"step 1 (can-uploader)", d.canUploader},
		{"step 2 (video-pipeline)", d.videoPipeline},
		{"step 3 (the data path)", d.dataPath},
		{"step 4 (a vehicle cut off)", d.cutOff},
	}
	for _, s := range steps {
		if err := s.do(ctx); err != nil {
			return fmt.Errorf("%s: %w", s.name, err)
		}
	}
	return nil
}

// enrolled waits until both agents have enrolled and reported their
// cluster's allocatable resources, which placement decides by.
func (d *run) enrolled(ctx context.Context) error {
	want := map[string]string{hiVehicle: "8", loVehicle: "2"}
	got := map[string]string{}
	for _, v := range []string{hiVehicle, loVehicle} {
		err := poll(ctx, d.cfg.Timeout, d.agents[v], func() error {
			var tw hubv1.Twin
			if err := d.hub.get(ctx, "/v1/vehicles/"+v, &tw); err != nil {
				return err
			}
			if tw.Vehicle.Enrolled == nil {
				return fmt.Errorf("%s has not enrolled", v)
			}
			if c := tw.Vehicle.Allocatable["cpu"]; c != want[v] {
				return fmt.Errorf("%s reports cpu %q allocatable, want %s", v, c, want[v])
			}
			got[v] = fmt.Sprintf("%s: cpu %s, memory %s", v, tw.Vehicle.Allocatable["cpu"], tw.Vehicle.Allocatable["memory"])
			return nil
		})
		d.chk.add(v+"'s agent enrolled with its bootstrap token and reported its cluster", err == nil, firstErr(err, got[v]))
		if err != nil {
			return err
		}
	}
	return nil
}

// canUploader is step 1: the CAN-data uploader to both vehicles.
func (d *run) canUploader(ctx context.Context) error {
	d.con.printf("\n== step 1: a CAN-data uploader for every vehicle of the fleet ==\n")
	if _, err := d.hub.misaki(ctx, d.con, false, "deploy", "create", deployName,
		"--chart", "demo/can-uploader", "--version", "1.0.0", "--selector", fleetLabel, "--namespace", appNS); err != nil {
		return err
	}
	var details []string
	for _, v := range []string{hiVehicle, loVehicle} {
		rp, err := d.waitHalf(ctx, v, hubv1.HalfVehicle, 1)
		if err == nil {
			err = d.deploymentReady(ctx, v, appNS, "can-uploader")
		}
		if err != nil {
			d.chk.add("can-uploader Healthy on both vehicles", false, err.Error())
			return err
		}
		details = append(details, fmt.Sprintf("%s revision %d", v, rp.AppliedRevision))
	}
	d.chk.add("can-uploader Healthy on both vehicles", true, strings.Join(details, ", ")+"; Deployment apps/can-uploader ready in both clusters")
	return nil
}

// videoPipeline is step 2: the deployment's chart becomes video-pipeline,
// in one update; inference fits car-hi and not car-lo.
func (d *run) videoPipeline(ctx context.Context) error {
	d.con.printf("\n== step 2: the uploader is replaced by a video pipeline, rolled out to the high-spec vehicle first ==\n")
	if _, err := d.hub.misaki(ctx, d.con, false, "deploy", "update", deployName,
		"--chart", "demo/video-pipeline", "--version", "1.0.0", "--canary", canaryFlag); err != nil {
		return err
	}
	for _, w := range []struct{ v, half string }{{hiVehicle, hubv1.HalfVehicle}, {loVehicle, hubv1.HalfVehicle}, {loVehicle, hubv1.HalfCloud}} {
		if _, err := d.waitHalf(ctx, w.v, w.half, 2); err != nil {
			d.chk.add("video-pipeline Healthy on both vehicles and in car-lo's cloud namespace", false, err.Error())
			return err
		}
	}
	d.chk.add("video-pipeline Healthy on both vehicles and in car-lo's cloud namespace", true, "generation 2 everywhere")

	// Placement, as the hub decided it and as the clusters show it.
	hi, errHi := d.placement(ctx, hiVehicle, "inference")
	ok := errHi == nil && hi.Place == hubv1.PlaceVehicle
	if ok {
		errHi = d.deploymentReady(ctx, hiVehicle, appNS, "inference")
		ok = errHi == nil
	}
	d.chk.add("inference runs on car-hi, which has room for it", ok, firstErr(errHi, fmt.Sprintf("place %s: %s", hi.Place, hi.Reason)))
	lo, errLo := d.placement(ctx, loVehicle, "inference")
	ok = errLo == nil && lo.Place == hubv1.PlaceCloud
	if ok {
		errLo = errs(d.deploymentReady(ctx, cloudName, "misaki-v-"+loVehicle, "inference"),
			d.absent(ctx, loVehicle, appNS, "inference"))
		ok = errLo == nil
	}
	d.chk.add("inference runs in the cloud for car-lo, which has not (misaki-v-car-lo, applied by the cloud agent)", ok,
		firstErr(errLo, fmt.Sprintf("place %s: %s", lo.Place, lo.Reason)))

	// The vehicle half's Route to the gateway, for the same name.
	rt, err := d.route(ctx, loVehicle, appNS, "misaki-cloud-inference")
	var detail string
	if err == nil {
		url, _, _ := unstructured.NestedString(rt.Object, "spec", "destination", "url")
		hosts, _, _ := unstructured.NestedStringSlice(rt.Object, "spec", "hosts")
		switch {
		case url != "https://"+d.gwAddr:
			err = fmt.Errorf("destination %q, want the gateway https://%s", url, d.gwAddr)
		case !slices.Contains(hosts, "inference."+appNS+".svc.cluster.local"):
			err = fmt.Errorf("hosts %v lack inference.%s.svc.cluster.local", hosts, appNS)
		default:
			detail = fmt.Sprintf("hosts %s → %s; %s", strings.Join(hosts, " "), url, routeAccepted(rt))
		}
	}
	if err == nil {
		err = d.absent(ctx, hiVehicle, appNS, "misaki-cloud-inference")
	}
	d.chk.add("car-lo's vehicle half has a Route for Service inference to the gateway (car-hi none)", err == nil, firstErr(err, detail))

	err = errs(d.absent(ctx, hiVehicle, appNS, "can-uploader"), d.absent(ctx, loVehicle, appNS, "can-uploader"))
	d.chk.add("can-uploader pruned from both vehicles by the same revision", err == nil, firstErr(err, "the revision no longer lists it"))

	d.checkCanaryFirst(ctx, 2)
	_, err = d.hub.misaki(ctx, d.con, false, "rollout", "show", deployName, "2")
	return err
}

// placement is vehicle v's placement of a component of the deployment.
func (d *run) placement(ctx context.Context, v, component string) (hubv1.ComponentPlacement, error) {
	var tw hubv1.Twin
	if err := d.hub.get(ctx, "/v1/vehicles/"+v, &tw); err != nil {
		return hubv1.ComponentPlacement{}, err
	}
	for _, p := range tw.Placement {
		if p.Deployment == deployName && p.Component == component {
			return p, nil
		}
	}
	return hubv1.ComponentPlacement{}, fmt.Errorf("%s's twin has no placement of %s/%s", v, deployName, component)
}

// waitHalf waits until vehicle v's half runs the hub's newest revision for
// it, Healthy, rendered from generation gen of the deployment.
func (d *run) waitHalf(ctx context.Context, v, half string, gen int64) (hubv1.Reported, error) {
	var rp hubv1.Reported
	err := poll(ctx, d.cfg.Timeout, d.agentOf(v, half), func() error {
		var tw hubv1.Twin
		if err := d.hub.get(ctx, "/v1/vehicles/"+v, &tw); err != nil {
			return err
		}
		ds, _ := desiredOf(tw, half)
		r, ok := reportedOf(tw, half)
		if !ok {
			return fmt.Errorf("%s %s half: desired revision %d, nothing reported", v, half, ds.Revision)
		}
		rp = r
		if r.AppliedRevision == ds.Revision && r.Phase == hubv1.PhaseHealthy && genOf(r, deployName) == gen {
			return nil
		}
		msg := fmt.Sprintf("%s %s half: desired revision %d, applied %d %s generation %d (want generation %d Healthy)",
			v, half, ds.Revision, r.AppliedRevision, r.Phase, genOf(r, deployName), gen)
		if r.Failure != nil {
			msg += ": " + r.Failure.Reason
		}
		return errors.New(msg)
	})
	if err == nil {
		d.con.say("%s %s half: revision %d Healthy, generation %d", v, half, rp.AppliedRevision, gen)
	}
	return rp, err
}

// deploymentReady checks that Deployment ns/name in a cluster has its
// replicas ready.
func (d *run) deploymentReady(ctx context.Context, cluster, ns, name string) error {
	dep, err := d.clusters[cluster].Client.AppsV1().Deployments(ns).Get(ctx, name, metav1.GetOptions{})
	if err != nil {
		return fmt.Errorf("cluster %s: %w", cluster, err)
	}
	if !ready(dep) {
		return fmt.Errorf("cluster %s: Deployment %s/%s: %d of %d replicas ready", cluster, ns, name, dep.Status.ReadyReplicas, *dep.Spec.Replicas)
	}
	return nil
}

func ready(dep *appsv1.Deployment) bool {
	return dep.Spec.Replicas != nil && dep.Status.ReadyReplicas == *dep.Spec.Replicas && dep.Status.ObservedGeneration >= dep.Generation
}

// absent checks that a cluster has no Deployment, or for a misaki-cloud-
// name no Route, ns/name.
func (d *run) absent(ctx context.Context, cluster, ns, name string) error {
	var err error
	kind := "Deployment"
	if strings.HasPrefix(name, "misaki-cloud-") {
		kind = "Route"
		_, err = d.route(ctx, cluster, ns, name)
	} else {
		_, err = d.clusters[cluster].Client.AppsV1().Deployments(ns).Get(ctx, name, metav1.GetOptions{})
	}
	switch {
	case apierrors.IsNotFound(err):
		return nil
	case err != nil:
		return fmt.Errorf("cluster %s: %w", cluster, err)
	default:
		return fmt.Errorf("cluster %s still has %s %s/%s", cluster, kind, ns, name)
	}
}

var routeGVR = schema.GroupVersionResource{Group: "mesh.misaki.io", Version: "v1alpha1", Resource: "routes"}

// route reads Route ns/name from a cluster.
func (d *run) route(ctx context.Context, cluster, ns, name string) (*unstructured.Unstructured, error) {
	dc, err := dynamic.NewForConfig(d.clusters[cluster].Config)
	if err != nil {
		return nil, err
	}
	return dc.Resource(routeGVR).Namespace(ns).Get(ctx, name, metav1.GetOptions{})
}

// routeAccepted says what the controller made of a Route.
func routeAccepted(rt *unstructured.Unstructured) string {
	conds, _, _ := unstructured.NestedSlice(rt.Object, "status", "conditions")
	for _, c := range conds {
		m, _ := c.(map[string]any)
		if m["type"] == "Accepted" {
			return fmt.Sprintf("Accepted=%v by the controller", m["status"])
		}
	}
	return "no status from the controller yet"
}

// deploymentEnv is the value of env var name in the first container of
// Deployment ns/name.
func (d *run) deploymentEnv(ctx context.Context, cluster, ns, name, env string) (string, error) {
	dep, err := d.clusters[cluster].Client.AppsV1().Deployments(ns).Get(ctx, name, metav1.GetOptions{})
	if err != nil {
		return "", fmt.Errorf("cluster %s: %w", cluster, err)
	}
	for _, e := range dep.Spec.Template.Spec.Containers[0].Env {
		if e.Name == env {
			return e.Value, nil
		}
	}
	return "", fmt.Errorf("cluster %s: Deployment %s/%s has no env %s", cluster, ns, name, env)
}

// acceptedRevisions reads the revisions an agent accepted, in order, from
// its JSON log ("revision accepted").
func acceptedRevisions(path string) ([]int64, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	var revs []int64
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 64<<10), 4<<20)
	for sc.Scan() {
		var l struct {
			Msg      string `json:"msg"`
			Revision int64  `json:"revision"`
		}
		if json.Unmarshal(sc.Bytes(), &l) == nil && l.Msg == "revision accepted" {
			revs = append(revs, l.Revision)
		}
	}
	return revs, sc.Err()
}

// firstErr is err's text, else ok.
func firstErr(err error, ok string) string {
	if err != nil {
		return err.Error()
	}
	return ok
}

// since is a duration for people.
func since(t time.Time) string { return time.Since(t).Round(100 * time.Millisecond).String() }

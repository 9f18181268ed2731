package placement

import (
	"fmt"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"

	hubv1 "github.com/misaki-io/misaki/api/hub/v1"
	"github.com/misaki-io/misaki/api/v1alpha1"
)

// RoutePrefix starts the name of every Route Place generates:
// misaki-cloud-<service>.
const RoutePrefix = "misaki-cloud-"

// Labels on generated Routes.
const (
	LabelManagedBy  = "app.kubernetes.io/managed-by"
	ManagedBy       = "misaki-hub"
	LabelDeployment = "misaki.io/deployment"
)

// routes builds the deployment's Routes to its cloud Services, and notes
// on the cloud components' reasons the Services that get none.
// vehicleWorkload says whether the vehicle half has a workload to call
// them. Every Service's misaki.io/offline annotation is checked, wherever
// it is placed, so a bad one fails on every vehicle alike.
func (p *placed) routes(vehicleWorkload bool, opts Options) ([]*unstructured.Unstructured, error) {
	var out []*unstructured.Unstructured
	for i, u := range p.dep.Objects {
		if !isCore(u, "Service") {
			continue
		}
		ns, name := p.an.ns[i], u.GetName()
		offline := opts.RouteOffline
		if a, ok := u.GetAnnotations()[AnnotationOffline]; ok {
			o, err := parseOffline(a)
			if err != nil {
				return nil, fmt.Errorf("service %s/%s: annotation %s: %w; want a JSON offline policy such as {\"hold\":\"30s\",\"spool\":true}",
					ns, name, AnnotationOffline, err)
			}
			offline = o
		}
		if !p.cloud[i] || !vehicleWorkload {
			continue
		}
		switch {
		case p.vehicle[i]:
			p.note(i, fmt.Sprintf("Service %s/%s also serves %s on the vehicle, so the vehicle calls its own pods (no Route)",
				ns, name, p.vehicleUsers(i)))
			continue
		case opts.GatewayURL == "":
			p.note(i, fmt.Sprintf("no Route to Service %s/%s: the hub has no gateway URL", ns, name))
			continue
		}
		r, err := route(ns, name, p.dep.Deployment.Name, offline, opts)
		if err != nil {
			return nil, fmt.Errorf("service %s/%s: route: %w", ns, name, err)
		}
		out = append(out, r)
	}
	return out, nil
}

// note appends to the reason of each cloud component object i belongs to.
func (p *placed) note(i int, s string) {
	for _, ci := range p.an.memberOf[i] {
		if p.place[ci] == hubv1.PlaceCloud {
			p.reason[ci] += "; " + s
		}
	}
}

// vehicleUsers names the vehicle components object i belongs to.
func (p *placed) vehicleUsers(i int) string {
	s := ""
	for _, ci := range p.an.memberOf[i] {
		if p.place[ci] == hubv1.PlaceVehicle {
			if s != "" {
				s += ", "
			}
			s += p.an.comps[ci].name
		}
	}
	return s
}

// route is the Route that sends the vehicle's calls to Service ns/name
// through the cloud gateway.
func route(ns, name, deployment string, offline *v1alpha1.Offline, opts Options) (*unstructured.Unstructured, error) {
	r := &v1alpha1.Route{
		TypeMeta: metav1.TypeMeta{APIVersion: v1alpha1.GroupVersion.String(), Kind: "Route"},
		ObjectMeta: metav1.ObjectMeta{
			Name:      RoutePrefix + name,
			Namespace: ns,
			Labels:    map[string]string{LabelManagedBy: ManagedBy, LabelDeployment: deployment},
		},
		Spec: v1alpha1.RouteSpec{
			Hosts: []v1alpha1.Host{
				v1alpha1.Host(name + "." + ns + ".svc." + opts.ClusterDomain),
				v1alpha1.Host(name + "." + ns + ".svc"),
				v1alpha1.Host(name + "." + ns),
				v1alpha1.Host(name),
			},
			Destination: v1alpha1.Destination{URL: opts.GatewayURL, TLS: opts.GatewayTLS.DeepCopy()},
			Offline:     offline.DeepCopy(),
		},
	}
	m, err := runtime.DefaultUnstructuredConverter.ToUnstructured(r)
	if err != nil {
		return nil, err
	}
	delete(m, "status") // the controller's to write
	return &unstructured.Unstructured{Object: m}, nil
}

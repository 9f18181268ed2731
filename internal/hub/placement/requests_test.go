package placement

import (
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"

	hubv1 "github.com/misaki-io/misaki/api/hub/v1"
)

func rl(kv ...string) corev1.ResourceList {
	out := corev1.ResourceList{}
	for i := 0; i < len(kv); i += 2 {
		out[corev1.ResourceName(kv[i])] = resource.MustParse(kv[i+1])
	}
	return out
}

func ctr(name string, req, lim corev1.ResourceList) corev1.Container {
	return corev1.Container{Name: name, Resources: corev1.ResourceRequirements{Requests: req, Limits: lim}}
}

func sidecar(name string, req corev1.ResourceList) corev1.Container {
	c := ctr(name, req, nil)
	always := corev1.ContainerRestartPolicyAlways
	c.RestartPolicy = &always
	return c
}

func TestPodRequests(t *testing.T) {
	tests := []struct {
		name string
		pod  corev1.PodSpec
		want hubv1.ResourceList
	}{
		{name: "no requests", pod: corev1.PodSpec{Containers: []corev1.Container{{Name: "a"}}}},
		{
			name: "containers are summed",
			pod: corev1.PodSpec{Containers: []corev1.Container{
				ctr("a", rl("cpu", "100m", "memory", "64Mi"), nil),
				ctr("b", rl("cpu", "1", "ephemeral-storage", "1Gi"), nil),
			}},
			want: hubv1.ResourceList{"cpu": "1100m", "memory": "64Mi", "ephemeral-storage": "1Gi"},
		},
		{
			name: "a limit stands in for a missing request, not for a set one",
			pod: corev1.PodSpec{Containers: []corev1.Container{
				ctr("a", rl("cpu", "100m"), rl("cpu", "2", "memory", "1Gi", "nvidia.com/gpu", "1")),
			}},
			want: hubv1.ResourceList{"cpu": "100m", "memory": "1Gi", "nvidia.com/gpu": "1"},
		},
		{
			name: "the larger of an init container and the app containers, per resource",
			pod: corev1.PodSpec{
				InitContainers: []corev1.Container{ctr("init", rl("cpu", "2", "memory", "10Mi"), nil)},
				Containers:     []corev1.Container{ctr("a", rl("cpu", "100m", "memory", "100Mi"), nil)},
			},
			want: hubv1.ResourceList{"cpu": "2", "memory": "100Mi"},
		},
		{
			name: "init containers run one at a time: the largest counts, not their sum",
			pod: corev1.PodSpec{
				InitContainers: []corev1.Container{ctr("i1", rl("cpu", "1"), nil), ctr("i2", rl("cpu", "1500m"), nil)},
				Containers:     []corev1.Container{ctr("a", rl("cpu", "100m"), nil)},
			},
			want: hubv1.ResourceList{"cpu": "1500m"},
		},
		{
			name: "a sidecar started before an init container counts with it",
			pod: corev1.PodSpec{
				InitContainers: []corev1.Container{sidecar("proxy", rl("cpu", "200m")), ctr("setup", rl("cpu", "500m"), nil)},
				Containers:     []corev1.Container{ctr("a", rl("cpu", "100m"), nil)},
			},
			want: hubv1.ResourceList{"cpu": "700m"},
		},
		{
			name: "a sidecar started after an init container does not",
			pod: corev1.PodSpec{
				InitContainers: []corev1.Container{ctr("setup", rl("cpu", "500m"), nil), sidecar("proxy", rl("cpu", "200m"))},
				Containers:     []corev1.Container{ctr("a", rl("cpu", "100m"), nil)},
			},
			want: hubv1.ResourceList{"cpu": "500m"},
		},
		{
			name: "sidecars add to the app containers and to each other",
			pod: corev1.PodSpec{
				InitContainers: []corev1.Container{sidecar("s1", rl("memory", "64Mi")), sidecar("s2", rl("memory", "32Mi"))},
				Containers:     []corev1.Container{ctr("a", rl("memory", "128Mi"), nil)},
			},
			want: hubv1.ResourceList{"memory": "224Mi"},
		},
		{
			name: "pod-level requests replace cpu and memory, not other resources",
			pod: corev1.PodSpec{
				Resources:  &corev1.ResourceRequirements{Requests: rl("cpu", "1", "ephemeral-storage", "9Gi")},
				Containers: []corev1.Container{ctr("a", rl("cpu", "200m", "ephemeral-storage", "1Gi"), nil), ctr("b", rl("cpu", "200m"), nil)},
			},
			want: hubv1.ResourceList{"cpu": "1", "ephemeral-storage": "1Gi"},
		},
		{
			name: "a pod-level limit stands in where nothing requests",
			pod: corev1.PodSpec{
				Resources:  &corev1.ResourceRequirements{Limits: rl("cpu", "4", "memory", "2Gi")},
				Containers: []corev1.Container{ctr("a", rl("cpu", "200m"), nil)},
			},
			want: hubv1.ResourceList{"cpu": "200m", "memory": "2Gi"},
		},
		{
			name: "overhead is added",
			pod: corev1.PodSpec{
				Overhead:   rl("cpu", "250m", "memory", "120Mi"),
				Containers: []corev1.Container{ctr("a", rl("cpu", "250m"), nil)},
			},
			want: hubv1.ResourceList{"cpu": "500m", "memory": "120Mi"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := podRequests(&tt.pod)
			if err != nil {
				t.Fatal(err)
			}
			if diff := cmp.Diff(tt.want, toWire(got)); diff != "" {
				t.Errorf("requests (-want +got):\n%s", diff)
			}
		})
	}
}

func TestPodRequestsNegative(t *testing.T) {
	pod := corev1.PodSpec{Containers: []corev1.Container{ctr("a", rl("cpu", "-1"), nil)}}
	if _, err := podRequests(&pod); err == nil || !strings.Contains(err.Error(), "negative cpu") {
		t.Fatalf("err = %v, want negative cpu", err)
	}
}

// TestPodRequestsDoesNotAlias checks that summing never writes through a
// Quantity shared with the pod (a Quantity past int64 holds a pointer).
func TestPodRequestsDoesNotAlias(t *testing.T) {
	big := "100000000000000000000" // past int64: an inf.Dec inside
	pod := corev1.PodSpec{
		InitContainers: []corev1.Container{sidecar("s", rl("example.com/x", big))},
		Containers:     []corev1.Container{ctr("a", rl("example.com/x", big), nil), ctr("b", rl("example.com/x", big), nil)},
	}
	got, err := podRequests(&pod)
	if err != nil {
		t.Fatal(err)
	}
	if q := got["example.com/x"]; q.Cmp(resource.MustParse("300000000000000000000")) != 0 {
		t.Errorf("sum = %s, want 3e20", q.String())
	}
	for _, c := range append(pod.InitContainers, pod.Containers...) {
		if q := c.Resources.Requests["example.com/x"]; q.Cmp(resource.MustParse(big)) != 0 {
			t.Errorf("container %s's request changed to %s", c.Name, q.String())
		}
	}
}

package inject

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	admissionv1 "k8s.io/api/admission/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"sigs.k8s.io/controller-runtime/pkg/webhook/admission"
	"sigs.k8s.io/yaml"

	proxyconfig "github.com/misaki-io/misaki/internal/proxy/config"
)

var update = flag.Bool("update", false, "rewrite the golden files")

func testConfig(t *testing.T) *Config {
	t.Helper()
	c := &Config{
		Image:         "ghcr.io/misaki-io/misaki-proxy:v0.1.0",
		ClusterDNS:    []string{"10.96.0.10"},
		XDSIdentity:   &XDSIdentity{}, // as the controller sets it with --xds-auth mtls
		LinkAgentPort: 15021,
		Proxy: map[string]any{
			"links": []any{map[string]any{"name": "eth", "match": "eth0", "class": "ethernet"}},
			"dns":   map[string]any{"maxEntries": 5000},
		},
	}
	c.SetDefaults("misaki-system")
	if err := c.Check(); err != nil {
		t.Fatal(err)
	}
	return c
}

// TestPodGolden runs every case of testdata/pods.in.yaml through Pod.
func TestPodGolden(t *testing.T) {
	c := testConfig(t)
	b, err := os.ReadFile("testdata/pods.in.yaml")
	if err != nil {
		t.Fatal(err)
	}
	var cases []struct {
		Name      string     `json:"name"`
		Namespace string     `json:"namespace"`
		Pod       corev1.Pod `json:"pod"`
	}
	if err := yaml.UnmarshalStrict(b, &cases); err != nil {
		t.Fatal(err)
	}
	var got strings.Builder
	for _, tc := range cases {
		out, reason, err := c.Pod(&tc.Pod, tc.Namespace)
		fmt.Fprintf(&got, "### %s\n", tc.Name)
		switch {
		case err != nil:
			if !errors.Is(err, ErrRefused) {
				t.Errorf("%s: error %v does not wrap ErrRefused", tc.Name, err)
			}
			fmt.Fprintf(&got, "refused: %v\n", err)
		case out == nil:
			fmt.Fprintf(&got, "not injected: %s\n", reason)
		default:
			y, err := yaml.Marshal(out)
			if err != nil {
				t.Fatal(err)
			}
			got.Write(y)
			// The config handed to the proxy is one it accepts.
			var cfg string
			for _, e := range out.Spec.InitContainers[0].Env {
				if e.Name == "MISAKI_PROXY_CONFIG" {
					cfg = e.Value
				}
			}
			// xds.node: what misaki-proxy takes from $POD_NAMESPACE/$POD_NAME.
			if _, err := proxyconfig.ParseWith([]byte(cfg), proxyconfig.Overrides{Node: tc.Namespace + "/p"}); err != nil {
				t.Errorf("%s: the proxy refuses its injected config: %v\n%s", tc.Name, err, cfg)
			}
		}
	}
	const golden = "testdata/pods.golden"
	if *update {
		if err := os.WriteFile(golden, []byte(got.String()), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want, err := os.ReadFile(golden)
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(string(want), got.String()); diff != "" {
		t.Errorf("%s differs (-want +got; go test -update to accept):\n%s", golden, diff)
	}
}

func TestConfigRefusals(t *testing.T) {
	for name, tc := range map[string]struct {
		c    Config
		want string
	}{
		"no image":         {Config{ClusterDNS: []string{"10.96.0.10"}}, "image: required"},
		"no dns":           {Config{Image: "x"}, "clusterDNS: no resolvers"},
		"bad dns":          {Config{Image: "x", ClusterDNS: []string{"kube-dns"}}, `clusterDNS[0]: "kube-dns" is not an IP`},
		"reserved":         {Config{Image: "x", ClusterDNS: []string{"10.96.0.10"}, Proxy: map[string]any{"listen": ":1"}}, "proxy.listen: set by the injector"},
		"reserved sub-key": {Config{Image: "x", ClusterDNS: []string{"10.96.0.10"}, Proxy: map[string]any{"spool": map[string]any{"dir": "/x"}}}, "proxy.spool.dir: set by the injector"},
		"same ports":       {Config{Image: "x", ClusterDNS: []string{"10.96.0.10"}, HealthPort: 80}, "must differ"},
		"proxy refuses it": {Config{Image: "x", ClusterDNS: []string{"10.96.0.10"}, Proxy: map[string]any{"holdLimit": map[string]any{"requets": 5}}}, `did you mean "requests"`},
		"bad proxy value":  {Config{Image: "x", ClusterDNS: []string{"10.96.0.10"}, Proxy: map[string]any{"log": map[string]any{"level": "loud"}}}, "log.level"},
		"CA file and identity": {Config{Image: "x", ClusterDNS: []string{"10.96.0.10"}, XDSCAFile: "/ca.pem", XDSIdentity: &XDSIdentity{}},
			"xdsCAFile: is not used with xdsIdentity"},
		"short token": {Config{Image: "x", ClusterDNS: []string{"10.96.0.10"}, XDSIdentity: &XDSIdentity{TokenExpirationSeconds: 60}},
			"xdsIdentity.tokenExpirationSeconds: 60 is out of range"},
		"bad CA address": {Config{Image: "x", ClusterDNS: []string{"10.96.0.10"}, XDSIdentity: &XDSIdentity{CAAddress: "misaki-controller"}},
			`xdsIdentity.caAddress: "misaki-controller" is not host:port`},
	} {
		t.Run(name, func(t *testing.T) {
			tc.c.SetDefaults("misaki-system")
			err := tc.c.Check()
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("Check() = %v, want it to say %q", err, tc.want)
			}
		})
	}
}

// TestHandler drives the admission handler with AdmissionReview requests
// and applies its JSON patch.
func TestHandler(t *testing.T) {
	h := &Handler{Config: testConfig(t), Log: slog.New(slog.NewTextHandler(io.Discard, nil))}
	review := func(ns string, pod corev1.Pod) admission.Response {
		raw, _ := json.Marshal(pod)
		return h.Handle(context.Background(), admission.Request{AdmissionRequest: admissionv1.AdmissionRequest{
			UID: "1", Namespace: ns, Operation: admissionv1.Create, Object: runtime.RawExtension{Raw: raw}}})
	}
	pod := corev1.Pod{Spec: corev1.PodSpec{Containers: []corev1.Container{{Name: "app", Image: "app:1"}}}}
	resp := review("apps", pod)
	if !resp.Allowed || len(resp.Patches) == 0 {
		t.Fatalf("inject: allowed=%v patches=%d %v", resp.Allowed, len(resp.Patches), resp.Result)
	}
	ops := map[string]bool{}
	for _, p := range resp.Patches {
		ops[p.Path] = true
	}
	for _, want := range []string{"/spec/initContainers", "/spec/volumes", "/spec/dnsPolicy", "/spec/dnsConfig", "/spec/securityContext", "/metadata/annotations"} {
		if !ops[want] {
			t.Errorf("no patch of %s in %v", want, resp.Patches)
		}
	}
	if resp := review("kube-system", pod); !resp.Allowed || len(resp.Patches) != 0 {
		t.Errorf("kube-system: allowed=%v patches=%d", resp.Allowed, len(resp.Patches))
	}
	pod.Spec.Containers[0].Ports = []corev1.ContainerPort{{ContainerPort: 80}}
	resp = review("apps", pod)
	if resp.Allowed || !strings.Contains(resp.Result.Message, "misaki.io/mesh-port") {
		t.Errorf("port 80: allowed=%v %v, want a refusal naming the annotation", resp.Allowed, resp.Result)
	}
}

// The proxy runs under its supervisor unless the config says not to.
func TestSupervise(t *testing.T) {
	for name, tc := range map[string]struct {
		supervise *bool
		want      []string
	}{
		"default": {nil, []string{"--supervise"}},
		"off":     {ptr(false), nil},
	} {
		t.Run(name, func(t *testing.T) {
			c := testConfig(t)
			c.Supervise = tc.supervise
			c.SetDefaults("misaki-system")
			pod := &corev1.Pod{Spec: corev1.PodSpec{Containers: []corev1.Container{{Name: "app", Image: "app:1"}}}}
			out, _, err := c.Pod(pod, "apps")
			if err != nil || out == nil {
				t.Fatalf("Pod: %v %v", out, err)
			}
			if got := out.Spec.InitContainers[0].Args; !cmp.Equal(got, tc.want) {
				t.Errorf("the proxy's args are %q, want %q", got, tc.want)
			}
		})
	}
}

// Without XDSIdentity (the controller's --xds-auth none) the proxy gets no
// token, no CA bundle and no identity in its config.
func TestWithoutIdentity(t *testing.T) {
	c := testConfig(t)
	c.XDSIdentity = nil
	pod := &corev1.Pod{Spec: corev1.PodSpec{
		Containers: []corev1.Container{{Name: "app", Image: "app:1"}},
		Volumes:    []corev1.Volume{{Name: identityVolume}}, // not the injector's then
	}}
	out, _, err := c.Pod(pod, "apps")
	if err != nil || out == nil {
		t.Fatalf("Pod: %v %v", out, err)
	}
	if len(out.Spec.Volumes) != 2 || len(out.Spec.InitContainers[0].VolumeMounts) != 1 {
		t.Errorf("volumes %+v, mounts %+v: want the spool's only", out.Spec.Volumes, out.Spec.InitContainers[0].VolumeMounts)
	}
	env := out.Spec.InitContainers[0].Env
	if cfg := env[len(env)-1].Value; strings.Contains(cfg, "identity") || strings.Contains(cfg, "caFile") {
		t.Errorf("the proxy config has an identity:\n%s", cfg)
	}
}

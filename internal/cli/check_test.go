package cli

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/misaki-io/misaki/internal/deadaddr"
	apiextensionsv1 "k8s.io/apiextensions-apiserver/pkg/apis/apiextensions/v1"
	"sigs.k8s.io/yaml"
)

// The CLI's copy of the CRD is config/crd's: misaki check compares the
// cluster's with it.
func TestEmbeddedCRDIsCurrent(t *testing.T) {
	src := filepath.Join("..", "..", "config", "crd", "mesh.misaki.io_routes.yaml")
	want, err := os.ReadFile(src)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(routesCRDYAML, want) {
		t.Errorf("internal/cli/crds/mesh.misaki.io_routes.yaml differs from %s: cp %s internal/cli/crds/", src, src)
	}
}

func TestCRDDifference(t *testing.T) {
	want, err := expectedRoutesCRD()
	if err != nil {
		t.Fatal(err)
	}
	// What the API server answers is the same CRD written another way:
	// JSON, other key order, no YAML.
	js, err := yaml.YAMLToJSON(routesCRDYAML)
	if err != nil {
		t.Fatal(err)
	}
	offline := func(c *apiextensionsv1.CustomResourceDefinition) *apiextensionsv1.JSONSchemaProps {
		p := c.Spec.Versions[0].Schema.OpenAPIV3Schema.Properties["spec"].Properties["offline"]
		return &p
	}
	setOffline := func(c *apiextensionsv1.CustomResourceDefinition, p *apiextensionsv1.JSONSchemaProps) {
		c.Spec.Versions[0].Schema.OpenAPIV3Schema.Properties["spec"].Properties["offline"] = *p
	}
	tests := []struct {
		name   string
		change func(c *apiextensionsv1.CustomResourceDefinition)
		want   []string // substrings; none: no difference
	}{
		{name: "same", change: func(*apiextensionsv1.CustomResourceDefinition) {}},
		{name: "older release lacks a field", change: func(c *apiextensionsv1.CustomResourceDefinition) {
			o := offline(c)
			delete(o.Properties, "grpc")
			delete(o.Properties, "batch")
			setOffline(c, o)
		}, want: []string{"version v1alpha1's schema differs (sha256:", "it lacks spec.offline.batch, spec.offline.grpc"}},
		{name: "newer release has a field", change: func(c *apiextensionsv1.CustomResourceDefinition) {
			o := offline(c)
			o.Properties["window"] = apiextensionsv1.JSONSchemaProps{Type: "object", Properties: map[string]apiextensionsv1.JSONSchemaProps{
				"start": {Type: "string"}}}
			setOffline(c, o)
		}, want: []string{"it has fields this CLI does not know: spec.offline.window"}},
		{name: "validation only", change: func(c *apiextensionsv1.CustomResourceDefinition) {
			o := offline(c)
			p := o.Properties["priority"]
			p.Maximum = ptrTo(10.0)
			o.Properties["priority"] = p
			setOffline(c, o)
		}, want: []string{"same fields, other validation or descriptions"}},
		{name: "not stored", change: func(c *apiextensionsv1.CustomResourceDefinition) {
			c.Spec.Versions[0].Storage = false
		}, want: []string{"version v1alpha1 is served=true storage=false, want served=true storage=true"}},
		{name: "another version", change: func(c *apiextensionsv1.CustomResourceDefinition) {
			v := *c.Spec.Versions[0].DeepCopy()
			v.Name, v.Storage = "v1beta1", false
			c.Spec.Versions = append(c.Spec.Versions, v)
		}, want: []string{"version v1beta1 is not one this CLI knows"}},
		{name: "version gone", change: func(c *apiextensionsv1.CustomResourceDefinition) {
			c.Spec.Versions[0].Name = "v1"
		}, want: []string{"version v1alpha1 is missing", "version v1 is not one this CLI knows"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var got apiextensionsv1.CustomResourceDefinition
			if err := yaml.Unmarshal(js, &got); err != nil {
				t.Fatal(err)
			}
			tt.change(&got)
			diff, err := crdDifference(want, &got)
			if err != nil {
				t.Fatal(err)
			}
			if len(tt.want) == 0 && diff != "" {
				t.Errorf("difference %q, want none", diff)
			}
			for _, w := range tt.want {
				if !strings.Contains(diff, w) {
					t.Errorf("difference %q lacks %q", diff, w)
				}
			}
		})
	}
}

func ptrTo[T any](v T) *T { return &v }

func TestMetricSum(t *testing.T) {
	text := []byte(`# HELP misaki_controller_xds_streams Open ADS streams (connected proxies).
# TYPE misaki_controller_xds_streams gauge
misaki_controller_xds_streams 3
misaki_controller_xds_streams_total 99
misaki_controller_xds_nacks_total{type="cluster"} 2
misaki_controller_xds_nacks_total{type="route",note="a } in a value"} 1.5 1700000000000
`)
	for _, tt := range []struct {
		name string
		want float64
		ok   bool
	}{
		{"misaki_controller_xds_streams", 3, true},
		{"misaki_controller_xds_nacks_total", 3.5, true},
		{"misaki_controller_snapshots", 0, false},
	} {
		got, ok := metricSum(text, tt.name)
		if got != tt.want || ok != tt.ok {
			t.Errorf("metricSum(%s) = %v, %v; want %v, %v", tt.name, got, ok, tt.want, tt.ok)
		}
	}
}

func TestWriteChecks(t *testing.T) {
	r := checkReport{Checks: []checkResult{
		{Name: "kubernetes-api", Status: checkPass, Message: "the API server at https://10.0.0.1:6443 answers (Kubernetes v1.37.2)"},
		{Name: "controller", Status: checkFail, Message: "no Deployment labelled app=x in namespace misaki-system", Hint: "install Misaki"},
		{Name: "proxies", Status: checkWarn, Message: "no proxy is connected", Hint: "inject a pod"},
		{Name: "injection", Status: checkSkip, Message: "not run: webhook failed"},
	}}
	for _, terminal := range []bool{false, true} {
		var b bytes.Buffer
		if err := writeChecks(&b, r, terminal); err != nil {
			t.Fatal(err)
		}
		name := "check.txt"
		if terminal {
			name = "check-terminal.txt"
		}
		golden(t, name, b.Bytes())
	}
}

// Without a reachable cluster the first check fails with a hint, the
// others are skipped, and the exit status is 1; -o json still lists them.
func TestCheckWithoutCluster(t *testing.T) {
	closed := "https://" + deadaddr.TCP(t)
	kubeconfig := writeKubeconfig(t, "c", map[string]string{"c": closed})

	code, out, errOut := runCLI(t, "", "check")
	if code != 1 || !strings.Contains(out, "FAIL kubernetes-api    no kubeconfig: pass --kubeconfig, set $KUBECONFIG or write ~/.kube/config") ||
		!strings.Contains(out, "SKIP crd               not run: kubernetes-api failed") ||
		!strings.Contains(errOut, "error: 1 of 8 checks failed: kubernetes-api") {
		t.Errorf("no kubeconfig: exit %d\n%s%s", code, out, errOut)
	}
	code, out, _ = runCLI(t, "", "check", "--kubeconfig", kubeconfig, "--request-timeout", "5s")
	if code != 1 || !strings.Contains(out, "FAIL kubernetes-api    the API server at "+closed+" does not answer") {
		t.Errorf("a closed port: exit %d\n%s", code, out)
	}
	code, out, _ = runCLI(t, "", "check", "--kubeconfig", kubeconfig, "--context", "nope")
	if code != 1 || !strings.Contains(out, `context "nope" does not exist`) {
		t.Errorf("an unknown context: exit %d\n%s", code, out)
	}
	code, out, _ = runCLI(t, "", "check", "--kubeconfig", kubeconfig, "--request-timeout", "5s", "-o", "json")
	if code != 1 || !strings.Contains(out, `"ok": false`) || strings.Count(out, `"name":`) != 8 {
		t.Errorf("-o json: exit %d\n%s", code, out)
	}
	code, _, errOut = runCLI(t, "", "check", "-l", "a in (b")
	if code != 2 || !strings.Contains(errOut, `--selector "a in (b"`) {
		t.Errorf("a bad selector: exit %d, stderr %q", code, errOut)
	}
}

// writeKubeconfig writes a kubeconfig whose contexts name servers
// (context name -> server URL), current the current one.
func writeKubeconfig(t *testing.T, current string, servers map[string]string) string {
	t.Helper()
	var b strings.Builder
	b.WriteString("apiVersion: v1\nkind: Config\ncurrent-context: " + current + "\nclusters:\n")
	for name, server := range servers {
		b.WriteString("- name: " + name + "\n  cluster: {server: '" + server + "', insecure-skip-tls-verify: true}\n")
	}
	b.WriteString("contexts:\n")
	for name := range servers {
		b.WriteString("- name: " + name + "\n  context: {cluster: " + name + ", user: u}\n")
	}
	b.WriteString("users:\n- name: u\n  user: {token: t}\n")
	path := filepath.Join(t.TempDir(), "kubeconfig")
	if err := os.WriteFile(path, []byte(b.String()), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

// kubeConfig follows kubectl: --kubeconfig, else $KUBECONFIG (a list),
// else ~/.kube/config; --context picks a context.
func TestKubeConfig(t *testing.T) {
	home := t.TempDir()
	if err := os.MkdirAll(filepath.Join(home, ".kube"), 0o700); err != nil {
		t.Fatal(err)
	}
	homeFile := writeKubeconfig(t, "h", map[string]string{"h": "https://home:6443"})
	b, _ := os.ReadFile(homeFile)
	if err := os.WriteFile(filepath.Join(home, ".kube", "config"), b, 0o600); err != nil {
		t.Fatal(err)
	}
	flagFile := writeKubeconfig(t, "a", map[string]string{"a": "https://flag-a:6443", "b": "https://flag-b:6443"})
	envFile := writeKubeconfig(t, "e", map[string]string{"e": "https://env:6443"})
	for _, tt := range []struct {
		name, env, path, context, want string
	}{
		{name: "flag over $KUBECONFIG", env: envFile, path: flagFile, want: "https://flag-a:6443"},
		{name: "flag and context", path: flagFile, context: "b", want: "https://flag-b:6443"},
		{name: "$KUBECONFIG over home", env: filepath.Join(home, "absent") + string(filepath.ListSeparator) + envFile, want: "https://env:6443"},
		{name: "home", want: "https://home:6443"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			e, _, _ := testEnv()
			e.getenv = func(k string) string {
				return map[string]string{"HOME": home, "KUBECONFIG": tt.env}[k]
			}
			cfg, err := e.kubeConfig(tt.path, tt.context)
			if err != nil {
				t.Fatal(err)
			}
			if cfg.Host != tt.want {
				t.Errorf("host %s, want %s", cfg.Host, tt.want)
			}
		})
	}
}

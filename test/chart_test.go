package test

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"sigs.k8s.io/yaml"

	"github.com/misaki-io/misaki/internal/controller/inject"
)

// helm runs the helm that hack/kube-tools.sh installs beside kube-apiserver.
func helm(t *testing.T, args ...string) string {
	t.Helper()
	bin := filepath.Join(kubeAssets(t), "helm")
	if _, err := os.Stat(bin); err != nil {
		t.Skipf("no helm in %s; run hack/kube-tools.sh", filepath.Dir(bin))
	}
	var out, errOut bytes.Buffer
	cmd := exec.Command(bin, args...)
	cmd.Stdout, cmd.Stderr = &out, &errOut
	if err := cmd.Run(); err != nil {
		t.Fatalf("helm %s: %v\n%s%s", strings.Join(args, " "), err, out.String(), errOut.String())
	}
	return out.String()
}

// TestChart lints the chart, renders it with several value sets, and has a
// real kube-apiserver validate each rendering (server-side dry run); it
// checks that what the chart and config/ carry is what make generate makes.
func TestChart(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a kube-apiserver")
	}
	chart := filepath.Join("..", "charts", "misaki")
	helm(t, "lint", "--strict", chart)

	// Generated copies are current.
	for copy, src := range map[string]string{
		filepath.Join(chart, "crds", "mesh.misaki.io_routes.yaml"): filepath.Join("..", "config", "crd", "mesh.misaki.io_routes.yaml"),
		filepath.Join(chart, "files", "role.yaml"):                 filepath.Join("..", "config", "rbac", "role.yaml"),
	} {
		a, err1 := os.ReadFile(copy)
		b, err2 := os.ReadFile(src)
		if err1 != nil || err2 != nil || !bytes.Equal(a, b) {
			t.Errorf("%s is not a copy of %s (%v, %v): run make generate", copy, src, err1, err2)
		}
	}
	rendered := helm(t, "template", "misaki", chart, "--namespace", "misaki-system")
	if kept, err := os.ReadFile(filepath.Join("..", "config", "install", "misaki.yaml")); err != nil || string(kept) != rendered {
		t.Errorf("config/install/misaki.yaml is not the chart's rendering (%v): run make generate", err)
	}

	env, _, _ := startEnv(t)
	kubectl := env.ControlPlane.KubeCtl()
	kubectl.Path = filepath.Join(env.BinaryAssetsDirectory, "kubectl")
	if _, errOut, err := kubectl.Run("create", "namespace", "misaki-system"); err != nil {
		t.Fatalf("kubectl create namespace: %v %s", err, readAll(errOut))
	}
	for name, set := range map[string][]string{
		"defaults":      nil,
		"no webhook":    {"--set", "webhook.enabled=false"},
		"replicas":      {"--set", "controller.replicas=3", "--set", "webhook.failurePolicy=Ignore", "--set", "webhook.excludeNamespaces={monitoring}"},
		"no supervisor": {"--set", "proxy.supervise=false"},
		"proxy extra":   {"--set-json", `proxy.config={"log":{"level":"debug"},"holdLimit":{"requests":500},"links":[{"name":"eth","match":"eth0","class":"ethernet"}]}`, "--set-json", `proxy.clusterDNS=["10.43.0.10"]`},
	} {
		t.Run(name, func(t *testing.T) {
			out := helm(t, append([]string{"template", "misaki", chart, "--namespace", "misaki-system"}, set...)...)
			f := filepath.Join(t.TempDir(), "out.yaml")
			if err := os.WriteFile(f, []byte(out), 0o600); err != nil {
				t.Fatal(err)
			}
			if _, errOut, err := kubectl.Run("apply", "--dry-run=server", "-f", f); err != nil {
				t.Fatalf("the API server refuses the rendering: %v\n%s", err, readAll(errOut))
			}
			docs := strings.Split(out, "\n---\n")
			has := func(kind string) string {
				for _, d := range docs {
					if strings.Contains(d, "\nkind: "+kind+"\n") {
						return d
					}
				}
				return ""
			}
			switch name {
			case "no webhook":
				if has("MutatingWebhookConfiguration") != "" || !strings.Contains(out, "--webhook-addr=0") {
					t.Error("webhook.enabled=false still installs the webhook")
				}
			case "no supervisor":
				if !strings.Contains(has("ConfigMap"), "supervise: false") {
					t.Error("proxy.supervise=false is not in the injector config")
				}
			case "replicas":
				if !strings.Contains(out, "--leader-elect=true") || !strings.Contains(has("MutatingWebhookConfiguration"), "failurePolicy: Ignore") ||
					!strings.Contains(has("MutatingWebhookConfiguration"), `"monitoring"`) {
					t.Error("replicas, failure policy or exclusions not rendered")
				}
			}
			// The injector config the chart writes is one the controller
			// accepts, down to the proxy's own validation.
			if d := has("ConfigMap"); d != "" {
				var cm struct {
					Data map[string]string `json:"data"`
				}
				if err := yaml.Unmarshal([]byte(d), &cm); err != nil {
					t.Fatal(err)
				}
				var c inject.Config
				if err := yaml.UnmarshalStrict([]byte(cm.Data["injector.yaml"]), &c); err != nil {
					t.Fatalf("injector config: %v\n%s", err, cm.Data["injector.yaml"])
				}
				c.SetDefaults("misaki-system")
				if len(c.ClusterDNS) == 0 {
					c.ClusterDNS = []string{"10.96.0.10"} // looked up from kube-dns at start
				}
				if err := c.Check(); err != nil {
					t.Errorf("the controller would refuse the chart's injector config: %v", err)
				}
			}
		})
	}
}

// TestGeneratedManifestsAreCurrent runs controller-gen (the version make
// generate pins) into a temporary directory and compares its CRD and RBAC
// with config/: a change to api/ or to the controller's markers without
// make generate fails here.
func TestGeneratedManifestsAreCurrent(t *testing.T) {
	if testing.Short() {
		t.Skip("builds controller-gen")
	}
	out := t.TempDir()
	gen := func(args ...string) {
		t.Helper()
		cmd := exec.Command("go", append([]string{"run", "sigs.k8s.io/controller-tools/cmd/controller-gen@v0.16.5"}, args...)...)
		cmd.Dir = ".."
		if b, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("controller-gen %s: %v\n%s", strings.Join(args, " "), err, b)
		}
	}
	gen("crd", "paths=./api/...", "output:crd:artifacts:config="+filepath.Join(out, "crd"))
	gen("rbac:roleName=misaki-controller", "paths=./internal/controller/...", "output:rbac:artifacts:config="+filepath.Join(out, "rbac"))
	for _, f := range []string{"crd/mesh.misaki.io_routes.yaml", "rbac/role.yaml"} {
		want, err1 := os.ReadFile(filepath.Join(out, f))
		got, err2 := os.ReadFile(filepath.Join("..", "config", f))
		if err1 != nil || err2 != nil || !bytes.Equal(got, want) {
			t.Errorf("config/%s is not what controller-gen makes now (%v, %v): run make generate", f, err1, err2)
		}
	}
}

package test

import (
	"bytes"
	"fmt"
	"maps"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	policyv1 "k8s.io/api/policy/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/yaml"

	"github.com/misaki-io/misaki/internal/controller/inject"
	linkdconfig "github.com/misaki-io/misaki/internal/linkd/config"
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
	kubectl := adminKubectl(t, env)
	if _, errOut, err := kubectl("create", "namespace", "misaki-system"); err != nil {
		t.Fatalf("kubectl create namespace: %v %s", err, readAll(errOut))
	}
	for name, set := range map[string][]string{
		"defaults":      nil,
		"no webhook":    {"--set", "webhook.enabled=false"},
		"replicas":      {"--set", "controller.replicas=3", "--set", "webhook.failurePolicy=Ignore", "--set", "webhook.excludeNamespaces={monitoring}"},
		"no supervisor": {"--set", "proxy.supervise=false"},
		"link agent": {"--set", "linkAgent.enabled=true", "--set-json", fmt.Sprintf("linkAgent.config=%q",
			"links:\n  - {name: wifi, match: \"wlan*\", class: wifi}\n  - {name: modem, match: \"wwan*\", class: cellular, metered: true}\n")},
		"proxy extra": {"--set-json", `proxy.config={"log":{"level":"debug"},"holdLimit":{"requests":500},"links":[{"name":"eth","match":"eth0","class":"ethernet"}]}`, "--set-json", `proxy.clusterDNS=["10.43.0.10"]`},
	} {
		t.Run(name, func(t *testing.T) {
			out := helm(t, append([]string{"template", "misaki", chart, "--namespace", "misaki-system"}, set...)...)
			f := filepath.Join(t.TempDir(), "out.yaml")
			if err := os.WriteFile(f, []byte(out), 0o600); err != nil {
				t.Fatal(err)
			}
			if _, errOut, err := kubectl("apply", "--dry-run=server", "-f", f); err != nil {
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
			case "link agent":
				ds := has("DaemonSet")
				for _, want := range []string{"hostNetwork: true", "add: [NET_ADMIN]", "drop: [ALL]", "--listen=$(HOST_IP):15021", "fieldPath: status.hostIP"} {
					if !strings.Contains(ds, want) {
						t.Errorf("the link agent's DaemonSet lacks %q:\n%s", want, ds)
					}
				}
				if !strings.Contains(out, "linkAgentPort: 15021") {
					t.Error("the injector does not point proxies at the link agent")
				}
				var cm struct {
					Data map[string]string `json:"data"`
				}
				for _, d := range docs {
					if strings.Contains(d, "name: misaki-linkd\n") && strings.Contains(d, "\nkind: ConfigMap\n") {
						yaml.Unmarshal([]byte(d), &cm)
					}
				}
				if _, err := linkdconfig.Parse([]byte(cm.Data["linkd.yaml"])); err != nil || !strings.Contains(cm.Data["linkd.yaml"], "wwan*") {
					t.Errorf("the link agent's config %q: %v", cm.Data["linkd.yaml"], err)
				}
			case "defaults":
				if has("DaemonSet") != "" || strings.Contains(out, "linkAgentPort") {
					t.Error("the link agent is installed without linkAgent.enabled")
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

// hubChart is charts/misaki-hub; its tests render it into hubNamespace.
var hubChart = filepath.Join("..", "charts", "misaki-hub")

const hubNamespace = "fleet"

// helmErr runs helm where the test wants it to fail: the error and what
// helm printed.
func helmErr(t *testing.T, args ...string) (string, error) {
	t.Helper()
	bin := filepath.Join(kubeAssets(t), "helm")
	if _, err := os.Stat(bin); err != nil {
		t.Skipf("no helm in %s; run hack/kube-tools.sh", filepath.Dir(bin))
	}
	out, err := exec.Command(bin, args...).CombinedOutput()
	return string(out), err
}

// hubRender is one rendering of the hub's chart, decoded strictly (a field
// the API types do not have fails the test).
type hubRender struct {
	out      string
	kinds    []string
	sts      *appsv1.StatefulSet
	services map[string]*corev1.Service
	pdb      *policyv1.PodDisruptionBudget
}

func (r hubRender) hub() *corev1.Container { return &r.sts.Spec.Template.Spec.Containers[0] }

func (r hubRender) env(name string) *corev1.EnvVar {
	for i, e := range r.hub().Env {
		if e.Name == name {
			return &r.hub().Env[i]
		}
	}
	return nil
}

func (r hubRender) volume(name string) *corev1.Volume {
	for i, v := range r.sts.Spec.Template.Spec.Volumes {
		if v.Name == name {
			return &r.sts.Spec.Template.Spec.Volumes[i]
		}
	}
	return nil
}

// mounts is the hub container's mount paths by volume name.
func (r hubRender) mounts() map[string][]string {
	m := map[string][]string{}
	for _, vm := range r.hub().VolumeMounts {
		m[vm.Name] = append(m[vm.Name], vm.MountPath)
	}
	return m
}

func renderHub(t *testing.T, set ...string) hubRender {
	t.Helper()
	out := helm(t, append([]string{"template", "misaki-hub", hubChart, "--namespace", hubNamespace}, set...)...)
	r := hubRender{out: out, services: map[string]*corev1.Service{}}
	for _, doc := range strings.Split(out, "\n---\n") {
		var tm metav1.TypeMeta
		if err := yaml.Unmarshal([]byte(doc), &tm); err != nil {
			t.Fatalf("%v\n%s", err, doc)
		}
		if tm.Kind == "" {
			continue
		}
		r.kinds = append(r.kinds, tm.Kind)
		var obj any
		switch tm.Kind {
		case "StatefulSet":
			r.sts = &appsv1.StatefulSet{}
			obj = r.sts
		case "Service":
			obj = &corev1.Service{}
		case "PodDisruptionBudget":
			r.pdb = &policyv1.PodDisruptionBudget{}
			obj = r.pdb
		case "ServiceAccount":
			obj = &corev1.ServiceAccount{}
		default:
			t.Fatalf("the chart renders a %s the test does not know", tm.Kind)
		}
		if err := yaml.UnmarshalStrict([]byte(doc), obj); err != nil {
			t.Fatalf("%s: %v\n%s", tm.Kind, err, doc)
		}
		if s, ok := obj.(*corev1.Service); ok {
			r.services[s.Name] = s
		}
	}
	if r.sts == nil || len(r.sts.Spec.Template.Spec.Containers) != 1 {
		t.Fatalf("no StatefulSet with one container in\n%s", out)
	}
	return r
}

// hubHA is the values of a hub with two replicas on PostgreSQL.
var hubHA = []string{"--set", "replicas=2", "--set", "database.existingSecret=hub-db",
	"--set", "keys.existingSecret=hub-keys", "--set", "ca.existingSecret=hub-ca"}

func TestHubChartLint(t *testing.T) {
	helm(t, "lint", "--strict", hubChart)
	helm(t, append([]string{"lint", "--strict", hubChart}, hubHA...)...)
}

func TestHubChartDefaults(t *testing.T) {
	r := renderHub(t)
	if got := r.sts.Spec.Replicas; got == nil || *got != 1 {
		t.Errorf("replicas %v, want 1", got)
	}
	if e := r.env("MISAKI_HUB_DATABASE"); e != nil {
		t.Errorf("MISAKI_HUB_DATABASE is set without database.existingSecret: %+v", e)
	}
	// SQLite on a claim, at the data directory.
	if n := len(r.sts.Spec.VolumeClaimTemplates); n != 1 {
		t.Fatalf("%d volume claim templates, want 1", n)
	}
	pvc := r.sts.Spec.VolumeClaimTemplates[0]
	if pvc.Name != "data" || !slices.Equal(pvc.Spec.AccessModes, []corev1.PersistentVolumeAccessMode{corev1.ReadWriteOnce}) ||
		pvc.Spec.Resources.Requests.Storage().String() != "5Gi" || pvc.Spec.StorageClassName != nil {
		t.Errorf("claim template %+v", pvc)
	}
	if v := r.volume("data"); v != nil {
		t.Errorf("a data volume beside the claim template: %+v", v)
	}
	if got := r.mounts(); !slices.Equal(got["data"], []string{"/var/lib/misaki-hub"}) || len(got["tmp"]) != 1 ||
		len(got) != 2 {
		t.Errorf("mounts %v, want data at /var/lib/misaki-hub and tmp only", got)
	}
	c := r.hub()
	want := []string{"--data-dir=/var/lib/misaki-hub", "--listen=:8443",
		"--host=misaki-hub.fleet.svc", "--host=misaki-hub.fleet.svc.cluster.local", "--host=misaki-hub.fleet", "--host=misaki-hub",
		"--host=localhost", "--host=127.0.0.1", "--log-level=info"}
	if !slices.Equal(c.Args, want) {
		t.Errorf("args\n%q\nwant\n%q", c.Args, want)
	}
	if e := r.env("POD_NAME"); e == nil || e.ValueFrom == nil || e.ValueFrom.FieldRef == nil || e.ValueFrom.FieldRef.FieldPath != "metadata.name" {
		t.Errorf("POD_NAME not from the downward API: %+v", e)
	}
	// Probes over HTTPS on the API port.
	for name, p := range map[string]*corev1.Probe{"/healthz": c.LivenessProbe, "/readyz": c.ReadinessProbe, "/healthz ": c.StartupProbe} {
		if p == nil || p.HTTPGet == nil || p.HTTPGet.Path != strings.TrimSpace(name) || p.HTTPGet.Scheme != corev1.URISchemeHTTPS || p.HTTPGet.Port.String() != "https" {
			t.Errorf("probe for %s: %+v", name, p)
		}
	}
	if len(c.Ports) != 1 || c.Ports[0].Name != "https" || c.Ports[0].ContainerPort != 8443 {
		t.Errorf("ports %+v", c.Ports)
	}
	svc := r.services["misaki-hub"]
	if svc == nil || svc.Spec.Type != corev1.ServiceTypeClusterIP || len(svc.Spec.Ports) != 1 ||
		svc.Spec.Ports[0].Port != 8443 || svc.Spec.Ports[0].Name != "https" || svc.Spec.Ports[0].TargetPort.String() != "https" {
		t.Errorf("Service %+v", svc)
	}
	if h := r.services[r.sts.Spec.ServiceName]; h == nil || h.Spec.ClusterIP != corev1.ClusterIPNone {
		t.Errorf("no headless Service %q for the StatefulSet", r.sts.Spec.ServiceName)
	}
	for name, s := range r.services {
		if !maps.Equal(s.Spec.Selector, r.sts.Spec.Selector.MatchLabels) || !maps.Equal(s.Spec.Selector, r.sts.Spec.Template.Labels) {
			t.Errorf("Service %s selects %v, the pods are %v", name, s.Spec.Selector, r.sts.Spec.Template.Labels)
		}
	}
	if r.pdb != nil {
		t.Error("a PodDisruptionBudget for one replica (it would block every drain)")
	}
	if c.Resources.Requests.Cpu().IsZero() || c.Resources.Limits.Memory().IsZero() {
		t.Errorf("resources %+v", c.Resources)
	}
}

func TestHubChartReplicasNeedPostgreSQL(t *testing.T) {
	for _, tc := range []struct {
		name string
		set  []string
		want string
	}{
		{"sqlite", []string{"--set", "replicas=2"},
			"misaki-hub: replicas: 2 needs PostgreSQL: set database.existingSecret to a Secret with the postgres:// DSN"},
		{"sqlite with keys and ca", []string{"--set", "replicas=3", "--set", "keys.existingSecret=k", "--set", "ca.existingSecret=c"},
			"misaki-hub: replicas: 3 needs PostgreSQL: set database.existingSecret"},
		{"no keys", []string{"--set", "replicas=2", "--set", "database.existingSecret=db", "--set", "ca.existingSecret=c"},
			"misaki-hub: replicas: 2 needs keys.existingSecret: every replica must sign with the same keys"},
		{"no ca", []string{"--set", "replicas=2", "--set", "database.existingSecret=db", "--set", "keys.existingSecret=k"},
			"misaki-hub: replicas: 2 needs ca.existingSecret: every replica must issue vehicle certificates from the same fleet CA"},
		{"negative", []string{"--set", "replicas=-1"}, "misaki-hub: replicas is -1"},
		{"no dsn key", []string{"--set", "database.existingSecret=db", "--set", "database.existingSecretKey="},
			"misaki-hub: database.existingSecretKey is empty"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			out, err := helmErr(t, append([]string{"template", "misaki-hub", hubChart, "--namespace", hubNamespace}, tc.set...)...)
			if err == nil || !strings.Contains(out, tc.want) {
				t.Errorf("helm template %s: err %v, want a failure saying %q; got\n%s", strings.Join(tc.set, " "), err, tc.want, out)
			}
		})
	}
	// One replica on PostgreSQL needs no Secrets but the DSN's.
	r := renderHub(t, "--set", "database.existingSecret=db")
	if e := r.env("MISAKI_HUB_DATABASE"); e == nil {
		t.Error("no MISAKI_HUB_DATABASE with database.existingSecret")
	}
}

func TestHubChartPostgreSQL(t *testing.T) {
	r := renderHub(t, append(slices.Clone(hubHA), "--set", "database.existingSecretKey=url")...)
	if got := r.sts.Spec.Replicas; got == nil || *got != 2 {
		t.Errorf("replicas %v, want 2", got)
	}
	e := r.env("MISAKI_HUB_DATABASE")
	if e == nil || e.Value != "" || e.ValueFrom == nil || e.ValueFrom.SecretKeyRef == nil ||
		e.ValueFrom.SecretKeyRef.Name != "hub-db" || e.ValueFrom.SecretKeyRef.Key != "url" {
		t.Fatalf("MISAKI_HUB_DATABASE %+v, want it from Secret hub-db, key url", e)
	}
	if strings.Contains(r.out, "--database") {
		t.Error("the DSN's flag is in the args (the DSN goes by the environment, from the Secret)")
	}
	// The keys: one Secret, as the key directory's root/ and keys/.
	if v := r.volume("keys"); v == nil || v.Secret == nil || v.Secret.SecretName != "hub-keys" || len(v.Secret.Items) != 0 {
		t.Errorf("keys volume %+v, want all of Secret hub-keys (no items: a rotation adds files)", v)
	}
	m := r.mounts()
	if want := []string{"/var/lib/misaki-hub/keys/root", "/var/lib/misaki-hub/keys/keys"}; !slices.Equal(m["keys"], want) {
		t.Errorf("keys mounted at %v, want %v, read-only", m["keys"], want)
	}
	for _, vm := range r.hub().VolumeMounts {
		if vm.SubPath != "" {
			t.Errorf("mount %s uses subPath %s: the kubelet never updates it", vm.Name, vm.SubPath)
		}
	}
	// The fleet CA.
	if v := r.volume("ca"); v == nil || v.Secret == nil || v.Secret.SecretName != "hub-ca" {
		t.Errorf("ca volume %+v", v)
	}
	if !slices.Equal(m["ca"], []string{"/etc/misaki-hub/ca"}) ||
		!slices.Contains(r.hub().Args, "--ca-cert-file=/etc/misaki-hub/ca/tls.crt") || !slices.Contains(r.hub().Args, "--ca-key-file=/etc/misaki-hub/ca/tls.key") {
		t.Errorf("ca mounts %v, args %q", m["ca"], r.hub().Args)
	}
	// A volume per replica still, for what stays per replica.
	if len(r.sts.Spec.VolumeClaimTemplates) != 1 {
		t.Error("no claim template with PostgreSQL")
	}
	if r.pdb == nil || r.pdb.Spec.MaxUnavailable == nil || r.pdb.Spec.MaxUnavailable.IntValue() != 1 ||
		!maps.Equal(r.pdb.Spec.Selector.MatchLabels, r.sts.Spec.Selector.MatchLabels) {
		t.Errorf("PodDisruptionBudget %+v", r.pdb)
	}
	if r.sts.Spec.PodManagementPolicy != appsv1.ParallelPodManagement {
		t.Errorf("podManagementPolicy %q", r.sts.Spec.PodManagementPolicy)
	}
}

func TestHubChartTLSSecret(t *testing.T) {
	r := renderHub(t, "--set", "tls.existingSecret=hub-tls")
	if v := r.volume("tls"); v == nil || v.Secret == nil || v.Secret.SecretName != "hub-tls" {
		t.Errorf("tls volume %+v", v)
	}
	if m := r.mounts(); !slices.Equal(m["tls"], []string{"/etc/misaki-hub/tls"}) {
		t.Errorf("tls mounted at %v", m["tls"])
	}
	args := r.hub().Args
	if !slices.Contains(args, "--tls-cert-file=/etc/misaki-hub/tls/tls.crt") || !slices.Contains(args, "--tls-key-file=/etc/misaki-hub/tls/tls.key") {
		t.Errorf("args %q lack the TLS files", args)
	}
	// Without the Secret, neither the flags nor the volume.
	d := renderHub(t)
	if d.volume("tls") != nil || strings.Contains(d.out, "--tls-") || strings.Contains(d.out, "--ca-") || d.volume("keys") != nil || d.volume("ca") != nil {
		t.Error("TLS, CA or keys from a Secret with no Secret set")
	}
}

func TestHubChartSecurityContext(t *testing.T) {
	for name, set := range map[string][]string{
		"defaults": nil,
		"ha":       append(slices.Clone(hubHA), "--set", "tls.existingSecret=t"),
	} {
		t.Run(name, func(t *testing.T) {
			r := renderHub(t, set...)
			ps := r.sts.Spec.Template.Spec.SecurityContext
			if ps == nil || ps.RunAsNonRoot == nil || !*ps.RunAsNonRoot || ps.RunAsUser == nil || *ps.RunAsUser != 65532 ||
				ps.RunAsGroup == nil || *ps.RunAsGroup != 65532 || ps.FSGroup == nil || *ps.FSGroup != 65532 ||
				ps.SeccompProfile == nil || ps.SeccompProfile.Type != corev1.SeccompProfileTypeRuntimeDefault {
				t.Errorf("pod securityContext %+v", ps)
			}
			// fsGroup without OnRootMismatch makes the signing keys group-readable on every start.
			if ps.FSGroupChangePolicy == nil || *ps.FSGroupChangePolicy != corev1.FSGroupChangeOnRootMismatch {
				t.Errorf("fsGroupChangePolicy %v, want OnRootMismatch", ps.FSGroupChangePolicy)
			}
			cs := r.hub().SecurityContext
			if cs == nil || cs.AllowPrivilegeEscalation == nil || *cs.AllowPrivilegeEscalation ||
				cs.ReadOnlyRootFilesystem == nil || !*cs.ReadOnlyRootFilesystem ||
				cs.Capabilities == nil || !slices.Equal(cs.Capabilities.Drop, []corev1.Capability{"ALL"}) || len(cs.Capabilities.Add) != 0 {
				t.Errorf("container securityContext %+v", cs)
			}
			if s := r.sts.Spec.Template.Spec.AutomountServiceAccountToken; s == nil || *s {
				t.Error("the service account token is mounted (the hub does not call the API)")
			}
			// A read-only root: every path the hub writes is a volume.
			if m := r.mounts(); !slices.Equal(m["data"], []string{"/var/lib/misaki-hub"}) || !slices.Equal(m["tmp"], []string{"/tmp"}) {
				t.Errorf("mounts %v", m)
			}
			for _, vm := range r.hub().VolumeMounts {
				if v := r.volume(vm.Name); v != nil && v.Secret != nil && !vm.ReadOnly {
					t.Errorf("Secret volume %s is mounted writable at %s", vm.Name, vm.MountPath)
				}
			}
		})
	}
}

func TestHubChartValues(t *testing.T) {
	r := renderHub(t,
		"--set-json", `hosts=["hub.example.com","10.0.0.7"]`,
		"--set", "gateway.url=https://gw.example.com:443", "--set", "gateway.caFile=/etc/misaki/gw/ca.crt",
		"--set", "gateway.certFile=/etc/misaki/gw/tls.crt", "--set", "gateway.keyFile=/etc/misaki/gw/tls.key",
		"--set-json", `extraArgs=["--desired-ttl=168h","--max-wait=2m"]`,
		"--set", "logLevel=debug",
		"--set-json", `podAnnotations={"prometheus.io/scrape":"true"}`,
		"--set-json", `nodeSelector={"pool":"hub"}`,
		"--set-json", `tolerations=[{"key":"hub","operator":"Exists","effect":"NoSchedule"}]`,
		"--set-json", `affinity={"nodeAffinity":{"requiredDuringSchedulingIgnoredDuringExecution":{"nodeSelectorTerms":[{"matchExpressions":[{"key":"arch","operator":"In","values":["arm64"]}]}]}}}`,
		"--set-json", `resources={"requests":{"cpu":"1","memory":"2Gi"}}`,
		"--set", "service.type=LoadBalancer", "--set", "service.port=443",
		"--set", "persistence.storageClassName=fast", "--set", "persistence.size=50Gi",
		"--set", "image.tag=dev", "--set-json", `imagePullSecrets=[{"name":"ghcr"}]`,
	)
	want := []string{"--data-dir=/var/lib/misaki-hub", "--listen=:8443", "--host=hub.example.com", "--host=10.0.0.7",
		"--gateway-url=https://gw.example.com:443", "--gateway-ca-file=/etc/misaki/gw/ca.crt",
		"--gateway-cert-file=/etc/misaki/gw/tls.crt", "--gateway-key-file=/etc/misaki/gw/tls.key",
		"--log-level=debug", "--desired-ttl=168h", "--max-wait=2m"}
	if got := r.hub().Args; !slices.Equal(got, want) {
		t.Errorf("args\n%q\nwant\n%q", got, want)
	}
	ps := r.sts.Spec.Template.Spec
	if ps.NodeSelector["pool"] != "hub" || len(ps.Tolerations) != 1 || ps.Tolerations[0].Key != "hub" ||
		ps.Affinity == nil || ps.Affinity.NodeAffinity == nil || r.sts.Spec.Template.Annotations["prometheus.io/scrape"] != "true" ||
		len(ps.ImagePullSecrets) != 1 || ps.ImagePullSecrets[0].Name != "ghcr" {
		t.Errorf("scheduling or pod metadata not rendered: %+v %+v", ps, r.sts.Spec.Template.ObjectMeta)
	}
	if c := r.hub(); c.Resources.Requests.Cpu().String() != "1" || c.Image != "ghcr.io/misaki-io/misaki-hub:dev" {
		t.Errorf("resources %+v, image %s", c.Resources, c.Image)
	}
	if s := r.services["misaki-hub"]; s.Spec.Type != corev1.ServiceTypeLoadBalancer || s.Spec.Ports[0].Port != 443 || s.Spec.Ports[0].TargetPort.String() != "https" {
		t.Errorf("Service %+v", s.Spec)
	}
	if p := r.sts.Spec.VolumeClaimTemplates[0].Spec; p.StorageClassName == nil || *p.StorageClassName != "fast" || p.Resources.Requests.Storage().String() != "50Gi" {
		t.Errorf("claim %+v", p)
	}

	// Without persistence: an emptyDir where the claim was.
	e := renderHub(t, "--set", "persistence.enabled=false")
	if len(e.sts.Spec.VolumeClaimTemplates) != 0 {
		t.Error("a claim template with persistence.enabled=false")
	}
	if v := e.volume("data"); v == nil || v.EmptyDir == nil {
		t.Errorf("data volume %+v, want an emptyDir", v)
	}
}

// TestHubChartFlags checks that every flag the chart passes is one
// cmd/misaki-hub defines (read from its source: a renamed flag would
// otherwise only show as a pod that exits at start).
func TestHubChartFlags(t *testing.T) {
	src, err := os.ReadFile(filepath.Join("..", "cmd", "misaki-hub", "main.go"))
	if err != nil {
		t.Fatal(err)
	}
	defined := map[string]bool{}
	for _, m := range regexp.MustCompile(`\bfs\.\w+\([^"\n]*"([a-z][a-z0-9-]*)"`).FindAllSubmatch(src, -1) {
		defined[string(m[1])] = true
	}
	if !defined["data-dir"] || !defined["host"] {
		t.Fatalf("found no flags in cmd/misaki-hub/main.go (found %v): fix the test's pattern", defined)
	}
	r := renderHub(t, append(slices.Clone(hubHA), "--set", "tls.existingSecret=t", "--set", "gateway.url=https://gw:443",
		"--set", "gateway.caFile=a", "--set", "gateway.certFile=b", "--set", "gateway.keyFile=c")...)
	for _, a := range r.hub().Args {
		name, _, _ := strings.Cut(strings.TrimPrefix(a, "--"), "=")
		if !strings.HasPrefix(a, "--") || !defined[name] {
			t.Errorf("the chart passes %q; misaki-hub has no such flag", a)
		}
	}
	if !strings.Contains(string(src), `os.Getenv("MISAKI_HUB_DATABASE")`) || !strings.Contains(string(src), `os.Getenv("POD_NAME")`) {
		t.Error("misaki-hub no longer reads MISAKI_HUB_DATABASE or POD_NAME, which the chart sets")
	}
}

// TestHubChartAPIServer has a real kube-apiserver validate the chart's
// renderings (server-side dry run).
func TestHubChartAPIServer(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a kube-apiserver")
	}
	env, _, _ := startEnv(t)
	kubectl := adminKubectl(t, env)
	if _, errOut, err := kubectl("create", "namespace", hubNamespace); err != nil {
		t.Fatalf("kubectl create namespace: %v %s", err, readAll(errOut))
	}
	for name, set := range map[string][]string{
		"defaults":       nil,
		"ha":             append(slices.Clone(hubHA), "--set", "tls.existingSecret=t", "--set", "gateway.url=https://gw:443"),
		"no persistence": {"--set", "persistence.enabled=false", "--set", "service.type=LoadBalancer"},
	} {
		t.Run(name, func(t *testing.T) {
			out := helm(t, append([]string{"template", "misaki-hub", hubChart, "--namespace", hubNamespace}, set...)...)
			f := filepath.Join(t.TempDir(), "out.yaml")
			if err := os.WriteFile(f, []byte(out), 0o600); err != nil {
				t.Fatal(err)
			}
			if _, errOut, err := kubectl("apply", "--dry-run=server", "-f", f); err != nil {
				t.Fatalf("the API server refuses the rendering: %v\n%s", err, readAll(errOut))
			}
		})
	}
}

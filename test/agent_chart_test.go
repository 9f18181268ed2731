package test

import (
	"context"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/rest"
	"sigs.k8s.io/yaml"

	"github.com/misaki-io/misaki/internal/agent/facts"
	"github.com/misaki-io/misaki/internal/waitfor"
)

// agentChart is charts/misaki-agent; its tests render it into
// agentNamespace.
var agentChart = filepath.Join("..", "charts", "misaki-agent")

const agentNamespace = "misaki-system"

// agentHub is the one value the chart requires.
var agentHub = []string{"--set", "hub.url=https://hub.example.com:8443"}

// The CA and the root of a first install, as files for --set-file.
const (
	agentCA   = "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n"
	agentRoot = `{"signed":{"_type":"root","version":1}}`
)

// agentFirstStart is what a first install passes: the hub, its CA, the
// bootstrap token and the pinned root (from files, as an operator does).
func agentFirstStart(t *testing.T) []string {
	t.Helper()
	dir := t.TempDir()
	for name, content := range map[string]string{"ca.crt": agentCA, "root.json": agentRoot, "token": "tok1.s3cret\n"} {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	return append(slices.Clone(agentHub), "--set-file", "hub.ca="+filepath.Join(dir, "ca.crt"),
		"--set-file", "bootstrap.token="+filepath.Join(dir, "token"), "--set-file", "trust.root="+filepath.Join(dir, "root.json"))
}

// agentFlags is cmd/misaki-agent's command-line contract: the flags and
// whether each takes a value.
var agentFlags = map[string]bool{
	"hub": true, "hub-ca-file": true, "bootstrap-token-file": true, "root-file": true, "state-dir": true,
	"kubeconfig": true, "cloud": false, "operator-token-file": true, "drift-interval": true,
	"health-deadline": true, "poll-wait": true, "listen": true, "log-level": true,
	"vehicle-state": true, "vehicle-state-max-age": true, "timezone": true, "gate-interval": true,
}

// agentRender is one rendering of the agent's chart, decoded strictly (a
// field the API types do not have fails the test).
type agentRender struct {
	out     string
	kinds   []string
	deploy  *appsv1.Deployment
	sa      *corev1.ServiceAccount
	secret  *corev1.Secret
	pvc     *corev1.PersistentVolumeClaim
	role    *rbacv1.ClusterRole
	binding *rbacv1.ClusterRoleBinding
}

func (r agentRender) agent() *corev1.Container { return &r.deploy.Spec.Template.Spec.Containers[0] }

func (r agentRender) volume(name string) *corev1.Volume {
	for i, v := range r.deploy.Spec.Template.Spec.Volumes {
		if v.Name == name {
			return &r.deploy.Spec.Template.Spec.Volumes[i]
		}
	}
	return nil
}

func (r agentRender) mount(name string) *corev1.VolumeMount {
	for i, m := range r.agent().VolumeMounts {
		if m.Name == name {
			return &r.agent().VolumeMounts[i]
		}
	}
	return nil
}

// flags is the agent's arguments as flag name → value ("" for a switch);
// a repeated flag or an argument that is not a flag fails the test.
func (r agentRender) flags(t *testing.T) map[string]string {
	t.Helper()
	m := map[string]string{}
	for _, a := range r.agent().Args {
		name, value, _ := strings.Cut(strings.TrimPrefix(a, "--"), "=")
		if !strings.HasPrefix(a, "--") {
			t.Fatalf("argument %q is not a flag", a)
		}
		if _, dup := m[name]; dup {
			t.Fatalf("flag --%s passed twice: %q", name, r.agent().Args)
		}
		m[name] = value
	}
	return m
}

func renderAgent(t *testing.T, set ...string) agentRender {
	t.Helper()
	out := helm(t, append([]string{"template", "misaki-agent", agentChart, "--namespace", agentNamespace}, set...)...)
	r := agentRender{out: out}
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
		case "Deployment":
			r.deploy = &appsv1.Deployment{}
			obj = r.deploy
		case "ServiceAccount":
			r.sa = &corev1.ServiceAccount{}
			obj = r.sa
		case "Secret":
			r.secret = &corev1.Secret{}
			obj = r.secret
		case "PersistentVolumeClaim":
			r.pvc = &corev1.PersistentVolumeClaim{}
			obj = r.pvc
		case "ClusterRole":
			r.role = &rbacv1.ClusterRole{}
			obj = r.role
		case "ClusterRoleBinding":
			r.binding = &rbacv1.ClusterRoleBinding{}
			obj = r.binding
		default:
			t.Fatalf("the chart renders a %s the test does not know", tm.Kind)
		}
		if err := yaml.UnmarshalStrict([]byte(doc), obj); err != nil {
			t.Fatalf("%s: %v\n%s", tm.Kind, err, doc)
		}
	}
	if r.deploy == nil || len(r.deploy.Spec.Template.Spec.Containers) != 1 {
		t.Fatalf("no Deployment with one container in\n%s", out)
	}
	if r.sa == nil || r.binding == nil {
		t.Fatalf("no ServiceAccount or ClusterRoleBinding in\n%s", out)
	}
	return r
}

func TestAgentChartLint(t *testing.T) {
	// As packaged (lint tolerates the missing hub.url), and with values.
	helm(t, "lint", "--strict", agentChart)
	helm(t, append([]string{"lint", "--strict", agentChart}, agentFirstStart(t)...)...)
	helm(t, append([]string{"lint", "--strict", agentChart}, append(slices.Clone(agentHub),
		"--set", "cloud.enabled=true", "--set", "cloud.operatorToken=op", "--set", "trust.root=root", "--set", "state.hostPath=/var/lib/misaki-agent", "--set", "rbac.clusterAdmin=true")...)...)
}

func TestAgentChartDefaults(t *testing.T) {
	r := renderAgent(t, agentFirstStart(t)...)
	if want := []string{"ServiceAccount", "Secret", "PersistentVolumeClaim", "ClusterRole", "ClusterRoleBinding", "Deployment"}; !slices.Equal(slices.Sorted(slices.Values(r.kinds)), slices.Sorted(slices.Values(want))) {
		t.Errorf("kinds %v, want %v", r.kinds, want)
	}
	d := r.deploy
	if d.Spec.Replicas == nil || *d.Spec.Replicas != 1 {
		t.Errorf("replicas %v, want 1", d.Spec.Replicas)
	}
	if d.Spec.Strategy.Type != appsv1.RecreateDeploymentStrategyType || d.Spec.Strategy.RollingUpdate != nil {
		t.Errorf("strategy %+v, want Recreate (never two agents applying at once)", d.Spec.Strategy)
	}
	if !maps.Equal(d.Spec.Selector.MatchLabels, d.Spec.Template.Labels) {
		t.Errorf("selector %v does not select the pods %v", d.Spec.Selector.MatchLabels, d.Spec.Template.Labels)
	}
	var chart struct {
		AppVersion string `json:"appVersion"`
	}
	b, err := os.ReadFile(filepath.Join(agentChart, "Chart.yaml"))
	if err != nil || yaml.Unmarshal(b, &chart) != nil || chart.AppVersion == "" {
		t.Fatalf("Chart.yaml: %v %+v", err, chart)
	}
	c := r.agent()
	if want := "ghcr.io/misaki-io/misaki-agent:" + chart.AppVersion; c.Image != want {
		t.Errorf("image %s, want %s", c.Image, want)
	}

	// Flags: every file the agent reads is a key of the mounted Secret.
	want := []string{"--hub=https://hub.example.com:8443", "--hub-ca-file=/etc/misaki-agent/ca.crt",
		"--bootstrap-token-file=/etc/misaki-agent/token", "--root-file=/etc/misaki-agent/root.json",
		"--state-dir=/var/lib/misaki-agent", "--listen=:9441", "--log-level=info"}
	if !slices.Equal(c.Args, want) {
		t.Errorf("args\n%q\nwant\n%q", c.Args, want)
	}
	sm := r.mount("secret")
	if sm == nil || sm.MountPath != "/etc/misaki-agent" || !sm.ReadOnly || sm.SubPath != "" {
		t.Fatalf("secret mount %+v, want all of it read-only at /etc/misaki-agent", sm)
	}
	v := r.volume("secret")
	if v == nil || v.Secret == nil || v.Secret.SecretName != r.secret.Name || len(v.Secret.Items) != 0 {
		t.Fatalf("secret volume %+v, want all of Secret %s", v, r.secret.Name)
	}
	wantData := map[string]string{
		"ca.crt":    agentCA,
		"token":     "tok1.s3cret", // trimmed of the file's newline
		"root.json": agentRoot,
	}
	for name, value := range r.flags(t) {
		if !strings.HasSuffix(name, "-file") {
			continue
		}
		key, ok := strings.CutPrefix(value, sm.MountPath+"/")
		if !ok {
			t.Errorf("--%s=%s is not in the Secret's mount %s", name, value, sm.MountPath)
			continue
		}
		if got := string(r.secret.Data[key]); got != wantData[key] {
			t.Errorf("--%s reads Secret key %s = %q, want %q", name, key, got, wantData[key])
		}
	}
	if len(r.secret.Data) != len(wantData) || r.secret.Namespace != agentNamespace {
		t.Errorf("Secret %s/%s has keys %v, want %v", r.secret.Namespace, r.secret.Name, slices.Sorted(maps.Keys(r.secret.Data)), slices.Sorted(maps.Keys(wantData)))
	}

	// The state: a kept claim of 1Gi, mounted at the state directory.
	p := r.pvc
	if p == nil || p.Namespace != agentNamespace || p.Spec.Resources.Requests.Storage().String() != "1Gi" ||
		!slices.Equal(p.Spec.AccessModes, []corev1.PersistentVolumeAccessMode{corev1.ReadWriteOnce}) || p.Spec.StorageClassName != nil {
		t.Fatalf("claim %+v", p)
	}
	if p.Annotations["helm.sh/resource-policy"] != "keep" {
		t.Error("the state claim is not kept on uninstall (the vehicle's key would go)")
	}
	if v := r.volume("state"); v == nil || v.PersistentVolumeClaim == nil || v.PersistentVolumeClaim.ClaimName != p.Name || v.HostPath != nil {
		t.Errorf("state volume %+v, want claim %s", v, p.Name)
	}
	if m := r.mount("state"); m == nil || m.MountPath != "/var/lib/misaki-agent" || m.ReadOnly {
		t.Errorf("state mount %+v", m)
	}

	// Probes on the listen port.
	if len(c.Ports) != 1 || c.Ports[0].Name != "http" || c.Ports[0].ContainerPort != 9441 {
		t.Errorf("ports %+v", c.Ports)
	}
	for path, p := range map[string]*corev1.Probe{"/healthz": c.LivenessProbe, "/readyz": c.ReadinessProbe} {
		if p == nil || p.HTTPGet == nil || p.HTTPGet.Path != path || p.HTTPGet.Port.String() != "http" || p.HTTPGet.Scheme != "" {
			t.Errorf("probe on %s: %+v", path, p)
		}
	}
	if cpu, mem := c.Resources.Requests.Cpu(), c.Resources.Requests.Memory(); cpu.IsZero() || mem.IsZero() ||
		cpu.MilliValue() > 100 || mem.Value() > 128<<20 || c.Resources.Limits.Memory().IsZero() {
		t.Errorf("resources %+v, want small requests and a memory limit", c.Resources)
	}

	// The service account, bound to the ClusterRole of rbac.rules.
	ps := d.Spec.Template.Spec
	if ps.ServiceAccountName != r.sa.Name || r.sa.Namespace != agentNamespace || ps.AutomountServiceAccountToken != nil && !*ps.AutomountServiceAccountToken {
		t.Errorf("pod runs as %q (token mounted %v), ServiceAccount %s/%s", ps.ServiceAccountName, ps.AutomountServiceAccountToken, r.sa.Namespace, r.sa.Name)
	}
	b2 := r.binding
	if r.role == nil || b2.RoleRef != (rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "ClusterRole", Name: r.role.Name}) ||
		!slices.Equal(b2.Subjects, []rbacv1.Subject{{Kind: "ServiceAccount", Name: r.sa.Name, Namespace: agentNamespace}}) {
		t.Fatalf("binding %+v of role %+v", b2, r.role)
	}
	allows := func(group, resource, verb string) bool {
		for _, rule := range r.role.Rules {
			if slices.Contains(rule.APIGroups, group) && slices.Contains(rule.Resources, resource) && slices.Contains(rule.Verbs, verb) {
				return true
			}
		}
		return false
	}
	for _, g := range []struct{ group, resource, verb string }{
		{"", "namespaces", "create"}, {"", "secrets", "patch"}, {"", "configmaps", "delete"}, {"", "services", "update"},
		{"", "serviceaccounts", "create"}, {"", "persistentvolumeclaims", "create"}, {"", "pods", "list"}, {"", "events", "create"},
		{"", "nodes", "list"},
		{"apps", "deployments", "patch"}, {"apps", "statefulsets", "delete"}, {"apps", "daemonsets", "create"},
		{"batch", "jobs", "patch"}, {"batch", "cronjobs", "patch"}, {"networking.k8s.io", "networkpolicies", "patch"},
		{"policy", "poddisruptionbudgets", "patch"}, {"autoscaling", "horizontalpodautoscalers", "patch"},
		{"rbac.authorization.k8s.io", "clusterroles", "escalate"}, {"rbac.authorization.k8s.io", "roles", "escalate"},
		{"rbac.authorization.k8s.io", "clusterroles", "bind"}, {"rbac.authorization.k8s.io", "rolebindings", "patch"},
		{"apiextensions.k8s.io", "customresourcedefinitions", "list"}, {"mesh.misaki.io", "routes", "patch"},
	} {
		if !allows(g.group, g.resource, g.verb) {
			t.Errorf("the default ClusterRole does not allow %s on %s.%s", g.verb, g.resource, g.group)
		}
	}
	for _, g := range []struct{ group, resource, verb string }{{"", "pods", "create"}, {"", "nodes", "patch"}, {"", "pods", "delete"}} {
		if allows(g.group, g.resource, g.verb) {
			t.Errorf("the default ClusterRole allows %s on %s.%s, which the agent only reads", g.verb, g.resource, g.group)
		}
	}
	if d.Spec.Template.Annotations["checksum/secret"] == "" {
		t.Error("no checksum/secret: a new CA in the chart's Secret would not restart the agent")
	}
}

func TestAgentChartSecurityContext(t *testing.T) {
	for name, set := range map[string][]string{
		"defaults":        agentHub,
		"hostPath":        append(slices.Clone(agentHub), "--set", "state.hostPath=/var/lib/misaki-agent"),
		"cloud":           append(slices.Clone(agentHub), "--set", "cloud.enabled=true", "--set", "cloud.operatorToken=op", "--set", "trust.root=root"),
		"existing secret": append(slices.Clone(agentHub), "--set", "existingSecret=mine"),
	} {
		t.Run(name, func(t *testing.T) {
			r := renderAgent(t, set...)
			ps := r.deploy.Spec.Template.Spec.SecurityContext
			if ps == nil || ps.RunAsNonRoot == nil || !*ps.RunAsNonRoot || ps.RunAsUser == nil || *ps.RunAsUser != 65532 ||
				ps.RunAsGroup == nil || *ps.RunAsGroup != 65532 || ps.FSGroup == nil || *ps.FSGroup != 65532 ||
				ps.SeccompProfile == nil || ps.SeccompProfile.Type != corev1.SeccompProfileTypeRuntimeDefault {
				t.Errorf("pod securityContext %+v", ps)
			}
			if ps.FSGroupChangePolicy == nil || *ps.FSGroupChangePolicy != corev1.FSGroupChangeOnRootMismatch {
				t.Errorf("fsGroupChangePolicy %v, want OnRootMismatch", ps.FSGroupChangePolicy)
			}
			cs := r.agent().SecurityContext
			if cs == nil || cs.AllowPrivilegeEscalation == nil || *cs.AllowPrivilegeEscalation ||
				cs.ReadOnlyRootFilesystem == nil || !*cs.ReadOnlyRootFilesystem || cs.Privileged != nil && *cs.Privileged ||
				cs.Capabilities == nil || !slices.Equal(cs.Capabilities.Drop, []corev1.Capability{"ALL"}) || len(cs.Capabilities.Add) != 0 {
				t.Errorf("container securityContext %+v", cs)
			}
			// A read-only root: the agent writes to its state directory only.
			if m := r.mount("state"); m == nil || m.MountPath != "/var/lib/misaki-agent" || len(r.agent().VolumeMounts) != 2 {
				t.Errorf("mounts %+v", r.agent().VolumeMounts)
			}
			if m := r.mount("secret"); m == nil || !m.ReadOnly {
				t.Errorf("the Secret is mounted writable: %+v", m)
			}
			if v := r.volume("secret"); v.Secret.DefaultMode == nil || *v.Secret.DefaultMode&0o007 != 0 {
				t.Errorf("the Secret's files are readable by others: mode %v", v.Secret.DefaultMode)
			}
		})
	}
}

func TestAgentChartHostPath(t *testing.T) {
	r := renderAgent(t, append(slices.Clone(agentHub), "--set", "state.hostPath=/data/misaki-agent")...)
	if r.pvc != nil {
		t.Error("a claim with state.hostPath")
	}
	v := r.volume("state")
	if v == nil || v.HostPath == nil || v.HostPath.Path != "/data/misaki-agent" || v.PersistentVolumeClaim != nil ||
		v.HostPath.Type == nil || *v.HostPath.Type != corev1.HostPathDirectory {
		t.Fatalf("state volume %+v, want hostPath /data/misaki-agent of type Directory (the kubelet would make a root-owned one)", v)
	}
	if m := r.mount("state"); m == nil || m.MountPath != "/var/lib/misaki-agent" {
		t.Errorf("state mount %+v", m)
	}
	if r.flags(t)["state-dir"] != "/var/lib/misaki-agent" {
		t.Errorf("args %q", r.agent().Args)
	}

	// An existing claim: used, none made.
	e := renderAgent(t, append(slices.Clone(agentHub), "--set", "state.persistence.existingClaim=agent-data")...)
	if e.pvc != nil {
		t.Error("a claim made with state.persistence.existingClaim")
	}
	if v := e.volume("state"); v == nil || v.PersistentVolumeClaim == nil || v.PersistentVolumeClaim.ClaimName != "agent-data" {
		t.Errorf("state volume %+v, want claim agent-data", v)
	}
}

func TestAgentChartExistingSecret(t *testing.T) {
	r := renderAgent(t, append(slices.Clone(agentHub), "--set", "existingSecret=car-1-bootstrap")...)
	if r.secret != nil {
		t.Errorf("the chart makes Secret %s beside existingSecret", r.secret.Name)
	}
	if v := r.volume("secret"); v == nil || v.Secret == nil || v.Secret.SecretName != "car-1-bootstrap" || len(v.Secret.Items) != 0 {
		t.Errorf("secret volume %+v, want all of car-1-bootstrap", v)
	}
	f := r.flags(t)
	for flag, want := range map[string]string{"hub-ca-file": "/etc/misaki-agent/ca.crt", "bootstrap-token-file": "/etc/misaki-agent/token", "root-file": "/etc/misaki-agent/root.json"} {
		if f[flag] != want {
			t.Errorf("--%s=%q, want %q (the documented key)", flag, f[flag], want)
		}
	}
	if _, ok := r.deploy.Spec.Template.Annotations["checksum/secret"]; ok {
		t.Error("checksum/secret of a Secret the chart does not make")
	}

	// Without a CA and without existingSecret: the system roots, no flag.
	n := renderAgent(t, agentHub...)
	if _, ok := n.flags(t)["hub-ca-file"]; ok {
		t.Errorf("--hub-ca-file with no CA: %q", n.agent().Args)
	}
	if len(n.secret.Data) != 0 {
		t.Errorf("Secret keys %v with no values set", slices.Sorted(maps.Keys(n.secret.Data)))
	}
}

func TestAgentChartCloud(t *testing.T) {
	r := renderAgent(t, append(slices.Clone(agentHub), "--set", "cloud.enabled=true", "--set", "cloud.operatorToken=op-secret",
		"--set-json", `trust.root="{\"signed\":{}}"`)...)
	f := r.flags(t)
	if v, ok := f["cloud"]; !ok || v != "" {
		t.Errorf("--cloud %q, %v: want the switch", v, ok)
	}
	if f["operator-token-file"] != "/etc/misaki-agent/operator-token" || string(r.secret.Data["operator-token"]) != "op-secret" {
		t.Errorf("--operator-token-file=%q, Secret key operator-token %q", f["operator-token-file"], r.secret.Data["operator-token"])
	}
	if _, ok := f["bootstrap-token-file"]; ok {
		t.Error("--bootstrap-token-file in cloud mode (it does not enrol)")
	}
	if f["root-file"] != "/etc/misaki-agent/root.json" || f["hub"] != "https://hub.example.com:8443" {
		t.Errorf("args %q", r.agent().Args)
	}
	// Cloud mode from an existing Secret: its key operator-token.
	e := renderAgent(t, append(slices.Clone(agentHub), "--set", "cloud.enabled=true", "--set", "existingSecret=cloud-agent")...)
	if e.flags(t)["operator-token-file"] != "/etc/misaki-agent/operator-token" || e.secret != nil {
		t.Errorf("args %q", e.agent().Args)
	}
	// Off: no --cloud.
	if _, ok := renderAgent(t, agentHub...).flags(t)["cloud"]; ok {
		t.Error("--cloud without cloud.enabled")
	}
}

// The vehicle-state gates' values: a URL passed as is; a directory on
// the node mounted read-only, with the state file in it; none in cloud
// mode, which ignores gates; nothing by default.
func TestAgentChartVehicleState(t *testing.T) {
	for _, tc := range []struct {
		name  string
		set   []string
		flags map[string]string
		mount bool
	}{
		{"default", nil, map[string]string{}, false},
		{"url", []string{"--set", "vehicleState.source=http://127.0.0.1:8088/state", "--set", "timezone=Asia/Tokyo"},
			map[string]string{"vehicle-state": "http://127.0.0.1:8088/state", "timezone": "Asia/Tokyo"}, false},
		{"host directory", []string{"--set", "vehicleState.hostPath=/run/vehicle", "--set", "vehicleState.maxAge=5m", "--set", "gateInterval=1m"},
			map[string]string{"vehicle-state": "/run/misaki/vehicle-state/state.json", "vehicle-state-max-age": "5m", "gate-interval": "1m"}, true},
		{"host directory and a file name", []string{"--set", "vehicleState.hostPath=/run/vehicle", "--set", "vehicleState.source=/run/misaki/vehicle-state/car.json"},
			map[string]string{"vehicle-state": "/run/misaki/vehicle-state/car.json"}, true},
		{"cloud", []string{"--set", "cloud.enabled=true", "--set", "existingSecret=s", "--set", "vehicleState.hostPath=/run/vehicle",
			"--set", "vehicleState.source=http://127.0.0.1:8088/state", "--set", "timezone=Asia/Tokyo"}, map[string]string{}, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := renderAgent(t, append(slices.Clone(agentHub), tc.set...)...)
			f := r.flags(t)
			got := map[string]string{}
			for _, name := range []string{"vehicle-state", "vehicle-state-max-age", "timezone", "gate-interval"} {
				if v, ok := f[name]; ok {
					got[name] = v
				}
			}
			if !maps.Equal(got, tc.flags) {
				t.Errorf("gate flags %v, want %v", got, tc.flags)
			}
			v, m := r.volume("vehicle-state"), r.mount("vehicle-state")
			if !tc.mount {
				if v != nil || m != nil {
					t.Errorf("vehicle-state volume %+v, mount %+v", v, m)
				}
				return
			}
			if v == nil || v.HostPath == nil || v.HostPath.Path != "/run/vehicle" || v.HostPath.Type == nil || *v.HostPath.Type != corev1.HostPathDirectory {
				t.Errorf("vehicle-state volume %+v, want hostPath /run/vehicle of type Directory", v)
			}
			if m == nil || m.MountPath != "/run/misaki/vehicle-state" || !m.ReadOnly {
				t.Errorf("vehicle-state mount %+v, want /run/misaki/vehicle-state read-only", m)
			}
		})
	}
}

func TestAgentChartClusterAdmin(t *testing.T) {
	r := renderAgent(t, append(slices.Clone(agentHub), "--set", "rbac.clusterAdmin=true")...)
	if r.role != nil {
		t.Errorf("ClusterRole %s made with rbac.clusterAdmin", r.role.Name)
	}
	if r.binding.RoleRef.Name != "cluster-admin" || r.binding.RoleRef.Kind != "ClusterRole" ||
		len(r.binding.Subjects) != 1 || r.binding.Subjects[0].Name != r.sa.Name || r.binding.Subjects[0].Namespace != agentNamespace {
		t.Errorf("binding %+v, want cluster-admin for the agent's ServiceAccount", r.binding)
	}
	// Narrowed rules are the ClusterRole's, as given.
	n := renderAgent(t, append(slices.Clone(agentHub), "--set-json",
		`rbac.rules=[{"apiGroups":["apps"],"resources":["deployments"],"verbs":["get","list","watch","create","update","patch","delete"]}]`)...)
	if n.role == nil || len(n.role.Rules) != 1 || !slices.Equal(n.role.Rules[0].Resources, []string{"deployments"}) {
		t.Errorf("ClusterRole %+v, want the one rule given", n.role)
	}
}

func TestAgentChartValues(t *testing.T) {
	r := renderAgent(t, append(slices.Clone(agentHub),
		"--set", "driftInterval=2m", "--set", "healthDeadline=15m", "--set", "pollWait=30s",
		"--set", "port=9000", "--set", "logLevel=debug", "--set-json", `extraArgs=["--kubeconfig=/etc/k/config"]`,
		"--set", "state.persistence.size=2Gi", "--set", "state.persistence.storageClass=local-path",
		"--set", "image.tag=dev", "--set-json", `imagePullSecrets=[{"name":"ghcr"}]`,
		"--set-json", `podAnnotations={"prometheus.io/scrape":"true"}`, "--set", "priorityClassName=vehicle-critical",
		"--set-json", `nodeSelector={"kubernetes.io/arch":"arm64"}`,
		"--set-json", `tolerations=[{"key":"node-role.kubernetes.io/control-plane","operator":"Exists","effect":"NoSchedule"}]`,
		"--set-json", `resources={"requests":{"cpu":"50m","memory":"64Mi"},"limits":{"memory":"128Mi"}}`)...)
	want := []string{"--hub=https://hub.example.com:8443", "--bootstrap-token-file=/etc/misaki-agent/token",
		"--root-file=/etc/misaki-agent/root.json", "--state-dir=/var/lib/misaki-agent", "--listen=:9000",
		"--drift-interval=2m", "--health-deadline=15m", "--poll-wait=30s", "--log-level=debug", "--kubeconfig=/etc/k/config"}
	c := r.agent()
	if !slices.Equal(c.Args, want) {
		t.Errorf("args\n%q\nwant\n%q", c.Args, want)
	}
	if c.Ports[0].ContainerPort != 9000 || c.Image != "ghcr.io/misaki-io/misaki-agent:dev" || c.Resources.Requests.Cpu().String() != "50m" {
		t.Errorf("port %d, image %s, resources %+v", c.Ports[0].ContainerPort, c.Image, c.Resources)
	}
	if p := r.pvc.Spec; p.StorageClassName == nil || *p.StorageClassName != "local-path" || p.Resources.Requests.Storage().String() != "2Gi" {
		t.Errorf("claim %+v", p)
	}
	ps := r.deploy.Spec.Template.Spec
	if ps.NodeSelector["kubernetes.io/arch"] != "arm64" || len(ps.Tolerations) != 1 || ps.PriorityClassName != "vehicle-critical" ||
		len(ps.ImagePullSecrets) != 1 || r.deploy.Spec.Template.Annotations["prometheus.io/scrape"] != "true" ||
		r.deploy.Spec.Template.Annotations["checksum/secret"] == "" {
		t.Errorf("pod spec or metadata not rendered: %+v %v", ps, r.deploy.Spec.Template.Annotations)
	}
}

func TestAgentChartRefusals(t *testing.T) {
	for _, tc := range []struct {
		name string
		set  []string
		want string
	}{
		{"no hub", nil, "misaki-agent: hub.url is required: the hub's https:// URL"},
		{"http hub", []string{"--set", "hub.url=http://hub:8443"}, `misaki-agent: hub.url is "http://hub:8443"; want an https:// URL`},
		{"cloud without token", append(slices.Clone(agentHub), "--set", "cloud.enabled=true"),
			"misaki-agent: cloud.enabled needs cloud.operatorToken"},
		{"cloud without root", append(slices.Clone(agentHub), "--set", "cloud.enabled=true", "--set", "cloud.operatorToken=op"),
			"misaki-agent: cloud.enabled needs trust.root"},
		{"token beside existing secret", append(slices.Clone(agentHub), "--set", "existingSecret=s", "--set", "bootstrap.token=a.b"),
			"misaki-agent: bootstrap.token is set with existingSecret s, which would ignore it"},
		{"relative hostPath", append(slices.Clone(agentHub), "--set", "state.hostPath=var/lib/x"),
			`misaki-agent: state.hostPath is "var/lib/x"; want an absolute path`},
		{"hostPath and claim", append(slices.Clone(agentHub), "--set", "state.hostPath=/x", "--set", "state.persistence.existingClaim=c"),
			"misaki-agent: state.hostPath and state.persistence.existingClaim are both set"},
		{"no rules", append(slices.Clone(agentHub), "--set-json", "rbac.rules=[]"), "misaki-agent: rbac.rules is empty"},
		{"relative vehicle state hostPath", append(slices.Clone(agentHub), "--set", "vehicleState.hostPath=run/vehicle"),
			`misaki-agent: vehicleState.hostPath is "run/vehicle"; want an absolute path on the node`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			out, err := helmErr(t, append([]string{"template", "misaki-agent", agentChart, "--namespace", agentNamespace}, tc.set...)...)
			if err == nil || !strings.Contains(out, tc.want) {
				t.Errorf("helm template %s: err %v, want a failure saying %q; got\n%s", strings.Join(tc.set, " "), err, tc.want, out)
			}
		})
	}
}

// TestAgentChartFlags checks every flag the chart passes against the
// agent's command-line contract, and against cmd/misaki-agent's source once
// it is there (a renamed flag would otherwise only show as a pod that exits
// at start).
func TestAgentChartFlags(t *testing.T) {
	var src strings.Builder
	files, _ := filepath.Glob(filepath.Join("..", "cmd", "misaki-agent", "*.go"))
	for _, f := range files {
		if strings.HasSuffix(f, "_test.go") {
			continue
		}
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		src.Write(b)
	}
	if src.Len() == 0 {
		t.Log("no cmd/misaki-agent yet: checking the flags against the contract only")
	}
	for name, set := range map[string][]string{
		"vehicle": append(agentFirstStart(t), "--set", "driftInterval=1m", "--set", "healthDeadline=1m", "--set", "pollWait=1m",
			"--set", "vehicleState.hostPath=/run/vehicle", "--set", "vehicleState.maxAge=1m", "--set", "timezone=Europe/Berlin", "--set", "gateInterval=30s"),
		"cloud": append(slices.Clone(agentHub), "--set", "cloud.enabled=true", "--set", "existingSecret=s"),
	} {
		t.Run(name, func(t *testing.T) {
			for flag, value := range renderAgent(t, set...).flags(t) {
				takesValue, ok := agentFlags[flag]
				if !ok {
					t.Errorf("the chart passes --%s; misaki-agent has no such flag", flag)
				} else if takesValue != (value != "") {
					t.Errorf("--%s=%q: the flag takes a value: %v", flag, value, takesValue)
				}
				if src.Len() > 0 && !strings.Contains(src.String(), `"`+flag+`"`) {
					t.Errorf("the chart passes --%s; cmd/misaki-agent does not define it", flag)
				}
			}
		})
	}
}

// TestAgentChartAPIServer has a real kube-apiserver take the chart's
// renderings (server-side dry run), then installs the default RBAC and
// acts as the agent's ServiceAccount: it collects the facts the agent
// reports, and applies RBAC that grants more than the agent holds, which
// needs the escalate and bind verbs the default rules carry (and fails
// with rules that lack them).
func TestAgentChartAPIServer(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a kube-apiserver")
	}
	env, cfg, _ := startEnv(t)
	kubectl := adminKubectl(t, env)
	if _, errOut, err := kubectl("create", "namespace", agentNamespace); err != nil {
		t.Fatalf("kubectl create namespace: %v %s", err, readAll(errOut))
	}
	apply := func(t *testing.T, dryRun bool, set ...string) {
		t.Helper()
		out := helm(t, append([]string{"template", "misaki-agent", agentChart, "--namespace", agentNamespace}, set...)...)
		f := filepath.Join(t.TempDir(), "out.yaml")
		if err := os.WriteFile(f, []byte(out), 0o600); err != nil {
			t.Fatal(err)
		}
		args := []string{"apply", "--server-side", "--force-conflicts", "-f", f}
		if dryRun {
			args = append(args, "--dry-run=server")
		}
		if _, errOut, err := kubectl(args...); err != nil {
			t.Fatalf("the API server refuses the rendering: %v\n%s", err, readAll(errOut))
		}
	}
	for name, set := range map[string][]string{
		"defaults":           agentFirstStart(t),
		"hostPath and cloud": append(slices.Clone(agentHub), "--set", "state.hostPath=/var/lib/misaki-agent", "--set", "cloud.enabled=true", "--set", "cloud.operatorToken=op", "--set", "trust.root=root"),
		"existing secret":    append(slices.Clone(agentHub), "--set", "existingSecret=s", "--set", "rbac.clusterAdmin=true", "--set", "state.persistence.existingClaim=c"),
	} {
		t.Run("dry run "+name, func(t *testing.T) { apply(t, true, set...) })
	}

	// The agent's identity, by impersonation.
	as := rest.CopyConfig(cfg)
	as.Impersonate = rest.ImpersonationConfig{
		UserName: "system:serviceaccount:" + agentNamespace + ":misaki-agent",
		Groups:   []string{"system:serviceaccounts", "system:serviceaccounts:" + agentNamespace, "system:authenticated"},
	}
	dyn, err := dynamic.NewForConfig(as)
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	clusterRoles := schema.GroupVersionResource{Group: "rbac.authorization.k8s.io", Version: "v1", Resource: "clusterroles"}
	// grantStorage is a ClusterRole the agent does not hold the rights of.
	grantStorage := func(name string) error {
		obj := &unstructured.Unstructured{Object: map[string]any{
			"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole",
			"metadata": map[string]any{"name": name},
			"rules":    []any{map[string]any{"apiGroups": []any{"storage.k8s.io"}, "resources": []any{"storageclasses"}, "verbs": []any{"get"}}},
		}}
		_, err := dyn.Resource(clusterRoles).Apply(ctx, name, obj, metav1.ApplyOptions{FieldManager: "misaki-agent", Force: true})
		return err
	}
	poll := func(t *testing.T, what string, f func() error) {
		t.Helper()
		waitfor.NoError(t, 30*time.Second, what, f)
	}

	// Rules without escalate: the agent can read nodes, and cannot apply a
	// role granting more than it has.
	apply(t, false, append(slices.Clone(agentHub), "--set-json",
		`rbac.rules=[{"apiGroups":[""],"resources":["nodes"],"verbs":["get","list","watch"]},{"apiGroups":["rbac.authorization.k8s.io"],"resources":["clusterroles"],"verbs":["get","list","watch","create","update","patch","delete"]}]`)...)
	poll(t, "the narrowed role takes effect", func() error {
		_, err := dyn.Resource(schema.GroupVersionResource{Version: "v1", Resource: "nodes"}).List(ctx, metav1.ListOptions{})
		return err
	})
	if err := grantStorage("car-storage-reader-0"); !apierrors.IsForbidden(err) {
		t.Fatalf("without escalate, applying a ClusterRole that grants more: %v, want Forbidden", err)
	}

	// The default rules.
	apply(t, false, agentHub...)
	poll(t, "the agent applies a ClusterRole granting more than it holds (escalate)", func() error { return grantStorage("car-storage-reader") })
	binding := &unstructured.Unstructured{Object: map[string]any{
		"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding",
		"metadata": map[string]any{"name": "car-storage-reader"},
		"roleRef":  map[string]any{"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "car-storage-reader"},
		"subjects": []any{map[string]any{"kind": "ServiceAccount", "name": "default", "namespace": "default"}},
	}}
	if _, err := dyn.Resource(schema.GroupVersionResource{Group: "rbac.authorization.k8s.io", Version: "v1", Resource: "clusterrolebindings"}).
		Apply(ctx, "car-storage-reader", binding, metav1.ApplyOptions{FieldManager: "misaki-agent", Force: true}); err != nil {
		t.Errorf("the agent binds a role it does not hold (bind): %v", err)
	}
	// A workload in a namespace of its own, as a desired state has them.
	ns := &unstructured.Unstructured{Object: map[string]any{"apiVersion": "v1", "kind": "Namespace", "metadata": map[string]any{"name": "car-apps"}}}
	if _, err := dyn.Resource(schema.GroupVersionResource{Version: "v1", Resource: "namespaces"}).
		Apply(ctx, "car-apps", ns, metav1.ApplyOptions{FieldManager: "misaki-agent"}); err != nil {
		t.Errorf("the agent creates a namespace: %v", err)
	}
	deploy := &unstructured.Unstructured{Object: map[string]any{
		"apiVersion": "apps/v1", "kind": "Deployment", "metadata": map[string]any{"name": "api", "namespace": "car-apps"},
		"spec": map[string]any{
			"selector": map[string]any{"matchLabels": map[string]any{"app": "api"}},
			"template": map[string]any{
				"metadata": map[string]any{"labels": map[string]any{"app": "api"}},
				"spec":     map[string]any{"containers": []any{map[string]any{"name": "api", "image": "registry.example.com/api:1"}}},
			},
		},
	}}
	if _, err := dyn.Resource(schema.GroupVersionResource{Group: "apps", Version: "v1", Resource: "deployments"}).Namespace("car-apps").
		Apply(ctx, "api", deploy, metav1.ApplyOptions{FieldManager: "misaki-agent"}); err != nil {
		t.Errorf("the agent applies a Deployment: %v", err)
	}
	// What it only reads, it cannot write.
	pod := &unstructured.Unstructured{Object: map[string]any{
		"apiVersion": "v1", "kind": "Pod", "metadata": map[string]any{"name": "p", "namespace": "car-apps"},
		"spec": map[string]any{"containers": []any{map[string]any{"name": "p", "image": "registry.example.com/p:1"}}},
	}}
	if _, err := dyn.Resource(schema.GroupVersionResource{Version: "v1", Resource: "pods"}).Namespace("car-apps").
		Apply(ctx, "p", pod, metav1.ApplyOptions{FieldManager: "misaki-agent"}); !apierrors.IsForbidden(err) {
		t.Errorf("the agent creates a Pod: %v, want Forbidden (pods are read only)", err)
	}

	// The facts it reports.
	col, err := facts.New(as)
	if err != nil {
		t.Fatal(err)
	}
	s, err := col.Collect(ctx)
	if err != nil {
		t.Fatalf("collecting facts as the agent: %v", err)
	}
	if !slices.Contains(s.Facts.CRDs, "routes.mesh.misaki.io") || !slices.Contains(s.Facts.APIVersions, "mesh.misaki.io/v1alpha1/Route") ||
		s.Facts.KubernetesVersion == "" {
		t.Errorf("facts as the agent lack the version or the Route CRD: %+v", s.Facts)
	}
}

package test

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	apiextensionsv1 "k8s.io/apiextensions-apiserver/pkg/apis/apiextensions/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/envtest"
	"sigs.k8s.io/yaml"

	meshv1 "github.com/misaki-io/misaki/api/v1alpha1"
	"github.com/misaki-io/misaki/internal/cli"
	"github.com/misaki-io/misaki/internal/controller"
	"github.com/misaki-io/misaki/internal/testbin"
	"github.com/misaki-io/misaki/internal/waitfor"
)

// TestCheck runs misaki check against a real kube-apiserver and etcd with
// the CRD installed, and the controller as its binary, started with
// --kubeconfig (no $KUBECONFIG, no ~/.kube/config):
//   - with only the CRD, the check fails and names what is missing: the
//     controller's Deployment and the webhook configuration;
//   - a CRD whose schema lacks a field fails the crd check, naming it;
//   - after kubectl apply -k config/, with the controller running and a
//     proxy connected over ADS, every check passes, the dry-run pod
//     included, and -o json says so;
//   - with the controller stopped, /readyz and the dry-run injection fail.
//
// There is no kubelet, kube-controller-manager or cluster network here, so
// the test writes what they would: the Deployment's status (Available),
// the controller's Pod with its IP and Ready condition, and the
// EndpointSlice of its Service. The pod's IP is a non-loopback address of
// this machine, where the controller binary listens: the API server
// refuses loopback pod addresses for its proxy, and runs with
// --enable-aggregator-routing so that it calls the webhook's Service
// through its endpoints, as it would call a pod. Everything misaki check
// reads it reads through the API server: the pod proxy for /readyz and
// /metrics, the webhook through a server-side dry run.
func TestCheck(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a kube-apiserver")
	}
	host := hostAddress(t)
	env := &envtest.Environment{
		CRDDirectoryPaths:     []string{filepath.Join("..", "config", "crd")},
		ErrorIfCRDPathMissing: true,
		BinaryAssetsDirectory: kubeAssets(t),
	}
	env.ControlPlane.GetAPIServer().Configure().Set("enable-aggregator-routing", "true")
	cfg, err := env.Start()
	if err != nil {
		t.Fatalf("start kube-apiserver and etcd: %v", err)
	}
	t.Cleanup(func() { env.Stop() })
	c, err := client.New(cfg, client.Options{Scheme: controller.Scheme()})
	if err != nil {
		t.Fatal(err)
	}
	if err := apiextensionsv1.AddToScheme(c.Scheme()); err != nil {
		t.Fatal(err)
	}
	user, err := env.AddUser(envtest.User{Name: "check-admin", Groups: []string{"system:masters"}}, nil)
	if err != nil {
		t.Fatal(err)
	}
	kc, err := user.KubeConfig()
	if err != nil {
		t.Fatal(err)
	}
	kubeconfig := filepath.Join(t.TempDir(), "kubeconfig")
	if err := os.WriteFile(kubeconfig, kc, 0o600); err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()

	check := func(args ...string) (int, string, string) {
		t.Helper()
		var out, errb bytes.Buffer
		code := cli.Run(ctx, append([]string{"check", "--kubeconfig", kubeconfig, "--request-timeout", "20s"}, args...), &out, &errb)
		t.Logf("misaki check %s: exit %d\n%s%s", strings.Join(args, " "), code, out.String(), errb.String())
		return code, out.String(), errb.String()
	}
	wantLines := func(out string, lines ...string) {
		t.Helper()
		for _, l := range lines {
			if !strings.Contains(out, l) {
				t.Errorf("the output has no %q", l)
			}
		}
	}

	// Only the CRD: the check fails and says what is missing.
	code, out, errOut := check()
	if code != 1 {
		t.Errorf("exit %d, want 1", code)
	}
	wantLines(out,
		"PASS kubernetes-api    the API server at "+strings.TrimSuffix(cfg.Host, "/")+" answers (Kubernetes v",
		"PASS crd               CRD routes.mesh.misaki.io is established, v1alpha1 (served, stored), schema sha256:",
		"FAIL controller        no Deployment labelled app.kubernetes.io/name=misaki,app.kubernetes.io/component=controller in namespace misaki-system\n"+
			"                       hint: install Misaki: helm install misaki charts/misaki",
		"SKIP controller-ready  not run: controller failed",
		"FAIL webhook           MutatingWebhookConfiguration misaki-sidecar-injector not found",
		"SKIP injection         not run: webhook failed",
		"PASS routes            no Routes yet",
		"8 checks: 3 passed, 2 failed, 3 skipped")
	if !strings.Contains(errOut, "error: 2 of 8 checks failed: controller, webhook") {
		t.Errorf("stderr %q does not name the failed checks", errOut)
	}

	// A CRD of another release: the check names the field it lacks.
	var crd apiextensionsv1.CustomResourceDefinition
	if err := c.Get(ctx, client.ObjectKey{Name: "routes.mesh.misaki.io"}, &crd); err != nil {
		t.Fatal(err)
	}
	original := crd.DeepCopy()
	offline := crd.Spec.Versions[0].Schema.OpenAPIV3Schema.Properties["spec"].Properties["offline"]
	delete(offline.Properties, "grpc")
	crd.Spec.Versions[0].Schema.OpenAPIV3Schema.Properties["spec"].Properties["offline"] = offline
	if err := c.Update(ctx, &crd); err != nil {
		t.Fatal(err)
	}
	code, out, _ = check()
	if code != 1 {
		t.Errorf("exit %d with an older CRD, want 1", code)
	}
	wantLines(out, "FAIL crd               CRD routes.mesh.misaki.io is not the one this CLI was built with: version v1alpha1's schema differs",
		"it lacks spec.offline.grpc", "hint: the installed CRD is another Misaki release's")
	if err := c.Get(ctx, client.ObjectKey{Name: crd.Name}, &crd); err != nil {
		t.Fatal(err)
	}
	crd.Spec = original.Spec
	if err := c.Update(ctx, &crd); err != nil {
		t.Fatal(err)
	}

	// Install as a kubectl user does.
	kubectl := adminKubectl(t, env)
	if _, err := os.Stat(filepath.Join(env.BinaryAssetsDirectory, "kubectl")); err != nil {
		t.Skipf("no kubectl in %s; run hack/kube-tools.sh", env.BinaryAssetsDirectory)
	}
	if _, errOut, err := kubectl("apply", "-k", filepath.Join("..", "config")); err != nil {
		t.Fatalf("kubectl apply -k config/: %v\n%s", err, readAll(errOut))
	}
	ports := freePorts(t, host, 4)
	xdsPort, metricsPort, probesPort, webhookPort := ports[0], ports[1], ports[2], ports[3]

	// The controller's Pod, as the ReplicaSet and the kubelet would make
	// it: the Deployment's template, with the ports this test's binary
	// listens on, running at host and ready.
	var deploy appsv1.Deployment
	if err := c.Get(ctx, client.ObjectKey{Namespace: "misaki-system", Name: "misaki-controller"}, &deploy); err != nil {
		t.Fatal(err)
	}
	pod := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "misaki-controller-7d9f-x2x", Namespace: "misaki-system",
		Labels: deploy.Spec.Template.Labels}, Spec: *deploy.Spec.Template.Spec.DeepCopy()}
	pod.Spec.NodeName = "node-1"
	for i, p := range pod.Spec.Containers[0].Ports {
		if port, ok := map[string]int32{"xds": xdsPort, "metrics": metricsPort, "probes": probesPort, "webhook": webhookPort}[p.Name]; ok {
			pod.Spec.Containers[0].Ports[i].ContainerPort = port
		}
	}
	create(t, c, pod)
	pod.Status = corev1.PodStatus{Phase: corev1.PodRunning, PodIP: host, PodIPs: []corev1.PodIP{{IP: host}},
		Conditions: []corev1.PodCondition{{Type: corev1.PodReady, Status: corev1.ConditionTrue}}}
	if err := c.Status().Update(ctx, pod); err != nil {
		t.Fatal(err)
	}
	ready := true
	create(t, c, &discoveryv1.EndpointSlice{
		ObjectMeta:  metav1.ObjectMeta{Name: "misaki-controller-abcde", Namespace: "misaki-system", Labels: map[string]string{discoveryv1.LabelServiceName: "misaki-controller"}},
		AddressType: discoveryv1.AddressTypeIPv4,
		Ports: []discoveryv1.EndpointPort{{Name: ptr("grpc-xds"), Port: &xdsPort}, {Name: ptr("https-webhook"), Port: &webhookPort},
			{Name: ptr("http-metrics"), Port: &metricsPort}},
		Endpoints: []discoveryv1.Endpoint{{Addresses: []string{host}, Conditions: discoveryv1.EndpointConditions{Ready: &ready},
			TargetRef: &corev1.ObjectReference{Kind: "Pod", Namespace: "misaki-system", Name: pod.Name}}},
	})
	deploy.Status = appsv1.DeploymentStatus{ObservedGeneration: deploy.Generation, Replicas: 1, UpdatedReplicas: 1, ReadyReplicas: 1, AvailableReplicas: 1,
		Conditions: []appsv1.DeploymentCondition{
			{Type: appsv1.DeploymentAvailable, Status: corev1.ConditionTrue, Reason: "MinimumReplicasAvailable"},
			{Type: appsv1.DeploymentProgressing, Status: corev1.ConditionTrue, Reason: "NewReplicaSetAvailable"}}}
	if err := c.Status().Update(ctx, &deploy); err != nil {
		t.Fatal(err)
	}
	// The injector looks up the cluster DNS it forwards to.
	create(t, c, &corev1.Service{ObjectMeta: metav1.ObjectMeta{Name: "kube-dns", Namespace: "kube-system"},
		Spec: corev1.ServiceSpec{Ports: []corev1.ServicePort{{Name: "dns", Port: 53, Protocol: corev1.ProtocolUDP}}}})

	// The controller binary, with the installed injector config.
	var cm corev1.ConfigMap
	if err := c.Get(ctx, client.ObjectKey{Namespace: "misaki-system", Name: "misaki-injector"}, &cm); err != nil {
		t.Fatal(err)
	}
	// The installed controller runs --xds-auth mtls, and its xDS
	// certificate names the Service, which this test's proxy (dialling an
	// address of this machine, outside any cluster) cannot verify. The
	// binary runs plaintext here and its injector config drops
	// xdsIdentity to match; TestXDSIdentity and TestInjection run mtls.
	var injector map[string]any
	if err := yaml.Unmarshal([]byte(cm.Data["injector.yaml"]), &injector); err != nil {
		t.Fatal(err)
	}
	delete(injector, "xdsIdentity")
	injectorYAML, err := yaml.Marshal(injector)
	if err != nil {
		t.Fatal(err)
	}
	injectorFile := filepath.Join(t.TempDir(), "injector.yaml")
	if err := os.WriteFile(injectorFile, injectorYAML, 0o600); err != nil {
		t.Fatal(err)
	}
	addr := func(port int32) string { return net.JoinHostPort(host, fmt.Sprint(port)) }
	ctrl := startControllerBinary(t, "--kubeconfig", kubeconfig, "--namespace", "misaki-system", "--log-level", "debug",
		"--xds-addr", addr(xdsPort), "--metrics-addr", addr(metricsPort), "--probe-addr", addr(probesPort),
		"--webhook-addr", addr(webhookPort), "--injector-config", injectorFile)
	waitfor.Within(t, 60*time.Second, "the controller binary's /readyz", func() bool {
		resp, err := http.Get("http://" + addr(probesPort) + "/readyz")
		if err != nil {
			return false
		}
		resp.Body.Close()
		return resp.StatusCode == http.StatusOK
	})

	// A Route, and a proxy of its namespace connected over ADS.
	create(t, c, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "apps"}},
		&meshv1.Route{ObjectMeta: metav1.ObjectMeta{Name: "events", Namespace: "apps"}, Spec: meshv1.RouteSpec{
			Hosts: []meshv1.Host{"events.mesh"}, Destination: meshv1.Destination{URL: "https://gateway.example.com:8443"},
			Offline: &meshv1.Offline{Hold: "5s"}}})
	startProxyBinary(t, fmt.Sprintf("listen: 127.0.0.1:0\nadmin: 127.0.0.1:0\nspool: {dir: %s}\nxds: {server: %s, node: apps/events-client-1}\n",
		t.TempDir(), addr(xdsPort)))
	waitfor.Within(t, 30*time.Second, "a connected proxy in the controller's metrics and the Route Accepted", func() bool {
		resp, err := http.Get("http://" + addr(metricsPort) + "/metrics")
		if err != nil {
			return false
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		var r meshv1.Route
		return strings.Contains(string(b), "\nmisaki_controller_xds_streams 1\n") &&
			c.Get(ctx, client.ObjectKey{Namespace: "apps", Name: "events"}, &r) == nil &&
			meta.IsStatusConditionTrue(r.Status.Conditions, meshv1.ConditionAccepted)
	})

	// Everything in place: every check passes, the dry run included.
	code, out, _ = check("--inject-dry-run")
	if code != 0 {
		t.Errorf("exit %d, want 0; controller logs:\n%s", code, ctrl.String())
	}
	wantLines(out,
		"PASS controller        Deployment misaki-system/misaki-controller is available, 1/1 replicas ready",
		"PASS controller-ready  /readyz answers on 1 ready pod, through the API server's pod proxy",
		"PASS webhook           misaki-sidecar-injector: 2 webhooks, caBundle set (valid until ",
		"Service misaki-system/misaki-controller:443 with 1 ready endpoint",
		"PASS injection         a dry-run pod in namespace default got the proxy (misaki.io/injected=",
		"PASS proxies           1 proxy connected to 1 controller pod",
		"PASS routes            1 Route, all Accepted",
		"8 checks: 8 passed")
	var pods corev1.PodList
	if err := c.List(ctx, &pods, client.InNamespace("default")); err != nil || len(pods.Items) != 0 {
		t.Errorf("the dry run stored pods in default: %v %v", err, pods.Items)
	}

	// -o json: the same, for scripts.
	code, out, _ = check("-o", "json")
	var report struct {
		OK     bool `json:"ok"`
		Checks []struct{ Name, Status, Message, Hint string }
	}
	if err := json.Unmarshal([]byte(out), &report); err != nil {
		t.Fatalf("-o json: %v", err)
	}
	if code != 0 || !report.OK || len(report.Checks) != 8 {
		t.Errorf("-o json: exit %d, ok %v, %d checks", code, report.OK, len(report.Checks))
	}
	for _, r := range report.Checks {
		want := "pass"
		if r.Name == "injection" {
			want = "skip" // not asked for
		}
		if r.Status != want {
			t.Errorf("-o json: %s is %s (%s), want %s", r.Name, r.Status, r.Message, want)
		}
	}

	// The controller gone (its Deployment and Pod still say ready, as they
	// would for a while): /readyz and the injection fail.
	ctrl.stop()
	code, out, _ = check("--inject-dry-run")
	if code != 1 {
		t.Errorf("exit %d without the controller, want 1", code)
	}
	wantLines(out, "FAIL controller-ready  pod misaki-controller-7d9f-x2x: /readyz on port ", "connect: connection refused",
		"FAIL injection         a dry-run pod in namespace default: ",
		"SKIP proxies           not run: controller-ready failed")
}

// hostAddress is a non-loopback IPv4 address of this machine, which the
// API server accepts as a pod's and can dial.
func hostAddress(t *testing.T) string {
	t.Helper()
	ifaces, err := net.Interfaces()
	if err != nil {
		t.Fatal(err)
	}
	for _, ifc := range ifaces {
		if ifc.Flags&net.FlagUp == 0 || ifc.Flags&net.FlagLoopback != 0 {
			continue
		}
		addrs, _ := ifc.Addrs()
		for _, a := range addrs {
			if n, ok := a.(*net.IPNet); ok && n.IP.To4() != nil && n.IP.IsGlobalUnicast() {
				return n.IP.String()
			}
		}
	}
	t.Skip("no non-loopback IPv4 address: the API server proxies only to pod addresses")
	return ""
}

// freePorts picks n free TCP ports on host, for binaries that take an
// address rather than a listener.
func freePorts(t *testing.T, host string, n int) []int32 {
	t.Helper()
	var out []int32
	var lns []net.Listener
	for range n {
		ln, err := net.Listen("tcp", net.JoinHostPort(host, "0"))
		if err != nil {
			t.Fatal(err)
		}
		lns = append(lns, ln)
		out = append(out, int32(ln.Addr().(*net.TCPAddr).Port))
	}
	for _, ln := range lns {
		ln.Close()
	}
	return out
}

var (
	controllerBinOnce sync.Once
	controllerBin     string
	controllerBinErr  error
)

// runningController is the misaki-controller binary; String is its log.
type runningController struct {
	logBuffer
	stop func()
}

// startControllerBinary builds misaki-controller once and runs it with
// args, in an environment without $KUBECONFIG, a home without
// ~/.kube/config, and not in a pod: args must say where the API server is.
func startControllerBinary(t *testing.T, args ...string) *runningController {
	t.Helper()
	controllerBinOnce.Do(func() {
		controllerBin = filepath.Join(binDir, "misaki-controller")
		controllerBinErr = testbin.Build(binDir, nil, "github.com/misaki-io/misaki/cmd/misaki-controller")
	})
	if controllerBinErr != nil {
		t.Fatal(controllerBinErr)
	}
	cmd := exec.Command(controllerBin, args...)
	cmd.Env = []string{"HOME=" + t.TempDir(), "PATH=" + os.Getenv("PATH")}
	stderr, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	rc := &runningController{}
	done := make(chan struct{})
	go func() {
		sc := bufio.NewScanner(stderr)
		for sc.Scan() {
			rc.WriteString(sc.Text() + "\n")
		}
		cmd.Wait()
		close(done)
	}()
	var once sync.Once
	rc.stop = func() {
		once.Do(func() {
			cmd.Process.Signal(os.Interrupt)
			select {
			case <-done:
			case <-time.After(15 * time.Second):
				cmd.Process.Kill()
				<-done
			}
		})
	}
	t.Cleanup(func() {
		rc.stop()
		if t.Failed() {
			t.Logf("controller logs:\n%s", rc.String())
		}
	})
	return rc
}

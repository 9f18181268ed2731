package test

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/rest"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/envtest"

	meshv1 "github.com/misaki-io/misaki/api/v1alpha1"
	"github.com/misaki-io/misaki/internal/controller"
	"github.com/misaki-io/misaki/internal/waitfor"
)

// kubeAssets is the directory with etcd and kube-apiserver that
// hack/kube-tools.sh installs (CI runs it; without it the test fails there
// and is skipped elsewhere).
func kubeAssets(t *testing.T) string {
	t.Helper()
	dir := os.Getenv("KUBEBUILDER_ASSETS")
	if dir == "" {
		home, _ := os.UserHomeDir()
		dir = filepath.Join(home, ".cache/misaki/k8s/v1.37.2")
	}
	if _, err := os.Stat(filepath.Join(dir, "kube-apiserver")); err != nil {
		if os.Getenv("CI") != "" {
			t.Fatalf("no kube-apiserver in %s: .ci/run should have run hack/kube-tools.sh", dir)
		}
		t.Skipf("no kube-apiserver in %s; run hack/kube-tools.sh", dir)
	}
	return dir
}

// startAPIServer starts a real etcd and kube-apiserver with Misaki's CRDs.
func startAPIServer(t *testing.T) (*rest.Config, client.Client) {
	_, cfg, c := startEnv(t)
	return cfg, c
}

// startEnv is startAPIServer with the envtest environment, for kubectl.
func startEnv(t *testing.T) (*envtest.Environment, *rest.Config, client.Client) {
	t.Helper()
	env := &envtest.Environment{
		CRDDirectoryPaths:     []string{filepath.Join("..", "config", "crd")},
		ErrorIfCRDPathMissing: true,
		BinaryAssetsDirectory: kubeAssets(t),
	}
	cfg, err := env.Start()
	if err != nil {
		t.Fatalf("start kube-apiserver and etcd: %v", err)
	}
	t.Cleanup(func() { env.Stop() })
	c, err := client.New(cfg, client.Options{Scheme: controller.Scheme()})
	if err != nil {
		t.Fatal(err)
	}
	return env, cfg, c
}

// kubectlFunc runs the assets directory's kubectl with args, as a user in
// system:masters (the administrator envtest provisions for itself), and
// returns what it printed.
type kubectlFunc func(args ...string) (stdout, stderr io.Reader, err error)

// adminKubectl provisions that user on env's kube-apiserver and returns its
// kubectl.
func adminKubectl(t *testing.T, env *envtest.Environment) kubectlFunc {
	t.Helper()
	user, err := env.AddUser(envtest.User{Name: "misaki-test-admin", Groups: []string{"system:masters"}}, nil)
	if err != nil {
		t.Fatalf("add a kubectl user: %v", err)
	}
	k, err := user.Kubectl()
	if err != nil {
		t.Fatalf("write the kubectl user's kubeconfig: %v", err)
	}
	k.Path = filepath.Join(env.BinaryAssetsDirectory, "kubectl")
	return k.Run
}

// startController runs the controller in-process, without the webhook;
// the returned func stops it.
func startController(t *testing.T, cfg *rest.Config, ln net.Listener) (stop func()) {
	t.Helper()
	return runController(t, cfg, controller.Options{XDSListener: ln, WebhookAddr: "0"})
}

// runController runs the controller with o (metrics off, and probes
// unless o.ProbeAddr names an address).
func runController(t *testing.T, cfg *rest.Config, o controller.Options) (stop func()) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	if testing.Verbose() {
		log = slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	go func() {
		if o.ProbeAddr == "" {
			o.ProbeAddr = "0"
		}
		o.MetricsAddr, o.Log = "0", log
		done <- controller.Run(ctx, cfg, o)
	}()
	stopped := false
	stop = func() {
		if stopped {
			return
		}
		stopped = true
		cancel()
		if err := <-done; err != nil {
			t.Errorf("controller: %v", err)
		}
	}
	t.Cleanup(stop)
	return stop
}

func create(t *testing.T, c client.Client, objs ...client.Object) {
	t.Helper()
	for _, o := range objs {
		if err := c.Create(context.Background(), o); err != nil {
			t.Fatalf("create %T %s: %v", o, o.GetName(), err)
		}
	}
}

// podNetwork is a network namespace playing the pod network: the API
// server refuses loopback endpoint addresses, so the backends live at
// ip, across a veth pair.
type podNetwork struct {
	ns   *cloudNS
	ip   string // the pod's address
	host string // the node's end of the veth: where the pod reaches the test's servers
}

func newPodNetwork(t *testing.T) podNetwork {
	id, sid := testID(7)
	ns := newCloudNS(t, "misaki-k"+sid)
	subnet := fmt.Sprintf("10.193.%d", 100+id%150)
	ns.link("mskk"+sid, "mskl"+sid, subnet)
	return podNetwork{ns: ns, ip: subnet + ".2", host: subnet + ".1"}
}

// backend is a real HTTP server in the pod network that says who it is
// and what it got; it returns the port.
func (p podNetwork) backend(name string) int {
	a := p.ns.serve(p.ip+":0", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(w, "%s %s", name, r.URL.Path)
	}))
	return a.(*net.TCPAddr).Port
}

// echo is the Service echo (port svcPort) in ns with one ready endpoint,
// the pod network's backend on backendPort, and the Route echo.mesh to it
// with an offline hold.
func (p podNetwork) echo(ns string, svcPort int32, backendPort int, hold string) []client.Object {
	ready := true
	return []client.Object{
		&corev1.Service{ObjectMeta: metav1.ObjectMeta{Name: "echo", Namespace: ns},
			Spec: corev1.ServiceSpec{Ports: []corev1.ServicePort{{Name: "http", Port: svcPort}}}},
		&discoveryv1.EndpointSlice{
			ObjectMeta:  metav1.ObjectMeta{Name: "echo-1", Namespace: ns, Labels: map[string]string{discoveryv1.LabelServiceName: "echo"}},
			AddressType: discoveryv1.AddressTypeIPv4,
			Ports:       []discoveryv1.EndpointPort{{Name: ptr("http"), Port: ptr(int32(backendPort))}},
			Endpoints:   []discoveryv1.Endpoint{{Addresses: []string{p.ip}, Conditions: discoveryv1.EndpointConditions{Ready: &ready}}},
		},
		&meshv1.Route{ObjectMeta: metav1.ObjectMeta{Name: "echo", Namespace: ns}, Spec: meshv1.RouteSpec{
			Hosts:       []meshv1.Host{"echo.mesh"},
			Destination: meshv1.Destination{Service: &meshv1.ServiceDestination{Name: "echo", Port: svcPort}},
			Offline:     &meshv1.Offline{Hold: meshv1.Duration(hold)},
		}},
	}
}

// call sends GET path to the proxy for host and returns status and body.
func call(proxy, host, path string) (int, string) {
	req, _ := http.NewRequest(http.MethodGet, "http://"+proxy+path, nil)
	req.Host = host
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return 0, err.Error()
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

func waitCall(t *testing.T, proxy, host, path string, wantStatus int, wantBody string) time.Duration {
	t.Helper()
	start := time.Now()
	deadline := start.Add(30 * time.Second)
	for {
		code, body := call(proxy, host, path)
		if code == wantStatus && strings.HasPrefix(body, wantBody) {
			return time.Since(start)
		}
		if time.Now().After(deadline) {
			t.Fatalf("GET %s%s: %d %q, want %d %q", host, path, code, body, wantStatus, wantBody)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// TestControlPlane is the control plane end to end, against a real
// kube-apiserver and etcd: a Route and a Service with endpoints become
// config in a real proxy (the binary) over ADS, a Route change reaches it,
// an invalid Route is refused by the API server's schema, and with the
// controller gone a restarted proxy serves from its kept config.
func TestControlPlane(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a kube-apiserver")
	}
	pods := newPodNetwork(t) // skips unless root, as CI is
	cfg, c := startAPIServer(t)
	ctx := context.Background()
	xdsLn, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	stopController := startController(t, cfg, xdsLn)

	portA := pods.backend("a")
	create(t, c, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "apps"}})
	create(t, c, pods.echo("apps", 80, portA, "2s")...)

	spoolDir := t.TempDir()
	proxyYAML := fmt.Sprintf(`
listen: 127.0.0.1:0
admin: 127.0.0.1:0
spool: {dir: %s}
xds: {server: %s, node: apps/echo-client-1}
`, spoolDir, xdsLn.Addr())
	p := startProxyBinary(t, proxyYAML)
	took := waitCall(t, p.mesh, "echo.mesh", "/v1/x", 200, "a /v1/x")
	t.Logf("route created -> the proxy routes by it: %v", took)

	waitfor.True(t, "Route status Accepted", func() bool {
		var r meshv1.Route
		if err := c.Get(ctx, client.ObjectKey{Namespace: "apps", Name: "echo"}, &r); err != nil {
			return false
		}
		return meta.IsStatusConditionTrue(r.Status.Conditions, meshv1.ConditionAccepted) &&
			meta.IsStatusConditionTrue(r.Status.Conditions, meshv1.ConditionResolvedRefs)
	})

	// Update the Route: only /v2 now; /v1 gets 404 from the proxy.
	var r meshv1.Route
	if err := c.Get(ctx, client.ObjectKey{Namespace: "apps", Name: "echo"}, &r); err != nil {
		t.Fatal(err)
	}
	r.Spec.Matches = []meshv1.Match{{PathPrefix: "/v2"}}
	if err := c.Update(ctx, &r); err != nil {
		t.Fatal(err)
	}
	took = waitCall(t, p.mesh, "echo.mesh", "/v1/x", 404, "misaki: no route")
	t.Logf("route updated -> the proxy has it: %v", took)
	waitCall(t, p.mesh, "echo.mesh", "/v2/x", 200, "a /v2/x")

	// Endpoints move: the proxy follows the EndpointSlice.
	portB := pods.backend("b")
	var es discoveryv1.EndpointSlice
	if err := c.Get(ctx, client.ObjectKey{Namespace: "apps", Name: "echo-1"}, &es); err != nil {
		t.Fatal(err)
	}
	es.Ports[0].Port = ptr(int32(portB))
	if err := c.Update(ctx, &es); err != nil {
		t.Fatal(err)
	}
	waitCall(t, p.mesh, "echo.mesh", "/v2/y", 200, "b /v2/y")

	// The API server's schema refuses invalid Routes, with the reason.
	for name, spec := range map[string]meshv1.RouteSpec{
		"both destinations": {Hosts: []meshv1.Host{"x.mesh"}, Destination: meshv1.Destination{
			URL: "http://10.0.0.1:80", Service: &meshv1.ServiceDestination{Name: "echo", Port: 80}}},
		"upper-case host": {Hosts: []meshv1.Host{"X.mesh"}, Destination: meshv1.Destination{URL: "http://10.0.0.1:80"}},
		"path and prefix": {Hosts: []meshv1.Host{"x.mesh"}, Matches: []meshv1.Match{{Path: "/a", PathPrefix: "/b"}},
			Destination: meshv1.Destination{URL: "http://10.0.0.1:80"}},
		"bad duration": {Hosts: []meshv1.Host{"x.mesh"}, Destination: meshv1.Destination{URL: "http://10.0.0.1:80"},
			Offline: &meshv1.Offline{Hold: "30"}},
	} {
		err := c.Create(ctx, &meshv1.Route{ObjectMeta: metav1.ObjectMeta{GenerateName: "bad-", Namespace: "apps"}, Spec: spec})
		if err == nil || !strings.Contains(err.Error(), "is invalid") {
			t.Errorf("%s: create = %v, want the API server to refuse it", name, err)
		} else {
			t.Logf("%s: refused: %v", name, err)
		}
	}

	// The controller goes away; the proxy restarts and serves from its
	// kept config, with the update.
	stopController()
	p.cmd.Process.Signal(os.Interrupt)
	p.cmd.Wait()
	p2 := startProxyBinary(t, proxyYAML)
	if code, body := call(p2.mesh, "echo.mesh", "/v2/z"); code != 200 || body != "b /v2/z" {
		t.Errorf("after a restart without the controller: %d %q, want 200 from b", code, body)
	}
	if code, _ := call(p2.mesh, "echo.mesh", "/v1/z"); code != 404 {
		t.Errorf("after a restart without the controller, /v1: %d, want 404 (the updated route)", code)
	}
	if !strings.Contains(p2.logs.String(), "starting from the kept config") {
		t.Errorf("the proxy did not say it started from its kept config:\n%s", p2.logs.String())
	}
}

func ptr[T any](v T) *T { return &v }

// The controller's probes answer without the webhook too: /readyz was a
// 404 when only the webhook registered a readiness check.
func TestControllerProbesWithoutWebhook(t *testing.T) {
	_, cfg, _ := startEnv(t)
	xds, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	probe, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := probe.Addr().String()
	probe.Close() // the manager binds the address itself
	runController(t, cfg, controller.Options{XDSListener: xds, WebhookAddr: "0", ProbeAddr: addr})
	for _, path := range []string{"/healthz", "/readyz"} {
		waitfor.NoError(t, 30*time.Second, "GET "+path, func() error {
			resp, err := http.Get("http://" + addr + path)
			if err != nil {
				return err
			}
			resp.Body.Close()
			if resp.StatusCode != http.StatusOK {
				return fmt.Errorf("status %d", resp.StatusCode)
			}
			return nil
		})
	}
}

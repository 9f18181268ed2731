package test

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"
	authv1 "k8s.io/api/authentication/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"sigs.k8s.io/controller-runtime/pkg/client"

	meshv1 "github.com/misaki-io/misaki/api/v1alpha1"
	"github.com/misaki-io/misaki/internal/controller"
	"github.com/misaki-io/misaki/internal/controller/ca"
	"github.com/misaki-io/misaki/internal/proxy/config"
	"github.com/misaki-io/misaki/internal/proxy/xds"
	"github.com/misaki-io/misaki/internal/proxy/xds/identity"
	"github.com/misaki-io/misaki/internal/waitfor"
)

// TestXDSIdentity runs the controller with --xds-auth mtls against a real
// kube-apiserver and etcd:
//   - it creates its CA and publishes the bundle in every namespace but
//     the system ones;
//   - a proxy with its pod's bound token (a TokenRequest, as the kubelet
//     makes for the injected volume) gets a certificate naming the pod,
//     and over mutual TLS the routes of its namespace and no other's:
//     the proxy binary routes by them, and so does the package's client;
//   - refused, with the reason, counted: a certificate naming one pod
//     with another pod's node id, or another namespace's; a stream with no
//     client certificate; a plaintext client; a token of a deleted pod, or
//     of another audience.
func TestXDSIdentity(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a kube-apiserver")
	}
	_, cfg, c := startEnv(t)
	ctx := context.Background()
	kube, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		t.Fatal(err)
	}

	upstream := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(w, "upstream %s", r.URL.Path)
	}))
	t.Cleanup(upstream.Close)
	for _, ns := range []string{"misaki-system", "a", "b"} {
		create(t, c, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}})
	}
	route := func(ns, host, url string) *meshv1.Route {
		return &meshv1.Route{ObjectMeta: metav1.ObjectMeta{Name: "r", Namespace: ns}, Spec: meshv1.RouteSpec{
			Hosts: []meshv1.Host{meshv1.Host(host)}, Destination: meshv1.Destination{URL: url}}}
	}
	create(t, c, route("a", "a.mesh", upstream.URL), route("b", "b.mesh", "http://10.0.0.2:80"))
	// envtest runs no controller-manager (service accounts) and no
	// ServiceAccount admission (the pods' serviceAccountName): both by hand.
	pod := func(ns, name, sa string) *corev1.Pod {
		return &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name},
			Spec: corev1.PodSpec{ServiceAccountName: sa, Containers: []corev1.Container{{Name: "app", Image: "app:1"}}}}
	}
	create(t, c, &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Namespace: "a", Name: "telemetry"}},
		&corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Namespace: "b", Name: "default"}})
	clientA, otherA, goneA, clientB := pod("a", "client", "telemetry"), pod("a", "other", "telemetry"), pod("a", "gone", "telemetry"), pod("b", "client", "default")
	create(t, c, clientA, otherA, goneA, clientB)

	xdsLn, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	caLn, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	runController(t, cfg, controller.Options{
		XDSListener: xdsLn, CAListener: caLn, XDSAuth: controller.XDSAuthMTLS, XDSIPs: []net.IP{net.ParseIP("127.0.0.1")},
		Namespace: "misaki-system", WebhookAddr: "0",
	})

	// The bundle in every namespace but the system ones.
	dir := t.TempDir()
	caFile := filepath.Join(dir, "root-cert.pem")
	var bundle string
	waitfor.True(t, "the CA bundle in namespaces a and b", func() bool {
		var cmA, cmB corev1.ConfigMap
		if c.Get(ctx, client.ObjectKey{Namespace: "a", Name: ca.RootCertConfigMap}, &cmA) != nil ||
			c.Get(ctx, client.ObjectKey{Namespace: "b", Name: ca.RootCertConfigMap}, &cmB) != nil {
			return false
		}
		bundle = cmA.Data[ca.RootCertKey]
		return bundle != "" && bundle == cmB.Data[ca.RootCertKey]
	})
	if err := c.Get(ctx, client.ObjectKey{Namespace: "kube-system", Name: ca.RootCertConfigMap}, &corev1.ConfigMap{}); err == nil {
		t.Error("the CA bundle was published in kube-system")
	}
	var sec corev1.Secret
	if err := c.Get(ctx, client.ObjectKey{Namespace: "misaki-system", Name: "misaki-ca"}, &sec); err != nil || string(sec.Data[ca.KeyCA]) != bundle {
		t.Errorf("the CA Secret (%v) does not hold the published bundle", err)
	}
	writeFile(t, caFile, bundle)

	token := func(p *corev1.Pod, audience string) string {
		t.Helper()
		tr, err := kube.CoreV1().ServiceAccounts(p.Namespace).CreateToken(ctx, p.Spec.ServiceAccountName, &authv1.TokenRequest{Spec: authv1.TokenRequestSpec{
			Audiences: []string{audience}, ExpirationSeconds: ptr(int64(600)),
			BoundObjectRef: &authv1.BoundObjectReference{Kind: "Pod", APIVersion: "v1", Name: p.Name, UID: p.UID},
		}}, metav1.CreateOptions{})
		if err != nil {
			t.Fatalf("TokenRequest for pod %s/%s: %v", p.Namespace, p.Name, err)
		}
		path := filepath.Join(dir, p.Namespace+"-"+p.Name+"-"+audience+".token")
		writeFile(t, path, tr.Status.Token)
		return path
	}
	tokenA := token(clientA, "misaki")
	caAddr, xdsAddr := caLn.Addr().String(), xdsLn.Addr().String()

	// The proxy binary, as the injector configures it, routes by its
	// namespace's Route.
	p := startProxyBinary(t, fmt.Sprintf(`
listen: 127.0.0.1:0
admin: 127.0.0.1:0
spool: {dir: %s}
xds: {server: %q, node: a/client, caFile: %s, identity: {tokenFile: %s, server: %q}}
`, t.TempDir(), xdsAddr, caFile, tokenA, caAddr))
	waitCall(t, p.mesh, "a.mesh", "/hi", 200, "upstream /hi")
	if !strings.Contains(p.logs.String(), "spiffe://cluster.local/ns/a/pod/client") {
		t.Errorf("the proxy did not log its certificate's identity:\n%s", p.logs.String())
	}

	// The package's client: namespace a's routes, and only them.
	applied := make(chan []config.Route, 10)
	newClient := func(node, tokenFile string) (*xds.Client, *logBuffer) {
		logs := &logBuffer{}
		cl, err := xds.New(xds.Options{
			Server: xdsAddr, Node: node, CAFile: caFile, Cache: filepath.Join(t.TempDir(), "xds.yaml"),
			Identity: xds.IdentityOptions{TokenFile: tokenFile, Server: caAddr},
			Log:      slog.New(slog.NewTextHandler(logWriter{logs}, nil)),
			Apply: func(_ context.Context, routes []config.Route, _ map[string][]string) error {
				applied <- routes
				return nil
			},
			BackoffMin: 50 * time.Millisecond, BackoffMax: 100 * time.Millisecond,
		}, nil)
		if err != nil {
			t.Fatal(err)
		}
		return cl, logs
	}
	run := func(cl *xds.Client) (stop func()) {
		cctx, cancel := context.WithCancel(ctx)
		done := make(chan struct{})
		go func() { cl.Run(cctx); close(done) }()
		return func() { cancel(); <-done }
	}
	cl, _ := newClient("a/client", tokenA)
	stop := run(cl)
	select {
	case routes := <-applied:
		if len(routes) != 1 || routes[0].Hosts[0] != "a.mesh" {
			t.Errorf("a/client was given %+v, want namespace a's route", routes)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("a/client got no config")
	}
	stop()

	// A certificate for a/client with another pod's node id, or another
	// namespace's: the client is refused, with the reason, and applies
	// nothing.
	for _, node := range []string{"a/other", "b/client"} {
		cl, logs := newClient(node, tokenA)
		stop := run(cl)
		waitfor.True(t, node+" refused", func() bool {
			return strings.Contains(logs.String(), "PermissionDenied") || strings.Contains(logs.String(), "grpc-status 7")
		})
		stop()
		if !strings.Contains(logs.String(), "is not a/client, the pod the client certificate names") {
			t.Errorf("node %s: the refusal does not say why:\n%s", node, logs.String())
		}
		select {
		case routes := <-applied:
			t.Errorf("node %s with a/client's certificate was given %+v", node, routes)
		default:
		}
	}

	// The same at the gRPC level, with go-control-plane's own types: the
	// status codes, and no response before the refusal.
	src, err := identity.New(identity.Options{Server: caAddr, TokenFile: tokenA, Roots: mustRoots(t, caFile)})
	if err != nil {
		t.Fatal(err)
	}
	if err := src.Ensure(ctx); err != nil {
		t.Fatal(err)
	}
	roots := mustRoots(t, caFile).Pool()
	withCert := credentials.NewTLS(&tls.Config{RootCAs: roots, ServerName: "127.0.0.1", Certificates: []tls.Certificate{*src.Certificate()}})
	noCert := credentials.NewTLS(&tls.Config{RootCAs: roots, ServerName: "127.0.0.1"})
	before := refusedCount(t)
	for _, tc := range []struct {
		name  string
		creds credentials.TransportCredentials
		node  string
		code  codes.Code
		want  string
	}{
		{"own node", withCert, "a/client", codes.OK, ""},
		{"another pod", withCert, "a/other", codes.PermissionDenied, `node id "a/other" is not a/client`},
		{"another namespace", withCert, "b/client", codes.PermissionDenied, `node id "b/client" is not a/client`},
		{"no node", withCert, "", codes.PermissionDenied, "the first request names no node"},
		{"no client certificate", noCert, "a/client", codes.Unauthenticated, "no client certificate"},
		{"plaintext", insecure.NewCredentials(), "a/client", codes.Unavailable, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			resp, err := adsOnce(xdsAddr, tc.creds, tc.node)
			if tc.code == codes.OK {
				if err != nil || len(resp.GetResources()) != 1 {
					t.Fatalf("%v, %d resources", err, len(resp.GetResources()))
				}
				return
			}
			if st := status.Convert(err); resp != nil || st.Code() != tc.code || !strings.Contains(st.Message(), tc.want) {
				t.Errorf("got %v and %v, want %s saying %q", resp, err, tc.code, tc.want)
			}
		})
	}
	after := refusedCount(t)
	for reason, n := range map[string]float64{"node_mismatch": 2, "no_node": 1, "no_certificate": 1} {
		if got := after[reason] - before[reason]; got != n {
			t.Errorf("misaki_controller_xds_refused_total{reason=%q} rose by %v, want %v", reason, got, n)
		}
	}

	// Certificates are refused for a deleted pod's token and for a token
	// of another audience.
	tokenGone := token(goneA, "misaki")
	if err := c.Delete(ctx, goneA); err != nil {
		t.Fatal(err)
	}
	for name, tc := range map[string]struct{ token, want string }{
		"deleted pod":    {tokenGone, "401 Unauthorized"},
		"other audience": {token(otherA, "api"), "401 Unauthorized: the API server refused the token (audience misaki)"},
	} {
		src, err := identity.New(identity.Options{Server: caAddr, TokenFile: tc.token, Roots: mustRoots(t, caFile)})
		if err != nil {
			t.Fatal(err)
		}
		if err := src.Ensure(ctx); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: %v, want a refusal saying %q", name, err, tc.want)
		} else {
			t.Logf("%s: %v", name, err)
		}
	}
}

// adsOnce opens an ADS stream with creds, sends a request for listeners
// as node, and returns the first response or the error that ended it.
func adsOnce(addr string, creds credentials.TransportCredentials, node string) (*discoveryv3.DiscoveryResponse, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(creds))
	if err != nil {
		return nil, err
	}
	defer conn.Close()
	stream, err := discoveryv3.NewAggregatedDiscoveryServiceClient(conn).StreamAggregatedResources(ctx)
	if err != nil {
		return nil, err
	}
	req := &discoveryv3.DiscoveryRequest{TypeUrl: resource.ListenerType}
	if node != "" {
		req.Node = &corev3.Node{Id: node}
	}
	if err := stream.Send(req); err != nil && !errors.Is(err, io.EOF) {
		return nil, err
	} // io.EOF: the server ended the stream, Recv has the status
	return stream.Recv()
}

// refusedCount reads misaki_controller_xds_refused_total by reason.
func refusedCount(t *testing.T) map[string]float64 {
	t.Helper()
	out := map[string]float64{}
	for _, r := range []string{"node_mismatch", "no_node", "no_certificate"} {
		out[r] = counter(t, "misaki_controller_xds_refused_total", "reason", r)
	}
	return out
}

func mustRoots(t *testing.T, path string) *identity.Roots {
	t.Helper()
	r, err := identity.LoadRoots(path)
	if err != nil {
		t.Fatal(err)
	}
	return r
}

func writeFile(t *testing.T, path, s string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(s), 0o600); err != nil {
		t.Fatal(err)
	}
}

// logWriter collects a slog handler's output in a logBuffer.
type logWriter struct{ b *logBuffer }

func (w logWriter) Write(p []byte) (int, error) {
	w.b.WriteString(string(p))
	return len(p), nil
}

var _ io.Writer = logWriter{}

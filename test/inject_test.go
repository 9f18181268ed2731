package test

import (
	"bytes"
	"context"
	"crypto/x509"
	"encoding/pem"
	"fmt"
	"io"
	"net"
	"net/http"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/miekg/dns"
	admissionregistrationv1 "k8s.io/api/admissionregistration/v1"
	appsv1 "k8s.io/api/apps/v1"
	authv1 "k8s.io/api/authentication/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/envtest"
	crmetrics "sigs.k8s.io/controller-runtime/pkg/metrics"
	"sigs.k8s.io/yaml"

	"github.com/misaki-io/misaki/internal/controller"
	"github.com/misaki-io/misaki/internal/controller/certs"
	"github.com/misaki-io/misaki/internal/controller/inject"
	"github.com/misaki-io/misaki/internal/waitfor"
)

// TestInjection installs Misaki as a kubectl user does (kubectl apply -k
// config/) into a real kube-apiserver, runs the controller with the
// installed injector config, and creates pods through the API server,
// which calls the webhook it was registered with:
//   - the webhook's certificate, found about to expire, is rotated at start
//     and its CA patched into the webhook configuration;
//   - a pod of a labelled namespace gets the proxy; opted-out pods, pods of
//     unlabelled, system and Misaki's own namespaces do not; a labelled pod
//     elsewhere does; a pod whose app takes the mesh port is refused with
//     the reason;
//   - the installed controller requires proxies' certificates (xds.auth
//     mtls): the injected pod gets a projected token and the CA bundle,
//     which the test writes as the kubelet would (a TokenRequest bound to
//     the pod, the ConfigMap the controller keeps in the namespace);
//   - the injected proxy, run from the pod's spec in a network namespace
//     (the pod network), gets its certificate, resolves the Route's host
//     through its DNS and routes the app's plain http://echo.mesh/ call by
//     the Route;
//   - with the controller down, pods of labelled namespaces wait (the
//     failure policy is Fail) while kube-system's are still admitted.
func TestInjection(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a kube-apiserver")
	}
	pods := newPodNetwork(t) // skips unless root, as CI is
	env, cfg, c := startEnv(t)
	ctx := context.Background()

	kubectl := adminKubectl(t, env)
	if out, errOut, err := kubectl("apply", "-k", filepath.Join("..", "config")); err != nil {
		t.Fatalf("kubectl apply -k config/: %v\n%s", err, readAll(errOut))
	} else {
		t.Logf("kubectl apply -k config/:\n%s", readAll(out))
	}

	// The API server cannot reach a Service here (no cluster network), so
	// the installed webhooks are pointed at the controller's loopback
	// address; everything else about them is as installed.
	whLn, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	whAddr := whLn.Addr().String()
	whLn.Close()
	var mwc admissionregistrationv1.MutatingWebhookConfiguration
	if err := c.Get(ctx, client.ObjectKey{Name: "misaki-sidecar-injector"}, &mwc); err != nil {
		t.Fatal(err)
	}
	for i := range mwc.Webhooks {
		if p := mwc.Webhooks[i].FailurePolicy; p == nil || *p != admissionregistrationv1.Fail {
			t.Errorf("webhook %s: failure policy %v, want Fail", mwc.Webhooks[i].Name, p)
		}
		mwc.Webhooks[i].ClientConfig = admissionregistrationv1.WebhookClientConfig{URL: ptr("https://" + whAddr + inject.Path)}
	}
	if err := c.Update(ctx, &mwc); err != nil {
		t.Fatal(err)
	}

	// The injector config is the installed one, with the xDS address moved
	// to where this test's controller listens for the pod network.
	var cm corev1.ConfigMap
	if err := c.Get(ctx, client.ObjectKey{Namespace: "misaki-system", Name: "misaki-injector"}, &cm); err != nil {
		t.Fatal(err)
	}
	var inj inject.Config
	if err := yaml.UnmarshalStrict([]byte(cm.Data["injector.yaml"]), &inj); err != nil {
		t.Fatalf("the installed injector config: %v", err)
	}
	xdsLn, err := net.Listen("tcp", pods.host+":0")
	if err != nil {
		t.Fatal(err)
	}
	inj.XDSAddress = xdsLn.Addr().String()
	caLn, err := net.Listen("tcp", pods.host+":0")
	if err != nil {
		t.Fatal(err)
	}
	if inj.XDSIdentity == nil {
		t.Fatal("the installed injector config gives proxies no identity (xdsIdentity)")
	}
	inj.XDSIdentity.CAAddress = caLn.Addr().String()
	// The installed controller's flags.
	args := map[string]string{}
	var dep appsv1.Deployment
	if err := c.Get(ctx, client.ObjectKey{Namespace: "misaki-system", Name: "misaki-controller"}, &dep); err != nil {
		t.Fatal(err)
	}
	for _, a := range dep.Spec.Template.Spec.Containers[0].Args {
		k, v, _ := strings.Cut(strings.TrimPrefix(a, "--"), "=")
		args[k] = v
	}
	if args["xds-auth"] != controller.XDSAuthMTLS {
		t.Errorf("the installed controller runs with --xds-auth=%q, want mtls", args["xds-auth"])
	}

	// The cluster DNS the proxies forward to is looked up from kube-dns.
	kubeDNS := &corev1.Service{ObjectMeta: metav1.ObjectMeta{Name: "kube-dns", Namespace: "kube-system"},
		Spec: corev1.ServiceSpec{Ports: []corev1.ServicePort{{Name: "dns", Port: 53, Protocol: corev1.ProtocolUDP}}}}
	create(t, c, kubeDNS)

	// A certificate a week from expiry, as a controller that was down for
	// months would find it: the controller replaces it at start.
	old := &certs.Rotator{DNSNames: []string{"misaki-controller.misaki-system.svc"}, IPs: []net.IP{net.ParseIP("127.0.0.1")},
		Now: func() time.Time { return time.Now().Add(-83 * 24 * time.Hour) }}
	oldData, _, err := old.Rotate(nil)
	if err != nil {
		t.Fatal(err)
	}
	create(t, c, &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: "misaki-webhook-tls", Namespace: "misaki-system"},
		Type: corev1.SecretTypeTLS, Data: oldData})

	stop := runController(t, cfg, controller.Options{
		XDSListener: xdsLn, WebhookAddr: whAddr, WebhookIPs: []net.IP{net.ParseIP("127.0.0.1")},
		Namespace: "misaki-system", Injector: &inj,
		XDSAuth: args["xds-auth"], CAListener: caLn, XDSIPs: []net.IP{net.ParseIP(pods.host)},
		CASecret: args["ca-secret"], TrustDomain: args["trust-domain"], TokenAudience: args["token-audience"],
	})

	var sec corev1.Secret
	waitfor.True(t, "the webhook certificate rotated and its CA in the webhook configuration", func() bool {
		if c.Get(ctx, client.ObjectKey{Namespace: "misaki-system", Name: "misaki-webhook-tls"}, &sec) != nil ||
			bytes.Equal(sec.Data[certs.KeyCert], oldData[certs.KeyCert]) {
			return false
		}
		if c.Get(ctx, client.ObjectKey{Name: "misaki-sidecar-injector"}, &mwc) != nil {
			return false
		}
		for _, w := range mwc.Webhooks {
			if !bytes.Equal(w.ClientConfig.CABundle, sec.Data[certs.KeyCA]) {
				return false
			}
		}
		return true
	})
	blk, _ := pem.Decode(sec.Data[certs.KeyCert])
	leaf, err := x509.ParseCertificate(blk.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	if life := time.Until(leaf.NotAfter); life < 80*24*time.Hour {
		t.Errorf("the new certificate expires in %v", life)
	}

	// Namespaces and the app's Service, endpoints and Route.
	portA := pods.backend("a")
	create(t, c,
		&corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "apps", Labels: map[string]string{inject.LabelInject: "enabled"}}},
		&corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "plain"}},
	)
	create(t, c, pods.echo("apps", 8080, portA, "5s")...)
	// envtest runs no controller-manager: the namespace's default service
	// account by hand.
	create(t, c, &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Namespace: "apps", Name: "default"}})

	newPod := func(ns, name string, labels map[string]string, ports ...int32) *corev1.Pod {
		// Pod Security "restricted", which misaki-system enforces.
		p := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: ns, Labels: labels},
			Spec: corev1.PodSpec{Containers: []corev1.Container{{Name: "app", Image: "registry.example/app:1",
				SecurityContext: &corev1.SecurityContext{
					RunAsNonRoot: ptr(true), AllowPrivilegeEscalation: ptr(false),
					Capabilities:   &corev1.Capabilities{Drop: []corev1.Capability{"ALL"}},
					SeccompProfile: &corev1.SeccompProfile{Type: corev1.SeccompProfileTypeRuntimeDefault},
				}}}}}
		for _, port := range ports {
			p.Spec.Containers[0].Ports = append(p.Spec.Containers[0].Ports, corev1.ContainerPort{ContainerPort: port})
		}
		return p
	}
	injected := func(p *corev1.Pod) bool {
		return len(p.Spec.InitContainers) > 0 && p.Spec.InitContainers[0].Name == inject.ContainerName
	}
	client0 := newPod("apps", "client", nil, 8080)
	client0.Spec.ServiceAccountName = "default" // as ServiceAccount admission would (off in envtest)
	for _, tc := range []struct {
		pod  *corev1.Pod
		want bool
	}{
		{client0, true},
		{newPod("apps", "opted-out", map[string]string{inject.LabelInject: "disabled"}), false},
		{newPod("plain", "unlabelled", nil), false},
		{newPod("plain", "labelled", map[string]string{inject.LabelInject: "enabled"}), true},
		{newPod("kube-system", "system", map[string]string{inject.LabelInject: "enabled"}), false},
		{newPod("misaki-system", "own", map[string]string{inject.LabelInject: "enabled"}), false},
	} {
		if err := c.Create(ctx, tc.pod); err != nil {
			t.Fatalf("create pod %s/%s: %v", tc.pod.Namespace, tc.pod.Name, err)
		}
		if got := injected(tc.pod); got != tc.want {
			t.Errorf("pod %s/%s: injected %v, want %v", tc.pod.Namespace, tc.pod.Name, got, tc.want)
		}
	}
	err = c.Create(ctx, newPod("apps", "web", nil, 80))
	if err == nil || !strings.Contains(err.Error(), inject.AnnotationMeshPort) {
		t.Errorf("a pod whose app listens on port 80: %v, want a refusal naming %s", err, inject.AnnotationMeshPort)
	} else {
		t.Logf("refused: %v", err)
	}

	// Run the injected proxy as the kubelet would: the container's env, with
	// the downward API's values, in the pod's network namespace.
	var client1 corev1.Pod
	if err := c.Get(ctx, client.ObjectKey{Namespace: "apps", Name: "client"}, &client1); err != nil {
		t.Fatal(err)
	}
	sidecar := client1.Spec.InitContainers[0]
	if client1.Spec.DNSPolicy != corev1.DNSNone || client1.Spec.DNSConfig.Nameservers[0] != "127.0.0.1" {
		t.Errorf("pod DNS: %s %+v, want the proxy as the only nameserver", client1.Spec.DNSPolicy, client1.Spec.DNSConfig)
	}
	wrap := []string{"ip", "netns", "exec", pods.ns.name, "env", "POD_NAME=client", "POD_NAMESPACE=apps"}
	identityDir := kubeletIdentity(t, c, env, &client1)
	for _, e := range sidecar.Env {
		if e.ValueFrom == nil {
			// The volumes' mounts, at directories of the test's.
			v := strings.ReplaceAll(e.Value, "/var/lib/misaki", t.TempDir())
			v = strings.ReplaceAll(v, "/var/run/secrets/misaki.io", identityDir)
			if e.Name == "MISAKI_PROXY_CONFIG" {
				if !strings.Contains(v, kubeDNS.Spec.ClusterIP) {
					t.Errorf("the proxy does not forward to kube-dns (%s):\n%s", kubeDNS.Spec.ClusterIP, v)
				}
			}
			wrap = append(wrap, e.Name+"="+v)
		}
	}
	if !slices.Equal(sidecar.Args, []string{"--supervise"}) {
		t.Errorf("the sidecar's args are %q, want the proxy under its supervisor", sidecar.Args)
	}
	startProxyBinaryArgs(t, "", wrap, sidecar.Args)

	// The kubelet's startup probe, on the pod's address.
	// The probe names its port; the container declares it.
	probe := sidecar.StartupProbe.HTTPGet
	i := slices.IndexFunc(sidecar.Ports, func(p corev1.ContainerPort) bool { return p.Name == probe.Port.StrVal })
	if i < 0 {
		t.Fatalf("the startup probe's port %q is not declared", probe.Port.StrVal)
	}
	health := fmt.Sprintf("http://%s:%d%s", pods.ip, sidecar.Ports[i].ContainerPort, probe.Path)
	waitfor.True(t, "the sidecar's startup probe", func() bool {
		resp, err := http.Get(health)
		if err != nil {
			return false
		}
		resp.Body.Close()
		return resp.StatusCode == 200
	})

	// The app resolves the Route's host through the pod's nameserver ...
	var meshIP string
	waitfor.Within(t, 30*time.Second, "echo.mesh resolving through the proxy", func() bool {
		meshIP = resolveInNetns(t, pods.ns.path(), client1.Spec.DNSConfig.Nameservers[0]+":53", "echo.mesh.")
		return meshIP != ""
	})
	// ... and calls it as plain http://echo.mesh/.
	app := &http.Client{Transport: &http.Transport{DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
		_, port, _ := net.SplitHostPort(addr)
		return dialInNetns(ctx, pods.ns.path(), network, net.JoinHostPort(meshIP, port))
	}}}
	resp, err := app.Get("http://echo.mesh/hello")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 || string(body) != "a /hello" {
		t.Errorf("GET http://echo.mesh/hello from the app: %d %q", resp.StatusCode, body)
	}

	// The proxy got its certificate: the controller counted it.
	if got := counter(t, "misaki_controller_certificates_total", "outcome", "issued"); got < 1 {
		t.Errorf("misaki_controller_certificates_total{outcome=issued} = %v", got)
	}

	// The controller goes away: labelled namespaces' pods wait for it (Fail),
	// kube-system's are never sent to it.
	stop()
	err = c.Create(ctx, newPod("apps", "while-down", nil))
	if err == nil || !strings.Contains(err.Error(), "misaki") {
		t.Errorf("a pod of a labelled namespace with the controller down: %v, want it refused by the failure policy", err)
	}
	if err := c.Create(ctx, newPod("kube-system", "while-down", map[string]string{inject.LabelInject: "enabled"})); err != nil {
		t.Errorf("kube-system with the controller down: %v", err)
	}
}

// kubeletIdentity writes the pod's misaki-identity volume as the kubelet
// would, into a directory it returns: a token for the projection's
// audience bound to the pod, and the CA bundle from the ConfigMap the
// controller keeps in the pod's namespace (waiting for it).
func kubeletIdentity(t *testing.T, c client.Client, env *envtest.Environment, pod *corev1.Pod) string {
	t.Helper()
	ctx := context.Background()
	kube, err := kubernetes.NewForConfig(env.Config)
	if err != nil {
		t.Fatal(err)
	}
	i := slices.IndexFunc(pod.Spec.Volumes, func(v corev1.Volume) bool { return v.Name == "misaki-identity" })
	if i < 0 || pod.Spec.Volumes[i].Projected == nil {
		t.Fatalf("the injected pod has no projected misaki-identity volume: %+v", pod.Spec.Volumes)
	}
	dir := t.TempDir()
	for _, src := range pod.Spec.Volumes[i].Projected.Sources {
		switch {
		case src.ServiceAccountToken != nil:
			p := src.ServiceAccountToken
			tr, err := kube.CoreV1().ServiceAccounts(pod.Namespace).CreateToken(ctx, pod.Spec.ServiceAccountName, &authv1.TokenRequest{
				Spec: authv1.TokenRequestSpec{Audiences: []string{p.Audience}, ExpirationSeconds: p.ExpirationSeconds,
					BoundObjectRef: &authv1.BoundObjectReference{Kind: "Pod", APIVersion: "v1", Name: pod.Name, UID: pod.UID}},
			}, metav1.CreateOptions{})
			if err != nil {
				t.Fatalf("the projected token: %v", err)
			}
			writeFile(t, filepath.Join(dir, p.Path), tr.Status.Token)
		case src.ConfigMap != nil:
			var cm corev1.ConfigMap
			waitfor.True(t, "the ConfigMap "+src.ConfigMap.Name+" in "+pod.Namespace, func() bool {
				return c.Get(ctx, client.ObjectKey{Namespace: pod.Namespace, Name: src.ConfigMap.Name}, &cm) == nil
			})
			for _, item := range src.ConfigMap.Items {
				writeFile(t, filepath.Join(dir, item.Path), cm.Data[item.Key])
			}
		default:
			t.Fatalf("an unexpected projection %+v", src)
		}
	}
	return dir
}

// counter reads a counter of the controller's registry by one label.
func counter(t *testing.T, name, label, value string) float64 {
	t.Helper()
	fams, err := crmetrics.Registry.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range fams {
		if f.GetName() != name {
			continue
		}
		for _, m := range f.GetMetric() {
			for _, l := range m.GetLabel() {
				if l.GetName() == label && l.GetValue() == value {
					return m.GetCounter().GetValue()
				}
			}
		}
	}
	return 0
}

// resolveInNetns asks server (inside the namespace) for name's A record and
// returns the first address, or "".
func resolveInNetns(t *testing.T, nsPath, server, name string) string {
	t.Helper()
	conn, err := dialInNetns(context.Background(), nsPath, "udp", server)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(2 * time.Second))
	co := &dns.Conn{Conn: conn}
	q := new(dns.Msg)
	q.SetQuestion(name, dns.TypeA)
	if err := co.WriteMsg(q); err != nil {
		return ""
	}
	r, err := co.ReadMsg()
	if err != nil {
		return ""
	}
	for _, rr := range r.Answer {
		if a, ok := rr.(*dns.A); ok {
			return a.A.String()
		}
	}
	return ""
}

func readAll(r io.Reader) string {
	b, _ := io.ReadAll(r)
	return string(b)
}

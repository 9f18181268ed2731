package cli

import (
	"bufio"
	"bytes"
	"context"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"

	admissionregistrationv1 "k8s.io/api/admissionregistration/v1"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	apiextensionsv1 "k8s.io/apiextensions-apiserver/pkg/apis/apiextensions/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	kubeversion "k8s.io/apimachinery/pkg/version"

	meshv1 "github.com/misaki-io/misaki/api/v1alpha1"
	"github.com/misaki-io/misaki/internal/controller/inject"
)

// installHint is how to install Misaki, for checks that find it missing.
const installHint = "install Misaki: helm install misaki charts/misaki -n misaki-system --create-namespace, or kubectl apply -k config/"

func (c *checker) checkAPI(ctx context.Context) checkResult {
	if c.cfgErr != nil {
		return fail("pass --kubeconfig FILE (and --context NAME), or set $KUBECONFIG", "%v", c.cfgErr)
	}
	body, err := c.kube.Discovery().RESTClient().Get().AbsPath("/version").DoRaw(ctx)
	if err != nil {
		return fail("check --kubeconfig and --context: kubectl cluster-info with the same ones should answer",
			"the API server at %s does not answer: %v", c.host, err)
	}
	var v kubeversion.Info
	if err := json.Unmarshal(body, &v); err != nil {
		return fail("is --kubeconfig's server a Kubernetes API server?", "the API server at %s: /version: %v", c.host, err)
	}
	return pass("the API server at %s answers (Kubernetes %s)", c.host, v.GitVersion)
}

func (c *checker) checkCRD(ctx context.Context) checkResult {
	want, err := expectedRoutesCRD()
	if err != nil {
		return fail("", "%v", err)
	}
	got, err := c.ext.ApiextensionsV1().CustomResourceDefinitions().Get(ctx, want.Name, metav1.GetOptions{})
	if apierrors.IsNotFound(err) {
		return fail(installHint+" (or the CRD alone: kubectl apply --server-side -f config/crd/)", "CRD %s is not installed", want.Name)
	}
	if err != nil {
		return fail("", "CRD %s: %v", want.Name, err)
	}
	established := false
	for _, cond := range got.Status.Conditions {
		if cond.Type == apiextensionsv1.Established {
			established = cond.Status == apiextensionsv1.ConditionTrue
			if !established {
				return fail("kubectl describe crd "+want.Name, "CRD %s is not established: %s: %s", want.Name, cond.Reason, cond.Message)
			}
		}
	}
	if !established {
		return fail("kubectl describe crd "+want.Name, "CRD %s is not established yet", want.Name)
	}
	diff, err := crdDifference(want, got)
	if err != nil {
		return fail("", "CRD %s: %v", want.Name, err)
	}
	if diff != "" {
		return fail("the installed CRD is another Misaki release's: apply this release's with kubectl apply --server-side -f config/crd/ (helm upgrade does not update CRDs), or use the misaki CLI of the installed release",
			"CRD %s is not the one this CLI was built with: %s", want.Name, diff)
	}
	var versions []string
	for _, v := range got.Spec.Versions {
		s := v.Name
		switch {
		case v.Storage:
			s += " (served, stored)"
		case v.Served:
			s += " (served)"
		}
		versions = append(versions, s)
	}
	h, _ := schemaHash(want.Spec.Versions[0].Schema)
	return pass("CRD %s is established, %s, schema %s as this CLI's", want.Name, strings.Join(versions, ", "), shortDigest(h))
}

func (c *checker) checkController(ctx context.Context) checkResult {
	ns := c.o.namespace
	list, err := c.kube.AppsV1().Deployments(ns).List(ctx, metav1.ListOptions{LabelSelector: c.o.selector})
	if err != nil {
		return fail("", "list Deployments in %s: %v", ns, err)
	}
	switch len(list.Items) {
	case 0:
		return fail(installHint+"; if it runs elsewhere, pass -n/--namespace and -l/--selector",
			"no Deployment labelled %s in namespace %s", c.o.selector, ns)
	case 1:
	default:
		var names []string
		for _, d := range list.Items {
			names = append(names, d.Name)
		}
		return fail("narrow -l/--selector to one of them", "%d Deployments labelled %s in namespace %s: %s",
			len(list.Items), c.o.selector, ns, strings.Join(names, ", "))
	}
	d := &list.Items[0]
	c.deploy = d
	for _, ctr := range d.Spec.Template.Spec.Containers {
		args := append(slices.Clone(ctr.Command), ctr.Args...)
		for i, a := range args {
			if a == "--webhook-addr=0" || a == "-webhook-addr=0" || (a == "--webhook-addr" || a == "-webhook-addr") && i+1 < len(args) && args[i+1] == "0" {
				c.webhookOff = true
			}
		}
	}
	want := int32(1)
	if d.Spec.Replicas != nil {
		want = *d.Spec.Replicas
	}
	name := ns + "/" + d.Name
	hint := fmt.Sprintf("kubectl -n %s describe deployment %s; kubectl -n %s logs deployment/%s", ns, d.Name, ns, d.Name)
	var available *appsv1.DeploymentCondition
	for i, cond := range d.Status.Conditions {
		if cond.Type == appsv1.DeploymentAvailable {
			available = &d.Status.Conditions[i]
		}
	}
	switch {
	case available == nil:
		return fail(hint, "Deployment %s has no Available condition yet (%d/%d replicas ready)", name, d.Status.ReadyReplicas, want)
	case available.Status != corev1.ConditionTrue:
		return fail(hint, "Deployment %s is not available: %s: %s (%d/%d replicas ready)", name, available.Reason, available.Message, d.Status.ReadyReplicas, want)
	case d.Status.ReadyReplicas == 0:
		return fail(hint, "Deployment %s has no ready replica", name)
	}
	msg := fmt.Sprintf("Deployment %s is available, %d/%d replicas ready", name, d.Status.ReadyReplicas, want)
	if d.Status.ObservedGeneration < d.Generation || d.Status.UpdatedReplicas < want {
		msg += ", a rollout in progress"
	}
	return pass("%s", msg)
}

// containerPort is the number of the pod's container port named name, or 0.
func containerPort(p *corev1.Pod, name string) int32 {
	for _, ctr := range p.Spec.Containers {
		for _, port := range ctr.Ports {
			if port.Name == name {
				return port.ContainerPort
			}
		}
	}
	return 0
}

func podReady(p *corev1.Pod) bool {
	if p.DeletionTimestamp != nil || p.Status.PodIP == "" {
		return false
	}
	for _, cond := range p.Status.Conditions {
		if cond.Type == corev1.PodReady {
			return cond.Status == corev1.ConditionTrue
		}
	}
	return false
}

// proxyGet GETs path from the pod's port through the API server's pod
// proxy, which reaches the pod from wherever the API server is.
func (c *checker) proxyGet(ctx context.Context, p *corev1.Pod, port int32, path string) ([]byte, error) {
	body, err := c.kube.CoreV1().Pods(p.Namespace).ProxyGet("http", p.Name, strconv.Itoa(int(port)), path, nil).DoRaw(ctx)
	if err == nil {
		return body, nil
	}
	// client-go reads a proxied answer as raw bytes, so its error is a
	// generic one for the status code; the body says more: the pod's own
	// text (/readyz lists its failing checks), or the API server's Status
	// ("error trying to reach service: dial tcp ...").
	var st apierrors.APIStatus
	if !errors.As(err, &st) || len(bytes.TrimSpace(body)) == 0 {
		return nil, err
	}
	msg := string(body)
	var s metav1.Status
	if json.Unmarshal(body, &s) == nil && s.Kind == "Status" && s.Message != "" {
		msg = s.Message
	}
	msg = strings.Join(strings.Fields(msg), " ")
	if len(msg) > 300 {
		msg = msg[:300] + "..."
	}
	return nil, fmt.Errorf("HTTP %d: %s", st.Status().Code, msg)
}

func (c *checker) checkControllerReady(ctx context.Context) checkResult {
	ns, d := c.o.namespace, c.deploy
	sel, err := metav1.LabelSelectorAsSelector(d.Spec.Selector)
	if err != nil {
		return fail("", "Deployment %s/%s: selector: %v", ns, d.Name, err)
	}
	pods, err := c.kube.CoreV1().Pods(ns).List(ctx, metav1.ListOptions{LabelSelector: sel.String()})
	if err != nil {
		return fail("", "list the controller's pods: %v", err)
	}
	var ready []corev1.Pod
	for _, p := range pods.Items {
		if podReady(&p) {
			ready = append(ready, p)
		}
	}
	if len(ready) == 0 {
		return fail(fmt.Sprintf("kubectl -n %s get pods -l %s; kubectl -n %s logs deployment/%s", ns, sel, ns, d.Name),
			"no ready pod of Deployment %s/%s (%d pods)", ns, d.Name, len(pods.Items))
	}
	var problems []string
	for i := range ready {
		p := &ready[i]
		port := containerPort(p, "probes")
		if port == 0 {
			problems = append(problems, fmt.Sprintf("pod %s has no container port named probes", p.Name))
			continue
		}
		if _, err := c.proxyGet(ctx, p, port, "readyz"); err != nil {
			problems = append(problems, fmt.Sprintf("pod %s: /readyz on port %d: %v", p.Name, port, err))
		}
	}
	if len(problems) > 0 {
		return fail(fmt.Sprintf("kubectl -n %s logs <pod>; this check needs the API server to reach pod IPs (kubectl get --raw /api/v1/namespaces/%s/pods/<pod>:<port>/proxy/readyz)", ns, ns),
			"%s", strings.Join(problems, "; "))
	}
	c.ready = ready
	return pass("/readyz answers on %s, through the API server's pod proxy", countOf(len(ready), "ready pod", "ready pods"))
}

func (c *checker) checkWebhook(ctx context.Context) checkResult {
	if c.webhookOff {
		return skip("the controller runs without the injection webhook (--webhook-addr=0): pods are not injected")
	}
	name := c.o.webhookConfig
	mwc, err := c.kube.AdmissionregistrationV1().MutatingWebhookConfigurations().Get(ctx, name, metav1.GetOptions{})
	if apierrors.IsNotFound(err) {
		return fail(installHint+" (the chart's webhook.enabled is the default), or pass --webhook-config NAME",
			"MutatingWebhookConfiguration %s not found", name)
	}
	if err != nil {
		return fail("", "MutatingWebhookConfiguration %s: %v", name, err)
	}
	if len(mwc.Webhooks) == 0 {
		return fail(installHint, "MutatingWebhookConfiguration %s has no webhooks", name)
	}
	var problems, services []string
	var caUntil time.Time
	checked := map[string]bool{}
	for _, w := range mwc.Webhooks {
		until, err := caBundleExpiry(w.ClientConfig.CABundle)
		if err != nil {
			problems = append(problems, fmt.Sprintf("webhook %s: %v", w.Name, err))
		} else if caUntil.IsZero() || until.Before(caUntil) {
			caUntil = until
		}
		s := w.ClientConfig.Service
		if s == nil {
			services = append(services, "a URL")
			continue
		}
		port := int32(443)
		if s.Port != nil {
			port = *s.Port
		}
		key := fmt.Sprintf("%s/%s:%d", s.Namespace, s.Name, port)
		if checked[key] {
			continue
		}
		checked[key] = true
		n, err := c.readyEndpoints(ctx, s, port)
		if err != nil {
			problems = append(problems, err.Error())
			continue
		}
		if n == 0 {
			problems = append(problems, fmt.Sprintf("Service %s has no ready endpoint: the API server cannot call the webhook, and with failurePolicy Fail it refuses pods of injected namespaces", key))
			continue
		}
		services = append(services, fmt.Sprintf("Service %s with %s", key, countOf(n, "ready endpoint", "ready endpoints")))
	}
	if len(problems) > 0 {
		return fail(fmt.Sprintf("the controller keeps the caBundle and serves the webhook: kubectl -n %s logs deployment/<controller>; kubectl get mutatingwebhookconfiguration %s -o yaml", c.o.namespace, name),
			"%s", strings.Join(problems, "; "))
	}
	return pass("%s: %d webhooks, caBundle set (valid until %s), %s", name, len(mwc.Webhooks),
		caUntil.UTC().Format(time.DateOnly), strings.Join(slices.Compact(services), ", "))
}

// caBundleExpiry checks that b holds PEM certificates, one of them valid
// now, and answers when the last of those expires.
func caBundleExpiry(b []byte) (time.Time, error) {
	if len(b) == 0 {
		return time.Time{}, fmt.Errorf("no caBundle: the controller fills it in when it starts (is it running, with --webhook-config naming this configuration?)")
	}
	var latest time.Time
	n := 0
	now := time.Now()
	for {
		var blk *pem.Block
		blk, b = pem.Decode(b)
		if blk == nil {
			break
		}
		cert, err := x509.ParseCertificate(blk.Bytes)
		if err != nil {
			return time.Time{}, fmt.Errorf("caBundle: %w", err)
		}
		n++
		if now.Before(cert.NotAfter) && cert.NotAfter.After(latest) {
			latest = cert.NotAfter
		}
	}
	switch {
	case n == 0:
		return time.Time{}, fmt.Errorf("caBundle holds no PEM certificate")
	case latest.IsZero():
		return time.Time{}, fmt.Errorf("every certificate in the caBundle has expired")
	}
	return latest, nil
}

// readyEndpoints counts the ready endpoints of the Service's port.
func (c *checker) readyEndpoints(ctx context.Context, s *admissionregistrationv1.ServiceReference, port int32) (int, error) {
	svc, err := c.kube.CoreV1().Services(s.Namespace).Get(ctx, s.Name, metav1.GetOptions{})
	if err != nil {
		return 0, fmt.Errorf("get Service %s/%s: %w", s.Namespace, s.Name, err)
	}
	portName, found := "", false
	for _, p := range svc.Spec.Ports {
		if p.Port == port {
			portName, found = p.Name, true
		}
	}
	if !found {
		return 0, fmt.Errorf("no port %d on Service %s/%s", port, s.Namespace, s.Name)
	}
	eps, err := c.kube.DiscoveryV1().EndpointSlices(s.Namespace).List(ctx, metav1.ListOptions{
		LabelSelector: discoveryv1.LabelServiceName + "=" + s.Name})
	if err != nil {
		return 0, fmt.Errorf("EndpointSlices of Service %s/%s: %w", s.Namespace, s.Name, err)
	}
	n := 0
	for _, es := range eps.Items {
		hasPort := false
		for _, p := range es.Ports {
			hasPort = hasPort || p.Name != nil && *p.Name == portName
		}
		if !hasPort {
			continue
		}
		for _, ep := range es.Endpoints {
			if len(ep.Addresses) > 0 && (ep.Conditions.Ready == nil || *ep.Conditions.Ready) {
				n++
			}
		}
	}
	return n, nil
}

func (c *checker) checkInjection(ctx context.Context) checkResult {
	if !c.o.injectDryRun {
		return skip("not run: --inject-dry-run creates a pod with dryRun=All (nothing is stored) to see the webhook inject it")
	}
	ns := c.o.injectNamespace
	no, yes := false, true
	pod := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{GenerateName: "misaki-check-", Namespace: ns,
			Labels: map[string]string{inject.LabelInject: "enabled"}},
		Spec: corev1.PodSpec{
			// Pod Security "restricted", so that a restricted namespace
			// judges the injection and not this pod.
			SecurityContext: &corev1.PodSecurityContext{RunAsNonRoot: &yes,
				SeccompProfile: &corev1.SeccompProfile{Type: corev1.SeccompProfileTypeRuntimeDefault}},
			Containers: []corev1.Container{{Name: "app", Image: "registry.k8s.io/pause:3.10",
				SecurityContext: &corev1.SecurityContext{AllowPrivilegeEscalation: &no,
					Capabilities: &corev1.Capabilities{Drop: []corev1.Capability{"ALL"}}}}},
		},
	}
	got, err := c.kube.CoreV1().Pods(ns).Create(ctx, pod, metav1.CreateOptions{DryRun: []string{metav1.DryRunAll}})
	if err != nil {
		return fail("the webhook refused it or could not be called; kubectl -n "+c.o.namespace+" logs deployment/<controller>",
			"a dry-run pod in namespace %s: %v", ns, err)
	}
	injected := slices.ContainsFunc(got.Spec.InitContainers, func(c corev1.Container) bool { return c.Name == inject.ContainerName })
	if !injected || got.Annotations[inject.AnnotationStatus] == "" {
		return fail("is the namespace one the webhook never sees (kube-system, kube-public, kube-node-lease, Misaki's own, the chart's webhook.excludeNamespaces)? pass --inject-namespace",
			"a dry-run pod labelled %s=enabled in namespace %s was admitted without the proxy", inject.LabelInject, ns)
	}
	return pass("a dry-run pod in namespace %s got the proxy (%s=%s); nothing was stored", ns, inject.AnnotationStatus, got.Annotations[inject.AnnotationStatus])
}

func (c *checker) checkProxies(ctx context.Context) checkResult {
	var streams, nacks float64
	var problems []string
	for i := range c.ready {
		p := &c.ready[i]
		port := containerPort(p, "metrics")
		if port == 0 {
			problems = append(problems, fmt.Sprintf("pod %s has no container port named metrics", p.Name))
			continue
		}
		body, err := c.proxyGet(ctx, p, port, "metrics")
		if err != nil {
			problems = append(problems, fmt.Sprintf("pod %s: /metrics on port %d: %v", p.Name, port, err))
			continue
		}
		s, ok := metricSum(body, "misaki_controller_xds_streams")
		if !ok {
			problems = append(problems, fmt.Sprintf("pod %s: /metrics has no misaki_controller_xds_streams", p.Name))
			continue
		}
		n, _ := metricSum(body, "misaki_controller_xds_nacks_total")
		streams += s
		nacks += n
	}
	ns := c.o.namespace
	if len(problems) > 0 {
		return fail(fmt.Sprintf("the chart names the controller's metrics port \"metrics\"; kubectl -n %s logs <pod>", ns), "%s", strings.Join(problems, "; "))
	}
	if streams == 0 {
		return warn(fmt.Sprintf("no injected pod is running yet, or the proxies cannot reach the controller's Service on port 15010: kubectl logs <pod> -c %s (misaki check --inject-dry-run tests injection)", inject.ContainerName),
			"no proxy is connected to the controller (%s)", countOf(len(c.ready), "pod", "pods"))
	}
	if nacks > 0 {
		return warn(fmt.Sprintf("the controller logs each refusal with the proxy and the reason: kubectl -n %s logs <pod> | grep NACK", ns),
			"%s connected; proxies refused %s (NACK) since the controller started", countOf(int(streams), "proxy", "proxies"), countOf(int(nacks), "config", "configs"))
	}
	return pass("%s connected to %s", countOf(int(streams), "proxy", "proxies"), countOf(len(c.ready), "controller pod", "controller pods"))
}

// metricSum adds up the samples of metric name in Prometheus' text
// format, whatever their labels; ok is false when there is none.
func metricSum(text []byte, name string) (sum float64, ok bool) {
	sc := bufio.NewScanner(bytes.NewReader(text))
	sc.Buffer(nil, 1<<20)
	for sc.Scan() {
		line := sc.Text()
		rest, found := strings.CutPrefix(line, name)
		if !found || rest == "" || (rest[0] != ' ' && rest[0] != '{') {
			continue
		}
		if rest[0] == '{' {
			end := strings.LastIndexByte(rest, '}')
			if end < 0 {
				continue
			}
			rest = rest[end+1:]
		}
		fields := strings.Fields(rest) // value [timestamp]
		if len(fields) == 0 {
			continue
		}
		v, err := strconv.ParseFloat(fields[0], 64)
		if err != nil {
			continue
		}
		sum += v
		ok = true
	}
	return sum, ok
}

func (c *checker) checkRoutes(ctx context.Context) checkResult {
	gvr := meshv1.GroupVersion.WithResource("routes")
	list, err := c.dyn.Resource(gvr).Namespace(metav1.NamespaceAll).List(ctx, metav1.ListOptions{})
	if err != nil {
		return fail("", "list Routes: %v", err)
	}
	if len(list.Items) == 0 {
		return pass("no Routes yet (config/samples has one for each offline policy)")
	}
	var refused []string
	pending := 0
	for _, u := range list.Items {
		var r meshv1.Route
		if err := runtime.DefaultUnstructuredConverter.FromUnstructured(u.Object, &r); err != nil {
			return fail("", "Route %s/%s: %v", u.GetNamespace(), u.GetName(), err)
		}
		cond := meta.FindStatusCondition(r.Status.Conditions, meshv1.ConditionAccepted)
		switch {
		case cond == nil || cond.ObservedGeneration < r.Generation:
			pending++
		case cond.Status != metav1.ConditionTrue:
			refused = append(refused, fmt.Sprintf("%s/%s (%s: %s)", r.Namespace, r.Name, cond.Reason, cond.Message))
		}
	}
	if len(refused) == 0 && pending == 0 {
		return pass("%s, all Accepted", countOf(len(list.Items), "Route", "Routes"))
	}
	var parts []string
	if n := len(refused); n > 0 {
		more := ""
		if n > 3 {
			refused, more = refused[:3], fmt.Sprintf(" and %d more", n-3)
		}
		parts = append(parts, fmt.Sprintf("%d not Accepted: %s%s", n, strings.Join(refused, ", "), more))
	}
	if pending > 0 {
		parts = append(parts, fmt.Sprintf("%d not yet seen by the controller", pending))
	}
	return warn("kubectl get routes -A shows each Route's reason",
		"%s; %s", countOf(len(list.Items), "Route", "Routes"), strings.Join(parts, "; "))
}

// countOf is "1 proxy", "2 proxies".
func countOf(n int, one, many string) string {
	return fmt.Sprintf("%d %s", n, plural(n, one, many))
}

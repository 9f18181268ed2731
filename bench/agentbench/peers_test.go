//go:build linux

package agentbench

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"context"
	"crypto/sha1"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/client-go/dynamic"

	"github.com/misaki-io/misaki/internal/clustertest"
)

// retarget moves the agent's objects into namespace ns (gadget-0 → ns,
// gadget-0-extra → ns-extra) so a peer's copies do not collide with the
// agent's. The CRD is cluster-scoped and the same for every applier
// (identical values: server-side apply shares the fields, no conflict).
// It returns the objects as a YAML stream (JSON documents).
func retarget(objs []json.RawMessage, ns string) ([]byte, error) {
	const from = "gadget-0"
	var out bytes.Buffer
	for _, raw := range objs {
		u := &unstructured.Unstructured{}
		if err := u.UnmarshalJSON(raw); err != nil {
			return nil, err
		}
		if n := u.GetNamespace(); strings.HasPrefix(n, from) {
			u.SetNamespace(ns + strings.TrimPrefix(n, from))
		}
		if u.GetKind() == "Namespace" && strings.HasPrefix(u.GetName(), from) {
			u.SetName(ns + strings.TrimPrefix(u.GetName(), from))
		}
		b, err := u.MarshalJSON()
		if err != nil {
			return nil, err
		}
		out.WriteString("---\n")
		out.Write(b)
		out.WriteString("\n")
	}
	return out.Bytes(), nil
}

// podTimeline is the cluster's part of "all ready" in namespace ns: from
// the Deployment's creation to its pod's creation, scheduling and
// readiness, from the objects' own timestamps (whole seconds).
func podTimeline(ctx context.Context, c *clustertest.Cluster, ns string) string {
	ds, err := c.Client.AppsV1().Deployments(ns).List(ctx, metav1.ListOptions{})
	if err != nil || len(ds.Items) != 1 {
		return fmt.Sprintf("deployments: %v", err)
	}
	pods, err := c.Client.CoreV1().Pods(ns).List(ctx, metav1.ListOptions{})
	if err != nil || len(pods.Items) == 0 {
		return fmt.Sprintf("pods: %v", err)
	}
	t0, p := ds.Items[0].CreationTimestamp.Time, pods.Items[0]
	at := func(t time.Time) string { return fmt.Sprintf("%.0f s", t.Sub(t0).Seconds()) }
	var scheduled, ready string
	for _, cond := range p.Status.Conditions {
		switch cond.Type {
		case corev1.PodScheduled:
			scheduled = at(cond.LastTransitionTime.Time)
		case corev1.PodReady:
			ready = at(cond.LastTransitionTime.Time)
		}
	}
	return fmt.Sprintf("pod created %s, scheduled %s, ready %s after the Deployment", at(p.CreationTimestamp.Time), scheduled, ready)
}

func createNamespace(ctx context.Context, c *clustertest.Cluster, name string) error {
	_, err := c.Client.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: name}}, metav1.CreateOptions{})
	return err
}

// kubectlRun is kubectl apply --server-side of the 200 objects, then
// kubectl rollout status of their Deployment.
type kubectlRun struct {
	apply, wait oneShot
	pods        string // podTimeline after the rollout
}

// oneShot is a process that ran to its end: wall time and its wait4 rusage.
type oneShot struct {
	Wall time.Duration
	CPU  time.Duration
	Peak int64 // ru_maxrss
	Out  string
}

func runOnce(ctx context.Context, bin string, args ...string) (oneShot, error) {
	cmd := exec.CommandContext(ctx, bin, args...)
	start := time.Now()
	out, err := cmd.CombinedOutput()
	r := oneShot{Wall: time.Since(start), Out: string(out)}
	if cmd.ProcessState != nil {
		ru := cmd.ProcessState.SysUsage().(*syscall.Rusage)
		r.CPU = time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
		r.Peak = ru.Maxrss << 10 // kB on Linux
	}
	if err != nil {
		return r, fmt.Errorf("%s %s: %w\n%s", filepath.Base(bin), strings.Join(args, " "), err, out)
	}
	return r, nil
}

func runKubectl(ctx context.Context, b *testing.B, c *clustertest.Cluster, kubectl string, objs []json.RawMessage) kubectlRun {
	b.Helper()
	const ns = "peer-kubectl"
	y, err := retarget(objs, ns)
	if err != nil {
		b.Fatal(err)
	}
	file := filepath.Join(b.TempDir(), "objects.yaml")
	if err := os.WriteFile(file, y, 0o600); err != nil {
		b.Fatal(err)
	}
	if err := createNamespace(ctx, c, ns); err != nil {
		b.Fatal(err)
	}
	var r kubectlRun
	if r.apply, err = runOnce(ctx, kubectl, "--kubeconfig", c.Kubeconfig, "apply", "--server-side", "-f", file); err != nil {
		b.Fatal(err)
	}
	if n := strings.Count(r.apply.Out, "serverside-applied"); n != objects {
		b.Fatalf("kubectl applied %d objects, want %d:\n%s", n, objects, r.apply.Out)
	}
	if r.wait, err = runOnce(ctx, kubectl, "--kubeconfig", c.Kubeconfig, "-n", ns, "rollout", "status", "deployment/gadget-0-api", "--timeout", "2m"); err != nil {
		b.Fatal(err)
	}
	r.pods = podTimeline(ctx, c, ns)
	b.Logf("kubectl apply --server-side: %d objects in %v, CPU %v, max RSS %s; rollout status %v more (%s)",
		objects, r.apply.Wall.Round(time.Millisecond), r.apply.CPU, mib(r.apply.Peak), r.wait.Wall.Round(time.Millisecond), r.pods)
	return r
}

// fluxRun is kustomize-controller's measurements.
type fluxRun struct {
	version     string
	idle, after idle
	apply       burst
	pods        string // podTimeline after Ready
}

var (
	gitRepoGVR = schema.GroupVersionResource{Group: "source.toolkit.fluxcd.io", Version: "v1", Resource: "gitrepositories"}
	ksGVR      = schema.GroupVersionResource{Group: "kustomize.toolkit.fluxcd.io", Version: "v1", Resource: "kustomizations"}
)

// runFlux runs kustomize-controller (one replica, no leader election, as
// the agent has none) against the cluster and has it apply the 200
// objects from a GitRepository whose artifact this process serves, with
// wait: true (every object ready, as the agent's Healthy).
func runFlux(ctx context.Context, b *testing.B, c *clustertest.Cluster, kubectl, dir string, objs []json.RawMessage) (*fluxRun, error) {
	b.Helper()
	const ns, fluxNS = "peer-flux", "flux-system"
	r := &fluxRun{version: filepath.Base(dir)}
	for _, f := range []string{filepath.Join(dir, "kustomize.toolkit.fluxcd.io_kustomizations.yaml"), "testdata/flux-sources.yaml"} {
		if _, err := runOnce(ctx, kubectl, "--kubeconfig", c.Kubeconfig, "apply", "--server-side", "-f", f); err != nil {
			return nil, err
		}
	}
	if _, err := runOnce(ctx, kubectl, "--kubeconfig", c.Kubeconfig, "wait", "--for", "condition=established", "--timeout", "60s",
		"crd/kustomizations.kustomize.toolkit.fluxcd.io", "crd/gitrepositories.source.toolkit.fluxcd.io",
		"crd/ocirepositories.source.toolkit.fluxcd.io", "crd/buckets.source.toolkit.fluxcd.io"); err != nil {
		return nil, err
	}
	for _, n := range []string{ns, fluxNS} {
		if err := createNamespace(ctx, c, n); err != nil {
			return nil, err
		}
	}
	dyn, err := dynamic.NewForConfig(c.Config)
	if err != nil {
		return nil, err
	}

	p, err := startProcess("kustomize-controller", []string{"KUBECONFIG=" + c.Kubeconfig, "RUNTIME_NAMESPACE=" + fluxNS},
		filepath.Join(dir, "kustomize-controller"), "--metrics-addr=127.0.0.1:0", "--health-addr=127.0.0.1:0", "--log-encoding=json")
	if err != nil {
		return nil, err
	}
	defer p.stop()
	if _, err := p.waitLog(ctx, time.Time{}, "Starting workers", nil); err != nil {
		return nil, err
	}
	if r.idle, err = measureIdle(ctx, p.pid(), settle, window); err != nil {
		return nil, err
	}
	b.Logf("kustomize-controller idle: RSS %s (anon %s, file %s), CPU %v in %v", mib(r.idle.Start.RSS), mib(r.idle.Start.Anon), mib(r.idle.Start.File), r.idle.CPU, r.idle.Window.Round(time.Millisecond))

	// The artifact source-controller would serve: a tarball of the objects.
	y, err := retarget(objs, ns)
	if err != nil {
		return nil, err
	}
	tgz, err := tarball("objects.yaml", y)
	if err != nil {
		return nil, err
	}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { w.Write(tgz) }))
	defer srv.Close()
	sum, sha := sha256.Sum256(tgz), sha1.Sum(y)
	revision := "main@sha1:" + hex.EncodeToString(sha[:])
	repo := &unstructured.Unstructured{Object: map[string]any{
		"apiVersion": "source.toolkit.fluxcd.io/v1", "kind": "GitRepository",
		"metadata": map[string]any{"name": "peer", "namespace": fluxNS},
		"spec":     map[string]any{"url": "https://git.invalid/peer.git", "interval": "10m", "ref": map[string]any{"branch": "main"}},
	}}
	repo, err = dyn.Resource(gitRepoGVR).Namespace(fluxNS).Create(ctx, repo, metav1.CreateOptions{})
	if err != nil {
		return nil, err
	}
	repo.Object["status"] = map[string]any{
		"observedGeneration": int64(1),
		"artifact": map[string]any{
			"path": "gitrepository/flux-system/peer/" + revision + ".tar.gz", "url": srv.URL + "/peer.tar.gz",
			"revision": revision, "digest": "sha256:" + hex.EncodeToString(sum[:]), "size": int64(len(tgz)),
			"lastUpdateTime": time.Now().UTC().Format(time.RFC3339),
		},
		"conditions": []any{map[string]any{"type": "Ready", "status": "True", "reason": "Succeeded", "message": "stored artifact",
			"lastTransitionTime": time.Now().UTC().Format(time.RFC3339), "observedGeneration": int64(1)}},
	}
	if _, err := dyn.Resource(gitRepoGVR).Namespace(fluxNS).UpdateStatus(ctx, repo, metav1.UpdateOptions{}); err != nil {
		return nil, err
	}
	if err := sleep(ctx, 2*time.Second); err != nil { // the GitRepository event passes (no Kustomization refers to it yet)
		return nil, err
	}

	w, err := startWatch(p.pid())
	if err != nil {
		return nil, err
	}
	ks := &unstructured.Unstructured{Object: map[string]any{
		"apiVersion": "kustomize.toolkit.fluxcd.io/v1", "kind": "Kustomization",
		"metadata": map[string]any{"name": "peer", "namespace": fluxNS},
		"spec": map[string]any{"interval": "10m", "path": "./", "prune": true, "wait": true, "timeout": "3m",
			"sourceRef": map[string]any{"kind": "GitRepository", "name": "peer"}},
	}}
	if _, err := dyn.Resource(ksGVR).Namespace(fluxNS).Create(ctx, ks, metav1.CreateOptions{}); err != nil {
		return nil, err
	}
	for {
		k, err := dyn.Resource(ksGVR).Namespace(fluxNS).Get(ctx, "peer", metav1.GetOptions{})
		if err != nil {
			return nil, err
		}
		if ready, msg := ksReady(k, revision); ready {
			break
		} else if sleep(ctx, 50*time.Millisecond) != nil {
			return nil, fmt.Errorf("Kustomization not Ready: %s\n%s", msg, p.tail())
		}
	}
	if r.apply, err = w.end(); err != nil {
		return nil, err
	}
	applied, err := p.waitLog(ctx, w.start, "server-side apply completed", nil)
	if err != nil {
		return nil, err
	}
	r.apply.Applied = applied.At.Sub(w.start)
	if n := appliedCount(applied); n != objects {
		return nil, fmt.Errorf("kustomize-controller applied %d objects, want %d", n, objects)
	}
	r.pods = podTimeline(ctx, c, ns)
	b.Logf("kustomize-controller: 200 objects applied after %v, Ready after %v; peak RSS %s, CPU %v (%s)",
		r.apply.Applied.Round(time.Millisecond), r.apply.Ready.Round(time.Millisecond), mib(r.apply.Peak), r.apply.CPU, r.pods)

	if r.after, err = measureIdle(ctx, p.pid(), 5*time.Second, window); err != nil {
		return nil, err
	}
	b.Logf("kustomize-controller idle after: RSS %s, CPU %v in %v", mib(r.after.Start.RSS), r.after.CPU, r.after.Window.Round(time.Millisecond))
	return r, nil
}

// ksReady: the Kustomization is Ready at revision.
func ksReady(k *unstructured.Unstructured, revision string) (bool, string) {
	last, _, _ := unstructured.NestedString(k.Object, "status", "lastAppliedRevision")
	conds, _, _ := unstructured.NestedSlice(k.Object, "status", "conditions")
	for _, c := range conds {
		m, _ := c.(map[string]any)
		if m["type"] == "Ready" {
			msg := fmt.Sprintf("Ready %v %v: %v (last applied %q)", m["status"], m["reason"], m["message"], last)
			return m["status"] == "True" && last == revision, msg
		}
	}
	return false, "no Ready condition"
}

// appliedCount is the number of objects in kustomize-controller's
// "server-side apply completed" line (output: object → action).
func appliedCount(l logLine) int {
	out, _ := l.Fields["output"].(map[string]any)
	return len(out)
}

func tarball(name string, content []byte) ([]byte, error) {
	var buf bytes.Buffer
	zw := gzip.NewWriter(&buf)
	tw := tar.NewWriter(zw)
	if err := tw.WriteHeader(&tar.Header{Name: name, Mode: 0o644, Size: int64(len(content)), ModTime: time.Now()}); err != nil {
		return nil, err
	}
	if _, err := tw.Write(content); err != nil {
		return nil, err
	}
	if err := errors.Join(tw.Close(), zw.Close()); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}

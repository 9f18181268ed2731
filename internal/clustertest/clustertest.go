// Package clustertest starts a whole Kubernetes cluster on loopback for
// tests that need workloads to really become Ready (the agent's, issue
// 18): etcd and kube-apiserver through controller-runtime's envtest,
// kube-controller-manager and kube-scheduler as processes, and kwok, which
// plays the kubelets of simulated nodes with the capacity the test gives
// them (their pods are scheduled, then marked running and ready).
//
// The binaries come from hack/kube-tools.sh (KUBE_TOOLS_CLUSTER=1), cached
// in $HOME/.cache/misaki/k8s/<version>; without them a test is skipped, or
// fails under CI.
package clustertest

import (
	"context"
	_ "embed"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"sigs.k8s.io/controller-runtime/pkg/envtest"
)

// kwokStages are the node and pod lifecycles kwok plays (its own "fast"
// stages): without stages kwok v0.8 refuses to start.
//
//go:embed kwok-stages.yaml
var kwokStages []byte

// Cluster is a running cluster.
type Cluster struct {
	Config     *rest.Config
	Kubeconfig string // an admin kubeconfig file
	Client     kubernetes.Interface
	env        *envtest.Environment
	dir        string
}

// Assets is the directory of the binaries.
func Assets(t testing.TB) string {
	t.Helper()
	dir := os.Getenv("KUBEBUILDER_ASSETS")
	if dir == "" {
		home, _ := os.UserHomeDir()
		dir = filepath.Join(home, ".cache/misaki/k8s/v1.37.2")
	}
	for _, b := range []string{"kube-apiserver", "etcd", "kube-controller-manager", "kube-scheduler", "kwok"} {
		if _, err := os.Stat(filepath.Join(dir, b)); err != nil {
			if os.Getenv("CI") != "" {
				t.Fatalf("clustertest: no %s in %s: run KUBE_TOOLS_CLUSTER=1 hack/kube-tools.sh", b, dir)
			}
			t.Skipf("clustertest: no %s in %s; run KUBE_TOOLS_CLUSTER=1 hack/kube-tools.sh", b, dir)
		}
	}
	return dir
}

// Start runs a cluster until the test ends.
func Start(t testing.TB) *Cluster {
	t.Helper()
	assets := Assets(t)
	env := &envtest.Environment{BinaryAssetsDirectory: assets}
	cfg, err := env.Start()
	if err != nil {
		t.Fatalf("clustertest: start kube-apiserver and etcd: %v", err)
	}
	t.Cleanup(func() { env.Stop() })
	user, err := env.AddUser(envtest.User{Name: "clustertest-admin", Groups: []string{"system:masters"}}, nil)
	if err != nil {
		t.Fatalf("clustertest: admin user: %v", err)
	}
	kc, err := user.KubeConfig()
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	kubeconfig := filepath.Join(dir, "admin.kubeconfig")
	if err := os.WriteFile(kubeconfig, kc, 0o600); err != nil {
		t.Fatal(err)
	}
	c := &Cluster{Config: cfg, Kubeconfig: kubeconfig, env: env, dir: dir}
	if c.Client, err = kubernetes.NewForConfig(cfg); err != nil {
		t.Fatal(err)
	}
	// The controllers a Deployment needs, without the service-account
	// token controller (envtest's API server has no signing key for it).
	c.run(t, filepath.Join(assets, "kube-controller-manager"),
		"--kubeconfig="+kubeconfig, "--leader-elect=false", "--bind-address=127.0.0.1", "--secure-port=0",
		"--controllers=*,-serviceaccount-token,-nodeipam,-ttl", "--node-monitor-grace-period=1h",
		"--use-service-account-credentials=false")
	c.run(t, filepath.Join(assets, "kube-scheduler"),
		"--kubeconfig="+kubeconfig, "--leader-elect=false", "--bind-address=127.0.0.1", "--secure-port=0")
	stages := filepath.Join(dir, "kwok-stages.yaml")
	if err := os.WriteFile(stages, kwokStages, 0o600); err != nil {
		t.Fatal(err)
	}
	c.run(t, filepath.Join(assets, "kwok"),
		"--kubeconfig="+kubeconfig, "--config="+stages, "--manage-all-nodes=false",
		"--manage-nodes-with-annotation-selector=kwok.x-k8s.io/node=fake",
		"--node-lease-duration-seconds=40", "--server-address=")
	return c
}

func (c *Cluster) run(t testing.TB, bin string, args ...string) {
	t.Helper()
	logf, err := os.Create(filepath.Join(c.dir, filepath.Base(bin)+".log"))
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(bin, args...)
	cmd.Stdout, cmd.Stderr = logf, logf
	if err := cmd.Start(); err != nil {
		t.Fatalf("clustertest: start %s: %v", bin, err)
	}
	t.Cleanup(func() {
		cmd.Process.Kill()
		cmd.Wait()
		logf.Close()
		if t.Failed() {
			b, _ := os.ReadFile(logf.Name())
			if len(b) > 4000 {
				b = b[len(b)-4000:]
			}
			t.Logf("%s log (tail):\n%s", filepath.Base(bin), b)
		}
	})
}

// AddNode adds a simulated node with the given capacity (cpu, memory,
// pods, ...), ready for pods.
func (c *Cluster) AddNode(t testing.TB, name string, capacity corev1.ResourceList) {
	t.Helper()
	if _, ok := capacity[corev1.ResourcePods]; !ok {
		capacity = capacity.DeepCopy()
		capacity[corev1.ResourcePods] = resource.MustParse("110")
	}
	node := &corev1.Node{
		ObjectMeta: metav1.ObjectMeta{
			Name:        name,
			Annotations: map[string]string{"kwok.x-k8s.io/node": "fake", "node.alpha.kubernetes.io/ttl": "0"},
			Labels:      map[string]string{"kubernetes.io/hostname": name, "kubernetes.io/os": "linux", "kubernetes.io/arch": "arm64", "type": "kwok"},
		},
		Status: corev1.NodeStatus{Capacity: capacity, Allocatable: capacity},
	}
	ctx := context.Background()
	if _, err := c.Client.CoreV1().Nodes().Create(ctx, node, metav1.CreateOptions{}); err != nil {
		t.Fatalf("clustertest: add node %s: %v", name, err)
	}
	// kwok marks it Ready.
	c.Eventually(t, 60*time.Second, func() error {
		n, err := c.Client.CoreV1().Nodes().Get(ctx, name, metav1.GetOptions{})
		if err != nil {
			return err
		}
		for _, cond := range n.Status.Conditions {
			if cond.Type == corev1.NodeReady && cond.Status == corev1.ConditionTrue {
				return nil
			}
		}
		return fmt.Errorf("node %s not ready", name)
	})
}

// Eventually retries f until it returns nil or timeout passes.
func (c *Cluster) Eventually(t testing.TB, timeout time.Duration, f func() error) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		err := f()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("clustertest: after %v: %v", timeout, err)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// Package localcluster runs a whole Kubernetes cluster on loopback: etcd
// and kube-apiserver through controller-runtime's envtest,
// kube-controller-manager and kube-scheduler as processes, and kwok, which
// plays the kubelets of simulated nodes with the capacity given them
// (their pods are scheduled, then marked running and ready). It is what
// the agent's tests run on (internal/clustertest) and what a user starts
// to try the agent without a real vehicle (hack/vehiclecluster).
//
// The binaries come from hack/kube-tools.sh (KUBE_TOOLS_CLUSTER=1), cached
// in $HOME/.cache/misaki/k8s/<version>.
package localcluster

import (
	"context"
	_ "embed"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"syscall"
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

// Binaries a cluster needs in the assets directory.
var Binaries = []string{"kube-apiserver", "etcd", "kube-controller-manager", "kube-scheduler", "kwok"}

// DefaultAssets is $KUBEBUILDER_ASSETS, else the directory hack/kube-tools.sh
// fills.
func DefaultAssets() string {
	if dir := os.Getenv("KUBEBUILDER_ASSETS"); dir != "" {
		return dir
	}
	home, _ := os.UserHomeDir()
	return filepath.Join(home, ".cache/misaki/k8s/v1.37.2")
}

// Missing returns the first binary assets lacks, or "".
func Missing(assets string) string {
	for _, b := range Binaries {
		if _, err := os.Stat(filepath.Join(assets, b)); err != nil {
			return b
		}
	}
	return ""
}

// Cluster is a running cluster.
type Cluster struct {
	Config     *rest.Config
	Kubeconfig string // an admin kubeconfig file
	Client     kubernetes.Interface
	// Dir holds the kubeconfig and the processes' logs.
	Dir string

	env   *envtest.Environment
	guard *exec.Cmd  // kills etcd and kube-apiserver if this process dies; nil if none
	mu    sync.Mutex // guards procs
	procs []*exec.Cmd
	logs  []*os.File
}

// Start runs a cluster from the binaries in assets, with its files in dir,
// until Stop.
func Start(assets, dir string) (*Cluster, error) {
	if b := Missing(assets); b != "" {
		return nil, fmt.Errorf("localcluster: no %s in %s: run KUBE_TOOLS_CLUSTER=1 hack/kube-tools.sh", b, assets)
	}
	env := &envtest.Environment{BinaryAssetsDirectory: assets}
	cfg, err := env.Start()
	if err != nil {
		return nil, fmt.Errorf("localcluster: start kube-apiserver and etcd: %w", err)
	}
	c := &Cluster{Config: cfg, Dir: dir, env: env, guard: guard(env)}
	if err := c.start(assets); err != nil {
		c.Stop()
		return nil, err
	}
	return c, nil
}

func (c *Cluster) start(assets string) error {
	user, err := c.env.AddUser(envtest.User{Name: "localcluster-admin", Groups: []string{"system:masters"}}, nil)
	if err != nil {
		return fmt.Errorf("localcluster: admin user: %w", err)
	}
	kc, err := user.KubeConfig()
	if err != nil {
		return err
	}
	if err := os.MkdirAll(c.Dir, 0o700); err != nil {
		return err
	}
	c.Kubeconfig = filepath.Join(c.Dir, "kubeconfig")
	if err := os.WriteFile(c.Kubeconfig, kc, 0o600); err != nil {
		return err
	}
	if c.Client, err = kubernetes.NewForConfig(c.Config); err != nil {
		return err
	}
	// The controllers a Deployment needs, without the service-account
	// token controller (envtest's API server has no signing key for it).
	if err := c.run(filepath.Join(assets, "kube-controller-manager"),
		"--kubeconfig="+c.Kubeconfig, "--leader-elect=false", "--bind-address=127.0.0.1", "--secure-port=0",
		"--controllers=*,-serviceaccount-token,-nodeipam,-ttl", "--node-monitor-grace-period=1h",
		"--use-service-account-credentials=false"); err != nil {
		return err
	}
	if err := c.run(filepath.Join(assets, "kube-scheduler"),
		"--kubeconfig="+c.Kubeconfig, "--leader-elect=false", "--bind-address=127.0.0.1", "--secure-port=0"); err != nil {
		return err
	}
	stages := filepath.Join(c.Dir, "kwok-stages.yaml")
	if err := os.WriteFile(stages, kwokStages, 0o600); err != nil {
		return err
	}
	return c.run(filepath.Join(assets, "kwok"),
		"--kubeconfig="+c.Kubeconfig, "--config="+stages, "--manage-all-nodes=false",
		"--manage-nodes-with-annotation-selector=kwok.x-k8s.io/node=fake",
		"--node-lease-duration-seconds=40", "--server-address=")
}

func (c *Cluster) run(bin string, args ...string) error {
	logf, err := os.Create(filepath.Join(c.Dir, filepath.Base(bin)+".log"))
	if err != nil {
		return err
	}
	cmd := exec.Command(bin, args...)
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.SysProcAttr = procAttr()
	if err := cmd.Start(); err != nil {
		logf.Close()
		return fmt.Errorf("localcluster: start %s: %w", bin, err)
	}
	c.mu.Lock()
	c.procs, c.logs = append(c.procs, cmd), append(c.logs, logf)
	c.mu.Unlock()
	return nil
}

// Logs returns the last n bytes of each process's log, by binary name.
func (c *Cluster) Logs(n int) map[string]string {
	c.mu.Lock()
	defer c.mu.Unlock()
	out := map[string]string{}
	for _, f := range c.logs {
		b, _ := os.ReadFile(f.Name())
		if len(b) > n {
			b = b[len(b)-n:]
		}
		out[filepath.Base(f.Name())] = string(b)
	}
	return out
}

// Stop ends every process of the cluster.
func (c *Cluster) Stop() error {
	c.mu.Lock()
	procs, logs := c.procs, c.logs
	c.procs, c.logs = nil, nil
	c.mu.Unlock()
	for i := len(procs) - 1; i >= 0; i-- {
		procs[i].Process.Kill()
		procs[i].Wait()
	}
	for _, f := range logs {
		f.Close()
	}
	err := c.env.Stop()
	if g := c.guard; g != nil {
		c.guard = nil
		g.Process.Signal(syscall.SIGTERM) // its targets are gone: it only ends itself (and its sleep)
		g.Wait()
	}
	return err
}

// AddNode adds a simulated node with the given capacity (cpu, memory,
// pods, ...) and waits until kwok marks it ready.
func (c *Cluster) AddNode(ctx context.Context, name string, capacity corev1.ResourceList) error {
	if _, ok := capacity[corev1.ResourcePods]; !ok {
		capacity = capacity.DeepCopy()
		capacity[corev1.ResourcePods] = resource.MustParse("110")
	}
	node := &corev1.Node{
		ObjectMeta: metav1.ObjectMeta{
			Name:        name,
			Annotations: map[string]string{"kwok.x-k8s.io/node": "fake", "node.alpha.kubernetes.io/ttl": "0"},
			Labels:      map[string]string{"kubernetes.io/hostname": name, "kubernetes.io/os": "linux", "kubernetes.io/arch": "amd64", "type": "kwok"},
		},
		Status: corev1.NodeStatus{Capacity: capacity, Allocatable: capacity},
	}
	if _, err := c.Client.CoreV1().Nodes().Create(ctx, node, metav1.CreateOptions{}); err != nil {
		return fmt.Errorf("localcluster: add node %s: %w", name, err)
	}
	return Eventually(ctx, 60*time.Second, func() error {
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

// Eventually retries f every 200ms until it returns nil, timeout passes
// (its last error) or ctx ends.
func Eventually(ctx context.Context, timeout time.Duration, f func() error) error {
	deadline := time.Now().Add(timeout)
	for {
		err := f()
		if err == nil {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("after %v: %w", timeout, err)
		}
		select {
		case <-ctx.Done():
			return errors.Join(ctx.Err(), err)
		case <-time.After(200 * time.Millisecond):
		}
	}
}

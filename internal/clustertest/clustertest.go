// Package clustertest starts a whole Kubernetes cluster on loopback for
// tests that need workloads to really become Ready (the agent's, issue
// 18): internal/localcluster, stopped when the test ends.
//
// The binaries come from hack/kube-tools.sh (KUBE_TOOLS_CLUSTER=1), cached
// in $HOME/.cache/misaki/k8s/<version>; without them a test is skipped, or
// fails under CI.
package clustertest

import (
	"context"
	"os"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"

	"github.com/misaki-io/misaki/internal/localcluster"
)

// Cluster is a running cluster.
type Cluster struct {
	*localcluster.Cluster
}

// Assets is the directory of the binaries; the test is skipped (failed
// under CI) when one is missing.
func Assets(t testing.TB) string {
	t.Helper()
	dir := localcluster.DefaultAssets()
	if b := localcluster.Missing(dir); b != "" {
		if testingCI() {
			t.Fatalf("clustertest: no %s in %s: run KUBE_TOOLS_CLUSTER=1 hack/kube-tools.sh", b, dir)
		}
		t.Skipf("clustertest: no %s in %s; run KUBE_TOOLS_CLUSTER=1 hack/kube-tools.sh", b, dir)
	}
	return dir
}

// Start runs a cluster until the test ends.
func Start(t testing.TB) *Cluster {
	t.Helper()
	c, err := localcluster.Start(Assets(t), t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if t.Failed() {
			for name, tail := range c.Logs(4000) {
				t.Logf("%s (tail):\n%s", name, tail)
			}
		}
		c.Stop()
	})
	return &Cluster{c}
}

// AddNode adds a simulated node with the given capacity (cpu, memory,
// pods, ...), ready for pods.
func (c *Cluster) AddNode(t testing.TB, name string, capacity corev1.ResourceList) {
	t.Helper()
	if err := c.Cluster.AddNode(context.Background(), name, capacity); err != nil {
		t.Fatalf("clustertest: %v", err)
	}
}

// Eventually retries f until it returns nil or timeout passes.
func (c *Cluster) Eventually(t testing.TB, timeout time.Duration, f func() error) {
	t.Helper()
	if err := localcluster.Eventually(context.Background(), timeout, f); err != nil {
		t.Fatalf("clustertest: %v", err)
	}
}

func testingCI() bool { return os.Getenv("CI") != "" }

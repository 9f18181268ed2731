package system

import (
	"context"
	"errors"
	"fmt"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	"sigs.k8s.io/controller-runtime/pkg/envtest"

	"github.com/misaki-io/misaki/internal/localcluster"
)

// clusterSpec is one cluster of the demo: its name, its simulated node's
// capacity, and whether it gets the Route CRD (the vehicles do: Misaki's
// control plane is installed there).
type clusterSpec struct {
	Name        string
	Node        string
	CPU, Memory string
	RouteCRD    bool
}

// startClusters starts every cluster at once (about 12 s for three on 2
// cores, docs/demo.md), adds each one's node and installs the CRD where
// asked. On error it stops what it started.
func startClusters(ctx context.Context, assets, dir, crdFile string, specs []clusterSpec) (map[string]*localcluster.Cluster, error) {
	var (
		mu   sync.Mutex // guards out and errs
		out  = make(map[string]*localcluster.Cluster)
		errs []error
		wg   sync.WaitGroup
	)
	for _, s := range specs {
		wg.Go(func() {
			c, err := startCluster(ctx, assets, filepath.Join(dir, s.Name), crdFile, s)
			mu.Lock()
			defer mu.Unlock()
			if c != nil {
				out[s.Name] = c
			}
			if err != nil {
				errs = append(errs, fmt.Errorf("cluster %s: %w", s.Name, err))
			}
		})
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		stopClusters(out)
		return nil, err
	}
	return out, nil
}

func startCluster(ctx context.Context, assets, dir, crdFile string, s clusterSpec) (*localcluster.Cluster, error) {
	c, err := localcluster.Start(assets, dir)
	if err != nil {
		return nil, err
	}
	capacity := corev1.ResourceList{}
	for name, v := range map[corev1.ResourceName]string{corev1.ResourceCPU: s.CPU, corev1.ResourceMemory: s.Memory} {
		q, err := resource.ParseQuantity(v)
		if err != nil {
			return c, fmt.Errorf("node %s %s: %w", s.Node, name, err)
		}
		capacity[name] = q
	}
	if err := c.AddNode(ctx, s.Node, capacity); err != nil {
		return c, err
	}
	if s.RouteCRD {
		if _, err := envtest.InstallCRDs(c.Config, envtest.CRDInstallOptions{
			Paths: []string{crdFile}, ErrorIfPathMissing: true, MaxTime: 30 * time.Second,
		}); err != nil {
			return c, fmt.Errorf("install the Route CRD: %w", err)
		}
	}
	return c, nil
}

// stopClusters stops every cluster at once.
func stopClusters(cs map[string]*localcluster.Cluster) {
	var wg sync.WaitGroup
	for _, c := range cs {
		wg.Go(func() { c.Stop() })
	}
	wg.Wait()
}

// etcdNote says why the clusters will be slow when the etcd in assets is
// older than kube-apiserver 1.37 needs for watch-list requests (3.4.31 or
// 3.5.13): kwok's watches then fail ("RequestWatchProgress is disabled")
// and it sees pods only when it lists again, every 20-60 s. "" when it is
// new enough. Debian's etcd 3.4.23 is not; hack/kube-tools.sh builds 3.6.
func etcdNote(assets string) string {
	out, err := exec.Command(filepath.Join(assets, "etcd"), "--version").Output()
	if err != nil {
		return ""
	}
	line, _, _ := strings.Cut(string(out), "\n")
	v := strings.TrimSpace(strings.TrimPrefix(line, "etcd Version:"))
	var n [3]int
	for i, p := range strings.SplitN(v, ".", 3) {
		n[i], _ = strconv.Atoi(p)
	}
	if n[0] > 3 || n[0] == 3 && (n[1] >= 6 || n[1] == 5 && n[2] >= 13 || n[1] == 4 && n[2] >= 31) {
		return ""
	}
	return fmt.Sprintf("etcd %s in %s is older than kube-apiserver needs for watch-list requests (3.4.31 or 3.5.13): kwok will see pods only when it lists again, so each rollout takes 20-60 s; KUBE_TOOLS_CLUSTER=1 hack/kube-tools.sh builds etcd 3.6", v, assets)
}

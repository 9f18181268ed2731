// Command vehiclecluster runs a vehicle's Kubernetes cluster on this
// machine, to try the agent without a car: a real kube-apiserver, etcd,
// kube-controller-manager and kube-scheduler, and simulated nodes (kwok)
// with the capacity given, so Deployments really get scheduled and become
// ready. It writes an admin kubeconfig into --dir and runs until Ctrl-C.
//
//	KUBE_TOOLS_CLUSTER=1 hack/kube-tools.sh     # builds the binaries once (about 10 minutes)
//	go run ./hack/vehiclecluster --dir car-1-cluster --cpu 2 --memory 4Gi
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"syscall"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"

	"github.com/misaki-io/misaki/internal/localcluster"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx); err != nil {
		fmt.Fprintln(os.Stderr, "vehiclecluster:", err)
		os.Exit(1)
	}
}

func run(ctx context.Context) error {
	dir := flag.String("dir", "vehicle-cluster", "directory for the kubeconfig and the processes' logs")
	assets := flag.String("assets", localcluster.DefaultAssets(), "directory of kube-apiserver, etcd, kube-controller-manager, kube-scheduler and kwok ($KUBEBUILDER_ASSETS)")
	nodes := flag.Int("nodes", 1, "simulated nodes")
	cpu := flag.String("cpu", "2", "CPU of each node")
	memory := flag.String("memory", "4Gi", "memory of each node")
	flag.Parse()
	capacity := corev1.ResourceList{}
	for name, v := range map[corev1.ResourceName]string{corev1.ResourceCPU: *cpu, corev1.ResourceMemory: *memory} {
		q, err := resource.ParseQuantity(v)
		if err != nil {
			return fmt.Errorf("--%s: %w", name, err)
		}
		capacity[name] = q
	}
	abs, err := filepath.Abs(*dir)
	if err != nil {
		return err
	}
	c, err := localcluster.Start(*assets, abs)
	if err != nil {
		return err
	}
	defer c.Stop()
	for i := range *nodes {
		if err := c.AddNode(ctx, fmt.Sprintf("node-%d", i+1), capacity); err != nil {
			return err
		}
	}
	fmt.Printf("vehicle cluster up: %d node(s) of %s CPU, %s memory\nkubeconfig: %s\nlogs: %s\n(Ctrl-C stops it; its state goes with it)\n",
		*nodes, *cpu, *memory, c.Kubeconfig, abs)
	<-ctx.Done()
	return nil
}

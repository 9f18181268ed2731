// Command misaki is the operator CLI of Misaki's fleet hub: chart
// sources, vehicles and their bootstrap tokens, deployments, the digital
// twin, keys and the audit log; misaki check checks the mesh in a
// Kubernetes cluster (docs/cli.md).
package main

import (
	"context"
	"os"
	"os/signal"
	"syscall"

	"github.com/misaki-io/misaki/internal/cli"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := cli.Run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}

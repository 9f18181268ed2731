// Command misaki-gateway is Misaki's cloud gateway: misaki-proxy in the
// gateway role, with the shared idempotency store on PostgreSQL linked in
// so that replicas behind a load balancer never deliver a key twice
// (docs/gateway.md). The edge's sidecar binary, misaki-proxy, leaves the
// SQL driver out.
package main

import (
	"context"
	"fmt"
	"os"
	"os/signal"
	"slices"
	"strings"
	"syscall"

	_ "github.com/misaki-io/misaki/internal/gateway/pgstore"
	"github.com/misaki-io/misaki/internal/proxy/cli"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	args := os.Args[1:]
	if !slices.ContainsFunc(args, func(a string) bool {
		return strings.TrimLeft(a, "-") == "role" || strings.HasPrefix(strings.TrimLeft(a, "-"), "role=")
	}) {
		args = append([]string{"--role", "gateway"}, args...)
	}
	if err := cli.RunAs(ctx, "misaki-gateway", args, os.Stdout, os.Stderr); err != nil {
		fmt.Fprintln(os.Stderr, "misaki-gateway:", err)
		os.Exit(1)
	}
}

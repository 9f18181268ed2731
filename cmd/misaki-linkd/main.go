// Command misaki-linkd is the node link agent: it classifies the host's
// network links, probes the gateway over each, installs the policy routing
// that steers sockets onto one link, and serves link state to the proxies
// on its node (docs/links.md). It runs with the host's network and
// CAP_NET_ADMIN, as the chart's DaemonSet does.
package main

import (
	"context"
	"fmt"
	"os"
	"os/signal"
	"syscall"

	"github.com/misaki-io/misaki/internal/linkd/cmd"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := cmd.Run(ctx, os.Args[1:], os.Stderr); err != nil {
		fmt.Fprintln(os.Stderr, "misaki-linkd:", err)
		os.Exit(1)
	}
}

// Command misaki-demo runs Misaki's demos on loopback.
//
// system (make demo) runs the whole system: the hub, a cloud cluster and two
// vehicle clusters, the agents, the gateway, the controller and the
// proxies, through the story of docs/demo.md, then the data plane's
// scenarios. run (make demo-mesh, and the default) runs the data plane
// alone: a cloud upstream, the misaki-proxy binary (and, for the spool
// scenario, the gateway) and a vehicle app, while a link drops and comes
// back.
//
//	misaki-demo system [--bin-dir bin] [--assets DIR] [--crd FILE] [--speed 0.5] [--keep] [--hold] [--skip-mesh]
//	misaki-demo [run] [--proxy-bin bin/misaki-proxy] [--speed 1] [--scenario all|hold|spool] [--keep]
//	misaki-demo upstream --listen ADDR
//	misaki-demo inference --listen ADDR
//	misaki-demo app --proxy ADDR --host HOST --rate N --duration D --stats-file F [--dns ADDR] [--path P] [--name N]
//	misaki-demo with-hosts --hosts FILE --parent-mount-ns NS -- COMMAND...
//
// system and run are orchestrators; they re-execute this binary for the
// other subcommands.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"strings"
	"syscall"

	"github.com/misaki-io/misaki/internal/demo"
	"github.com/misaki-io/misaki/internal/demo/system"
	"github.com/misaki-io/misaki/internal/demo/upstream"
	"github.com/misaki-io/misaki/internal/demo/vehicle"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	err := run(ctx, os.Args[1:])
	if err != nil && !errors.Is(err, flag.ErrHelp) {
		fmt.Fprintln(os.Stderr, "misaki-demo:", err)
		stop()
		os.Exit(1)
	}
}

// run picks the subcommand, parses its flags and runs it.
func run(ctx context.Context, args []string) error {
	cmd := "run"
	if len(args) > 0 && !strings.HasPrefix(args[0], "-") {
		cmd, args = args[0], args[1:]
	}
	fs := flag.NewFlagSet("misaki-demo "+cmd, flag.ContinueOnError)
	switch cmd {
	case "system":
		var cfg system.Config
		fs.StringVar(&cfg.BinDir, "bin-dir", "bin", "directory of misaki-hub, misaki-agent, misaki-proxy and misaki-controller")
		fs.StringVar(&cfg.Assets, "assets", "", "directory of kube-apiserver, etcd, kube-controller-manager, kube-scheduler and kwok (default $KUBEBUILDER_ASSETS, else what hack/kube-tools.sh builds)")
		fs.StringVar(&cfg.CRDFile, "crd", "", "the Route CRD for the vehicle clusters (default config/crd/mesh.misaki.io_routes.yaml)")
		fs.Float64Var(&cfg.Speed, "speed", 0.5, "factor applied to the data-plane scenarios' times")
		fs.BoolVar(&cfg.Keep, "keep", false, "keep the temporary directory (configs, logs, state)")
		fs.BoolVar(&cfg.Hold, "hold", false, "after the checks, keep everything running until Ctrl-C (to look at the UI and the clusters)")
		fs.BoolVar(&cfg.SkipMesh, "skip-mesh", false, "skip the data plane's hold and spool scenarios")
		fs.DurationVar(&cfg.Timeout, "timeout", 0, "bound on each wait for convergence (default 90s)")
		if err := fs.Parse(args); err != nil {
			return err
		}
		log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
		return system.Run(ctx, log.With("component", "demo"), cfg, os.Stdout)
	case "inference":
		addr := fs.String("listen", "127.0.0.1:8091", "address to listen on")
		if err := fs.Parse(args); err != nil {
			return err
		}
		return system.RunInference(ctx, childLogger("inference"), *addr)
	case "with-hosts":
		hosts := fs.String("hosts", "", "the hosts file to bind over /etc/hosts")
		parent := fs.String("parent-mount-ns", "", "the mount namespace of the parent, which must not be this one")
		if err := fs.Parse(args); err != nil {
			return err
		}
		return system.ExecWithHosts(*hosts, *parent, fs.Args())
	case "run":
		var cfg demo.Config
		fs.StringVar(&cfg.ProxyBin, "proxy-bin", "bin/misaki-proxy", "the misaki-proxy binary to run")
		fs.Float64Var(&cfg.Speed, "speed", 1, "factor applied to every scenario time (0.5 runs twice as fast)")
		fs.BoolVar(&cfg.Keep, "keep", false, "keep the temporary directory (config, logs, stats)")
		fs.StringVar(&cfg.Scenario, "scenario", "all", "hold (a link drops and returns), spool (a long outage, the proxy killed mid-way), or all")
		if err := fs.Parse(args); err != nil {
			return err
		}
		log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
		return demo.Run(ctx, log.With("component", "demo"), cfg, os.Stdout)
	case "upstream":
		addr := fs.String("listen", "127.0.0.1:8090", "address to listen on")
		if err := fs.Parse(args); err != nil {
			return err
		}
		return upstream.Run(ctx, childLogger("upstream"), *addr)
	case "app":
		var cfg vehicle.Config
		fs.StringVar(&cfg.Proxy, "proxy", "", "the proxy's mesh address, host:port")
		fs.StringVar(&cfg.Host, "host", "", "mesh host name to call")
		fs.StringVar(&cfg.Path, "path", "", "request path (default /v1/telemetry)")
		fs.StringVar(&cfg.Name, "name", "", "the vehicle the app runs on, in bodies and Idempotency-Keys (default demo-car-1)")
		fs.IntVar(&cfg.Rate, "rate", 20, "requests per second")
		fs.DurationVar(&cfg.Duration, "duration", 0, "how long to send")
		fs.StringVar(&cfg.StatsFile, "stats-file", "", "file to keep the counters in, as JSON")
		fs.IntVar(&cfg.Retries, "retries", 0, "send a request again this often after a transport error (250ms apart)")
		fs.StringVar(&cfg.DNS, "dns", "", "resolve --host through this DNS server (the proxy's) and call it on --proxy's port")
		if err := fs.Parse(args); err != nil {
			return err
		}
		app, err := vehicle.New(cfg, childLogger("app"))
		if err != nil {
			return err
		}
		return app.Run(ctx)
	default:
		return fmt.Errorf("unknown subcommand %q: use system, run, upstream, inference, app or with-hosts", cmd)
	}
}

// childLogger logs JSON to stderr, which the orchestrator sends to a file.
func childLogger(component string) *slog.Logger {
	return slog.New(slog.NewJSONHandler(os.Stderr, nil)).With("app", "misaki-demo", "component", component)
}

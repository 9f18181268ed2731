// Command misaki-demo runs Misaki's demo on loopback: a cloud upstream, the
// misaki-proxy binary (and, for the spool scenario, the gateway) and a
// vehicle app, while a link drops and comes back.
//
//	misaki-demo [run] [--proxy-bin bin/misaki-proxy] [--speed 1] [--scenario all|hold|spool] [--keep]
//	misaki-demo upstream --listen ADDR
//	misaki-demo app --proxy ADDR --host HOST --rate N --duration D --stats-file F [--dns ADDR]
//
// run (the default) is the orchestrator; it re-executes this binary for the
// upstream and app subcommands.
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
		return fmt.Errorf("unknown subcommand %q: use run, upstream or app", cmd)
	}
}

// childLogger logs JSON to stderr, which the orchestrator sends to a file.
func childLogger(component string) *slog.Logger {
	return slog.New(slog.NewJSONHandler(os.Stderr, nil)).With("app", "misaki-demo", "component", component)
}

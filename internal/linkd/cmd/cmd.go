//go:build linux

// Package cmd is misaki-linkd's command line: flags, the config file, the
// agent and its HTTP server.
package cmd

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"time"

	"golang.org/x/sync/errgroup"

	"github.com/misaki-io/misaki/internal/linkd"
	"github.com/misaki-io/misaki/internal/linkd/config"
	"github.com/misaki-io/misaki/internal/linkd/policyroute"
)

// maxLinks bounds the tables a start cleans up after a config that had
// more links than this one.
const maxLinks = 64

// Run parses args and runs the agent until ctx ends.
func Run(ctx context.Context, args []string, stderr io.Writer) error {
	fs := flag.NewFlagSet("misaki-linkd", flag.ContinueOnError)
	fs.SetOutput(stderr)
	path := fs.String("config", "", "the classification rules and probes (docs/links.md); default: built-in rules, no probes")
	listen := fs.String("listen", "", "address of the link API (overrides the config's listen)")
	node := fs.String("node", os.Getenv("NODE_NAME"), "this node's name, in snapshots")
	level := fs.String("log-level", "info", "debug, info, warn or error")
	remove := fs.Bool("remove-routing", false, "remove the rules and tables the agent installed, and exit")
	if err := fs.Parse(args); err != nil {
		return err
	}
	var lv slog.Level
	if err := lv.UnmarshalText([]byte(*level)); err != nil {
		return fmt.Errorf("--log-level: %w", err)
	}
	log := slog.New(slog.NewJSONHandler(stderr, &slog.HandlerOptions{Level: lv})).With("app", "misaki-linkd")
	cfg := &config.Config{}
	if *path != "" {
		c, err := config.Load(*path)
		if err != nil {
			return err
		}
		cfg = c
	} else {
		cfg.SetDefaults()
	}
	if *listen != "" {
		cfg.Listen = *listen
		if err := cfg.Validate(); err != nil {
			return err
		}
	}
	n := max(maxLinks, len(config.LinkNames(cfg.Links)))
	if *remove {
		return policyroute.Remove(cfg.Routing.Priority, cfg.Routing.Table, n)
	}
	o := linkd.Options{Config: cfg, Log: log, ID: fmt.Sprintf("%s/%d", *node, time.Now().UnixNano())}
	if !cfg.Routing.Disabled {
		loosened := map[string]bool{} // interfaces tried, once each
		o.Route = func(links []policyroute.Link) error {
			for _, l := range links {
				for _, i := range l.Ifaces {
					if loosened[i.Name] {
						continue
					}
					loosened[i.Name] = true
					if err := policyroute.LooseReversePath(i.Name); err != nil {
						// A container's /proc/sys is read-only unless it is
						// privileged: the integrator sets it on the host.
						log.Warn("cannot loosen reverse-path filtering; set net.ipv4.conf."+i.Name+".rp_filter=2 and net.ipv4.conf.all.src_valid_mark=1 on the host, or replies to steered connections may be dropped",
							"interface", i.Name, "err", err)
					}
				}
			}
			return policyroute.Sync(cfg.Routing.Priority, cfg.Routing.Table, n, links)
		}
	}
	a := linkd.New(o)
	ln, err := net.Listen("tcp", cfg.Listen)
	if err != nil {
		return fmt.Errorf("listen: %w", err)
	}
	log.Info("serving link state", "addr", ln.Addr().String(), "links", config.LinkNames(cfg.Links),
		"probes", cfg.Probe.Targets, "routing", !cfg.Routing.Disabled)
	srv := &http.Server{Handler: a.Handler(), ReadHeaderTimeout: 10 * time.Second}
	g, ctx := errgroup.WithContext(ctx)
	g.Go(func() error { return a.Run(ctx) })
	g.Go(func() error {
		if err := srv.Serve(ln); !errors.Is(err, http.ErrServerClosed) {
			return err
		}
		return nil
	})
	g.Go(func() error {
		<-ctx.Done()
		sctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		srv.Shutdown(sctx)
		srv.Close() // watch streams do not end by themselves
		return nil
	})
	return g.Wait()
}

// Package cli is the misaki-proxy command: it parses flags, sets up the JSON
// logger, loads the configuration and runs the server.
package cli

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"runtime/debug"
	"strings"

	"golang.org/x/sync/errgroup"

	"github.com/misaki-io/misaki/internal/gateway"
	"github.com/misaki-io/misaki/internal/proxy/config"
	"github.com/misaki-io/misaki/internal/proxy/listenfd"
	"github.com/misaki-io/misaki/internal/proxy/server"
	"github.com/misaki-io/misaki/internal/proxy/supervise"
	"github.com/misaki-io/misaki/internal/proxy/xds"
)

// LinkAgentEnv, when set and the config names no linkAgent.address, is the
// node link agent's host:port (the injector sets it from the node's
// address).
const LinkAgentEnv = "MISAKI_LINK_AGENT"

// Version is set at build time with -ldflags "-X ...cli.Version=v1.2.3".
var Version = "dev"

// Run runs misaki-proxy with args (without the program name) until ctx ends.
func Run(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	return RunAs(ctx, "misaki-proxy", args, stdout, stderr)
}

// RunAs is Run for the program named program (misaki-gateway is the same
// program with the shared store linked in): the name its usage, version
// and logs give.
func RunAs(ctx context.Context, program string, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet(program, flag.ContinueOnError)
	fs.SetOutput(stderr)
	cfgPath := fs.String("config", "", "path to the YAML configuration (see docs/config.md)")
	check := fs.Bool("check", false, "validate the configuration and exit")
	version := fs.Bool("version", false, "print the version and exit")
	logFormat := fs.String("log-format", "json", "log format: json or text")
	role := fs.String("role", "", "edge or gateway; overrides the config's role")
	http1 := fs.String("http1-server", "", "lean or stdlib: the edge's HTTP/1.1 server; overrides the config's http1Server")
	http1Up := fs.String("http1-upstream", "", "lean or stdlib: the HTTP/1.1 client to http:// upstreams; overrides the config's http1Upstream")
	supervised := fs.Bool("supervise", false, "edge: bind the listening sockets here and run the proxy as a child that is restarted when it dies, the sockets kept open meanwhile (docs/proxy.md, Supervisor)")
	fs.Usage = func() {
		fmt.Fprintf(stderr, "Usage: %s --config FILE [--role edge|gateway] [--supervise] [--check]\n\nMisaki's offline-aware edge proxy, or (--role gateway) its cloud gateway.\n\n", program)
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return nil
		}
		return err
	}
	if *version {
		fmt.Fprintln(stdout, program, Version)
		return nil
	}
	var cfg *config.Config
	var err error
	over := config.Overrides{Role: *role, Node: nodeFromEnv()}
	switch env := os.Getenv(ConfigEnv); {
	case *cfgPath != "":
		cfg, err = config.LoadWith(*cfgPath, over)
	case env != "":
		// The injected sidecar's config, which needs no ConfigMap.
		*cfgPath = "$" + ConfigEnv
		if cfg, err = config.ParseWith([]byte(env), over); err != nil {
			err = fmt.Errorf("config from $%s: %w", ConfigEnv, err)
		}
	default:
		fs.Usage()
		return fmt.Errorf("--config (or $%s) is required", ConfigEnv)
	}
	if err != nil {
		return err
	}
	if *http1 != "" {
		cfg.HTTP1Server = *http1
		if err := cfg.Validate(); err != nil {
			return fmt.Errorf("--http1-server: %w", err)
		}
	}
	if *http1Up != "" {
		cfg.HTTP1Upstream = *http1Up
		if err := cfg.Validate(); err != nil {
			return fmt.Errorf("--http1-upstream: %w", err)
		}
	}
	if a := os.Getenv(LinkAgentEnv); a != "" && cfg.LinkAgent.Address == "" && cfg.Role == config.RoleEdge {
		// The injected sidecar's: the node's address by the downward API.
		cfg.LinkAgent.Address = a
		if err := cfg.Validate(); err != nil {
			return fmt.Errorf("$%s: %w", LinkAgentEnv, err)
		}
	}
	if *check {
		if err := gateway.CheckBinary(cfg); err != nil {
			return err
		}
		fmt.Fprintf(stdout, "%s: ok (%d routes, %d links)\n", *cfgPath, len(cfg.Routes), len(cfg.Links))
		return nil
	}
	var level slog.Level
	if err := level.UnmarshalText([]byte(cfg.Log.Level)); err != nil {
		return fmt.Errorf("log.level: %w", err)
	}
	hopts := &slog.HandlerOptions{Level: level}
	var h slog.Handler
	switch *logFormat {
	case "json":
		h = slog.NewJSONHandler(stderr, hopts)
	case "text":
		h = slog.NewTextHandler(stderr, hopts)
	default:
		return fmt.Errorf("--log-format %q: use json or text", *logFormat)
	}
	log := slog.New(h).With("app", program, "role", cfg.Role)
	var sockets *listenfd.Set // from the supervisor, or systemd
	if cfg.Role == config.RoleEdge {
		if sockets, err = listenfd.FromEnv(); err != nil {
			return err
		}
	}
	if *supervised {
		if cfg.Role != config.RoleEdge {
			return errors.New("--supervise: only the edge role is supervised")
		}
		return runSupervisor(ctx, cfg, sockets, args, stdout, stderr, log.With("component", "supervisor"))
	}
	if m := cfg.Limits.Memory; m > 0 {
		debug.SetMemoryLimit(int64(m))
		log.Info("soft memory limit", "bytes", int64(m))
	}
	switch gc := cfg.Limits.GCPercent; {
	case gc != 0:
		debug.SetGCPercent(gc)
		log.Info("garbage collector", "gcPercent", gc)
	case cfg.Role == config.RoleGateway && os.Getenv("GOGC") == "":
		debug.SetGCPercent(config.DefaultGatewayGCPercent)
	}
	if cfg.Role == config.RoleGateway {
		gw, err := gateway.New(cfg, log, nil)
		if err != nil {
			return err
		}
		return gw.Run(ctx)
	}
	if cfg.XDS.Server != "" {
		return runXDS(ctx, cfg, sockets, log)
	}
	srv, err := server.New(cfg, log, server.Options{Sockets: sockets})
	if err != nil {
		return err
	}
	return srv.Run(ctx)
}

// The pod's name and namespace, from the downward API in the injected
// sidecar: the default xds.node is $POD_NAMESPACE/$POD_NAME.
const (
	PodNameEnv      = "POD_NAME"
	PodNamespaceEnv = "POD_NAMESPACE"
)

// nodeFromEnv is the xDS node id the environment gives,
// $POD_NAMESPACE/$POD_NAME, or "" when POD_NAME is not set.
func nodeFromEnv() string {
	pod := os.Getenv(PodNameEnv)
	if pod == "" {
		return ""
	}
	return os.Getenv(PodNamespaceEnv) + "/" + pod
}

// ConfigEnv holds the whole YAML config when --config is not given (the
// injection webhook sets it).
const ConfigEnv = "MISAKI_PROXY_CONFIG"

// runXDS runs the edge proxy with its routes from the controller: it
// starts from the routes kept in xds.cache, if any, so that it serves at
// once even when the controller is unreachable, and applies what the
// controller sends from then on.
func runXDS(ctx context.Context, cfg *config.Config, sockets *listenfd.Set, log *slog.Logger) error {
	start := cfg
	cached, err := xds.LoadCache(cfg.XDS.Cache)
	if err != nil {
		log.Error("xds: the kept config is unreadable; starting with no routes until the controller answers", "err", err)
		cached = nil
	}
	var eps map[string][]string
	if cached != nil {
		if start, err = cfg.WithRoutes(cached.Routes); err != nil {
			log.Error("xds: the kept config is invalid; starting with no routes until the controller answers", "err", err)
			start, cached = cfg, nil
		} else {
			eps = cached.Endpoints
			log.Info("xds: starting from the kept config", "cache", cfg.XDS.Cache, "routes", len(cached.Routes), "versions", cached.Versions)
		}
	}
	srv, err := server.New(start, log, server.Options{Endpoints: eps, Sockets: sockets})
	if err != nil {
		return err
	}
	id := xds.IdentityOptions{TokenFile: cfg.XDS.Identity.TokenFile, Server: cfg.XDS.Identity.Server}
	client, err := xds.New(xds.Options{
		Server: cfg.XDS.Server, Node: cfg.XDS.Node, CAFile: cfg.XDS.CAFile, Cache: cfg.XDS.Cache, Identity: id,
		Apply: srv.Apply, Log: log.With("component", "xds"), Version: Version,
	}, cached)
	if err != nil {
		return err
	}
	g, gctx := errgroup.WithContext(ctx)
	g.Go(func() error { return srv.Run(gctx) })
	g.Go(func() error { return client.Run(gctx) })
	return g.Wait()
}

// runSupervisor binds the proxy's sockets (or takes systemd's) and runs
// the proxy, this binary with args less --supervise, as a child that is
// restarted when it dies (internal/proxy/supervise).
func runSupervisor(ctx context.Context, cfg *config.Config, handed *listenfd.Set, args []string, stdout, stderr io.Writer, log *slog.Logger) error {
	files, err := supervise.Bind(cfg, handed)
	if err != nil {
		return err
	}
	log.Info("supervising", supervise.Addrs(files)...)
	return supervise.Run(ctx, supervise.Options{
		Args: withoutSupervise(args), Sockets: files, Stdout: stdout, Stderr: stderr, Log: log,
	})
}

// withoutSupervise drops --supervise (in any of the flag package's
// spellings) from args.
func withoutSupervise(args []string) []string {
	var out []string
	for i, a := range args {
		if a == "--" {
			return append(out, args[i:]...)
		}
		name, _, _ := strings.Cut(strings.TrimLeft(a, "-"), "=")
		if strings.HasPrefix(a, "-") && name == "supervise" {
			continue
		}
		out = append(out, a)
	}
	return out
}

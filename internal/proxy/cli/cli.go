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

	"github.com/misaki-io/misaki/internal/gateway"
	"github.com/misaki-io/misaki/internal/proxy/config"
	"github.com/misaki-io/misaki/internal/proxy/server"
)

// Version is set at build time with -ldflags "-X ...cli.Version=v1.2.3".
var Version = "dev"

// Run runs misaki-proxy with args (without the program name) until ctx ends.
func Run(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("misaki-proxy", flag.ContinueOnError)
	fs.SetOutput(stderr)
	cfgPath := fs.String("config", "", "path to the YAML configuration (see docs/config.md)")
	check := fs.Bool("check", false, "validate the configuration and exit")
	version := fs.Bool("version", false, "print the version and exit")
	logFormat := fs.String("log-format", "json", "log format: json or text")
	role := fs.String("role", "", "edge or gateway; overrides the config's role")
	fs.Usage = func() {
		fmt.Fprintf(stderr, "Usage: misaki-proxy --config FILE [--role edge|gateway] [--check]\n\nMisaki's offline-aware edge proxy, or (--role gateway) its cloud gateway.\n\n")
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return nil
		}
		return err
	}
	if *version {
		fmt.Fprintln(stdout, "misaki-proxy", Version)
		return nil
	}
	if *cfgPath == "" {
		fs.Usage()
		return errors.New("--config is required")
	}
	var cfg *config.Config
	var err error
	if *role != "" {
		cfg, err = config.LoadAs(*cfgPath, *role)
	} else {
		cfg, err = config.Load(*cfgPath)
	}
	if err != nil {
		return err
	}
	if *check {
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
	log := slog.New(h).With("app", "misaki-proxy", "role", cfg.Role)
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
	srv, err := server.New(cfg, log, server.Options{})
	if err != nil {
		return err
	}
	return srv.Run(ctx)
}

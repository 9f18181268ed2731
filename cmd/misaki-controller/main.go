// Command misaki-controller turns Route objects into xDS for Misaki's
// proxies and serves it over ADS (docs/control-plane.md).
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"syscall"

	ctrl "sigs.k8s.io/controller-runtime"

	"github.com/misaki-io/misaki/internal/controller"
	"github.com/misaki-io/misaki/internal/controller/inject"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, os.Args[1:]); err != nil {
		fmt.Fprintln(os.Stderr, "misaki-controller:", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, args []string) error {
	fs := flag.NewFlagSet("misaki-controller", flag.ContinueOnError)
	var o controller.Options
	fs.StringVar(&o.XDSAddr, "xds-addr", ":15010", "address proxies connect to for ADS (gRPC)")
	fs.StringVar(&o.MetricsAddr, "metrics-addr", ":8080", `Prometheus metrics address ("0": off)`)
	fs.StringVar(&o.ProbeAddr, "probe-addr", ":8081", `/healthz and /readyz address ("0": off)`)
	fs.BoolVar(&o.LeaderElection, "leader-elect", false, "elect one replica to write status (every replica serves xDS)")
	fs.StringVar(&o.Namespace, "namespace", os.Getenv("POD_NAMESPACE"), "the controller's namespace, for its leader lease")
	fs.StringVar(&o.WebhookAddr, "webhook-addr", ":9443", `sidecar injection webhook address, HTTPS ("0": off)`)
	injector := fs.String("injector-config", "", "the injector's config file (required with the webhook; docs/control-plane.md)")
	fs.StringVar(&o.WebhookConfig, "webhook-config", "misaki-sidecar-injector", "MutatingWebhookConfiguration whose caBundle the controller keeps")
	fs.StringVar(&o.WebhookSecret, "webhook-secret", "misaki-webhook-tls", "Secret in --namespace that keeps the webhook's CA and certificate")
	fs.StringVar(&o.WebhookService, "webhook-service", "misaki-controller", "the controller's Service, named in the webhook's certificate")
	level := fs.String("log-level", "info", "debug, info, warn or error")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if o.WebhookAddr != "0" {
		if *injector == "" {
			return errors.New(`--injector-config is required with the webhook (or --webhook-addr 0 to run without it)`)
		}
		c, err := inject.LoadConfig(*injector)
		if err != nil {
			return err
		}
		o.Injector = &c
	}
	var lv slog.Level
	if err := lv.UnmarshalText([]byte(*level)); err != nil {
		return fmt.Errorf("--log-level: %w", err)
	}
	o.Log = slog.New(slog.NewJSONHandler(os.Stderr, &slog.HandlerOptions{Level: lv})).With("app", "misaki-controller")
	cfg, err := ctrl.GetConfig()
	if err != nil {
		return err
	}
	return controller.Run(ctx, cfg, o)
}

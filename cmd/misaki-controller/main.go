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
	"time"

	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"

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
	fs.StringVar(&o.WebhookService, "webhook-service", "misaki-controller", "the controller's Service, named in the webhook's certificate (and the xDS endpoints' with --xds-auth mtls)")
	fs.StringVar(&o.XDSAuth, "xds-auth", controller.XDSAuthNone, `how proxies authenticate: "mtls" (a certificate from the controller's CA naming the proxy's pod, which must be its node) or "none" (plaintext, any client reads any namespace's routes: development only)`)
	fs.StringVar(&o.CAAddr, "ca-addr", ":15012", "the certificate endpoint's address (HTTPS), with --xds-auth mtls")
	fs.StringVar(&o.CASecret, "ca-secret", "misaki-ca", "Secret in --namespace that keeps the proxies' CA, with --xds-auth mtls")
	fs.StringVar(&o.TrustDomain, "trust-domain", "cluster.local", "the trust domain of the proxies' SPIFFE IDs")
	fs.DurationVar(&o.CertLifetime, "cert-lifetime", 24*time.Hour, "how long a proxy's certificate lasts; proxies renew half way")
	fs.StringVar(&o.TokenAudience, "token-audience", "misaki", "the audience of the service-account tokens proxies present for a certificate")
	level := fs.String("log-level", "info", "debug, info, warn or error")
	kubeconfig := fs.String("kubeconfig", "", "kubeconfig file (default: $KUBECONFIG, else in-cluster, else ~/.kube/config)")
	kubecontext := fs.String("context", "", "the kubeconfig context to use (default: its current context)")
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
	cfg, err := kubeConfig(*kubeconfig, *kubecontext)
	if err != nil {
		return err
	}
	return controller.Run(ctx, cfg, o)
}

// kubeConfig finds the API server in controller-runtime's order (its
// GetConfig reads only its own global flag, which this FlagSet is not):
// --kubeconfig, else $KUBECONFIG, else the pod's service account, else
// ~/.kube/config. --context picks a context of the file, so it skips the
// in-cluster config, which has none.
func kubeConfig(path, context string) (*rest.Config, error) {
	if path == "" && context == "" && os.Getenv(clientcmd.RecommendedConfigPathEnvVar) == "" {
		if cfg, err := rest.InClusterConfig(); err == nil {
			cfg.QPS = -1 // as GetConfig: the API server's priority and fairness, no client-side limit
			return cfg, nil
		}
	}
	rules := clientcmd.NewDefaultClientConfigLoadingRules()
	rules.ExplicitPath = path
	cfg, err := clientcmd.NewNonInteractiveDeferredLoadingClientConfig(rules,
		&clientcmd.ConfigOverrides{CurrentContext: context}).ClientConfig()
	if clientcmd.IsEmptyConfig(err) {
		return nil, errors.New("no kubeconfig: pass --kubeconfig, set $KUBECONFIG or run in a pod")
	}
	if err != nil {
		return nil, fmt.Errorf("kubeconfig: %w", err)
	}
	if cfg.QPS == 0 {
		cfg.QPS = -1
	}
	return cfg, nil
}

// Command misaki-agent keeps one vehicle's cluster at the desired state the
// hub signed for it, offline for days, and reports back (docs/agent.md).
// With --cloud it applies every vehicle's cloud half in the cloud cluster.
//
//	misaki-agent --hub https://hub.example.com:8443 --hub-ca-file ca.crt \
//	    --bootstrap-token-file token --root-file root.json --state-dir /var/lib/misaki-agent
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
	_ "time/tzdata" // --timezone and the state's "timezone" in images without /usr/share/zoneinfo

	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"

	"github.com/misaki-io/misaki/internal/agent"
)

// version is set at build time (-ldflags "-X main.version=...").
var version = "dev"

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, os.Args[1:]); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			os.Exit(0)
		}
		fmt.Fprintln(os.Stderr, "misaki-agent:", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, args []string) error {
	fs := flag.NewFlagSet("misaki-agent", flag.ContinueOnError)
	var c agent.Config
	fs.StringVar(&c.HubURL, "hub", os.Getenv("MISAKI_HUB_URL"), "the hub, https://host:port (default $MISAKI_HUB_URL)")
	fs.StringVar(&c.HubCAFile, "hub-ca-file", "", "PEM CA bundle for the hub's TLS certificate (added to the system roots)")
	fs.StringVar(&c.BootstrapTokenFile, "bootstrap-token-file", "", "bootstrap token \"<id>.<secret>\", read on the first start only (until enrolled)")
	fs.StringVar(&c.RootFile, "root-file", "", "the pinned trust root (TUF root.json), read on the first start only")
	fs.StringVar(&c.StateDir, "state-dir", "/var/lib/misaki-agent", "key, certificate, trust state, ledger and inventory")
	kubeconfig := fs.String("kubeconfig", "", "kubeconfig file (default: in-cluster, else $KUBECONFIG)")
	fs.BoolVar(&c.Cloud, "cloud", false, "cloud mode: apply every vehicle's cloud half into misaki-v-<vehicle>")
	fs.StringVar(&c.OperatorTokenFile, "operator-token-file", "", "cloud mode: a hub operator token with scope cloud-agent")
	fs.DurationVar(&c.DriftInterval, "drift-interval", 5*time.Minute, "re-apply the last verified state this often, correcting drift")
	fs.DurationVar(&c.HealthDeadline, "health-deadline", 10*time.Minute, "readiness deadline of a deployment whose policy names none")
	fs.DurationVar(&c.PollWait, "poll-wait", 60*time.Second, "long-poll wait")
	fs.StringVar(&c.VehicleState, "vehicle-state", "", "the vehicle's state for rollout gates: a JSON file, or an http:// or https:// URL answering one (empty: none, and every gate fails)")
	fs.DurationVar(&c.VehicleStateMaxAge, "vehicle-state-max-age", 2*time.Minute, "a vehicle state older than this (its \"updated\" member, or the file's mtime) fails every gate; 0: any age")
	fs.StringVar(&c.Timezone, "timezone", "UTC", "the vehicle's IANA time zone for window gates, when its state names none")
	fs.DurationVar(&c.GateInterval, "gate-interval", 15*time.Second, "evaluate the gates of a revision waiting for them this often")
	fs.StringVar(&c.Listen, "listen", ":9441", "address of /metrics, /healthz and /readyz (empty: none)")
	qps := fs.Float64("kube-qps", 50, "requests per second to the Kubernetes API, after the burst")
	burst := fs.Int("kube-burst", 300, "requests to the Kubernetes API allowed at once before --kube-qps applies")
	level := fs.String("log-level", "info", "debug, info, warn or error")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("unexpected argument %q", fs.Arg(0))
	}
	var lv slog.Level
	if err := lv.UnmarshalText([]byte(*level)); err != nil {
		return fmt.Errorf("--log-level: %w", err)
	}
	log := slog.New(slog.NewJSONHandler(os.Stderr, &slog.HandlerOptions{Level: lv})).With("app", "misaki-agent")
	cfg, err := kubeConfig(*kubeconfig)
	if err != nil {
		return err
	}
	cfg.QPS, cfg.Burst = float32(*qps), *burst
	c.Kube, c.Version = cfg, version
	err = agent.Run(ctx, c, log)
	if errors.Is(err, context.Canceled) {
		return nil
	}
	return err
}

// kubeConfig is --kubeconfig, else the in-cluster config, else
// $KUBECONFIG or ~/.kube/config.
func kubeConfig(path string) (*rest.Config, error) {
	if path == "" {
		if cfg, err := rest.InClusterConfig(); err == nil {
			return cfg, nil
		}
	}
	rules := clientcmd.NewDefaultClientConfigLoadingRules()
	if path != "" {
		rules.ExplicitPath = path
	}
	cfg, err := clientcmd.NewNonInteractiveDeferredLoadingClientConfig(rules, nil).ClientConfig()
	if err != nil {
		return nil, fmt.Errorf("kubernetes config: %w", err)
	}
	return cfg, nil
}

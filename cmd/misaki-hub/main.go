// Command misaki-hub is the orchestrator's cloud hub: chart catalog,
// vehicles, deployments, per-vehicle rendering and placement, signed
// desired state, the digital twin API (docs/hub.md) and the web UI at /ui/
// (docs/ui.md).
//
//	misaki-hub [flags]                 serve (SQLite in ./misaki-hub-data with no flags)
//	misaki-hub keys init --dir DIR     make the first trust root and keys (to keep the root key offline)
//	misaki-hub keys rotate --dir DIR   rotate a key where the root key is (offline root)
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
	"time"

	"github.com/misaki-io/misaki/api/v1alpha1"
	"github.com/misaki-io/misaki/internal/hub"
	"github.com/misaki-io/misaki/internal/trust"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, os.Args[1:]); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			os.Exit(0)
		}
		fmt.Fprintln(os.Stderr, "misaki-hub:", err)
		os.Exit(1)
	}
}

type stringsFlag []string

func (s *stringsFlag) String() string     { return strings.Join(*s, ",") }
func (s *stringsFlag) Set(v string) error { *s = append(*s, v); return nil }

func run(ctx context.Context, args []string) error {
	if len(args) >= 2 && args[0] == "keys" && args[1] == "rotate" {
		return rotate(args[2:])
	}
	if len(args) >= 2 && args[0] == "keys" && args[1] == "init" {
		return initKeys(args[2:])
	}
	fs := flag.NewFlagSet("misaki-hub", flag.ContinueOnError)
	var c hub.Config
	var hosts, roots stringsFlag
	var gwTLS v1alpha1.UpstreamTLS
	fs.StringVar(&c.DataDir, "data-dir", "misaki-hub-data", "directory for the SQLite database, PKI, keys and the first admin token")
	fs.StringVar(&c.Listen, "listen", ":8443", "HTTPS address of the API")
	fs.StringVar(&c.Database, "database", os.Getenv("MISAKI_HUB_DATABASE"), "store: empty (SQLite in --data-dir), sqlite://<path>, or a postgres:// DSN (default $MISAKI_HUB_DATABASE)")
	fs.Var(&hosts, "host", "a name or IP for the hub's certificate (repeat; default localhost, 127.0.0.1, ::1 and the host name); the first is the URL written to misaki.yaml")
	fs.Var(&roots, "local-chart-root", "a directory local chart sources may be under (repeat; default: anywhere)")
	fs.StringVar(&c.TLSCertFile, "tls-cert-file", "", "serve this certificate instead of one from the fleet CA")
	fs.StringVar(&c.TLSKeyFile, "tls-key-file", "", "the key of --tls-cert-file")
	fs.StringVar(&c.CACertFile, "ca-cert-file", "", "fleet CA certificate (default: made in --data-dir/pki)")
	fs.StringVar(&c.CAKeyFile, "ca-key-file", "", "fleet CA key")
	fs.StringVar(&c.KeysDir, "keys-dir", "", "trust roots and signing keys (default --data-dir/keys; replicas share it)")
	fs.StringVar(&c.GatewayURL, "gateway-url", "", "cloud gateway URL the vehicle's Routes to cloud-placed components use (https://host:port)")
	fs.StringVar(&gwTLS.CAFile, "gateway-ca-file", "", "path, in the vehicle proxy's pod, of the gateway's CA")
	fs.StringVar(&gwTLS.CertFile, "gateway-cert-file", "", "path, in the vehicle proxy's pod, of the vehicle's client certificate")
	fs.StringVar(&gwTLS.KeyFile, "gateway-key-file", "", "path, in the vehicle proxy's pod, of the vehicle's client key")
	fs.DurationVar(&c.DesiredTTL, "desired-ttl", 14*24*time.Hour, "validity of signed desired revisions (re-issued at half)")
	fs.DurationVar(&c.API.OnlineWindow, "online-window", 90*time.Second, "a vehicle seen within this is online")
	fs.DurationVar(&c.API.CertTTL, "cert-ttl", 90*24*time.Hour, "validity of vehicle certificates")
	fs.DurationVar(&c.API.TokenTTL, "token-ttl", 24*time.Hour, "default validity of bootstrap tokens")
	fs.DurationVar(&c.API.MaxWait, "max-wait", 5*time.Minute, "longest long-poll wait")
	fs.StringVar(&c.Replica, "replica", os.Getenv("POD_NAME"), "this replica's name in the issuing lease (default $POD_NAME, else host:pid)")
	webUI := fs.Bool("ui", true, "serve the web UI at /ui/ (docs/ui.md); --ui=false turns it off")
	level := fs.String("log-level", "info", "debug, info, warn or error")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("unexpected argument %q (subcommands: keys init, keys rotate)", fs.Arg(0))
	}
	c.Hosts, c.LocalChartRoots, c.NoUI = hosts, roots, !*webUI
	if gwTLS != (v1alpha1.UpstreamTLS{}) {
		c.GatewayTLS = &gwTLS
	}
	var lv slog.Level
	if err := lv.UnmarshalText([]byte(*level)); err != nil {
		return fmt.Errorf("--log-level: %w", err)
	}
	log := slog.New(slog.NewJSONHandler(os.Stderr, &slog.HandlerOptions{Level: lv})).With("app", "misaki-hub")
	return hub.Run(ctx, c, log)
}

// rotate is misaki-hub keys rotate: run Rotate where the keys are (an
// offline root key never reaches the hub). Running hubs load the new root
// within seconds.
func rotate(args []string) error {
	fs := flag.NewFlagSet("misaki-hub keys rotate", flag.ContinueOnError)
	dir := fs.String("dir", "misaki-hub-data/keys", "the key directory (the hub's --keys-dir)")
	role := fs.String("role", "targets", "targets (the online signing key) or root")
	if err := fs.Parse(args); err != nil {
		return err
	}
	v, err := trust.Rotate(*dir, *role, time.Now())
	if err != nil {
		return err
	}
	fmt.Printf("rotated the %s key: root version %d\n", *role, v)
	return nil
}

// initKeys is misaki-hub keys init: the first root and keys, made where the
// root key will stay; copy root/ and the targets key to the hub's
// --keys-dir (or its Secret) and keep keys/root-*.pem offline.
func initKeys(args []string) error {
	fs := flag.NewFlagSet("misaki-hub keys init", flag.ContinueOnError)
	dir := fs.String("dir", "misaki-hub-data/keys", "the key directory to create")
	var o trust.InitOptions
	fs.IntVar(&o.RootKeys, "root-keys", 1, "number of root keys")
	fs.IntVar(&o.RootThreshold, "root-threshold", 1, "root signatures a new root needs")
	fs.IntVar(&o.TargetsKeys, "targets-keys", 1, "number of targets (signing) keys")
	fs.IntVar(&o.TargetsThreshold, "targets-threshold", 1, "targets signatures a desired state needs")
	fs.DurationVar(&o.RootExpiry, "root-expiry", trust.DefaultRootExpiry, "validity of root version 1")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if err := trust.Init(*dir, time.Now(), o); err != nil {
		return err
	}
	fmt.Printf("trust root in %s (an existing root is left as it was)\n", *dir)
	return nil
}

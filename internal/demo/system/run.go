package system

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/go-logr/logr"
	ctrllog "sigs.k8s.io/controller-runtime/pkg/log"

	"github.com/misaki-io/misaki/internal/demo"
	"github.com/misaki-io/misaki/internal/demo/proc"
	"github.com/misaki-io/misaki/internal/localcluster"
)

// The demo's fleet.
const (
	hiVehicle  = "car-hi" // 8 CPU, 16Gi: inference fits
	loVehicle  = "car-lo" // 2 CPU, 4Gi: inference goes to the cloud
	cloudName  = "cloud"
	deployName = "uploader"
	appNS      = "apps" // the deployment's namespace on the vehicles
	fleetLabel = "fleet=demo"
)

var clusterSpecs = []clusterSpec{
	{Name: cloudName, Node: "cloud-node-1", CPU: "32", Memory: "64Gi"},
	{Name: hiVehicle, Node: "hi-node-1", CPU: "8", Memory: "16Gi", RouteCRD: true},
	{Name: loVehicle, Node: "lo-node-1", CPU: "2", Memory: "4Gi", RouteCRD: true},
}

// stopGrace is how long a child gets to stop before SIGKILL.
const stopGrace = 5 * time.Second

// run is one run of the demo: what it started and where.
type run struct {
	cfg  Config
	log  *slog.Logger
	con  *console
	dir  string
	ps   *proc.Group
	chk  *checks
	rss  *rssPeak
	ctrl struct{ xds, probe string }

	hub      *hub
	clusters map[string]*localcluster.Cluster
	gateway  *gatewayRun
	gwAddr   string // host:port
	gwAdmin  string
	infAddr  string
	relays   map[string]*relay     // by vehicle: its link to the hub
	agents   map[string]*proc.Proc // by vehicle, and cloudName
	edge     struct{ mesh, admin, dns string }
	edgeProc *proc.Proc

	mu   sync.Mutex // guards live
	live bool       // print the live summary
}

// Run runs the whole-system demo, printing to out, until it ends or ctx
// does. Every child process and cluster is stopped, and the temporary
// directory removed (unless Keep), before it returns. It returns
// ErrChecksFailed when a check failed.
func Run(ctx context.Context, log *slog.Logger, cfg Config, out io.Writer) (err error) {
	cfg.setDefaults()
	if err := cfg.Validate(); err != nil {
		return err
	}
	if err := cfg.checkFiles(); err != nil {
		return err
	}
	if cfg.Self == "" {
		if cfg.Self, err = os.Executable(); err != nil {
			return fmt.Errorf("system demo: find own executable: %w", err)
		}
	}
	for _, p := range []*string{&cfg.BinDir, &cfg.Assets, &cfg.CRDFile} {
		if *p, err = filepath.Abs(*p); err != nil {
			return err
		}
	}
	// envtest (under localcluster) logs through controller-runtime's logger.
	ctrllog.SetLogger(logr.FromSlogHandler(log.Handler()))
	dir, err := os.MkdirTemp("", "misaki-system-demo-")
	if err != nil {
		return fmt.Errorf("system demo: %w", err)
	}
	con := &console{w: out, start: time.Now()}
	d := &run{cfg: cfg, log: log, con: con, dir: dir, chk: &checks{con: con}, rss: &rssPeak{},
		relays: map[string]*relay{}, agents: map[string]*proc.Proc{}}
	defer func() {
		if cfg.Keep {
			con.printf("kept %s (configs, logs, state)\n", dir)
			return
		}
		if rerr := os.RemoveAll(dir); rerr != nil {
			log.Warn("removing the temporary directory", "dir", dir, "err", rerr)
		}
	}()
	if err := os.MkdirAll(filepath.Join(dir, "logs"), 0o700); err != nil {
		return fmt.Errorf("system demo: %w", err)
	}
	d.ps = &proc.Group{Dir: filepath.Join(dir, "logs")}
	// Deferred calls run last first: processes stop before the clusters
	// they talk to, and the relays after the agents.
	defer func() {
		stopClusters(d.clusters)
	}()
	defer func() {
		for _, r := range d.relays {
			r.Close()
		}
	}()
	defer func() {
		if serr := d.ps.StopAll(stopGrace); serr != nil {
			log.Warn("stopping children", "err", serr)
		}
	}()

	bg, stopBG := context.WithCancel(ctx)
	var wg sync.WaitGroup
	defer func() { stopBG(); wg.Wait() }()
	wg.Go(func() { d.rss.run(bg) })
	wg.Go(func() { d.showLive(bg) })

	con.printf("misaki system demo: the hub, a cloud cluster and two vehicle clusters, agents, gateway, controller and proxies on loopback\nfiles and logs in %s\n\n", dir)
	storyErr := d.story(ctx)
	d.setLive(false)
	if ctx.Err() != nil {
		return fmt.Errorf("system demo: interrupted: %w", ctx.Err())
	}
	if storyErr != nil {
		d.chk.add("the story ran to its end", false, storyErr.Error())
	}
	if !cfg.SkipMesh {
		d.mesh(ctx)
		if ctx.Err() != nil {
			return fmt.Errorf("system demo: interrupted: %w", ctx.Err())
		}
	}
	_, _, peakP, peak := d.rss.get()
	con.printf("\nran %v; peak memory of the demo and everything it started: %s over %d processes\n",
		time.Since(con.start).Round(time.Second), mib(peak), peakP)
	ok := d.chk.report()
	if cfg.Hold && ctx.Err() == nil {
		d.holdOpen(ctx)
	}
	if !ok {
		return ErrChecksFailed
	}
	return nil
}

// holdOpen keeps everything running until ctx ends.
func (d *run) holdOpen(ctx context.Context) {
	if d.hub != nil {
		d.con.printf("\neverything keeps running until Ctrl-C: UI %s/ui/ (token in %s), misaki --config %s twin %s\n",
			d.hub.URL, filepath.Join(d.dir, "hub", "admin.token"), d.hub.CLIConfig, loVehicle)
	}
	<-ctx.Done()
}

// mesh runs the data plane's scenarios (package demo) and records their
// checks.
func (d *run) mesh(ctx context.Context) {
	cfg := demo.Config{ProxyBin: filepath.Join(d.cfg.BinDir, "misaki-proxy"), Speed: d.cfg.Speed, Self: d.cfg.Self, Keep: d.cfg.Keep}
	for _, sc := range []demo.Scenario{demo.OfflineHold(d.cfg.Speed), demo.OfflineSpool(d.cfg.Speed)} {
		d.con.printf("\n== data plane: %s (speed %v) ==\n", sc.Name, d.cfg.Speed)
		res, err := demo.RunScenarioChecks(ctx, d.log, cfg, sc, d.con.w)
		if err != nil {
			d.chk.add("data plane, "+sc.Name+": ran", false, err.Error())
			continue
		}
		d.chk.addAll("data plane, "+sc.Name+": ", res)
	}
}

// freePorts picks n free loopback ports. They are released before the
// children bind them, so another process could take one in between; the
// child then fails to start and says so.
func freePorts(n int) ([]string, error) {
	addrs := make([]string, n)
	for i := range addrs {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return nil, fmt.Errorf("system demo: pick a free port: %w", err)
		}
		defer ln.Close() // hold all until all are picked, so they differ
		addrs[i] = ln.Addr().String()
	}
	return addrs, nil
}

// startProc runs bin in dir (empty: the demo's) with extra environment.
func (d *run) startProc(name, dir string, env []string, bin string, args ...string) (*proc.Proc, error) {
	cmd := exec.Command(bin, args...)
	cmd.Dir = dir
	if len(env) > 0 {
		cmd.Env = append(os.Environ(), env...)
	}
	return d.ps.StartCmd(name, cmd)
}

func (d *run) bin(name string) string { return filepath.Join(d.cfg.BinDir, name) }

// writeFile writes a file of the run, creating its directory.
func writeFile(path string, b []byte) error {
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return err
	}
	return os.WriteFile(path, b, 0o600)
}

// errs joins non-nil errors into one line.
func errs(list ...error) error {
	var s []string
	for _, e := range list {
		if e != nil {
			s = append(s, e.Error())
		}
	}
	if len(s) == 0 {
		return nil
	}
	return errors.New(strings.Join(s, "; "))
}

// Package system runs the whole-system demo (make demo): the hub, a cloud
// cluster and two vehicle clusters (each a real kube-apiserver, etcd,
// kube-controller-manager, kube-scheduler and kwok nodes), an agent per
// vehicle, the cloud agent, the gateway, the controller and an edge proxy,
// all real processes on loopback. It plays the story of docs/demo.md: a
// CAN-data uploader rolled out to a high-spec and a low-spec vehicle, then
// replaced by a video pipeline whose inference runs on the high-spec
// vehicle and in the cloud for the low-spec one, reached through the
// gateway by the same name; a vehicle cut off during a rollout that
// converges when it returns; then the data plane's hold and spool
// scenarios (package demo). It prints a live summary and a PASS/FAIL line
// per check.
//
// The orchestrator builds nothing: it runs the binaries in Config.BinDir
// and re-executes its own binary for the apps (the uploader, the
// inference server) and for the gateway's private /etc/hosts.
package system

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"github.com/misaki-io/misaki/internal/localcluster"
)

// ErrChecksFailed is returned by Run when at least one check failed; the
// report says which.
var ErrChecksFailed = errors.New("system demo: checks failed")

// Config configures a run. The zero value runs from the repository's root
// with the binaries in bin/ and the kube binaries where hack/kube-tools.sh
// puts them.
type Config struct {
	// BinDir holds misaki-hub, misaki-agent, misaki-proxy and
	// misaki-controller. Default bin.
	BinDir string
	// Self is the misaki-demo binary (the apps and the gateway's wrapper).
	// Default: the running executable.
	Self string
	// Assets holds kube-apiserver, etcd, kube-controller-manager,
	// kube-scheduler and kwok. Default: $KUBEBUILDER_ASSETS, else
	// $HOME/.cache/misaki/k8s/v1.37.2.
	Assets string
	// CRDFile is the Route CRD installed in the vehicle clusters (what
	// charts/misaki installs). Default config/crd/mesh.misaki.io_routes.yaml.
	CRDFile string
	// Speed multiplies the data-plane scenarios' times. Default 0.5.
	Speed float64
	// Keep leaves the temporary directory (configs, logs, state) in place.
	Keep bool
	// Hold keeps everything running after the checks, until interrupted,
	// to look around (the UI, the twin, the clusters).
	Hold bool
	// SkipMesh skips the data plane's hold and spool scenarios.
	SkipMesh bool
	// Timeout bounds each wait for convergence. Default 90s.
	Timeout time.Duration
}

func (c *Config) setDefaults() {
	if c.BinDir == "" {
		c.BinDir = "bin"
	}
	if c.Assets == "" {
		c.Assets = localcluster.DefaultAssets()
	}
	if c.CRDFile == "" {
		c.CRDFile = filepath.Join("config", "crd", "mesh.misaki.io_routes.yaml")
	}
	if c.Speed == 0 {
		c.Speed = 0.5
	}
	if c.Timeout == 0 {
		c.Timeout = 90 * time.Second
	}
}

// Validate checks the configuration without doing I/O.
func (c *Config) Validate() error {
	if c.Speed < 0.1 || c.Speed > 10 {
		return fmt.Errorf("system demo: --speed %v: use a factor between 0.1 and 10", c.Speed)
	}
	if c.Timeout < 0 {
		return fmt.Errorf("system demo: --timeout %v must not be negative", c.Timeout)
	}
	return nil
}

// binaries are the programs the demo runs from BinDir.
var binaries = []string{"misaki-hub", "misaki-agent", "misaki-proxy", "misaki-controller"}

// checkFiles returns an error naming what is missing and how to get it.
func (c *Config) checkFiles() error {
	for _, b := range binaries {
		if _, err := os.Stat(filepath.Join(c.BinDir, b)); err != nil {
			return fmt.Errorf("system demo: %w; build the binaries with: make build (or pass --bin-dir)", err)
		}
	}
	if b := localcluster.Missing(c.Assets); b != "" {
		return fmt.Errorf("system demo: no %s in %s: run KUBE_TOOLS_CLUSTER=1 hack/kube-tools.sh (about 10 minutes, once), or pass --assets", b, c.Assets)
	}
	if _, err := os.Stat(c.CRDFile); err != nil {
		return fmt.Errorf("system demo: the Route CRD: %w; run from the repository's root or pass --crd", err)
	}
	return nil
}

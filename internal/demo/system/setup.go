package system

import (
	"context"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/misaki-io/misaki/internal/demo/proc"
	"github.com/misaki-io/misaki/internal/localcluster"
)

// Files in each vehicle's directory that its edge proxy names relative to
// its working directory, as a sidecar names files mounted in its pod: the
// hub writes these paths into the vehicles' Routes to the gateway
// (--gateway-ca-file, --gateway-cert-file, --gateway-key-file). The
// client certificate is the one the agent enrolled for: identity.pem holds
// its key and certificate, which is the vehicle's identity at the gateway.
const (
	vehicleGatewayCA = "gateway-ca.pem"
	vehicleIdentity  = "agent/identity.pem"
)

// setUp starts everything the story needs: the three clusters (in the
// background, as they take longest), the hub, the gateway, the inference
// stand-in, the vehicles and their bootstrap tokens, the agents, and on
// car-lo the controller and the uploader's edge proxy.
func (d *run) setUp(ctx context.Context) (err error) {
	ports, err := freePorts(8)
	if err != nil {
		return err
	}
	d.gwAddr, d.gwAdmin, d.infAddr, d.ctrl.xds, d.ctrl.probe = ports[0], ports[1], ports[2], ports[3], ports[4]
	d.edge.mesh, d.edge.admin, d.edge.dns = ports[5], ports[6], ports[7]

	type started struct {
		cs   map[string]*localcluster.Cluster
		err  error
		took time.Duration
	}
	cc := make(chan started, 1)
	t0 := time.Now()
	var desc []string
	for _, s := range clusterSpecs {
		desc = append(desc, fmt.Sprintf("%s (%s CPU, %s)", s.Name, s.CPU, s.Memory))
	}
	d.con.say("starting 3 clusters, each kube-apiserver + etcd + kube-controller-manager + kube-scheduler + a kwok node: %s",
		strings.Join(desc, ", "))
	if note := etcdNote(d.cfg.Assets); note != "" {
		d.con.say("NOTE %s", note)
	}
	go func() {
		cs, err := startClusters(ctx, d.cfg.Assets, filepath.Join(d.dir, "clusters"), d.cfg.CRDFile, clusterSpecs)
		cc <- started{cs, err, time.Since(t0)}
	}()
	waited := false
	waitClusters := func() error {
		waited = true
		r := <-cc
		d.clusters = r.cs
		if r.err != nil {
			return r.err
		}
		n, rss := treeRSS()
		d.con.say("clusters up in %.1fs (the Route CRD installed in both vehicles); %d processes, %s so far",
			r.took.Seconds(), n, mib(rss))
		return nil
	}
	defer func() {
		if !waited {
			waitClusters() // so that Run's cleanup stops them
		}
	}()

	// The hub, while the clusters start.
	if err := writeCharts(filepath.Join(d.dir, "charts")); err != nil {
		return fmt.Errorf("write the charts: %w", err)
	}
	d.hub, err = startHub(ctx, d.ps, d.bin("misaki-hub"), filepath.Join(d.dir, "hub"), hubFlags{
		GatewayURL:    "https://" + d.gwAddr,
		GatewayCAFile: vehicleGatewayCA, GatewayCert: vehicleIdentity, GatewayKey: vehicleIdentity,
	})
	if err != nil {
		return err
	}
	d.con.say("hub %s: SQLite in %s (log %s)", d.hub.URL, filepath.Join(d.dir, "hub"), d.hub.Proc.Log)
	d.con.printf("        web UI: %s/ui/  (log in with the operator token %s; the hub's CA is %s)\n",
		d.hub.URL, d.hub.Token, d.hub.CAFile)

	// The inference stand-in and the gateway in front of it.
	inf, err := d.startProc("inference", "", nil, d.cfg.Self, "inference", "--listen", d.infAddr)
	if err != nil {
		return err
	}
	client := &http.Client{Timeout: 2 * time.Second, Transport: &http.Transport{Proxy: nil}}
	defer client.CloseIdleConnections()
	if err := poll(ctx, 20*time.Second, inf, func() error { return getOK(ctx, client, "http://"+d.infAddr+"/stats") }); err != nil {
		return fmt.Errorf("inference: %w", err)
	}
	var cloudHosts []string
	for _, v := range []string{hiVehicle, loVehicle} {
		cloudHosts = append(cloudHosts, "inference.misaki-v-"+v+".svc.cluster.local")
	}
	d.gateway, err = startGateway(ctx, d.ps, d.cfg.Self, d.bin("misaki-proxy"), gatewayPlan{
		Dir: filepath.Join(d.dir, "gateway"), Listen: d.gwAddr, Admin: d.gwAdmin, ClientCAFile: d.hub.CAFile,
		Inference: d.infAddr, CloudHosts: cloudHosts,
		FallbackHosts: []string{"inference." + appNS + ".svc.cluster.local", "inference." + appNS + ".svc", "inference." + appNS},
	})
	if err != nil {
		return err
	}
	if d.gateway.VehicleServices {
		d.con.say("gateway https://%s (mutual TLS with vehicle certificates from the hub's CA): a vehicle's call to a cloud Service goes to its own namespace misaki-v-<vehicle>; the cloud cluster's DNS for it is a private /etc/hosts naming the inference process %s (log %s)",
			d.gwAddr, d.infAddr, d.gateway.Proc.Log)
	} else {
		d.con.say("gateway https://%s (mutual TLS): NOTE this machine gave the gateway no private /etc/hosts (%s), so a static route to the inference process %s stands in for its vehicleServices mapping (log %s)",
			d.gwAddr, d.gateway.Note, d.infAddr, d.gateway.Proc.Log)
	}

	// The operator's part: a chart source, the vehicles, their tokens.
	d.con.say("the operator registers the charts and the vehicles:")
	if _, err := d.hub.misaki(ctx, d.con, false, "repo", "add", "demo", filepath.Join(d.dir, "charts"), "--type", "local"); err != nil {
		return err
	}
	for _, v := range []struct{ id, spec string }{{hiVehicle, "high"}, {loVehicle, "low"}} {
		if _, err := d.hub.misaki(ctx, d.con, false, "vehicle", "create", v.id, "--label", fleetLabel, "--label", "spec="+v.spec); err != nil {
			return err
		}
		tok, err := d.hub.misaki(ctx, d.con, true, "vehicle", "token", v.id)
		if err != nil {
			return err
		}
		if err := writeFile(filepath.Join(d.dir, v.id, "token"), []byte(strings.TrimSpace(tok)+"\n")); err != nil {
			return err
		}
	}
	root, err := d.hub.misaki(ctx, d.con, true, "keys", "root", "1")
	if err != nil {
		return err
	}
	if err := writeFile(filepath.Join(d.dir, "root.json"), []byte(root)); err != nil {
		return err
	}
	tok, err := d.hub.misaki(ctx, d.con, true, "token", "create", "cloud-agent", "--scope", "cloud-agent")
	if err != nil {
		return err
	}
	if err := writeFile(filepath.Join(d.dir, cloudName, "token"), []byte(strings.TrimSpace(tok)+"\n")); err != nil {
		return err
	}
	d.con.printf("        (bootstrap tokens in %s/<vehicle>/token, the pinned root in %s)\n", d.dir, filepath.Join(d.dir, "root.json"))

	if err := waitClusters(); err != nil {
		return err
	}
	return d.startVehicles(ctx)
}

// startVehicles starts an agent per vehicle (through its link to the hub),
// the cloud agent, and on car-lo the controller and the uploader's edge
// proxy.
func (d *run) startVehicles(ctx context.Context) error {
	gwCA, err := os.ReadFile(d.gateway.CAFile)
	if err != nil {
		return err
	}
	for _, v := range []string{hiVehicle, loVehicle} {
		r, err := newRelay(d.hub.Addr)
		if err != nil {
			return err
		}
		d.relays[v] = r
		vdir := filepath.Join(d.dir, v)
		if err := writeFile(filepath.Join(vdir, vehicleGatewayCA), gwCA); err != nil {
			return err
		}
		p, err := d.startProc("agent-"+v, "", nil, d.bin("misaki-agent"),
			"--hub", "https://"+r.Addr(), "--hub-ca-file", d.hub.CAFile,
			"--bootstrap-token-file", filepath.Join(vdir, "token"), "--root-file", filepath.Join(d.dir, "root.json"),
			"--state-dir", filepath.Join(vdir, "agent"), "--kubeconfig", d.clusters[v].Kubeconfig,
			"--listen", "127.0.0.1:0", "--poll-wait", "30s")
		if err != nil {
			return err
		}
		d.agents[v] = p
		d.con.say("agent %s: enrols with its bootstrap token, pins root.json, applies to cluster %s; its link to the hub goes through a relay the demo can cut (%s → %s) (log %s)",
			v, v, r.Addr(), d.hub.Addr, p.Log)
	}
	cdir := filepath.Join(d.dir, cloudName)
	p, err := d.startProc("agent-cloud", "", nil, d.bin("misaki-agent"), "--cloud",
		"--hub", d.hub.URL, "--hub-ca-file", d.hub.CAFile,
		"--operator-token-file", filepath.Join(cdir, "token"), "--root-file", filepath.Join(d.dir, "root.json"),
		"--state-dir", filepath.Join(cdir, "agent"), "--kubeconfig", d.clusters[cloudName].Kubeconfig,
		"--listen", "127.0.0.1:0", "--poll-wait", "30s")
	if err != nil {
		return err
	}
	d.agents[cloudName] = p
	d.con.say("cloud agent (--cloud, a cloud-agent token): applies every vehicle's cloud half into misaki-v-<vehicle> in cluster cloud (log %s)", p.Log)

	// car-lo's mesh: the controller serves its Routes over xDS to the
	// uploader's edge proxy.
	client := &http.Client{Timeout: 2 * time.Second, Transport: &http.Transport{Proxy: nil}}
	defer client.CloseIdleConnections()
	ctrl, err := d.startProc("controller-"+loVehicle, "", []string{"KUBECONFIG=" + d.clusters[loVehicle].Kubeconfig},
		d.bin("misaki-controller"), "--xds-addr", d.ctrl.xds, "--probe-addr", d.ctrl.probe,
		"--metrics-addr", "0", "--webhook-addr", "0", "--namespace", "misaki-system")
	if err != nil {
		return err
	}
	// The controller registers /healthz only (its /readyz answers 404).
	if err := poll(ctx, 30*time.Second, ctrl, func() error { return getOK(ctx, client, "http://"+d.ctrl.probe+"/healthz") }); err != nil {
		return fmt.Errorf("controller: %w", err)
	}
	vdir := filepath.Join(d.dir, loVehicle)
	cfg := fmt.Sprintf(`# Written by misaki-demo: the edge proxy of car-lo's camera-uploader pod.
listen: %s
admin: %s
spool: {dir: %s}
xds: {server: %s, node: %s/camera-uploader-0}
dns: {listen: %s}
`, d.edge.mesh, d.edge.admin, filepath.Join(vdir, "proxy"), d.ctrl.xds, appNS, d.edge.dns)
	cfgPath := filepath.Join(vdir, "proxy.yaml")
	if err := writeFile(cfgPath, []byte(cfg)); err != nil {
		return err
	}
	// The proxy runs in the vehicle's directory: the Routes name the
	// gateway's CA and the vehicle's certificate relative to it.
	edge, err := d.startProc("proxy-"+loVehicle, vdir, nil, d.bin("misaki-proxy"), "--config", cfgPath)
	if err != nil {
		return err
	}
	if err := poll(ctx, 20*time.Second, edge, func() error { return getOK(ctx, client, "http://"+d.edge.admin+"/readyz") }); err != nil {
		return fmt.Errorf("edge proxy: %w", err)
	}
	d.edgeProc = edge
	d.con.say("car-lo mesh: misaki-controller on cluster car-lo serves namespace %s's Routes over xDS (%s) to the uploader's edge proxy (mesh %s, DNS %s, admin %s) (logs %s, %s)",
		appNS, d.ctrl.xds, d.edge.mesh, d.edge.dns, d.edge.admin, ctrl.Log, edge.Log)
	return nil
}

// agentOf is the agent that applies vehicle v's half.
func (d *run) agentOf(v, half string) *proc.Proc {
	if half == "cloud" {
		return d.agents[cloudName]
	}
	return d.agents[v]
}

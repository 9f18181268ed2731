package system

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"

	"github.com/misaki-io/misaki/internal/demo/proc"
	"github.com/misaki-io/misaki/internal/devpki"
)

// gatewayPlan is what the gateway is started with.
type gatewayPlan struct {
	Dir          string // its config, certificates and key store
	Listen       string // host:port, vehicles' mutual TLS
	Admin        string // host:port
	ClientCAFile string // the hub's fleet CA: vehicles' certificates
	// Inference is the address of the process standing for every cloud
	// inference Service, and CloudHosts the cluster DNS names of those
	// Services in the vehicles' cloud namespaces.
	Inference  string
	CloudHosts []string
	// FallbackHosts are the names the vehicles call, for the static route
	// used when the gateway cannot have its own /etc/hosts.
	FallbackHosts []string
}

// gatewayRun is the running gateway.
type gatewayRun struct {
	Proc   *proc.Proc
	CAFile string // the CA of its certificate, which edge proxies trust
	// VehicleServices is true when the gateway maps Service names to the
	// calling vehicle's cloud namespace (gateway.vehicleServices); false
	// when a static route stands in (see startGateway).
	VehicleServices bool
	Note            string // why not, when not
}

// startGateway runs misaki-proxy --role gateway. The gateway maps a
// vehicle's call to inference.apps.svc.cluster.local to the Service
// inference in the vehicle's cloud namespace, and dials
// inference.misaki-v-<vehicle>.svc.cluster.local, a name only the cloud
// cluster's DNS knows. There is no cluster DNS on loopback, so the gateway
// runs in a mount namespace of its own whose /etc/hosts maps those names to
// the inference process (`misaki-demo with-hosts`; the gateway's tests
// stand in for the cluster's DNS the same way). Where the kernel refuses
// that (no user namespaces for this user), a static route to the
// inference process stands in for vehicleServices, and Note says so.
func startGateway(ctx context.Context, ps *proc.Group, self, proxyBin string, p gatewayPlan) (*gatewayRun, error) {
	if err := os.MkdirAll(p.Dir, 0o700); err != nil {
		return nil, fmt.Errorf("gateway: %w", err)
	}
	pki, err := devpki.Write(p.Dir, "unused")
	if err != nil {
		return nil, fmt.Errorf("gateway: certificates: %w", err)
	}
	run := &gatewayRun{CAFile: pki.CA}
	hosts := filepath.Join(p.Dir, "hosts")
	var hb strings.Builder
	hb.WriteString("# Written by misaki-demo: the cloud cluster's DNS, for the gateway only.\n127.0.0.1 localhost\n")
	for _, h := range p.CloudHosts {
		fmt.Fprintf(&hb, "127.0.0.1 %s\n", h)
	}
	if err := os.WriteFile(hosts, []byte(hb.String()), 0o644); err != nil {
		return nil, fmt.Errorf("gateway: %w", err)
	}
	port := portOf(p.Inference)
	common := fmt.Sprintf(`# Written by misaki-demo: the cloud gateway.
role: gateway
listen: %s
admin: %s
gateway:
  tls: {certFile: %s, keyFile: %s, clientCAFile: %s}
  idempotency: {dir: %s}
`, p.Listen, p.Admin, pki.ServerCert, pki.ServerKey, p.ClientCAFile, filepath.Join(p.Dir, "keys"))
	// {port} would be the Service's port; every cloud Service here is the
	// one inference process, so its port is written in.
	vs := common + fmt.Sprintf(`  vehicleServices:
    upstream: "http://{service}.{namespace}.svc.{clusterDomain}:%s"
`, port)
	static := common + fmt.Sprintf(`routes:
  - name: cloud-inference
    hosts: [%s]
    upstream: http://%s
`, strings.Join(p.FallbackHosts, ", "), p.Inference)

	client := &http.Client{Timeout: 2 * time.Second, Transport: &http.Transport{Proxy: nil}}
	defer client.CloseIdleConnections()
	ready := func(pr *proc.Proc) error {
		return poll(ctx, 20*time.Second, pr, func() error { return getOK(ctx, client, "http://"+p.Admin+"/readyz") })
	}

	vsPath := filepath.Join(p.Dir, "gateway.yaml")
	if err := os.WriteFile(vsPath, []byte(vs), 0o600); err != nil {
		return nil, fmt.Errorf("gateway: %w", err)
	}
	ns, nsErr := mountNamespace()
	if attr, err := hostsSysProcAttr(); err != nil || nsErr != nil {
		run.Note = errors.Join(err, nsErr).Error()
	} else {
		cmd := exec.Command(self, "with-hosts", "--hosts", hosts, "--parent-mount-ns", ns, "--", proxyBin, "--config", vsPath)
		cmd.SysProcAttr = attr
		pr, err := ps.StartCmd("gateway", cmd)
		if err != nil {
			run.Note = err.Error()
		} else if err := ready(pr); err != nil {
			if !pr.Exited() {
				return nil, fmt.Errorf("gateway: %w", err)
			}
			b, _ := os.ReadFile(pr.Log)
			run.Note = strings.TrimSpace(lastLine(string(b)))
		} else {
			run.Proc, run.VehicleServices = pr, true
			return run, nil
		}
	}
	staticPath := filepath.Join(p.Dir, "gateway-static.yaml")
	if err := os.WriteFile(staticPath, []byte(static), 0o600); err != nil {
		return nil, fmt.Errorf("gateway: %w", err)
	}
	pr, err := ps.Start("gateway-static", proxyBin, "--config", staticPath)
	if err != nil {
		return nil, err
	}
	if err := ready(pr); err != nil {
		return nil, fmt.Errorf("gateway: %w", err)
	}
	run.Proc = pr
	return run, nil
}

// getOK GETs url and wants 200.
func getOK(ctx context.Context, c *http.Client, url string) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return err
	}
	resp, err := c.Do(req)
	if err != nil {
		return err
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("GET %s: %s", url, resp.Status)
	}
	return nil
}

func lastLine(s string) string {
	s = strings.TrimRight(s, "\n")
	if i := strings.LastIndexByte(s, '\n'); i >= 0 {
		return s[i+1:]
	}
	return s
}

//go:build linux

package xdsbench

import (
	"cmp"
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"golang.org/x/sync/errgroup"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/envtest"

	"github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	meshv1 "github.com/misaki-io/misaki/api/v1alpha1"
	"github.com/misaki-io/misaki/internal/controller"
	"github.com/misaki-io/misaki/internal/proxy/config"
	"github.com/misaki-io/misaki/internal/proxy/xds"
	"github.com/misaki-io/misaki/internal/waitfor"
)

func envInt(name string, def int) int {
	if v, err := strconv.Atoi(os.Getenv(name)); err == nil && v > 0 {
		return v
	}
	return def
}

// fleet is the proxies' view: for each proxy, when it applied each
// generation of the changing route.
type fleet struct {
	mu     sync.Mutex // guards seen
	seen   []map[int]time.Time
	full   []time.Time // when proxy i first had every route
	routes int
	fullN  atomic.Int64
	genN   []atomic.Int64 // per generation, proxies that have it
}

// record notes that proxy i has n complete routes and generation gen of
// the changing one.
func (f *fleet) record(i, n, gen int) {
	now := time.Now()
	f.mu.Lock()
	defer f.mu.Unlock()
	if n == f.routes && f.full[i].IsZero() {
		f.full[i] = now
		f.fullN.Add(1)
	}
	if _, ok := f.seen[i][gen]; !ok && gen >= 0 && gen < len(f.genN) {
		f.seen[i][gen] = now
		f.genN[gen].Add(1)
	}
}

// generation is encoded in the changing route's pathPrefix: /g<N>.
func generation(rs []config.Route) int {
	for _, r := range rs {
		if r.Name == "r0" && len(r.Matches) > 0 {
			if n, err := strconv.Atoi(strings.TrimPrefix(r.Matches[0].PathPrefix, "/g")); err == nil {
				return n
			}
		}
	}
	return -1
}

func BenchmarkControlPlane(b *testing.B) {
	proxies, namespaces, routes, changes := envInt("PROXIES", 1000), envInt("NAMESPACES", 10), envInt("ROUTES", 100), envInt("CHANGES", 20)
	real := os.Getenv("CLIENT") == "real"
	b.Logf("simulated proxies: %s", map[bool]string{true: "the proxy's own xDS client (decodes, applies, keeps the config)", false: "light ADS clients (decode the messages, ACK)"}[real])
	assets := os.Getenv("KUBEBUILDER_ASSETS")
	if assets == "" {
		home, _ := os.UserHomeDir()
		assets = filepath.Join(home, ".cache/misaki/k8s/v1.37.2")
	}
	if _, err := os.Stat(filepath.Join(assets, "kube-apiserver")); err != nil {
		b.Skipf("no kube-apiserver in %s: run hack/kube-tools.sh", assets)
	}
	bin := filepath.Join(b.TempDir(), "misaki-controller")
	if out, err := exec.Command("go", "build", "-o", bin, "../../cmd/misaki-controller").CombinedOutput(); err != nil {
		b.Fatalf("build: %v\n%s", err, out)
	}
	env := &envtest.Environment{CRDDirectoryPaths: []string{"../../config/crd"}, ErrorIfCRDPathMissing: true, BinaryAssetsDirectory: assets}
	cfg, err := env.Start()
	if err != nil {
		b.Fatal(err)
	}
	defer env.Stop()
	cfg.QPS, cfg.Burst = 1000, 2000
	c, err := client.New(cfg, client.Options{Scheme: controller.Scheme()})
	if err != nil {
		b.Fatal(err)
	}
	user, err := env.AddUser(envtest.User{Name: "controller", Groups: []string{"system:masters"}}, nil)
	if err != nil {
		b.Fatal(err)
	}
	kubeconfig, err := user.KubeConfig()
	if err != nil {
		b.Fatal(err)
	}
	kcPath := filepath.Join(b.TempDir(), "kubeconfig")
	if err := os.WriteFile(kcPath, kubeconfig, 0o600); err != nil {
		b.Fatal(err)
	}
	ctx := context.Background()

	// The cluster: namespaces of Services with 10 ready endpoints each and
	// a Route to each.
	b.Logf("creating %d namespaces x %d routes (Service, EndpointSlice, Route each)", namespaces, routes)
	start := time.Now()
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(32)
	ready := true
	for n := range namespaces {
		ns := fmt.Sprintf("ns%d", n)
		if err := c.Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}); err != nil {
			b.Fatal(err)
		}
		for r := range routes {
			name := fmt.Sprintf("r%d", r)
			g.Go(func() error {
				var eps []discoveryv1.Endpoint
				for e := range 10 {
					eps = append(eps, discoveryv1.Endpoint{Addresses: []string{fmt.Sprintf("10.%d.%d.%d", n, r, e+1)}, Conditions: discoveryv1.EndpointConditions{Ready: &ready}})
				}
				port := int32(8080)
				objs := []client.Object{
					&corev1.Service{ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: ns},
						// Headless: envtest's service range has 256 addresses.
						Spec: corev1.ServiceSpec{ClusterIP: corev1.ClusterIPNone, Ports: []corev1.ServicePort{{Name: "http", Port: 80}}}},
					&discoveryv1.EndpointSlice{ObjectMeta: metav1.ObjectMeta{Name: name + "-1", Namespace: ns, Labels: map[string]string{discoveryv1.LabelServiceName: name}},
						AddressType: discoveryv1.AddressTypeIPv4, Endpoints: eps,
						Ports: []discoveryv1.EndpointPort{{Name: ptr("http"), Port: &port}}},
					&meshv1.Route{ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: ns}, Spec: meshv1.RouteSpec{
						Hosts:       []meshv1.Host{meshv1.Host(name + ".mesh")},
						Matches:     []meshv1.Match{{PathPrefix: "/g0"}},
						Destination: meshv1.Destination{Service: &meshv1.ServiceDestination{Name: name, Port: 80}},
						Offline:     &meshv1.Offline{Hold: "30s", Links: []meshv1.LinkClass{"wifi", "ethernet"}, Metered: "deny"},
					}},
				}
				for _, o := range objs {
					if err := c.Create(gctx, o); err != nil {
						return err
					}
				}
				return nil
			})
		}
	}
	if err := g.Wait(); err != nil {
		b.Fatal(err)
	}
	b.Logf("created in %v", time.Since(start).Round(time.Millisecond))

	// The controller, as a process of its own.
	xdsAddr := freeAddr(b)
	level := cmp.Or(os.Getenv("CONTROLLER_LOG"), "warn")
	cmd := exec.Command(bin, "--xds-addr", xdsAddr, "--metrics-addr", "0", "--probe-addr", "0", "--webhook-addr", "0", "--log-level", level)
	cmd.Env = append(os.Environ(), "KUBECONFIG="+kcPath)
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		b.Fatal(err)
	}
	defer func() { cmd.Process.Signal(os.Interrupt); cmd.Wait() }()
	pid := cmd.Process.Pid

	// One probe proxy waits for the controller to have every namespace.
	cacheDir, err := os.MkdirTemp("/dev/shm", "xdsbench-") // the kept configs, off the disk: one fsync each is not the controller's cost
	if err != nil {
		cacheDir = b.TempDir()
	}
	defer os.RemoveAll(cacheDir)
	quiet := slog.New(slog.NewTextHandler(io.Discard, nil))
	runCtx, stopClients := context.WithCancel(ctx)
	defer stopClients()
	for n := range namespaces {
		got := make(chan struct{})
		var once sync.Once
		cl, _ := xds.New(xds.Options{Server: xdsAddr, Node: fmt.Sprintf("ns%d/probe", n), Cache: filepath.Join(cacheDir, fmt.Sprintf("probe%d", n)), Log: quiet,
			Apply: func(_ context.Context, rs []config.Route, _ map[string][]string) error {
				if len(rs) == routes {
					once.Do(func() { close(got) })
				}
				return nil
			}}, nil)
		pctx, cancel := context.WithCancel(ctx)
		go cl.Run(pctx)
		select {
		case <-got:
		case <-time.After(2 * time.Minute):
			b.Fatalf("namespace ns%d never reached %d routes", n, routes)
		}
		cancel()
	}
	b.Logf("controller ready: RSS %s", rss(pid))

	// Full push: the fleet connects at once.
	f := &fleet{routes: routes, seen: make([]map[int]time.Time, proxies), full: make([]time.Time, proxies), genN: make([]atomic.Int64, changes+1)}
	cpu0, self0 := cpuTime(pid), selfCPU()
	t0 := time.Now()
	for i := range proxies {
		f.seen[i] = map[int]time.Time{}
		node := fmt.Sprintf("ns%d/p%d", i%namespaces, i)
		if real {
			cl, err := xds.New(xds.Options{Server: xdsAddr, Node: node, Cache: filepath.Join(cacheDir, strconv.Itoa(i)), Log: quiet,
				Apply: func(_ context.Context, rs []config.Route, _ map[string][]string) error {
					f.record(i, len(rs), generation(rs))
					return nil
				}}, nil)
			if err != nil {
				b.Fatal(err)
			}
			go cl.Run(runCtx)
			continue
		}
		conn, err := grpc.NewClient(xdsAddr, grpc.WithTransportCredentials(insecure.NewCredentials()))
		if err != nil {
			b.Fatal(err)
		}
		defer conn.Close()
		go lightProxy(runCtx, conn, node, func(n, gen int) { f.record(i, n, gen) })
	}
	waitfor.Within(b, 2*time.Minute, "every proxy has every route", func() bool { return f.fullN.Load() == int64(proxies) })
	var fulls []time.Duration
	for _, t := range f.full {
		fulls = append(fulls, t.Sub(t0))
	}
	slices.Sort(fulls)
	cpuPush, selfPush := cpuTime(pid)-cpu0, selfCPU()-self0
	rssPush := rss(pid)
	b.Logf("full push: %d proxies x %d routes: last proxy complete after %v (p50 %v, p99 %v); controller CPU %v; the simulated proxies' CPU %v; controller RSS %s",
		proxies, routes, fulls[len(fulls)-1].Round(time.Millisecond), pct(fulls, 50), pct(fulls, 99), cpuPush.Round(time.Millisecond), selfPush.Round(time.Millisecond), rssPush)
	b.ReportMetric(fulls[len(fulls)-1].Seconds(), "full-push-s")

	// Route changes: r0 in every namespace gets a new pathPrefix.
	var lat []time.Duration
	cpu0, self0 = cpuTime(pid), selfCPU()
	for gen := 1; gen <= changes; gen++ {
		issued := make([]time.Time, namespaces)
		g, gctx := errgroup.WithContext(ctx)
		for n := range namespaces {
			g.Go(func() error {
				var r meshv1.Route
				if err := c.Get(gctx, client.ObjectKey{Namespace: fmt.Sprintf("ns%d", n), Name: "r0"}, &r); err != nil {
					return err
				}
				r.Spec.Matches = []meshv1.Match{{PathPrefix: fmt.Sprintf("/g%d", gen)}}
				issued[n] = time.Now()
				return c.Update(gctx, &r)
			})
		}
		if err := g.Wait(); err != nil {
			b.Fatal(err)
		}
		waitfor.Within(b, time.Minute, fmt.Sprintf("every proxy has generation %d", gen), func() bool { return f.genN[gen].Load() == int64(proxies) })
		f.mu.Lock()
		for i := range proxies {
			lat = append(lat, f.seen[i][gen].Sub(issued[i%namespaces]))
		}
		f.mu.Unlock()
	}
	cpuChanges, selfChanges := cpuTime(pid)-cpu0, selfCPU()-self0
	slices.Sort(lat)
	b.Logf("route change -> proxy applied: %d samples (%d changes x %d proxies): p50 %v, p99 %v, max %v; controller CPU %v, the simulated proxies' %v, for all changes",
		len(lat), changes, proxies, pct(lat, 50), pct(lat, 99), lat[len(lat)-1].Round(time.Millisecond), cpuChanges.Round(time.Millisecond), selfChanges.Round(time.Millisecond))
	b.Logf("controller RSS after: %s", rss(pid))
	b.ReportMetric(pct(lat, 99).Seconds()*1000, "change-p99-ms")
}

func pct(d []time.Duration, p int) time.Duration {
	i := (len(d)*p + 99) / 100
	i = min(max(i-1, 0), len(d)-1)
	return d[i].Round(time.Millisecond)
}

// rss is the process's resident and peak resident memory.
func rss(pid int) string {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return "?"
	}
	var cur, peak string
	for _, l := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(l, "VmRSS:"); ok {
			cur = strings.TrimSpace(v)
		}
		if v, ok := strings.CutPrefix(l, "VmHWM:"); ok {
			peak = strings.TrimSpace(v)
		}
	}
	return cur + " (peak " + peak + ")"
}

// cpuTime is the process's user plus system CPU time.
func cpuTime(pid int) time.Duration {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0
	}
	f := strings.Fields(string(b[strings.LastIndexByte(string(b), ')')+2:]))
	u, _ := strconv.Atoi(f[11])
	s, _ := strconv.Atoi(f[12])
	return time.Duration(u+s) * time.Second / 100 // USER_HZ
}

// selfCPU is this process's CPU time: the simulated proxies', which share
// the machine's two cores with the controller, kube-apiserver and etcd.
func selfCPU() time.Duration {
	var ru syscall.Rusage
	syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

func freeAddr(b *testing.B) string {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

func ptr[T any](v T) *T { return &v }

var subscriptions = []string{resource.ClusterType, resource.EndpointType, resource.ListenerType, resource.RouteType}

// lightProxy is a simulated proxy as xDS load tests have them: it keeps an
// ADS stream, decodes each response (the RouteConfiguration down to its
// virtual hosts) and ACKs it, and reports how many routes are complete and
// which generation of r0 it has. It costs the controller what a proxy
// costs it, and this process far less than a whole proxy.
func lightProxy(ctx context.Context, conn *grpc.ClientConn, node string, report func(n, gen int)) {
	ads := discoveryv3.NewAggregatedDiscoveryServiceClient(conn)
	for ctx.Err() == nil {
		stream, err := ads.StreamAggregatedResources(ctx)
		if err != nil {
			time.Sleep(100 * time.Millisecond)
			continue
		}
		n := &corev3.Node{Id: node}
		for _, t := range subscriptions {
			if err := stream.Send(&discoveryv3.DiscoveryRequest{Node: n, TypeUrl: t}); err != nil {
				break
			}
		}
		counts := map[string]int{}
		gen := -1
		for {
			resp, err := stream.Recv()
			if err != nil {
				break
			}
			t := resp.GetTypeUrl()
			counts[t] = len(resp.GetResources())
			if t == resource.RouteType {
				counts[t], gen = 0, -1
				for _, a := range resp.GetResources() {
					var rc routev3.RouteConfiguration
					if err := a.UnmarshalTo(&rc); err != nil {
						continue
					}
					counts[t] += len(rc.GetVirtualHosts())
					for _, vh := range rc.GetVirtualHosts() {
						if vh.GetName() == "r0" && len(vh.GetRoutes()) > 0 {
							p := vh.GetRoutes()[0].GetMatch().GetPathSeparatedPrefix()
							if g, err := strconv.Atoi(strings.TrimPrefix(p, "/g")); err == nil {
								gen = g
							}
						}
					}
				}
			}
			if err := stream.Send(&discoveryv3.DiscoveryRequest{Node: n, TypeUrl: t, VersionInfo: resp.GetVersionInfo(), ResponseNonce: resp.GetNonce()}); err != nil {
				break
			}
			complete := counts[resource.RouteType]
			for _, t := range []string{resource.ClusterType, resource.EndpointType} {
				complete = min(complete, counts[t])
			}
			if counts[resource.ListenerType] == 0 {
				complete = 0
			}
			report(complete, gen)
		}
	}
}

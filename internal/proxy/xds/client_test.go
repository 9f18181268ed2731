package xds_test

import (
	"context"
	"io"
	"log/slog"
	"net"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	discoverygrpc "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"github.com/envoyproxy/go-control-plane/pkg/cache/types"
	cachev3 "github.com/envoyproxy/go-control-plane/pkg/cache/v3"
	"github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	serverv3 "github.com/envoyproxy/go-control-plane/pkg/server/v3"
	"google.golang.org/grpc"
	"google.golang.org/protobuf/proto"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	meshv1 "github.com/misaki-io/misaki/api/v1alpha1"
	"github.com/misaki-io/misaki/internal/controller/translate"
	"github.com/misaki-io/misaki/internal/proxy/config"
	"github.com/misaki-io/misaki/internal/proxy/xds"
	"github.com/misaki-io/misaki/internal/waitfor"
)

// adsServer is go-control-plane's real ADS server on loopback, recording
// the proxies' NACKs.
type adsServer struct {
	cache cachev3.SnapshotCache
	addr  string
	mu    sync.Mutex
	nacks []string
}

func startADS(t *testing.T) *adsServer {
	t.Helper()
	a := &adsServer{cache: cachev3.NewSnapshotCache(true, cachev3.IDHash{}, nil)}
	cb := serverv3.CallbackFuncs{StreamRequestFunc: func(_ int64, req *discoverygrpc.DiscoveryRequest) error {
		if d := req.GetErrorDetail(); d != nil {
			a.mu.Lock()
			a.nacks = append(a.nacks, req.GetTypeUrl()+": "+d.GetMessage()+" (version "+req.GetVersionInfo()+")")
			a.mu.Unlock()
		}
		return nil
	}}
	ctx, cancel := context.WithCancel(context.Background())
	gs := grpc.NewServer()
	discoverygrpc.RegisterAggregatedDiscoveryServiceServer(gs, serverv3.NewServer(ctx, a.cache, cb))
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go gs.Serve(ln)
	t.Cleanup(func() { cancel(); gs.Stop() })
	a.addr = ln.Addr().String()
	return a
}

func (a *adsServer) set(t *testing.T, version string, res map[resource.Type][]types.Resource) {
	t.Helper()
	snap, err := cachev3.NewSnapshot(version, res)
	if err != nil {
		t.Fatal(err)
	}
	if err := snap.Consistent(); err != nil {
		t.Fatal(err)
	}
	if err := a.cache.SetSnapshot(context.Background(), "apps/p1", snap); err != nil {
		t.Fatal(err)
	}
}

func (a *adsServer) nacked() []string {
	a.mu.Lock()
	defer a.mu.Unlock()
	return append([]string(nil), a.nacks...)
}

// runClient runs a client with o as node apps/p1 until the test ends, and
// returns the channel its Apply sends each config it applies to.
func runClient(t *testing.T, o xds.Options) <-chan []config.Route {
	t.Helper()
	applied := make(chan []config.Route, 10)
	o.Node = "apps/p1"
	o.Apply = func(_ context.Context, routes []config.Route, _ map[string][]string) error {
		applied <- routes
		return nil
	}
	c, err := xds.New(o, nil)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- c.Run(ctx) }()
	t.Cleanup(func() { cancel(); <-done })
	return applied
}

func urlRoute(name, host, url string) meshv1.Route {
	return meshv1.Route{ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: "apps"}, Spec: meshv1.RouteSpec{
		Hosts: []meshv1.Host{meshv1.Host(host)}, Destination: meshv1.Destination{URL: url},
		Offline: &meshv1.Offline{Hold: "3s", Priority: 2}}}
}

// TestClientAgainstGoControlPlane runs the client against go-control-plane's
// server: a config is applied and kept, an invalid one is NACKed with the
// reason and changes nothing, and the next valid one is applied.
func TestClientAgainstGoControlPlane(t *testing.T) {
	ads := startADS(t)
	v1 := translate.Namespace(translate.Input{Namespace: "apps", Routes: []meshv1.Route{urlRoute("a", "a.mesh", "http://10.0.0.1:80")}})
	ads.set(t, "v1", v1.Resources)

	cache := filepath.Join(t.TempDir(), "xds.yaml")
	applied := runClient(t, xds.Options{Server: ads.addr, Cache: cache, Log: slog.New(slog.NewTextHandler(io.Discard, nil))})

	next := func(what string) []config.Route {
		t.Helper()
		select {
		case r := <-applied:
			return r
		case <-time.After(10 * time.Second):
			t.Fatalf("no config applied: %s; NACKs: %v", what, ads.nacked())
			return nil
		}
	}
	got := next("v1")
	if len(got) != 1 || got[0].Name != "a" || got[0].Upstream != "http://10.0.0.1:80" || got[0].Offline.Hold != config.Duration(3*time.Second) {
		t.Fatalf("v1 applied %+v", got)
	}
	waitfor.True(t, "the kept config", func() bool {
		s, err := xds.LoadCache(cache)
		return err == nil && s != nil && len(s.Routes) == 1 && s.Routes[0].Name == "a"
	})

	// v2: a virtual host routing to two clusters, which a Misaki route
	// cannot do. go-control-plane finds it consistent; the proxy refuses it.
	bad := translate.Namespace(translate.Input{Namespace: "apps", Routes: []meshv1.Route{
		urlRoute("a", "a.mesh", "http://10.0.0.1:80"), urlRoute("b", "b.mesh", "http://10.0.0.2:80")}})
	rc := proto.Clone(bad.Resources[resource.RouteType][0]).(*routev3.RouteConfiguration)
	vh := rc.VirtualHosts[0]
	second := proto.Clone(vh.Routes[0]).(*routev3.Route)
	second.Match = &routev3.RouteMatch{PathSpecifier: &routev3.RouteMatch_Path{Path: "/other"}}
	second.GetRoute().ClusterSpecifier = &routev3.RouteAction_Cluster{Cluster: bad.Resources[resource.ClusterType][1].(*clusterv3.Cluster).Name}
	vh.Routes = []*routev3.Route{second, vh.Routes[0]}
	bad.Resources[resource.RouteType] = []types.Resource{rc}
	ads.set(t, "v2", bad.Resources)
	waitfor.True(t, "a NACK", func() bool { return len(ads.nacked()) > 0 })
	if n := ads.nacked()[0]; !strings.Contains(n, "one destination") || !strings.Contains(n, "RouteConfiguration") {
		t.Errorf("NACK = %q, want the reason, for the route configuration", n)
	}
	select {
	case r := <-applied:
		t.Fatalf("the invalid config was applied: %+v", r)
	case <-time.After(200 * time.Millisecond):
	}

	// v3: valid again, with a second route.
	v3 := translate.Namespace(translate.Input{Namespace: "apps", Routes: []meshv1.Route{
		urlRoute("a", "a.mesh", "http://10.0.0.1:80"), urlRoute("b", "b.mesh", "http://10.0.0.2:80")}})
	ads.set(t, "v3", v3.Resources)
	for {
		got = next("v3")
		if len(got) == 2 {
			break
		}
	}
	if got[1].Name != "b" || got[1].Upstream != "http://10.0.0.2:80" {
		t.Errorf("v3 applied %+v", got)
	}
}

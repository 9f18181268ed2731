// Package translate turns a namespace's Routes, Services and EndpointSlices
// into the xDS resources its proxies receive, and into each Route's status.
// It is pure: no client, no clock, no I/O; golden files under testdata/
// pin its output.
//
// Every Route goes through the proxy's own route model on the way
// (proxyRoute, then Config.WithRoutes to validate it and xds.RouteOptions
// to write it), so a Route the controller accepts is one the proxy
// accepts: a proxy NACK then means a version skew, not a Route the
// controller should have refused.
//
// The resources, for a namespace:
//
//	Listener "misaki-mesh": an HTTP connection manager using RDS "misaki-routes"
//	RouteConfiguration "misaki-routes": a virtual host per accepted Route,
//	    named for it, with its hosts as domains, a route entry per match,
//	    and the fields Envoy has no place for (offline policy, probe,
//	    limits, upstream URL, TLS) as a TypedStruct under "misaki.io/route"
//	Cluster "<namespace>/<route>": EDS for a Service, LOGICAL_DNS for a URL
//	ClusterLoadAssignment "<namespace>/<route>": the Service port's endpoints
package translate

import (
	"fmt"
	"net"
	"net/url"
	"slices"
	"sort"
	"strconv"
	"strings"

	xdstypev3 "github.com/cncf/xds/go/xds/type/v3"
	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	endpointv3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	routerv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/router/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	matcherv3 "github.com/envoyproxy/go-control-plane/envoy/type/matcher/v3"
	"github.com/envoyproxy/go-control-plane/pkg/cache/types"
	"github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/durationpb"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	meshv1 "github.com/misaki-io/misaki/api/v1alpha1"
	"github.com/misaki-io/misaki/internal/proxy/config"
	"github.com/misaki-io/misaki/internal/proxy/xds"
)

// Resource names.
const (
	ListenerName = "misaki-mesh"
	RoutesName   = "misaki-routes"
)

// Input is what the translation of one namespace reads.
type Input struct {
	Namespace string
	Routes    []meshv1.Route
	Services  []corev1.Service
	Slices    []discoveryv1.EndpointSlice
}

// Result is one Route's outcome.
type Result struct {
	Accepted     metav1.ConditionStatus
	Reason       string
	Message      string
	ResolvedRefs metav1.ConditionStatus
	RefsReason   string
	RefsMessage  string
}

// Output is the namespace's resources and each Route's result, by name.
type Output struct {
	Resources map[resource.Type][]types.Resource
	Results   map[string]Result
}

// Namespace translates one namespace.
func Namespace(in Input) Output {
	out := Output{Results: map[string]Result{}}
	routes := slices.Clone(in.Routes)
	// Older Routes keep their hosts when a newer one asks for them too.
	sort.SliceStable(routes, func(i, j int) bool {
		a, b := routes[i].CreationTimestamp, routes[j].CreationTimestamp
		if !a.Equal(&b) {
			return a.Before(&b)
		}
		return routes[i].Name < routes[j].Name
	})
	owner := map[string]string{}
	var (
		vhosts    []*routev3.VirtualHost
		clusters  []types.Resource
		endpoints []types.Resource
	)
	for _, r := range routes {
		res := Result{Accepted: metav1.ConditionTrue, Reason: meshv1.ReasonAccepted, Message: "published to the namespace's proxies",
			ResolvedRefs: metav1.ConditionTrue, RefsReason: "ResolvedRefs", RefsMessage: "the destination resolves"}
		if taken := conflicts(r, owner); taken != "" {
			res.Accepted, res.Reason, res.Message = metav1.ConditionFalse, meshv1.ReasonHostConflict, taken
			res.ResolvedRefs, res.RefsReason, res.RefsMessage = metav1.ConditionUnknown, "NotAccepted", "not checked"
			out.Results[r.Name] = res
			continue
		}
		t, err := route(in, r)
		if err != nil {
			res.Accepted, res.Reason, res.Message = metav1.ConditionFalse, meshv1.ReasonInvalid, strings.ReplaceAll(err.Error(), "routes[0].", "spec.")
			res.ResolvedRefs, res.RefsReason, res.RefsMessage = metav1.ConditionUnknown, "NotAccepted", "not checked"
			out.Results[r.Name] = res
			continue
		}
		if t.refsErr != "" {
			res.ResolvedRefs, res.RefsReason, res.RefsMessage = metav1.ConditionFalse, t.refsReason, t.refsErr
		}
		for _, h := range r.Spec.Hosts {
			owner[string(h)] = r.Name
		}
		vhosts = append(vhosts, t.vhost)
		clusters = append(clusters, t.cluster)
		if t.cla != nil {
			endpoints = append(endpoints, t.cla)
		}
		out.Results[r.Name] = res
	}
	sort.Slice(vhosts, func(i, j int) bool { return vhosts[i].Name < vhosts[j].Name })
	out.Resources = map[resource.Type][]types.Resource{
		resource.ListenerType: {listener()},
		resource.RouteType:    {&routev3.RouteConfiguration{Name: RoutesName, VirtualHosts: vhosts}},
		resource.ClusterType:  clusters,
		resource.EndpointType: endpoints,
	}
	return out
}

// conflicts returns why r cannot have its hosts, or "".
func conflicts(r meshv1.Route, owner map[string]string) string {
	for _, h := range r.Spec.Hosts {
		if o, ok := owner[string(h)]; ok {
			return fmt.Sprintf("host %s is already served by Route %s, which is older; a host belongs to one Route", h, o)
		}
	}
	return ""
}

type translated struct {
	vhost      *routev3.VirtualHost
	cluster    *clusterv3.Cluster
	cla        *endpointv3.ClusterLoadAssignment
	refsReason string
	refsErr    string
}

// validator checks routes as a proxy with the injected defaults would.
var validator = func() *config.Config {
	c := &config.Config{Spool: config.Spool{Dir: "/var/lib/misaki"}}
	c.SetDefaults()
	return c
}()

// route translates one Route, or says why it is invalid.
func route(in Input, r meshv1.Route) (translated, error) {
	var t translated
	clusterName := in.Namespace + "/" + r.Name
	pr, err := proxyRoute(in, r)
	if err != nil {
		return t, err
	}
	checked, err := validator.WithRoutes([]config.Route{pr})
	if err != nil {
		return t, err
	}
	// The options carry what the Route sets, not the defaults: a proxy
	// takes those from its own config (limits.maxBodyBytes).
	opts, err := xds.RouteOptions(pr)
	if err != nil {
		return t, err
	}
	pr = checked.Routes[0]

	ts, err := pack(&xdstypev3.TypedStruct{TypeUrl: xds.RouteOptionsType, Value: opts})
	if err != nil {
		return t, err
	}
	action := &routev3.Route_Route{Route: &routev3.RouteAction{
		ClusterSpecifier: &routev3.RouteAction_Cluster{Cluster: clusterName},
		Timeout:          durationpb.New(pr.Timeouts.Request.D()),
	}}
	vh := &routev3.VirtualHost{
		Name:                 r.Name,
		Domains:              pr.Hosts,
		TypedPerFilterConfig: map[string]*anypb.Any{xds.RouteOptionsKey: ts},
	}
	for _, m := range pr.Matches {
		rm := &routev3.RouteMatch{PathSpecifier: &routev3.RouteMatch_Prefix{Prefix: "/"}}
		switch {
		case m.Path != "":
			rm.PathSpecifier = &routev3.RouteMatch_Path{Path: m.Path}
		case m.PathPrefix != "":
			rm.PathSpecifier = &routev3.RouteMatch_PathSeparatedPrefix{PathSeparatedPrefix: strings.TrimSuffix(m.PathPrefix, "/")}
		}
		for _, h := range m.Headers {
			rm.Headers = append(rm.Headers, &routev3.HeaderMatcher{Name: h.Name,
				HeaderMatchSpecifier: &routev3.HeaderMatcher_StringMatch{StringMatch: &matcherv3.StringMatcher{
					MatchPattern: &matcherv3.StringMatcher_Exact{Exact: h.Value}}}})
		}
		vh.Routes = append(vh.Routes, &routev3.Route{Match: rm, Action: action})
	}
	if len(vh.Routes) == 0 {
		vh.Routes = []*routev3.Route{{Match: &routev3.RouteMatch{PathSpecifier: &routev3.RouteMatch_Prefix{Prefix: "/"}}, Action: action}}
	}
	t.vhost = vh

	c := &clusterv3.Cluster{Name: clusterName, ConnectTimeout: durationpb.New(pr.Timeouts.Connect.D())}
	if r.Spec.Destination.Service != nil {
		c.ClusterDiscoveryType = &clusterv3.Cluster_Type{Type: clusterv3.Cluster_EDS}
		c.EdsClusterConfig = &clusterv3.Cluster_EdsClusterConfig{
			EdsConfig:   &corev3.ConfigSource{ConfigSourceSpecifier: &corev3.ConfigSource_Ads{Ads: &corev3.AggregatedConfigSource{}}},
			ServiceName: clusterName,
		}
		t.cla = serviceEndpoints(in, r, clusterName, &t)
	} else {
		u, _ := url.Parse(pr.Upstream) // validated above
		port := u.Port()
		if port == "" {
			port = map[string]string{"https": "443"}[u.Scheme]
			if port == "" {
				port = "80"
			}
		}
		p, _ := strconv.Atoi(port)
		c.ClusterDiscoveryType = &clusterv3.Cluster_Type{Type: clusterv3.Cluster_LOGICAL_DNS}
		c.LoadAssignment = &endpointv3.ClusterLoadAssignment{ClusterName: clusterName, Endpoints: []*endpointv3.LocalityLbEndpoints{{
			LbEndpoints: []*endpointv3.LbEndpoint{lbEndpoint(u.Hostname(), uint32(p), corev3.HealthStatus_UNKNOWN)}}}}
	}
	t.cluster = c
	return t, nil
}

func findService(in Input, name string) *corev1.Service {
	for i := range in.Services {
		if in.Services[i].Name == name {
			return &in.Services[i]
		}
	}
	return nil
}

// serviceEndpoints is the load assignment of a Service port: the
// endpoints of its EndpointSlices, ready ones healthy, terminating ones
// draining, others unhealthy.
func serviceEndpoints(in Input, r meshv1.Route, name string, t *translated) *endpointv3.ClusterLoadAssignment {
	cla := &endpointv3.ClusterLoadAssignment{ClusterName: name}
	sd := r.Spec.Destination.Service
	svc := findService(in, sd.Name)
	if svc == nil {
		t.refsReason, t.refsErr = meshv1.ReasonServiceNotFound, fmt.Sprintf("Service %s/%s does not exist; requests are held or refused by the offline policy until it does", in.Namespace, sd.Name)
		return cla
	}
	var sp *corev1.ServicePort
	for i := range svc.Spec.Ports {
		if svc.Spec.Ports[i].Port == sd.Port {
			sp = &svc.Spec.Ports[i]
		}
	}
	if sp == nil {
		t.refsReason, t.refsErr = "PortNotFound", fmt.Sprintf("Service %s has no port %d", sd.Name, sd.Port)
		return cla
	}
	var lbs []*endpointv3.LbEndpoint
	ready := 0
	// The cache lists slices in no fixed order; sorted, the same
	// endpoints give the same assignment.
	sorted := slices.Clone(in.Slices)
	sort.Slice(sorted, func(i, j int) bool { return sorted[i].Name < sorted[j].Name })
	for _, es := range sorted {
		if es.Labels[discoveryv1.LabelServiceName] != sd.Name {
			continue
		}
		var port int32
		for _, p := range es.Ports {
			if p.Port != nil && ptrString(p.Name) == sp.Name {
				port = *p.Port
			}
		}
		if port == 0 {
			continue
		}
		for _, e := range es.Endpoints {
			hs := corev3.HealthStatus_UNHEALTHY
			switch {
			case e.Conditions.Ready == nil || *e.Conditions.Ready:
				hs = corev3.HealthStatus_HEALTHY
				ready++
			case e.Conditions.Terminating != nil && *e.Conditions.Terminating:
				hs = corev3.HealthStatus_DRAINING
			}
			for _, a := range e.Addresses {
				lbs = append(lbs, lbEndpoint(a, uint32(port), hs))
			}
		}
	}
	sort.Slice(lbs, func(i, j int) bool { return lbKey(lbs[i]) < lbKey(lbs[j]) })
	if len(lbs) > 0 {
		cla.Endpoints = []*endpointv3.LocalityLbEndpoints{{LbEndpoints: lbs}}
	}
	if ready == 0 {
		t.refsReason, t.refsErr = meshv1.ReasonNoEndpoints, fmt.Sprintf("Service %s has no ready endpoints on port %d", sd.Name, sd.Port)
	}
	return cla
}

func ptrString(p *string) string {
	if p == nil {
		return ""
	}
	return *p
}

func lbKey(e *endpointv3.LbEndpoint) string {
	sa := e.GetEndpoint().GetAddress().GetSocketAddress()
	return net.JoinHostPort(sa.GetAddress(), strconv.Itoa(int(sa.GetPortValue())))
}

func lbEndpoint(host string, port uint32, hs corev3.HealthStatus) *endpointv3.LbEndpoint {
	return &endpointv3.LbEndpoint{
		HealthStatus: hs,
		HostIdentifier: &endpointv3.LbEndpoint_Endpoint{Endpoint: &endpointv3.Endpoint{Address: &corev3.Address{
			Address: &corev3.Address_SocketAddress{SocketAddress: &corev3.SocketAddress{
				Address: host, PortSpecifier: &corev3.SocketAddress_PortValue{PortValue: port}}}}}},
	}
}

// pack wraps m in an Any with deterministic bytes: a Struct's map
// marshalled in random order would give the same config a new version at
// every translation, and every proxy a push it does not need.
func pack(m proto.Message) (*anypb.Any, error) {
	a := &anypb.Any{}
	if err := anypb.MarshalFrom(a, m, proto.MarshalOptions{Deterministic: true}); err != nil {
		return nil, err
	}
	return a, nil
}

// listener is the mesh listener: HTTP with routes from RDS over ADS. Its
// address is the proxy's default; a proxy listens where its own config says.
func listener() *listenerv3.Listener {
	host, port, _ := net.SplitHostPort(config.DefaultListen)
	p, _ := strconv.Atoi(port)
	router, _ := pack(&routerv3.Router{})
	hcm, _ := pack(&hcmv3.HttpConnectionManager{
		StatPrefix: "mesh",
		RouteSpecifier: &hcmv3.HttpConnectionManager_Rds{Rds: &hcmv3.Rds{
			ConfigSource:    &corev3.ConfigSource{ConfigSourceSpecifier: &corev3.ConfigSource_Ads{Ads: &corev3.AggregatedConfigSource{}}, ResourceApiVersion: corev3.ApiVersion_V3},
			RouteConfigName: RoutesName,
		}},
		HttpFilters: []*hcmv3.HttpFilter{{Name: "envoy.filters.http.router", ConfigType: &hcmv3.HttpFilter_TypedConfig{TypedConfig: router}}},
	})
	return &listenerv3.Listener{
		Name: ListenerName,
		Address: &corev3.Address{Address: &corev3.Address_SocketAddress{SocketAddress: &corev3.SocketAddress{
			Address: host, PortSpecifier: &corev3.SocketAddress_PortValue{PortValue: uint32(p)}}}},
		FilterChains: []*listenerv3.FilterChain{{Filters: []*listenerv3.Filter{{
			Name: "envoy.filters.network.http_connection_manager", ConfigType: &listenerv3.Filter_TypedConfig{TypedConfig: hcm}}}}},
	}
}

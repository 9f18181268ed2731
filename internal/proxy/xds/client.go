// Package xds is the edge proxy's client of Misaki's controller: it speaks
// the xDS aggregated discovery protocol (ADS, state of the world), turns
// the Listener, RouteConfiguration, Cluster and ClusterLoadAssignment
// resources it receives into the proxy's routes, applies them atomically,
// ACKs what it applied and NACKs what it cannot apply (with the reason),
// and keeps the last applied config in a file so that the proxy starts
// from it while the controller is unreachable.
//
// It does not use grpc-go or Envoy's generated Go types, on purpose: the
// two add 11.5 MB to a binary (measured: 8.2 MB for net/http and the
// Prometheus client alone, 12.5 MB with grpc-go, 19.6 MB with Envoy's
// listener, route, cluster and endpoint packages too), and the sidecar's
// budget is 15 MB. ADS is one bidirectional gRPC stream, which net/http's
// HTTP/2 client carries as a streamed request and response body (stream.go),
// and the messages are decoded into wire-compatible subsets of Envoy's
// (xdspb), generated from a .proto that keeps Envoy's field numbers.
// Tests check both against go-control-plane's server and types.
//
// With Options.Identity the connection is mutual TLS: the proxy presents a
// certificate naming its pod, which package identity gets and renews from
// the controller, and the controller serves it only its own node.
package xds

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"net/http"
	"reflect"
	"strings"
	"time"

	"google.golang.org/protobuf/proto"

	"github.com/misaki-io/misaki/internal/backoff"
	"github.com/misaki-io/misaki/internal/clock"
	"github.com/misaki-io/misaki/internal/proxy/config"
	"github.com/misaki-io/misaki/internal/proxy/xds/identity"
	"github.com/misaki-io/misaki/internal/proxy/xds/xdspb"
)

// ApplyFunc applies routes and their endpoints; an error refuses them.
type ApplyFunc func(ctx context.Context, routes []config.Route, endpoints map[string][]string) error

// Options configure a Client.
type Options struct {
	// Server is the controller's ADS address, host:port.
	Server string
	// Node is this proxy's id (namespace/pod).
	Node string
	// CAFile makes the connection TLS, trusting these roots; the file is
	// read again when it changes.
	CAFile string
	// Identity, when its TokenFile is set, gets the proxy a certificate
	// naming its pod from the controller and presents it on the ADS
	// connection (mutual TLS). It needs CAFile.
	Identity IdentityOptions
	// Clock times certificate renewals and reconnections. Default the
	// real clock.
	Clock clock.Clock
	// Cache is the file the last applied config is kept in.
	Cache string
	// Apply applies a new config.
	Apply ApplyFunc
	// Log receives connection and config events.
	Log *slog.Logger
	// BackoffMin and BackoffMax bound the wait between reconnections:
	// BackoffMin doubling to BackoffMax, each wait drawn from [d/2, d]
	// (equal jitter: the proxies of a cluster that lost the controller do
	// not come back in step). Defaults 500ms and 30s.
	BackoffMin, BackoffMax time.Duration
	// Version is sent to the server as the user agent's version.
	Version string
}

// IdentityOptions configure the proxy's certificate (xds.identity).
type IdentityOptions struct {
	// TokenFile is the pod's projected service-account token.
	TokenFile string
	// Server is the controller's certificate endpoint, host:port.
	Server string
}

// Client is the proxy's ADS client.
type Client struct {
	o       Options
	rt      http.RoundTripper
	base    string
	id      *identity.Source // nil without Options.Identity
	applied *Snapshot        // last applied; guarded by being used by Run only
	// presented is the certificate the last stream was opened with; used
	// by Run only.
	presented *tls.Certificate
}

// New returns a client; applied is the config the proxy started with (from
// the cache file), or nil.
func New(o Options, applied *Snapshot) (*Client, error) {
	if o.BackoffMin <= 0 {
		o.BackoffMin = 500 * time.Millisecond
	}
	if o.BackoffMax <= 0 {
		o.BackoffMax = 30 * time.Second
	}
	if o.Clock == nil {
		o.Clock = clock.Real{}
	}
	c := &Client{o: o, applied: applied}
	var roots *identity.Roots
	if o.CAFile != "" {
		var err error
		if roots, err = identity.LoadRoots(o.CAFile); err != nil {
			return nil, err
		}
	}
	if o.Identity.TokenFile != "" {
		if roots == nil {
			return nil, errors.New("xds.identity needs xds.caFile: the proxy sends its token only to a controller it can authenticate")
		}
		var err error
		c.id, err = identity.New(identity.Options{
			Server: o.Identity.Server, TokenFile: o.Identity.TokenFile, Roots: roots, Clock: o.Clock, Log: o.Log,
		})
		if err != nil {
			return nil, err
		}
	}
	tr, scheme, err := newTransport(o.Server, roots, c.id)
	if err != nil {
		return nil, err
	}
	c.rt, c.base = tr, scheme+"://"+o.Server
	return c, nil
}

// Run keeps a stream to the server open until ctx ends, reconnecting with
// backoff, and keeps the proxy's certificate fresh meanwhile. It returns
// nil when ctx ends.
func (c *Client) Run(ctx context.Context) error {
	if c.id == nil {
		return c.run(ctx)
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		c.id.Run(ctx)
	}()
	err := c.run(ctx)
	<-done
	return err
}

func (c *Client) run(ctx context.Context) error {
	b := backoff.New(backoff.Policy{Initial: c.o.BackoffMin, Max: c.o.BackoffMax, Multiplier: 2, Jitter: 0.5}, c.o.Clock)
	for {
		start := c.o.Clock.Now()
		err := c.session(ctx)
		if ctx.Err() != nil {
			return nil
		}
		if c.id != nil && certRefused(err) {
			// The next attempt gets a new certificate first, on a new
			// connection.
			c.id.Invalidate(c.presented)
			if tr, ok := c.rt.(interface{ CloseIdleConnections() }); ok {
				tr.CloseIdleConnections()
			}
		}
		if c.o.Clock.Now().Sub(start) > time.Minute {
			b.Reset() // the stream was healthy for a while: start over
		}
		d := b.Next()
		c.o.Log.Warn("xds: stream to controller ended; serving the last applied config", "server", c.o.Server, "err", err, "retry_in", d.Round(time.Millisecond))
		if backoff.Sleep(ctx, c.o.Clock, d) != nil {
			return nil
		}
	}
}

// state is one stream's view: the accepted resources of each type.
type state struct {
	versions map[string]string
	raw      map[string]map[string]proto.Message
}

// session runs one stream. Each stream starts from empty versions, so the
// server sends every type whole; what equals the applied config is not
// applied again.
func (c *Client) session(ctx context.Context) error {
	node := &xdspb.Node{Id: c.o.Node, UserAgentName: "misaki-proxy", UserAgentVersion: c.o.Version}
	if ns, _, ok := strings.Cut(c.o.Node, "/"); ok {
		node.Cluster = ns
	}
	if c.id != nil {
		// A certificate that expired while the controller was away is
		// replaced before the proxy connects with it.
		if err := c.id.Ensure(ctx); err != nil {
			return fmt.Errorf("no certificate to connect with: %w", err)
		}
		c.presented = c.id.Certificate()
	}
	var first []*xdspb.DiscoveryRequest
	for _, t := range Types {
		first = append(first, &xdspb.DiscoveryRequest{Node: node, TypeUrl: t})
	}
	s, err := openStream(ctx, c.rt, c.base, first)
	if err != nil {
		return err
	}
	defer s.Close()
	c.o.Log.Info("xds: connected", "server", c.o.Server, "node", c.o.Node)
	st := &state{versions: map[string]string{}, raw: map[string]map[string]proto.Message{}}
	for {
		resp, err := s.Recv()
		if err != nil {
			return err
		}
		t := resp.GetTypeUrl()
		req := &xdspb.DiscoveryRequest{TypeUrl: t, ResponseNonce: resp.GetNonce()}
		if err := c.accept(ctx, st, resp); err != nil {
			req.VersionInfo = st.versions[t]
			req.ErrorDetail = &xdspb.Status{Code: 3, Message: err.Error()} // INVALID_ARGUMENT
			c.o.Log.Error("xds: config refused (NACK)", "type", ShortType(t), "version", resp.GetVersionInfo(), "err", err)
		} else {
			req.VersionInfo = resp.GetVersionInfo()
		}
		if err := s.Send(ctx, req); err != nil {
			return err
		}
	}
}

// accept decodes a response and, when the resources it completes form a
// whole config different from the applied one, applies it. An error means
// NACK: the type keeps its previously accepted resources.
func (c *Client) accept(ctx context.Context, st *state, resp *xdspb.DiscoveryResponse) error {
	t := resp.GetTypeUrl()
	decoded, err := decodeType(t, resp.GetResources())
	if err != nil {
		return err
	}
	prev := st.raw[t]
	st.raw[t] = decoded
	if len(st.raw) < len(Types) {
		st.versions[t] = resp.GetVersionInfo()
		return nil // the first answer of every type has not come yet
	}
	routes, eps, err := assemble(resourcesOf(st.raw))
	switch {
	case errors.Is(err, errIncomplete):
		st.versions[t] = resp.GetVersionInfo()
		c.o.Log.Debug("xds: waiting for more resources", "type", ShortType(t), "missing", err)
		return nil
	case err != nil:
		st.raw[t] = prev
		return err
	}
	next := &Snapshot{Versions: maps.Clone(st.versions), Routes: routes, Endpoints: eps}
	next.Versions[t] = resp.GetVersionInfo()
	// An unchanged config is neither applied nor written again: only the
	// versions moved (a new stream, or another type's push), and the kept
	// file already holds it.
	if c.applied == nil || !sameConfig(c.applied, next) {
		if err := c.o.Apply(ctx, routes, eps); err != nil {
			st.raw[t] = prev
			return err
		}
		c.o.Log.Info("xds: config applied", "type", ShortType(t), "version", resp.GetVersionInfo(), "routes", len(routes))
		c.applied = next
		if err := SaveCache(c.o.Cache, next); err != nil {
			// The config is applied; only a restart without the
			// controller would miss it.
			c.o.Log.Error("xds: could not keep the config for offline starts", "cache", c.o.Cache, "err", err)
		}
	}
	st.versions[t] = resp.GetVersionInfo()
	return nil
}

func sameConfig(a, b *Snapshot) bool {
	return reflect.DeepEqual(a.Routes, b.Routes) && reflect.DeepEqual(normal(a.Endpoints), normal(b.Endpoints))
}

func normal(m map[string][]string) map[string][]string {
	if len(m) == 0 {
		return nil
	}
	return m
}

package controller

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"sync"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"

	"github.com/misaki-io/misaki/internal/controller/ca"
)

// How proxies authenticate to the ADS server (Options.XDSAuth).
const (
	// XDSAuthNone serves ADS over plaintext h2c to any client, which may
	// name any node and so read any namespace's routes: for development
	// and tests on a trusted network.
	XDSAuthNone = "none"
	// XDSAuthMTLS serves ADS over TLS and requires a client certificate
	// from the controller's CA (package ca), which proxies get at the
	// certificate endpoint (package podcert) with their pod's token; a
	// stream gets only the config of the node its certificate names.
	XDSAuthMTLS = "mtls"
)

// Reasons a stream is refused (misaki_controller_xds_refused_total).
const (
	refusedNoCertificate = "no_certificate"
	refusedNodeMismatch  = "node_mismatch"
	refusedNoNode        = "no_node"
)

// xdsTLS is the ADS server's transport security with XDSAuthMTLS: the
// CA's serving certificate, and client certificates verified against the
// CA bundle of the moment (it grows when the CA rotates).
func xdsTLS(auth *ca.Authority) credentials.TransportCredentials {
	base := &tls.Config{
		MinVersion:     tls.VersionTLS12,
		GetCertificate: auth.ServingCertificate,
		// Verified if given; a stream without one is refused by authorize
		// with a gRPC status that says what is missing, which a failed
		// handshake could not.
		ClientAuth: tls.VerifyClientCertIfGiven,
	}
	perConn := base.Clone()
	perConn.GetConfigForClient = func(*tls.ClientHelloInfo) (*tls.Config, error) {
		c := base.Clone()
		c.ClientCAs = auth.ClientCAs()
		return c, nil
	}
	return credentials.NewTLS(perConn)
}

// authorize is the ADS server's stream interceptor with XDSAuthMTLS: a
// stream needs a client certificate naming a pod, and every node id its
// requests carry must be that pod's (namespace/pod), so a proxy gets only
// its own namespace's snapshot.
func (x *xdsServer) authorize(srv any, ss grpc.ServerStream, _ *grpc.StreamServerInfo, handler grpc.StreamHandler) error {
	id, err := x.identify(ss.Context())
	if err != nil {
		return x.refuse(refusedNoCertificate, status.Error(codes.Unauthenticated, err.Error()), "remote", remote(ss.Context()))
	}
	w := &nodeCheck{ServerStream: ss, want: id.Node()}
	err = handler(srv, w)
	if reason, refusal := w.refusal(); refusal != nil {
		return x.refuse(reason, refusal, "pod", id.Node(), "serviceAccount", id.ServiceAccount, "remote", remote(ss.Context()))
	}
	return err
}

func (x *xdsServer) refuse(reason string, err error, attrs ...any) error {
	x.metrics.xdsRefused.WithLabelValues(reason).Inc()
	x.log.Warn("ADS stream refused", append([]any{"reason", reason, "err", status.Convert(err).Message()}, attrs...)...)
	return err
}

// identify returns the identity of the stream's verified client
// certificate.
func (x *xdsServer) identify(ctx context.Context) (ca.Identity, error) {
	p, _ := peer.FromContext(ctx)
	var chains int
	if p != nil {
		if ti, ok := p.AuthInfo.(credentials.TLSInfo); ok {
			chains = len(ti.State.VerifiedChains)
			if chains > 0 {
				id, err := x.auth.Identify(ti.State.VerifiedChains[0][0])
				if err != nil {
					return id, fmt.Errorf("the client certificate names no proxy: %w", err)
				}
				return id, nil
			}
		}
	}
	return ca.Identity{}, errors.New("no client certificate: this xDS server requires one from the controller's CA; give the proxy xds.identity (the injector does)")
}

func remote(ctx context.Context) string {
	if p, ok := peer.FromContext(ctx); ok && p.Addr != nil {
		return p.Addr.String()
	}
	return ""
}

// nodeCheck refuses a request whose node is not want, or a first request
// that names no node. go-control-plane's ADS server reads requests on a
// goroutine of its own and ends the stream without an error when a read
// fails, so the refusal is kept for authorize to return.
type nodeCheck struct {
	grpc.ServerStream
	want string

	mu      sync.Mutex // guards the fields below
	named   bool       // a request named the node
	reason  string
	refused error
}

type noder interface{ GetNode() *corev3.Node }

func (s *nodeCheck) RecvMsg(m any) error {
	if err := s.ServerStream.RecvMsg(m); err != nil {
		return err
	}
	var node *corev3.Node
	if n, ok := m.(noder); ok {
		node = n.GetNode()
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	switch {
	case node != nil && node.GetId() != s.want:
		s.reason = refusedNodeMismatch
		s.refused = status.Errorf(codes.PermissionDenied, "node id %q is not %s, the pod the client certificate names: a proxy gets only its own pod's config", node.GetId(), s.want)
	case node == nil && !s.named:
		s.reason = refusedNoNode
		s.refused = status.Errorf(codes.PermissionDenied, "the first request names no node; send node.id %s", s.want)
	default:
		s.named = true
		return nil
	}
	return s.refused
}

func (s *nodeCheck) refusal() (string, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.reason, s.refused
}

// caServer serves the certificate endpoint over HTTPS, with the CA's
// serving certificate, once the CA is loaded.
type caServer struct {
	auth    *ca.Authority
	addr    string
	ln      net.Listener
	handler http.Handler
	log     *slog.Logger
}

// NeedLeaderElection is false: every replica issues certificates.
func (c *caServer) NeedLeaderElection() bool { return false }

// Start serves until ctx ends.
func (c *caServer) Start(ctx context.Context) error {
	select {
	case <-c.auth.Ready():
	case <-ctx.Done():
		if c.ln != nil {
			c.ln.Close()
		}
		return nil
	}
	ln := c.ln
	if ln == nil {
		var err error
		if ln, err = net.Listen("tcp", c.addr); err != nil {
			return fmt.Errorf("certificate endpoint: %w", err)
		}
	}
	srv := &http.Server{
		Handler:           c.handler,
		TLSConfig:         &tls.Config{MinVersion: tls.VersionTLS12, GetCertificate: c.auth.ServingCertificate},
		ReadHeaderTimeout: 10 * time.Second,
		ReadTimeout:       30 * time.Second,
		WriteTimeout:      30 * time.Second,
		IdleTimeout:       2 * time.Minute,
		ErrorLog:          slog.NewLogLogger(c.log.Handler(), slog.LevelDebug),
	}
	c.log.Info("serving the certificate endpoint", "addr", ln.Addr().String())
	go func() {
		<-ctx.Done()
		shut, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		srv.Shutdown(shut)
	}()
	if err := srv.ServeTLS(ln, "", ""); err != nil && !errors.Is(err, http.ErrServerClosed) {
		return fmt.Errorf("certificate endpoint: %w", err)
	}
	return nil
}

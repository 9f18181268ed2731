package xds

import (
	"context"
	"crypto/tls"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strings"
	"time"

	"google.golang.org/protobuf/proto"

	"github.com/misaki-io/misaki/internal/proxy/xds/identity"
	"github.com/misaki-io/misaki/internal/proxy/xds/xdspb"
)

const (
	adsPath = "/envoy.service.discovery.v3.AggregatedDiscoveryService/StreamAggregatedResources"
	// maxMessage bounds one DiscoveryResponse, as grpc-go's default
	// receive limit does (4 MiB) but larger: a namespace's whole config.
	maxMessage = 64 << 20
)

// newTransport returns an HTTP/2-only transport to the controller at
// server: h2c, or TLS verified against roots, presenting id's certificate
// if id is not nil. Pings detect a controller that went away without
// closing the connection (a vehicle's link that silently died).
func newTransport(server string, roots *identity.Roots, id *identity.Source) (*http.Transport, string, error) {
	tr := &http.Transport{
		HTTP2: &http.HTTP2Config{SendPingTimeout: 20 * time.Second, PingTimeout: 10 * time.Second},
	}
	var protos http.Protocols
	scheme := "http"
	if roots != nil {
		host, _, err := net.SplitHostPort(server)
		if err != nil {
			return nil, "", fmt.Errorf("xds.server %q: %w", server, err)
		}
		var cert func(*tls.CertificateRequestInfo) (*tls.Certificate, error)
		if id != nil {
			cert = id.GetClientCertificate
		}
		tr.TLSClientConfig = roots.ClientConfig(host, cert)
		protos.SetHTTP2(true)
		scheme = "https"
	} else {
		protos.SetUnencryptedHTTP2(true)
	}
	tr.Protocols = &protos
	return tr, scheme, nil
}

// stream is one ADS call: gRPC over an HTTP/2 request whose body carries
// the client's messages and whose response body carries the server's.
type stream struct {
	send   chan *xdspb.DiscoveryRequest
	resp   *http.Response
	cancel context.CancelFunc
	werr   chan error // the writer's end
}

// openStream starts the call. The first requests must already be queued
// (first), since a gRPC server may send no headers before it has an answer.
func openStream(ctx context.Context, rt http.RoundTripper, base string, first []*xdspb.DiscoveryRequest) (*stream, error) {
	ctx, cancel := context.WithCancel(ctx)
	pr, pw := io.Pipe()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, base+adsPath, pr)
	if err != nil {
		cancel()
		return nil, err
	}
	req.Header.Set("Content-Type", "application/grpc")
	req.Header.Set("TE", "trailers")
	req.Header.Set("User-Agent", "misaki-proxy")
	s := &stream{send: make(chan *xdspb.DiscoveryRequest, len(Types)*2), cancel: cancel, werr: make(chan error, 1)}
	for _, m := range first {
		s.send <- m
	}
	go func() { s.werr <- s.write(ctx, pw) }()
	resp, err := rt.RoundTrip(req)
	if err != nil {
		cancel()
		return nil, err
	}
	if resp.StatusCode != http.StatusOK || !strings.HasPrefix(resp.Header.Get("Content-Type"), "application/grpc") {
		resp.Body.Close()
		cancel()
		return nil, fmt.Errorf("ADS call answered %s (%s); is %s a gRPC xDS server?", resp.Status, resp.Header.Get("Content-Type"), base)
	}
	if st := resp.Header.Get("Grpc-Status"); st != "" && st != "0" { // trailers-only answer
		resp.Body.Close()
		cancel()
		return nil, &statusError{"ADS call refused", st, grpcMessage(resp.Header.Get("Grpc-Message"))}
	}
	s.resp = resp
	return s, nil
}

func (s *stream) write(ctx context.Context, pw *io.PipeWriter) error {
	var buf []byte
	for {
		select {
		case <-ctx.Done():
			pw.CloseWithError(ctx.Err())
			return ctx.Err()
		case m := <-s.send:
			b, err := proto.Marshal(m)
			if err != nil {
				pw.CloseWithError(err)
				return err
			}
			buf = append(buf[:0], 0, 0, 0, 0, 0)
			binary.BigEndian.PutUint32(buf[1:], uint32(len(b)))
			buf = append(buf, b...)
			if _, err := pw.Write(buf); err != nil {
				return err
			}
		}
	}
}

// Send queues a request for the writer.
func (s *stream) Send(ctx context.Context, m *xdspb.DiscoveryRequest) error {
	select {
	case s.send <- m:
		return nil
	case err := <-s.werr:
		return fmt.Errorf("send: %w", err)
	case <-ctx.Done():
		return ctx.Err()
	}
}

// Recv reads the next response.
func (s *stream) Recv() (*xdspb.DiscoveryResponse, error) {
	var hdr [5]byte
	if _, err := io.ReadFull(s.resp.Body, hdr[:]); err != nil {
		if errors.Is(err, io.EOF) {
			return nil, s.status()
		}
		return nil, err
	}
	if hdr[0] != 0 {
		return nil, errors.New("compressed gRPC message; the proxy asks for none")
	}
	n := binary.BigEndian.Uint32(hdr[1:])
	if n > maxMessage {
		return nil, fmt.Errorf("response of %d bytes is over the %d-byte limit", n, maxMessage)
	}
	b := make([]byte, n)
	if _, err := io.ReadFull(s.resp.Body, b); err != nil {
		return nil, err
	}
	m := &xdspb.DiscoveryResponse{}
	if err := proto.Unmarshal(b, m); err != nil {
		return nil, fmt.Errorf("decode DiscoveryResponse: %w", err)
	}
	return m, nil
}

// status reports how the server ended the call.
func (s *stream) status() error {
	st := s.resp.Trailer.Get("Grpc-Status")
	if st == "" || st == "0" {
		return io.EOF
	}
	return &statusError{"ADS call ended", st, grpcMessage(s.resp.Trailer.Get("Grpc-Message"))}
}

func (s *stream) Close() {
	s.cancel()
	if s.resp != nil {
		s.resp.Body.Close()
	}
}

// statusError is a gRPC status other than OK that ended a call.
type statusError struct {
	what, code, msg string
}

func (e *statusError) Error() string { return e.what + ": grpc-status " + e.code + ": " + e.msg }

// codeUnauthenticated is gRPC's UNAUTHENTICATED.
const codeUnauthenticated = "16"

// certRefused reports whether err says the controller did not take the
// proxy's certificate: a TLS alert from it (another CA, say, after the
// controller's CA was replaced), or UNAUTHENTICATED.
func certRefused(err error) bool {
	var st *statusError
	if errors.As(err, &st) {
		return st.code == codeUnauthenticated
	}
	return err != nil && strings.Contains(err.Error(), "remote error: tls:")
}

func grpcMessage(m string) string {
	if u, err := url.PathUnescape(m); err == nil {
		return u
	}
	return m
}

package server

import (
	"context"
	"fmt"
	"io"
	"io/fs"
	"net"
	"net/http"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/misaki-io/misaki/internal/waitfor"
	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
)

// grpcUpstream is a real grpc-go health server on loopback; intercept, if
// set, runs before each unary call.
type grpcUpstream struct {
	addr      string
	health    *health.Server // serves "telemetry"
	calls     atomic.Int32
	intercept func(ctx context.Context) error
}

func newGRPCUpstream(t *testing.T, intercept func(ctx context.Context) error) *grpcUpstream {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	u := &grpcUpstream{addr: ln.Addr().String(), intercept: intercept}
	gs := grpc.NewServer(grpc.UnaryInterceptor(func(ctx context.Context, req any, _ *grpc.UnaryServerInfo, h grpc.UnaryHandler) (any, error) {
		u.calls.Add(1)
		if u.intercept != nil {
			if err := u.intercept(ctx); err != nil {
				return nil, err
			}
		}
		return h(ctx, req)
	}))
	u.health = health.NewServer()
	u.health.SetServingStatus("telemetry", healthpb.HealthCheckResponse_SERVING)
	healthpb.RegisterHealthServer(gs, u.health)
	go gs.Serve(ln)
	t.Cleanup(gs.Stop)
	return u
}

// grpcClient is a grpc-go client of the proxy's mesh listener calling
// authority.
func grpcClient(t *testing.T, p *proxy, authority string) *grpc.ClientConn {
	t.Helper()
	conn, err := grpc.NewClient("passthrough:///"+p.mesh,
		grpc.WithTransportCredentials(insecure.NewCredentials()), grpc.WithAuthority(authority))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return conn
}

func grpcRoute(t *testing.T, upstreamAddr, offline string) string {
	return fmt.Sprintf("spool: {dir: %s, replay: {backoff: {initial: 10ms, max: 50ms}}}\n", t.TempDir()) + testLinks + fmt.Sprintf(`
routes:
  - name: telemetry
    hosts: [telemetry.cloud.misaki]
    upstream: h2c://%s
    probe: {type: none}
    offline: {%s}
`, upstreamAddr, offline)
}

func errorInfo(t *testing.T, err error) *errdetails.ErrorInfo {
	t.Helper()
	for _, d := range status.Convert(err).Details() {
		if ei, ok := d.(*errdetails.ErrorInfo); ok {
			return ei
		}
	}
	t.Fatalf("%v: no ErrorInfo in grpc-status-details-bin", err)
	return nil
}

// A unary gRPC call on a spooling route whose hold window passes gets a
// gRPC answer, UNAVAILABLE saying it was not sent, and is not spooled (a
// gRPC client read the old HTTP 202 as UNKNOWN).
func TestGRPCHeldCallIsUnavailableNotSpooled(t *testing.T) {
	onEachServer(t, func(t *testing.T, srv http1Server) {
		up := newGRPCUpstream(t, nil)
		p := srv.start(t, grpcRoute(t, up.addr, "hold: 300ms, spool: true"), false)
		p.offline(t)
		client := healthpb.NewHealthClient(grpcClient(t, p, "telemetry.cloud.misaki"))
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		_, err := client.Check(ctx, &healthpb.HealthCheckRequest{Service: "telemetry"})
		st := status.Convert(err)
		if st.Code() != codes.Unavailable || !strings.Contains(st.Message(), "not sent") {
			t.Fatalf("held call: %v, want Unavailable saying it was not sent", err)
		}
		if ei := errorInfo(t, err); ei.Reason != grpcReasonNotSent || ei.Domain != "misaki.io" || ei.Metadata["route"] != "telemetry" {
			t.Fatalf("ErrorInfo %v", ei)
		}
		if _, sp := getJSON(t, "http://"+p.admin+"/v1/spool"); strings.Contains(fmt.Sprint(sp["routes"]), "depth:1") {
			t.Fatalf("a gRPC call was spooled: %v", sp)
		}
		p.setLink(t, "wlan", "up")
		if _, err := client.Check(ctx, &healthpb.HealthCheckRequest{Service: "telemetry"}); err != nil {
			t.Fatalf("online: %v", err)
		}
		if n := up.calls.Load(); n != 1 {
			t.Fatalf("the upstream got %d calls, want only the one made online", n)
		}
	})
}

// With offline.grpc: spool, the call is spooled and answered
// DEADLINE_EXCEEDED with its request id in the trailers; its replay is
// judged by grpc-status (UNAVAILABLE from the upstream is retried) and its
// grpc-timeout is not replayed.
func TestGRPCSpoolOptIn(t *testing.T) {
	onEachServer(t, func(t *testing.T, srv http1Server) {
		var fails atomic.Int32
		fails.Store(2)
		var sawDeadline atomic.Bool
		up := newGRPCUpstream(t, func(ctx context.Context) error {
			if _, ok := ctx.Deadline(); ok {
				sawDeadline.Store(true)
			}
			if fails.Add(-1) >= 0 {
				return status.Error(codes.Unavailable, "warming up")
			}
			return nil
		})
		p := srv.start(t, grpcRoute(t, up.addr, "hold: 300ms, spool: true, grpc: spool"), false)
		p.offline(t)
		client := healthpb.NewHealthClient(grpcClient(t, p, "telemetry.cloud.misaki"))
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		var trl metadata.MD
		_, err := client.Check(ctx, &healthpb.HealthCheckRequest{Service: "telemetry"}, grpc.Trailer(&trl))
		if status.Code(err) != codes.DeadlineExceeded || !strings.Contains(status.Convert(err).Message(), "accepted for later delivery") {
			t.Fatalf("spooled call: %v, want DeadlineExceeded saying it was accepted", err)
		}
		ids := trl.Get("misaki-request-id")
		if len(ids) != 1 || errorInfo(t, err).Metadata["request-id"] != ids[0] || errorInfo(t, err).Reason != grpcReasonSpooled {
			t.Fatalf("trailers %v, ErrorInfo %v", trl, errorInfo(t, err))
		}
		p.setLink(t, "wlan", "up")
		m := waitState(t, "http://"+p.admin+"/v1/requests/"+ids[0], "delivered")
		if m["attempts"] != 3.0 || up.calls.Load() != 3 {
			t.Fatalf("delivered after %v attempts (%d calls), want 3: UNAVAILABLE twice is retried", m["attempts"], up.calls.Load())
		}
		if sawDeadline.Load() {
			t.Fatal("the replay carried the app's grpc-timeout")
		}
	})
}

// A call that a gRPC upstream answers with a final error is a failed
// delivery, not a delivered one, though its HTTP status is 200.
func TestGRPCReplayFailsOnFinalStatus(t *testing.T) {
	onEachServer(t, func(t *testing.T, srv http1Server) {
		up := newGRPCUpstream(t, nil)
		p := srv.start(t, grpcRoute(t, up.addr, "hold: 300ms, spool: true, grpc: spool"), false)
		p.offline(t)
		client := healthpb.NewHealthClient(grpcClient(t, p, "telemetry.cloud.misaki"))
		var trl metadata.MD
		_, err := client.Check(context.Background(), &healthpb.HealthCheckRequest{Service: "unknown"}, grpc.Trailer(&trl))
		if status.Code(err) != codes.DeadlineExceeded {
			t.Fatalf("spooled call: %v", err)
		}
		p.setLink(t, "wlan", "up")
		m := waitState(t, "http://"+p.admin+"/v1/requests/"+trl.Get("misaki-request-id")[0], "failed")
		if !strings.Contains(fmt.Sprint(m["reason"]), "grpc-status 5") {
			t.Fatalf("result %v", m)
		}
	})
}

// The time a call spends held comes off its grpc-timeout: the upstream
// works to the deadline the app set, not to a later one.
func TestGRPCTimeoutShortenedByHold(t *testing.T) {
	onEachServer(t, func(t *testing.T, srv http1Server) {
		deadlines := make(chan time.Time, 1)
		up := newGRPCUpstream(t, func(ctx context.Context) error {
			d, _ := ctx.Deadline()
			deadlines <- d
			return nil
		})
		p := srv.start(t, grpcRoute(t, up.addr, "hold: 5s, spool: true"), false)
		p.offline(t)
		client := healthpb.NewHealthClient(grpcClient(t, p, "telemetry.cloud.misaki"))
		const timeout = 5 * time.Second
		start := time.Now()
		ctx, cancel := context.WithTimeout(context.Background(), timeout)
		defer cancel()
		// Hold for longer than the default window, so the call waits.
		done := make(chan error, 1)
		go func() {
			_, err := client.Check(ctx, &healthpb.HealthCheckRequest{Service: "telemetry"})
			done <- err
		}()
		waitfor.True(t, "the call held", func() bool { return p.held(t, "telemetry") == 1 })
		time.Sleep(time.Second) // the outage: the call stays held this long
		held := time.Since(start)
		p.setLink(t, "wlan", "up")
		if err := <-done; err != nil {
			t.Fatalf("released call: %v", err)
		}
		d := <-deadlines
		if late := d.Sub(start.Add(timeout)); late > held/2 {
			t.Fatalf("the upstream's deadline is %v after the app's (held %v): grpc-timeout was not shortened", late, held)
		}
	})
}

// A request whose body streams (a bidirectional gRPC stream, an HTTP/2
// upload with no end) is held for the window like any other and then
// answered, not left hanging until the app's deadline.
func TestHeldStreamsAreAnsweredAtTheWindow(t *testing.T) {
	onEachServer(t, func(t *testing.T, srv http1Server) {
		up := newGRPCUpstream(t, nil)
		p := srv.start(t, grpcRoute(t, up.addr, "hold: 300ms"), false)
		p.offline(t)

		t.Run("bidirectional gRPC", func(t *testing.T) {
			conn := grpcClient(t, p, "telemetry.cloud.misaki")
			ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
			defer cancel()
			s, err := conn.NewStream(ctx, &grpc.StreamDesc{ClientStreams: true, ServerStreams: true}, "/misaki.test.Echo/Chat")
			if err != nil {
				t.Fatal(err)
			}
			err = s.RecvMsg(&healthpb.HealthCheckResponse{})
			if status.Code(err) != codes.Unavailable || ctx.Err() != nil {
				t.Fatalf("held stream: %v (app deadline passed: %v), want Unavailable at the window's end", err, ctx.Err())
			}
		})
		t.Run("HTTP/2 upload with no end", func(t *testing.T) {
			// HTTP/2 with prior knowledge (h2c), net/http's own.
			tr := &http.Transport{Protocols: new(http.Protocols)}
			tr.Protocols.SetUnencryptedHTTP2(true)
			defer tr.CloseIdleConnections()
			pr, pw := io.Pipe()
			defer pw.Close()
			go pw.Write([]byte("the first part of a long upload"))
			ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
			defer cancel()
			req, _ := http.NewRequestWithContext(ctx, http.MethodPost, "http://"+p.mesh+"/upload", pr)
			req.Host = "telemetry.cloud.misaki"
			resp, err := (&http.Client{Transport: tr}).Do(req)
			if err != nil {
				t.Fatalf("held upload: %v", err)
			}
			resp.Body.Close()
			if resp.StatusCode != http.StatusServiceUnavailable || resp.ProtoMajor != 2 {
				t.Fatalf("held upload: %d over %s, want 503 over HTTP/2", resp.StatusCode, resp.Proto)
			}
		})
	})
}

// A streamed body larger than the route's spool quota is refused whole:
// nothing of it stays in the spool.
func TestStreamLargerThanQuotaIsNotHalfSpooled(t *testing.T) {
	onEachServer(t, func(t *testing.T, srv http1Server) {
		up := newUpstream(t, nil)
		dir := t.TempDir()
		p := srv.start(t, fmt.Sprintf("spool: {dir: %s}\n", dir)+routeYAML(up.URL, ", spool: true, quota: {bytes: 8KiB}")+"", false)
		p.offline(t)
		pr, pw := io.Pipe()
		go func() {
			chunk := strings.Repeat("x", 1024)
			for range 64 {
				if _, err := pw.Write([]byte(chunk)); err != nil {
					return
				}
			}
			pw.Close()
		}()
		req, _ := http.NewRequest(http.MethodPost, "http://"+p.mesh+"/x", pr)
		req.Host = "telemetry.cloud.misaki"
		req.Header.Set("Prefer", "respond-async")
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusInsufficientStorage && resp.StatusCode != http.StatusRequestEntityTooLarge {
			t.Fatalf("64 KiB over an 8 KiB quota: %d %q", resp.StatusCode, b)
		}
		if _, sp := getJSON(t, "http://"+p.admin+"/v1/spool"); strings.Contains(fmt.Sprint(sp["routes"]), "depth:1") {
			t.Fatalf("spool after a refused stream: %v", sp)
		}
		var leftover []string
		filepath.WalkDir(dir, func(path string, d fs.DirEntry, err error) error {
			if err == nil && !d.IsDir() {
				if fi, err := d.Info(); err == nil && fi.Size() > 8<<10 {
					leftover = append(leftover, fmt.Sprintf("%s (%d bytes)", path, fi.Size()))
				}
			}
			return nil
		})
		if len(leftover) > 0 {
			t.Fatalf("the refused body is on disk: %v", leftover)
		}
		t.Logf("answered %d %q", resp.StatusCode, b)
	})
}

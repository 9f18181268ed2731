package server

import (
	"context"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
)

// TestGRPCThroughTheProxy makes real gRPC calls (unary and server streaming)
// from a grpc-go client through the proxy to a grpc-go server on h2c. The
// status travels in HTTP/2 trailers, so this also proves trailers pass.
func TestGRPCThroughTheProxy(t *testing.T) {
	onEachServer(t, func(t *testing.T, srv http1Server) {
		up := newGRPCUpstream(t, nil)
		hs := up.health
		p := srv.start(t, simpleRoute("h2c://"+up.addr, ""), false)
		conn := grpcClient(t, p, "svc.mesh")
		client := healthpb.NewHealthClient(conn)
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()

		var hdr, trl metadata.MD
		resp, err := client.Check(ctx, &healthpb.HealthCheckRequest{Service: "telemetry"}, grpc.Header(&hdr), grpc.Trailer(&trl))
		if err != nil || resp.Status != healthpb.HealthCheckResponse_SERVING {
			t.Fatalf("unary Check: %v %v", resp, err)
		}
		if got := hdr.Get("misaki-delivery"); len(got) != 1 || got[0] != "direct" {
			t.Errorf("misaki-delivery header %v", got)
		}
		// A non-OK status is carried in the trailers too.
		_, err = client.Check(ctx, &healthpb.HealthCheckRequest{Service: "unknown"})
		if status.Code(err) != codes.NotFound {
			t.Errorf("unknown service: %v, want NotFound", err)
		}

		// Server streaming: watch sees the status change pushed by the server.
		stream, err := client.Watch(ctx, &healthpb.HealthCheckRequest{Service: "telemetry"})
		if err != nil {
			t.Fatal(err)
		}
		if m, err := stream.Recv(); err != nil || m.Status != healthpb.HealthCheckResponse_SERVING {
			t.Fatalf("first watch message: %v %v", m, err)
		}
		hs.SetServingStatus("telemetry", healthpb.HealthCheckResponse_NOT_SERVING)
		if m, err := stream.Recv(); err != nil || m.Status != healthpb.HealthCheckResponse_NOT_SERVING {
			t.Fatalf("streamed update: %v %v", m, err)
		}
	})
}

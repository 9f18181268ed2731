package rollout_test

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"path/filepath"
	"testing"
	"time"

	hubv1 "github.com/misaki-io/misaki/api/hub/v1"
	"github.com/misaki-io/misaki/internal/clock"
	"github.com/misaki-io/misaki/internal/hub/rollout"
	"github.com/misaki-io/misaki/internal/hub/store/sqlite"
)

// BenchmarkPass times one runner pass over a rollout of 10,000 vehicles
// on SQLite, every vehicle released and reporting (the most a pass reads:
// each vehicle and its reports), with nothing to write: the last wave
// waits for one vehicle.
//
//	go test -run '^$' -bench Pass -benchtime 5x ./internal/hub/rollout/
func BenchmarkPass(b *testing.B) {
	const n = 10000
	ctx := context.Background()
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	st, err := sqlite.Open(ctx, filepath.Join(b.TempDir(), "hub.db"), log)
	if err != nil {
		b.Fatal(err)
	}
	defer st.Close()
	now := time.Date(2026, 12, 4, 12, 0, 0, 0, time.UTC)
	clk := clock.NewFake(now)
	for i := range n {
		id := fmt.Sprintf("car-%05d", i)
		if err := st.CreateVehicle(ctx, hubv1.Vehicle{ID: id, Labels: map[string]string{"fleet": "eu"}, Created: now}); err != nil {
			b.Fatal(err)
		}
		if err := st.Seen(ctx, id, now); err != nil {
			b.Fatal(err)
		}
		rep := hubv1.Reported{Half: hubv1.HalfVehicle, AppliedRevision: 1, Phase: hubv1.PhaseHealthy,
			Deployments: []hubv1.DeploymentRevision{{Name: "uploader", Generation: 1}}}
		if _, err := st.PutReported(ctx, id, rep); err != nil {
			b.Fatal(err)
		}
	}
	d := hubv1.Deployment{Name: "uploader", Selector: "fleet=eu", Chart: hubv1.ChartRef{Source: "apps", Name: "can-uploader", Version: "1.0.0"},
		Rollout: &hubv1.RolloutPolicy{Canary: &hubv1.Wave{Size: "1%"}, Waves: []hubv1.Wave{{Size: "10%"}}}, Created: now}
	if err := st.CreateDeployment(ctx, d); err != nil {
		b.Fatal(err)
	}
	released := 0
	r := rollout.NewRunner(st, clk, rollout.RunnerOptions{}, func(_ context.Context, ids []string) error {
		released += len(ids)
		return nil
	}, log)
	// car-00000 never gets to generation 1, so the last wave stays open
	// and every pass reads every vehicle and its reports.
	if _, err := st.PutReported(ctx, "car-00000", hubv1.Reported{Half: hubv1.HalfVehicle, AppliedRevision: 1, Phase: hubv1.PhaseHealthy}); err != nil {
		b.Fatal(err)
	}
	for released < n {
		if err := r.Pass(ctx); err != nil {
			b.Fatal(err)
		}
	}
	if err := r.Pass(ctx); err != nil { // the last wave's answers
		b.Fatal(err)
	}
	ro, err := st.GetRollout(ctx, "uploader", 1)
	if err != nil {
		b.Fatal(err)
	}
	if ro.Phase != hubv1.RolloutProgressing || ro.Counts[hubv1.VehicleHealthy] != n-1 {
		b.Fatalf("rollout %s, counts %v", ro.Phase, ro.Counts)
	}
	b.ResetTimer()
	for b.Loop() {
		if err := r.Pass(ctx); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(b.Elapsed().Milliseconds())/float64(b.N), "ms/pass")
}

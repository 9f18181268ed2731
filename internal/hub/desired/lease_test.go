package desired_test

import (
	"context"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	hubv1 "github.com/misaki-io/misaki/api/hub/v1"
	"github.com/misaki-io/misaki/internal/clock"
	"github.com/misaki-io/misaki/internal/hub/desired"
	"github.com/misaki-io/misaki/internal/hub/render"
)

// gatedRenderer blocks every render until release is closed: a pass that
// takes as long as the test wants.
type gatedRenderer struct {
	r       desired.Renderer
	entered chan struct{}
	release chan struct{}
}

func (g *gatedRenderer) Render(in render.Input) (*render.Output, error) {
	select {
	case g.entered <- struct{}{}:
	default:
	}
	<-g.release
	return g.r.Render(in)
}

// signalHandler is a log handler that signals each record whose message
// starts with prefix.
type signalHandler struct {
	prefix string
	ch     chan struct{}
}

func (h *signalHandler) Enabled(context.Context, slog.Level) bool { return true }
func (h *signalHandler) WithAttrs([]slog.Attr) slog.Handler       { return h }
func (h *signalHandler) WithGroup(string) slog.Handler            { return h }
func (h *signalHandler) Handle(_ context.Context, r slog.Record) error {
	if strings.HasPrefix(r.Message, h.prefix) {
		select {
		case h.ch <- struct{}{}:
		default:
		}
	}
	return nil
}

// waitTimers waits until the code under test has armed n timers.
func waitTimers(t *testing.T, clk *clock.Fake, n int, what string) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for clk.Timers() != n {
		if time.Now().After(deadline) {
			t.Fatalf("%s: %d timers armed, want %d", what, clk.Timers(), n)
		}
		time.Sleep(time.Millisecond)
	}
}

// A pass that outlasts the lease keeps it (another replica cannot take it
// and issue beside this one), and a pass whose lease is taken stops
// without writing.
func TestLeaseHeldThroughLongPass(t *testing.T) {
	f := setup(t)
	g := &gatedRenderer{r: render.NewCache(0), entered: make(chan struct{}, 1), release: make(chan struct{})}
	lost := &signalHandler{prefix: "lost the issuing lease", ch: make(chan struct{}, 1)}
	is := desired.New(f.st, f.keys, g, f.clk, desired.Options{TTL: 48 * time.Hour}, slog.New(lost))
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- is.Run(ctx, "replica-a") }()
	defer func() {
		cancel()
		if err := <-done; err != nil {
			t.Error(err)
		}
	}()
	var releaseOnce sync.Once
	release := func() { releaseOnce.Do(func() { close(g.release) }) }
	defer release() // before Run is waited for, should the test fail in the pass

	// The first (full) pass blocks in car-1's render; the lease was taken
	// at t0 until t0+15s.
	select {
	case <-g.entered:
	case <-time.After(30 * time.Second):
		t.Fatal("the first pass did not render")
	}
	waitTimers(t, f.clk, 1, "renewal timer")
	for range 2 { // t0+10s, then t0+20s: past the lease taken at t0
		f.clk.Advance(10 * time.Second)
		waitTimers(t, f.clk, 1, "the issuer renews its lease during a pass")
	}
	if ok, err := f.st.TryLease(ctx, desired.LeaseName, "replica-b", f.clk.Now(), 15*time.Second); err != nil || ok {
		t.Fatalf("at t0+20s another replica took the lease from a replica still in its pass (ok %v, err %v)", ok, err)
	}

	// Another replica takes the lease (replica-a's renewal is overdue as
	// replica-b's clock sees it): replica-a's next renewal fails and it
	// stops its pass without writing.
	if ok, err := f.st.TryLease(ctx, desired.LeaseName, "replica-b", f.clk.Now().Add(time.Hour), 15*time.Second); err != nil || !ok {
		t.Fatalf("replica-b could not take an expired lease (ok %v, err %v)", ok, err)
	}
	f.clk.Advance(5 * time.Second)
	select {
	case <-lost.ch:
	case <-time.After(10 * time.Second):
		t.Fatal("replica-a did not notice it lost the lease")
	}
	release()
	// Run, no longer the leader, arms its retry timer once the pass stopped.
	waitTimers(t, f.clk, 1, "Run after the stopped pass")
	if got := f.revision(t, "car-1", hubv1.HalfVehicle); got != 0 {
		t.Fatalf("car-1 has revision %d from a replica that had lost the lease", got)
	}
}

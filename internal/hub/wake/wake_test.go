package wake_test

import (
	"context"
	"io"
	"log/slog"
	"path/filepath"
	"testing"
	"time"

	hubv1 "github.com/misaki-io/misaki/api/hub/v1"
	"github.com/misaki-io/misaki/internal/hub/store"
	"github.com/misaki-io/misaki/internal/hub/store/sqlite"
	"github.com/misaki-io/misaki/internal/hub/wake"
)

func TestWakesOnlyTheChangedVehicle(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	st, err := sqlite.Open(ctx, filepath.Join(t.TempDir(), "hub.db"), log)
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	now := time.Now().UTC().Truncate(time.Second)
	for _, id := range []string{"car-1", "car-2"} {
		if err := st.CreateVehicle(ctx, hubv1.Vehicle{ID: id, Created: now}); err != nil {
			t.Fatal(err)
		}
	}
	w := wake.New(st, log)
	done := make(chan error, 1)
	go func() { done <- w.Run(ctx) }()

	one, cancelOne := w.Wait("car-1", hubv1.HalfVehicle)
	defer cancelOne()
	two, cancelTwo := w.Wait("car-2", hubv1.HalfVehicle)
	cloud, cancelCloud := w.Wait("car-1", hubv1.HalfCloud)
	if n := w.Waiting(); n != 3 {
		t.Fatalf("waiting: %d", n)
	}
	put := func(id string, rev int64) {
		t.Helper()
		d := store.Desired{Desired: hubv1.Desired{Vehicle: id, Half: hubv1.HalfVehicle, Revision: rev, Digest: "sha256:00", IssuedAt: now, Expires: now.Add(time.Hour)}}
		if err := st.PutDesired(ctx, d); err != nil {
			t.Fatal(err)
		}
	}
	// Run subscribes before it reads the sequence; give it the first write
	// only once it listens: a write before that would wake nobody, which
	// is why long-polls register before they read the store.
	deadline := time.After(10 * time.Second)
	for rev := int64(1); ; rev++ {
		put("car-1", rev)
		select {
		case <-one:
		case <-time.After(50 * time.Millisecond):
			continue
		case <-deadline:
			t.Fatal("car-1's waiter was not woken")
		}
		break
	}
	select {
	case <-two:
		t.Fatal("car-2 woken by car-1's change")
	case <-cloud:
		t.Fatal("car-1's cloud half woken by its vehicle half")
	default:
	}
	cancelTwo()
	cancelCloud()
	if n := w.Waiting(); n != 0 {
		t.Fatalf("waiting after wake and cancels: %d", n)
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
}

// Changed closes at the next change of its half, on any vehicle, and not
// at a change of the other half.
func TestChangedFollowsOneHalf(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	st, err := sqlite.Open(ctx, filepath.Join(t.TempDir(), "hub.db"), log)
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	now := time.Now().UTC().Truncate(time.Second)
	for _, id := range []string{"car-1", "car-2"} {
		if err := st.CreateVehicle(ctx, hubv1.Vehicle{ID: id, Created: now}); err != nil {
			t.Fatal(err)
		}
	}
	w := wake.New(st, log)
	done := make(chan error, 1)
	go func() { done <- w.Run(ctx) }()
	put := func(id, half string, rev int64) {
		t.Helper()
		d := store.Desired{Desired: hubv1.Desired{Vehicle: id, Half: half, Revision: rev, Digest: "sha256:00", IssuedAt: now, Expires: now.Add(time.Hour)}}
		if err := st.PutDesired(ctx, d); err != nil {
			t.Fatal(err)
		}
	}
	cloud := w.Changed(hubv1.HalfCloud)
	if again := w.Changed(hubv1.HalfCloud); again != cloud {
		t.Fatal("two callers before a change got different channels")
	}
	// As in TestWakesOnlyTheChangedVehicle: write until Run listens.
	deadline := time.After(10 * time.Second)
	for rev := int64(1); ; rev++ {
		veh := w.Changed(hubv1.HalfVehicle)
		put("car-1", hubv1.HalfVehicle, rev)
		select {
		case <-veh:
		case <-time.After(50 * time.Millisecond):
			continue
		case <-deadline:
			t.Fatal("the vehicle half's channel did not close")
		}
		break
	}
	select {
	case <-cloud:
		t.Fatal("the cloud half's channel closed at a change of the vehicle half")
	default:
	}
	if veh := w.Changed(hubv1.HalfVehicle); isClosed(veh) {
		t.Fatal("after a change, Changed handed out the closed channel again")
	}
	put("car-2", hubv1.HalfCloud, 1)
	select {
	case <-cloud:
	case <-time.After(10 * time.Second):
		t.Fatal("the cloud half's channel did not close at car-2's cloud change")
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
}

func isClosed(ch <-chan struct{}) bool {
	select {
	case <-ch:
		return true
	default:
		return false
	}
}

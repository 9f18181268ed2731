package agent

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"sync"
	"time"

	"k8s.io/apimachinery/pkg/util/validation"
	"sigs.k8s.io/controller-runtime/pkg/client"

	hubv1 "github.com/misaki-io/misaki/api/hub/v1"
	"github.com/misaki-io/misaki/internal/backoff"
	"github.com/misaki-io/misaki/internal/clock"
)

// FleetHub is the hub as the cloud agent uses it: a Hub plus the change
// feed (GET /v1/changes).
type FleetHub interface {
	Hub
	Changes(ctx context.Context, half string, after int64, wait time.Duration) (hubv1.Changes, error)
}

// FleetConfig configures the cloud agent.
type FleetConfig struct {
	// Dir holds one directory per vehicle (Dir/<vehicle>/).
	Dir    string
	Pinned []byte
	Hub    FleetHub
	Client client.Client
	Clock  clock.Clock
	// ChangesWait is the change feed's long-poll wait (default 60s).
	ChangesWait                               time.Duration
	DriftInterval, HealthDeadline, HealthPoll time.Duration
	Backoff                                   backoff.Policy
	Reports                                   *Reporter
	Extra                                     func(*hubv1.Reported)
	Metrics                                   *Metrics
	Log                                       *slog.Logger
}

// Fleet is the agent in the cloud (--cloud): one process applies every
// vehicle's cloud half into that vehicle's namespace (misaki-v-<vehicle>),
// with the same verification, ledger and prune rules as on a vehicle. It
// does not hold a long-poll per vehicle: it follows the hub's change feed
// and wakes the half the feed names, which then fetches once. Halves
// found on disk start at once, so after a restart every vehicle's cloud
// half is re-applied with the hub unreachable.
type Fleet struct {
	cfg FleetConfig
	log *slog.Logger

	mu     sync.Mutex // guards halves
	halves map[string]*Half
	wg     sync.WaitGroup
	errs   chan error
}

// NewFleet returns a Fleet; call Run.
func NewFleet(cfg FleetConfig) *Fleet {
	if cfg.Clock == nil {
		cfg.Clock = clock.Real{}
	}
	if cfg.ChangesWait <= 0 {
		cfg.ChangesWait = 60 * time.Second
	}
	if cfg.Log == nil {
		cfg.Log = slog.New(slog.DiscardHandler)
	}
	return &Fleet{cfg: cfg, log: cfg.Log.With("mode", "cloud"), halves: map[string]*Half{}, errs: make(chan error, 1)}
}

// Vehicles counts the halves running.
func (f *Fleet) Vehicles() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return len(f.halves)
}

// Run follows the change feed until ctx ends, or a half stops on an
// error of the agent's own state.
func (f *Fleet) Run(ctx context.Context) error {
	ctx, cancel := context.WithCancel(ctx)
	defer func() {
		cancel()
		f.wg.Wait()
	}()
	entries, err := os.ReadDir(f.cfg.Dir)
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("agent: %w", err)
	}
	for _, e := range entries {
		if e.IsDir() && validation.IsDNS1123Label(e.Name()) == nil {
			if _, err := f.half(ctx, e.Name()); err != nil {
				return err
			}
		}
	}
	b := backoff.New(f.cfg.Backoff, f.cfg.Clock)
	var seq int64
	for {
		select {
		case err := <-f.errs:
			return err
		default:
		}
		ch, err := f.cfg.Hub.Changes(ctx, hubv1.HalfCloud, seq, f.cfg.ChangesWait)
		if err != nil {
			if ctx.Err() != nil {
				return ctx.Err()
			}
			delay := b.Next()
			f.log.Info("change feed unreachable; keeping every vehicle's applied state", "err", err, "retry", delay.Round(time.Millisecond))
			if backoff.Sleep(ctx, f.cfg.Clock, delay) != nil {
				return ctx.Err()
			}
			continue
		}
		b.Reset()
		for _, c := range ch.Items {
			if c.Half != hubv1.HalfCloud {
				continue
			}
			h, err := f.half(ctx, c.Vehicle)
			if err != nil {
				f.log.Warn("cannot start the vehicle's cloud half", "vehicle", c.Vehicle, "err", err)
				continue
			}
			if c.Revision > h.Accepted() {
				h.Notify()
			}
		}
		seq = ch.Seq
	}
}

// half returns the vehicle's running half, starting it if needed.
func (f *Fleet) half(ctx context.Context, vehicle string) (*Half, error) {
	if err := validation.IsDNS1123Label(vehicle); err != nil {
		return nil, fmt.Errorf("vehicle %q: not a DNS label", vehicle)
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if h, ok := f.halves[vehicle]; ok {
		return h, nil
	}
	dir := filepath.Join(f.cfg.Dir, vehicle)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("agent: %w", err)
	}
	h, err := NewHalf(HalfConfig{
		Vehicle: vehicle, Half: hubv1.HalfCloud, Dir: dir, Pinned: f.cfg.Pinned,
		Hub: f.cfg.Hub, Client: f.cfg.Client, Namespace: "misaki-v-" + vehicle,
		Clock: f.cfg.Clock, DriftInterval: f.cfg.DriftInterval,
		HealthDeadline: f.cfg.HealthDeadline, HealthPoll: f.cfg.HealthPoll,
		Backoff: f.cfg.Backoff, Reports: f.cfg.Reports, Extra: f.cfg.Extra, Metrics: f.cfg.Metrics, Log: f.cfg.Log,
		// Gates describe the car: the cloud half applies without them.
		Gates: GateConfig{Ignore: true},
	})
	if err != nil {
		return nil, err
	}
	f.halves[vehicle] = h
	f.wg.Add(1)
	go func() {
		defer f.wg.Done()
		if err := h.Run(ctx); err != nil && ctx.Err() == nil {
			select {
			case f.errs <- fmt.Errorf("vehicle %s: %w", vehicle, err):
			default:
			}
		}
	}()
	h.Notify()
	return h, nil
}

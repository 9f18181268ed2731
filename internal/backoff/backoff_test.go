package backoff

import (
	"context"
	"errors"
	"math"
	"strings"
	"testing"
	"time"

	"github.com/misaki-io/misaki/internal/clock"
)

// TestDelayBounds checks, for every attempt of a table of policies, that
// the delay lies in [d·(1-Jitter), d] for d = min(Max, Initial·Mult^n),
// at the lowest, middle and highest draws.
func TestDelayBounds(t *testing.T) {
	for _, tc := range []struct {
		name string
		p    Policy
		// want is the delay before jitter for attempts 0, 1, 2, ...; the
		// last entry repeats for every attempt after.
		want   []time.Duration
		jitter float64
	}{
		{"defaults", Policy{}, []time.Duration{1 * time.Second, 2 * time.Second, 4 * time.Second, 8 * time.Second, 16 * time.Second, 32 * time.Second, 64 * time.Second, 128 * time.Second, 256 * time.Second, 5 * time.Minute}, 0.5},
		{"no jitter", Policy{Initial: 100 * time.Millisecond, Max: time.Second, Jitter: NoJitter}, []time.Duration{100 * time.Millisecond, 200 * time.Millisecond, 400 * time.Millisecond, 800 * time.Millisecond, time.Second}, 0},
		{"full jitter", Policy{Initial: time.Second, Max: 10 * time.Second, Multiplier: 3, Jitter: 1}, []time.Duration{time.Second, 3 * time.Second, 9 * time.Second, 10 * time.Second}, 1},
		{"multiplier 1", Policy{Initial: 5 * time.Second, Max: time.Minute, Multiplier: 1, Jitter: 0.2}, []time.Duration{5 * time.Second}, 0.2},
		{"initial above max", Policy{Initial: time.Hour, Max: time.Minute, Jitter: NoJitter}, []time.Duration{time.Minute}, 0},
		{"largest max", Policy{Initial: time.Second, Max: math.MaxInt64, Jitter: 0.5}, nil, 0.5},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ceiling := tc.p.withDefaults().Max
			for n := range 2000 {
				var d time.Duration
				switch {
				case tc.want == nil: // computed exactly where it does not overflow
					d = ceiling
					if n <= 33 { // 1s·2^34 is past MaxInt64
						d = time.Second << n
					}
				case n < len(tc.want):
					d = tc.want[n]
				default:
					d = tc.want[len(tc.want)-1]
				}
				lo := time.Duration(float64(d) * (1 - tc.jitter))
				for _, rnd := range []float64{0, 0.5, math.Nextafter(1, 0)} {
					got := tc.p.Delay(n, rnd)
					// float64 has 53 bits: allow a rounding of d/2^50.
					slack := d >> 50
					if got < lo-slack || got > d || got < 0 {
						t.Fatalf("Delay(%d, %v) = %v, want in [%v, %v]", n, rnd, got, lo, d)
					}
				}
				if got := tc.p.Delay(n, 0); tc.jitter == 0 && got != d {
					t.Fatalf("Delay(%d, 0) = %v without jitter, want exactly %v", n, got, d)
				}
			}
		})
	}
}

func TestDelayLargeAttempts(t *testing.T) {
	p := Policy{Initial: time.Second, Max: time.Hour, Jitter: NoJitter}
	for _, n := range []int{63, 64, 1000, math.MaxInt32, math.MaxInt} {
		if got := p.Delay(n, 0.3); got != time.Hour {
			t.Errorf("Delay(%d) = %v, want Max %v", n, got, time.Hour)
		}
	}
	if got := p.Delay(-5, 0); got != time.Second {
		t.Errorf("Delay(-5) = %v, want Initial (a negative attempt counts as 0)", got)
	}
	huge := Policy{Initial: math.MaxInt64, Max: math.MaxInt64, Multiplier: 1e300, Jitter: NoJitter}
	if got := huge.Delay(1000, 0); got != math.MaxInt64 {
		t.Errorf("Delay with MaxInt64 cap = %v, want %v", got, time.Duration(math.MaxInt64))
	}
}

func TestDelayJitterRange(t *testing.T) {
	p := Policy{Initial: 10 * time.Second, Max: time.Minute, Jitter: 0.5}
	for _, tc := range []struct {
		rnd  float64
		want time.Duration
	}{
		{0, 5 * time.Second},
		{0.5, 7500 * time.Millisecond},
		{0.9, 9500 * time.Millisecond},
		{-1, 5 * time.Second},         // clamped to 0
		{math.NaN(), 5 * time.Second}, // clamped to 0
		{7, 10 * time.Second},         // clamped to 1
	} {
		if got := p.Delay(0, tc.rnd); got != tc.want {
			t.Errorf("Delay(0, %v) = %v, want %v", tc.rnd, got, tc.want)
		}
	}
	// The real source spreads the delays over the range.
	b := New(p, clock.NewFake(time.Unix(0, 0)))
	var lo, hi int
	for range 1000 {
		d := b.Next()
		b.Reset()
		if d < 5*time.Second || d > 10*time.Second {
			t.Fatalf("Next() = %v, want in [5s, 10s]", d)
		}
		if d < 6*time.Second {
			lo++
		}
		if d > 9*time.Second {
			hi++
		}
	}
	if lo == 0 || hi == 0 {
		t.Errorf("1000 draws: %d in [5s, 6s), %d in (9s, 10s]; want both ends of the range reached", lo, hi)
	}
}

func TestZeroPolicyDefaults(t *testing.T) {
	var p Policy
	if err := p.Validate(); err != nil {
		t.Fatalf("zero Policy: Validate() = %v", err)
	}
	q := p.withDefaults()
	if q.Initial != time.Second || q.Max != 5*time.Minute || q.Multiplier != 2 || q.Jitter != 0.5 {
		t.Errorf("zero Policy defaults = %+v, want 1s, 5m, 2, 0.5", q)
	}
	if got := p.Delay(0, 0); got != 500*time.Millisecond {
		t.Errorf("zero Policy: Delay(0, 0) = %v, want 500ms (1s less half)", got)
	}
	if got := p.Delay(100, math.Nextafter(1, 0)); got != 5*time.Minute {
		t.Errorf("zero Policy: Delay(100, ~1) = %v, want 5m", got)
	}
}

func TestValidate(t *testing.T) {
	for _, tc := range []struct {
		name string
		p    Policy
		want string // substring of the error; "" for none
	}{
		{"ok", Policy{Initial: time.Second, Max: time.Minute, Multiplier: 1.5, Jitter: 1}, ""},
		{"no jitter", Policy{Jitter: NoJitter}, ""},
		{"negative initial", Policy{Initial: -time.Second}, "initial"},
		{"negative max", Policy{Max: -time.Second}, "max"},
		{"max below initial", Policy{Initial: time.Hour}, "below initial"},
		{"multiplier below 1", Policy{Multiplier: 0.5}, "multiplier"},
		{"multiplier NaN", Policy{Multiplier: math.NaN()}, "multiplier"},
		{"jitter above 1", Policy{Jitter: 1.5}, "jitter"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := tc.p.Validate()
			switch {
			case tc.want == "" && err != nil:
				t.Fatalf("Validate() = %v, want nil", err)
			case tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want)):
				t.Fatalf("Validate() = %v, want an error naming %q", err, tc.want)
			}
		})
	}
}

func TestNextCountsAndReset(t *testing.T) {
	b := New(Policy{Initial: time.Second, Max: time.Minute, Jitter: NoJitter}, nil)
	for i, want := range []time.Duration{time.Second, 2 * time.Second, 4 * time.Second} {
		if got := b.Next(); got != want {
			t.Fatalf("Next() #%d = %v, want %v", i, got, want)
		}
	}
	if b.Attempts() != 3 {
		t.Errorf("Attempts() = %d, want 3", b.Attempts())
	}
	b.Reset()
	if got := b.Next(); got != time.Second {
		t.Errorf("Next() after Reset = %v, want 1s", got)
	}
	r := New(Policy{Initial: time.Second, Max: time.Minute}, nil).WithRand(func() float64 { return 0 })
	if got := r.Next(); got != 500*time.Millisecond {
		t.Errorf("Next() with rnd 0 = %v, want 500ms", got)
	}
}

// waitTimers polls (it does not sleep for a fixed time) until the fake
// clock has n timers armed.
func waitTimers(t *testing.T, clk *clock.Fake, n int) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for clk.Timers() != n {
		if time.Now().After(deadline) {
			t.Fatalf("%d timers armed after 10s, want %d", clk.Timers(), n)
		}
		time.Sleep(time.Millisecond)
	}
}

func TestWaitOnFakeClock(t *testing.T) {
	clk := clock.NewFake(time.Unix(1000, 0))
	b := New(Policy{Initial: 2 * time.Second, Max: time.Minute, Jitter: NoJitter}, clk)
	done := make(chan error, 1)
	go func() { done <- b.Wait(context.Background()) }()
	waitTimers(t, clk, 1)
	clk.Advance(2*time.Second - time.Nanosecond)
	select {
	case err := <-done:
		t.Fatalf("Wait returned %v before its 2s had passed on the clock", err)
	default:
	}
	clk.Advance(time.Nanosecond)
	if err := <-done; err != nil {
		t.Fatalf("Wait() = %v, want nil", err)
	}
	// The second wait is twice as long.
	go func() { done <- b.Wait(context.Background()) }()
	waitTimers(t, clk, 1)
	clk.Advance(2 * time.Second)
	select {
	case err := <-done:
		t.Fatalf("second Wait returned %v after 2s, want it to wait 4s", err)
	default:
	}
	clk.Advance(2 * time.Second)
	if err := <-done; err != nil {
		t.Fatalf("second Wait() = %v, want nil", err)
	}
}

func TestWaitCancelled(t *testing.T) {
	clk := clock.NewFake(time.Unix(1000, 0))
	b := New(Policy{}, clk)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- b.Wait(ctx) }()
	waitTimers(t, clk, 1)
	cancel()
	if err := <-done; !errors.Is(err, context.Canceled) {
		t.Fatalf("Wait() after cancel = %v, want context.Canceled", err)
	}
	if clk.Timers() != 0 {
		t.Errorf("%d timers left armed after a cancelled Wait, want 0 (stopped)", clk.Timers())
	}
	// An ended context returns at once, without arming a timer.
	if err := b.Wait(ctx); !errors.Is(err, context.Canceled) {
		t.Fatalf("Wait(ended ctx) = %v, want context.Canceled", err)
	}
	if err := Sleep(ctx, clk, 0); !errors.Is(err, context.Canceled) {
		t.Fatalf("Sleep(ended ctx, 0) = %v, want context.Canceled", err)
	}
}

func TestSleepNonPositive(t *testing.T) {
	clk := clock.NewFake(time.Unix(1000, 0))
	for _, d := range []time.Duration{0, -time.Second} {
		if err := Sleep(context.Background(), clk, d); err != nil {
			t.Errorf("Sleep(%v) = %v, want nil at once", d, err)
		}
	}
}

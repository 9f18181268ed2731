// Package backoff is the one retry delay the agent's loops use: exponential
// growth from Policy.Initial to Policy.Max with jitter, waited on an
// injected clock.Clock so tests advance a fake clock instead of sleeping.
//
// Jitter matters for a fleet: when the hub comes back after an outage,
// thousands of vehicles retrying on the same schedule would arrive
// together and knock it over again. Drawing each delay from
// [d·(1-Jitter), d] spreads them out, while the lower bound keeps a
// retry from collapsing to zero.
//
// Policy.Delay is a pure function of the attempt number and a random
// draw, so its bounds are tested as a table; Backoff adds the attempt
// count, the random source and the wait.
package backoff

import (
	"context"
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"sync"
	"time"

	"github.com/misaki-io/misaki/internal/clock"
)

// Defaults for a zero Policy field.
const (
	DefaultInitial    = time.Second
	DefaultMax        = 5 * time.Minute
	DefaultMultiplier = 2.0
	DefaultJitter     = 0.5
)

// NoJitter as Policy.Jitter turns jitter off (0 means DefaultJitter), for
// a caller that needs exact delays.
const NoJitter = -1.0

// Policy is exponential backoff with proportional jitter. The zero value
// of each field is its default.
type Policy struct {
	// Initial is the delay before the first retry (attempt 0), before
	// jitter. Default 1s.
	Initial time.Duration
	// Max caps the delay, before jitter. Default 5m.
	Max time.Duration
	// Multiplier is the growth per attempt, at least 1. Default 2.
	Multiplier float64
	// Jitter in (0, 1]: the delay is drawn uniformly from
	// [d·(1-Jitter), d], d the exponential delay. 1 is "full jitter".
	// Default 0.5; NoJitter (any negative value) for none.
	Jitter float64
}

// withDefaults fills the zero fields; it is the one place defaults are set.
func (p Policy) withDefaults() Policy {
	if p.Initial == 0 {
		p.Initial = DefaultInitial
	}
	if p.Max == 0 {
		p.Max = DefaultMax
	}
	if p.Multiplier == 0 {
		p.Multiplier = DefaultMultiplier
	}
	switch {
	case p.Jitter == 0:
		p.Jitter = DefaultJitter
	case p.Jitter < 0:
		p.Jitter = 0
	}
	return p
}

// Validate checks p without I/O; its errors name the field.
func (p Policy) Validate() error {
	var errs []error
	if p.Initial < 0 {
		errs = append(errs, fmt.Errorf("backoff: initial %v: want a positive duration, or 0 for %v", p.Initial, DefaultInitial))
	}
	if p.Max < 0 {
		errs = append(errs, fmt.Errorf("backoff: max %v: want a positive duration, or 0 for %v", p.Max, DefaultMax))
	}
	if q := p.withDefaults(); p.Initial >= 0 && p.Max >= 0 && q.Max < q.Initial {
		errs = append(errs, fmt.Errorf("backoff: max %v is below initial %v: raise max or lower initial", q.Max, q.Initial))
	}
	if p.Multiplier != 0 && !(p.Multiplier >= 1) { // also catches NaN
		errs = append(errs, fmt.Errorf("backoff: multiplier %v: want at least 1, or 0 for %v", p.Multiplier, DefaultMultiplier))
	}
	if p.Jitter > 1 || math.IsNaN(p.Jitter) {
		errs = append(errs, fmt.Errorf("backoff: jitter %v: want a fraction in (0, 1], 0 for %v or NoJitter", p.Jitter, DefaultJitter))
	}
	return errors.Join(errs...)
}

// Delay is the delay before retry attempt (0 is the first retry) for a
// random draw rnd in [0, 1): min(Max, Initial·Multiplier^attempt), less
// up to Jitter of itself. It is pure, never negative and never above Max,
// however large attempt is. Out-of-range fields and arguments are clamped
// (Validate reports them).
func (p Policy) Delay(attempt int, rnd float64) time.Duration {
	p = p.withDefaults()
	initial, ceiling := max(p.Initial, 0), max(p.Max, 0)
	mult := p.Multiplier
	if !(mult >= 1) {
		mult = 1
	}
	jitter := min(max(p.Jitter, 0), 1)
	if math.IsNaN(jitter) {
		jitter = DefaultJitter
	}
	if !(rnd >= 0) { // also NaN
		rnd = 0
	}
	rnd = min(rnd, 1)
	attempt = max(attempt, 0)

	// In float64 math.Pow overflows to +Inf rather than wrapping, and the
	// comparison with the ceiling absorbs it.
	d := float64(initial) * math.Pow(mult, float64(attempt))
	if d > float64(ceiling) || math.IsNaN(d) {
		d = float64(ceiling)
	}
	d -= d * jitter * (1 - rnd)
	if d >= float64(ceiling) { // float64(Max) may round up past MaxInt64
		return ceiling
	}
	return time.Duration(d)
}

// maxAttempt bounds the attempt count; the delay is at Max long before.
const maxAttempt = 1 << 20

// Backoff counts the attempts of one retry loop and waits the policy's
// delay for each on a clock. It is safe for concurrent use, though a
// retry loop is normally one goroutine.
type Backoff struct {
	p   Policy
	clk clock.Clock

	mu      sync.Mutex // guards the fields below
	attempt int
	rnd     func() float64
}

// New returns a Backoff for p on clk (nil: the real clock), at attempt 0,
// drawing jitter from math/rand/v2.
func New(p Policy, clk clock.Clock) *Backoff {
	if clk == nil {
		clk = clock.Real{}
	}
	return &Backoff{p: p, clk: clk, rnd: rand.Float64}
}

// WithRand makes b draw jitter from rnd, which returns values in [0, 1)
// (tests use a constant), and returns b.
func (b *Backoff) WithRand(rnd func() float64) *Backoff {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.rnd = rnd
	return b
}

// Next returns the delay for the next attempt and counts the attempt.
func (b *Backoff) Next() time.Duration {
	b.mu.Lock()
	defer b.mu.Unlock()
	d := b.p.Delay(b.attempt, b.rnd())
	if b.attempt < maxAttempt {
		b.attempt++
	}
	return d
}

// Attempts is how many delays Next has handed out since New or Reset.
func (b *Backoff) Attempts() int {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.attempt
}

// Reset starts again from Initial; call it after a success.
func (b *Backoff) Reset() {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.attempt = 0
}

// Wait waits Next() on the clock. It returns ctx.Err() if ctx ends first
// (or had ended), nil otherwise.
func (b *Backoff) Wait(ctx context.Context) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	return Sleep(ctx, b.clk, b.Next())
}

// Sleep waits d on clk, or until ctx ends, when it returns ctx.Err(). A d
// of zero or less returns at once (unless ctx has ended). Loops that wait
// for a deadline other than a backoff delay (a certificate's renewal
// time, say) use it so they too run on the injected clock.
func Sleep(ctx context.Context, clk clock.Clock, d time.Duration) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	if d <= 0 {
		return nil
	}
	t := clk.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C():
		return nil
	}
}

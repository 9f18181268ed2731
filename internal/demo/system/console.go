package system

import (
	"context"
	"errors"
	"fmt"
	"io"
	"sync"
	"time"

	"github.com/misaki-io/misaki/internal/demo/proc"
)

// console serialises the demo's output lines and stamps story events with
// the time since the start.
type console struct {
	start time.Time

	mu sync.Mutex // guards w
	w  io.Writer
}

func (c *console) printf(format string, args ...any) {
	c.mu.Lock()
	defer c.mu.Unlock()
	fmt.Fprintf(c.w, format, args...)
}

// say prints one event line, stamped.
func (c *console) say(format string, args ...any) {
	c.printf("[%5.1fs] %s\n", time.Since(c.start).Seconds(), fmt.Sprintf(format, args...))
}

// pollEvery is how often poll tries its condition again.
const pollEvery = 200 * time.Millisecond

// poll calls f until it returns nil, and fails with f's last error when
// timeout passes, when ctx ends, or when p (if not nil) exits: a
// condition that waits for a process must not wait for a dead one.
func poll(ctx context.Context, timeout time.Duration, p *proc.Proc, f func() error) error {
	deadline := time.NewTimer(timeout)
	defer deadline.Stop()
	var exited <-chan struct{}
	if p != nil {
		exited = p.Done()
	}
	for {
		err := f()
		if err == nil {
			return nil
		}
		select {
		case <-ctx.Done():
			return errors.Join(ctx.Err(), err)
		case <-exited:
			return fmt.Errorf("%w; last: %v", proc.Exited(p), err)
		case <-deadline.C:
			return fmt.Errorf("after %v: %w", timeout, err)
		case <-time.After(pollEvery):
		}
	}
}

package postgres

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/jackc/pgx/v5"
)

const (
	// channel is the NOTIFY channel PutDesired notifies on, with the
	// sequence as its payload.
	channel = "misaki_desired"
	// listenerName is the listener connection's application_name, as
	// pg_stat_activity shows it.
	listenerName = "misaki-hub-listener"

	minBackoff  = 50 * time.Millisecond
	maxBackoff  = 5 * time.Second
	healthEvery = 30 * time.Second
	healthWait  = 5 * time.Second
)

// Changes delivers the newest sequence each time it moves, on any replica,
// coalescing; see store.Store. The first call starts the Store's listener
// and returns once it listens, so a write committed after Changes returns
// is delivered. A caller that also wants the state before subscribing
// calls Changes first, then Sequence.
func (s *Store) Changes(ctx context.Context) (<-chan int64, error) {
	c := s.fan.Subscribe(ctx)
	ready, done, err := s.startListener()
	if err != nil {
		return nil, fmt.Errorf("postgres: changes: %w", err)
	}
	select {
	case <-ready:
		return c, nil
	case <-done:
		return nil, fmt.Errorf("postgres: changes: %w", errClosed)
	case <-ctx.Done():
		return nil, fmt.Errorf("postgres: changes: waiting for the listener: %w", ctx.Err())
	}
}

func (s *Store) startListener() (ready, done <-chan struct{}, err error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return nil, nil, errClosed
	}
	if s.ready == nil {
		ctx, cancel := context.WithCancel(context.Background())
		s.ready, s.stop, s.done = make(chan struct{}), cancel, make(chan struct{})
		go func(ready, done chan struct{}) {
			defer close(done)
			s.listenLoop(ctx, ready)
		}(s.ready, s.done)
	}
	return s.ready, s.done, nil
}

// listenLoop keeps a LISTEN connection until ctx ends, reconnecting with
// backoff. Each time it starts listening it reads the sequence: the first
// time as the baseline (nothing has been missed: Changes is still waiting
// for ready), later to deliver what changed while it was away.
func (s *Store) listenLoop(ctx context.Context, ready chan struct{}) {
	backoff := minBackoff
	first := true
	for {
		err := s.listenOnce(ctx, func(seq int64) {
			if first {
				s.fan.Baseline(seq)
				close(ready)
				first = false
			} else if s.fan.Publish(seq) {
				s.log.Info("change listener caught up after reconnecting", "seq", seq)
			}
			backoff = minBackoff
		})
		if ctx.Err() != nil {
			return
		}
		s.log.Warn("change listener lost its connection; reconnecting", "err", err, "backoff", backoff)
		t := s.clock.NewTimer(backoff)
		select {
		case <-ctx.Done():
			t.Stop()
			return
		case <-t.C():
		}
		backoff = min(2*backoff, maxBackoff)
	}
}

// listenOnce connects, listens, calls listening with the sequence read
// after LISTEN took effect, and delivers notifications until the
// connection fails or ctx ends.
func (s *Store) listenOnce(ctx context.Context, listening func(seq int64)) error {
	conn, err := pgx.ConnectConfig(ctx, s.listen.Copy())
	if err != nil {
		return fmt.Errorf("connect: %w", err)
	}
	defer func() {
		cctx, cancel := context.WithTimeout(context.Background(), healthWait)
		defer cancel()
		conn.Close(cctx)
	}()
	if _, err := conn.Exec(ctx, `LISTEN `+channel); err != nil {
		return fmt.Errorf("listen: %w", err)
	}
	var seq int64
	if err := conn.QueryRow(ctx, `SELECT value FROM change_seq WHERE id = 1`).Scan(&seq); err != nil {
		return fmt.Errorf("read sequence: %w", err)
	}
	listening(seq)
	for {
		wctx, cancel := context.WithTimeout(ctx, s.health)
		n, err := conn.WaitForNotification(wctx)
		silent := wctx.Err() != nil
		cancel()
		switch {
		case err == nil:
			seq, err := parseSeq(n.Payload)
			if err != nil {
				s.log.Warn("change notification ignored", "payload", n.Payload, "err", err)
				continue
			}
			s.fan.Publish(seq)
		case ctx.Err() != nil:
			return ctx.Err()
		case silent:
			// No notification for a while: make sure the connection is
			// alive, since a dead peer may never return an error.
			hctx, cancel := context.WithTimeout(ctx, healthWait)
			_, err := conn.Exec(hctx, `SELECT 1`)
			cancel()
			if err != nil {
				return fmt.Errorf("health check: %w", err)
			}
		default:
			return fmt.Errorf("wait for notification: %w", err)
		}
	}
}

// parseSeq reads a notification's payload: a positive decimal sequence.
func parseSeq(payload string) (int64, error) {
	seq, err := strconv.ParseInt(payload, 10, 64)
	if err != nil {
		return 0, fmt.Errorf("payload %q: %w", payload, err)
	}
	if seq <= 0 {
		return 0, errors.New("payload " + strconv.Quote(payload) + " is not a positive sequence")
	}
	return seq, nil
}

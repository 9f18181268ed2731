package desired

import (
	"context"
	"fmt"
	"time"

	"github.com/misaki-io/misaki/internal/hub/store"
)

// LeaseName is the store lease the issuing replica holds.
const LeaseName = "desired"

// leaseTTL is how long a lease lasts without renewal; a replica that dies
// hands over to another within it.
const leaseTTL = 15 * time.Second

// pollEvery is how often the leader looks at the dirty queue when nothing
// in this process kicked it (writes on other replicas).
const pollEvery = 250 * time.Millisecond

// Kick tells a running Issuer that vehicles were marked dirty by this
// process, so it need not wait for its poll.
func (is *Issuer) Kick() {
	select {
	case is.kick <- struct{}{}:
	default:
	}
}

// Run issues revisions while this replica holds the lease, until ctx ends.
// holder names this replica in the lease.
func (is *Issuer) Run(ctx context.Context, holder string) error {
	var (
		leader   bool
		lastFull time.Time
		renewed  time.Time
	)
	t := is.clk.NewTimer(0)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-t.C():
		case <-is.kick:
			t.Stop()
		}
		now := is.clk.Now()
		if !leader || now.Sub(renewed) > leaseTTL/3 {
			ok, err := is.st.TryLease(ctx, LeaseName, holder, now, leaseTTL)
			if err != nil {
				if ctx.Err() != nil {
					return nil
				}
				is.log.Warn("lease", "err", err)
				ok = false
			}
			if ok && !leader {
				is.log.Info("issuing desired revisions on this replica", "holder", holder)
				lastFull = time.Time{}
			}
			leader, renewed = ok, now
		}
		if leader {
			full := now.Sub(lastFull) >= is.opts.Resync
			held, err := is.holding(ctx, holder, func(ctx context.Context) error { return is.pass(ctx, full) })
			switch {
			case ctx.Err() != nil:
				return nil
			case !held:
				leader = false // the pass was stopped; its queue entries are back
			case err != nil:
				is.log.Warn("issue pass", "err", err)
			case full:
				lastFull = now
			}
		}
		wait := pollEvery
		if !leader {
			wait = leaseTTL / 3
		}
		t = is.clk.NewTimer(wait)
	}
}

// holding runs fn (a pass) while renewing the lease every leaseTTL/3,
// and cancels fn's context as soon as a renewal fails or finds the lease
// taken: a pass over thousands of vehicles outlasts the lease, and
// without renewal another replica takes the lease and issues beside this
// one (each then starting a full pass of its own). It reports whether the
// lease was still held when fn returned.
func (is *Issuer) holding(ctx context.Context, holder string, fn func(context.Context) error) (held bool, err error) {
	fctx, cancel := context.WithCancel(ctx)
	defer cancel()
	finished, stopped := make(chan struct{}), make(chan struct{})
	held = true // written by the renewer before it closes stopped
	go func() {
		defer close(stopped)
		for {
			t := is.clk.NewTimer(leaseTTL / 3)
			select {
			case <-finished:
				t.Stop()
				return
			case <-t.C():
			}
			ok, err := is.st.TryLease(fctx, LeaseName, holder, is.clk.Now(), leaseTTL)
			if err == nil && ok {
				continue
			}
			if fctx.Err() == nil {
				is.log.Warn("lost the issuing lease during a pass: stopping it", "holder", holder, "err", err)
			}
			held = false
			cancel()
			return
		}
	}()
	err = fn(fctx)
	close(finished)
	<-stopped
	return held, err
}

// pass drains the dirty queue, or examines every vehicle when full. The
// queue is taken before the deployments and vehicles are read, so a write
// that queued a vehicle is always visible to the pass that takes it.
func (is *Issuer) pass(ctx context.Context, full bool) error {
	if full {
		if _, err := is.st.TakeDirty(ctx, 0); err != nil {
			return err
		}
		ds, err := is.LoadDeployments(ctx)
		if err != nil {
			return err
		}
		ids, err := is.allVehicles(ctx)
		if err != nil {
			return err
		}
		st, err := is.Issue(ctx, ids, false, ds)
		is.log.Info("examined every vehicle", "vehicles", st.Vehicles, "issued", st.Issued, "failed", st.Failed)
		return err
	}
	for {
		dirty, err := is.st.TakeDirty(ctx, is.opts.Batch*4)
		if err != nil {
			return err
		}
		if len(dirty) == 0 {
			return nil
		}
		ds, err := is.LoadDeployments(ctx)
		if err != nil {
			return err
		}
		var ids, forced []string
		for _, d := range dirty {
			switch {
			case d.ID == store.AllVehicles:
				all, err := is.allVehicles(ctx)
				if err != nil {
					return err
				}
				if d.Force {
					forced = append(forced, all...)
				} else {
					ids = append(ids, all...)
				}
			case d.Force:
				forced = append(forced, d.ID)
			default:
				ids = append(ids, d.ID)
			}
		}
		err = nil
		if len(forced) > 0 {
			_, err = is.Issue(ctx, dedupe(forced), true, ds)
		}
		if err == nil {
			_, err = is.Issue(ctx, dedupe(ids), false, ds)
		}
		if err != nil {
			// Put the entries back for the next pass (a store error, or
			// this replica shutting down); re-examining is harmless.
			if qerr := is.st.MarkDirty(context.WithoutCancel(ctx), dirty); qerr != nil {
				is.log.Error("re-queue vehicles after a failed pass", "vehicles", len(dirty), "err", qerr)
			}
			return err
		}
	}
}

func (is *Issuer) allVehicles(ctx context.Context) ([]string, error) {
	var ids []string
	p := store.Page{Limit: 1000}
	for {
		vs, next, err := is.st.ListVehicles(ctx, p, nil)
		if err != nil {
			return nil, fmt.Errorf("desired: list vehicles: %w", err)
		}
		for _, v := range vs {
			ids = append(ids, v.ID)
		}
		if next == "" {
			return ids, nil
		}
		p.After = next
	}
}

func dedupe(ids []string) []string {
	seen := make(map[string]struct{}, len(ids))
	out := ids[:0]
	for _, id := range ids {
		if _, ok := seen[id]; !ok {
			seen[id] = struct{}{}
			out = append(out, id)
		}
	}
	return out
}

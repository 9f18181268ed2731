package system

import (
	"context"
	"fmt"
	"strings"
	"time"

	hubv1 "github.com/misaki-io/misaki/api/hub/v1"
)

// setLive turns the live summary on or off.
func (d *run) setLive(on bool) {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.live = on
}

func (d *run) isLive() bool {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.live
}

// liveQuiet is the longest the summary stays silent while nothing changes.
const liveQuiet = 5 * time.Second

// showLive prints a summary line every second while live is on: each
// vehicle's halves (applied revision, phase, deployment generation, the
// revision the hub wants when it differs), its link to the hub, and the
// memory of every process the demo runs. A line that says the same as the
// last is printed only every liveQuiet.
func (d *run) showLive(ctx context.Context) {
	t := time.NewTicker(time.Second)
	defer t.Stop()
	var last string
	var lastAt time.Time
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		if !d.isLive() {
			last = ""
			continue
		}
		rctx, cancel := context.WithTimeout(ctx, 900*time.Millisecond)
		var parts []string
		for _, v := range []string{hiVehicle, loVehicle} {
			parts = append(parts, d.vehicleLine(rctx, v))
		}
		if r := d.rolloutSummary(rctx); r != "" {
			parts = append(parts, r)
		}
		cancel()
		line := strings.Join(parts, " | ")
		if line == last && time.Since(lastAt) < liveQuiet {
			continue
		}
		last, lastAt = line, time.Now()
		n, rss, _, _ := d.rss.get()
		if ctx.Err() == nil && d.isLive() {
			d.con.printf("        · %s | %d processes, %s\n", line, n, mib(rss))
		}
	}
}

// vehicleLine is one vehicle's part of the summary.
func (d *run) vehicleLine(ctx context.Context, v string) string {
	var tw hubv1.Twin
	if err := d.hub.get(ctx, "/v1/vehicles/"+v, &tw); err != nil {
		return v + ": ?"
	}
	var halves []string
	for _, half := range []string{hubv1.HalfVehicle, hubv1.HalfCloud} {
		ds, hasD := desiredOf(tw, half)
		rp, hasR := reportedOf(tw, half)
		switch {
		case !hasD && !hasR:
			continue
		case !hasR || rp.AppliedRevision == 0:
			halves = append(halves, fmt.Sprintf("%s r%d pending", half, ds.Revision))
		default:
			s := fmt.Sprintf("%s r%d", half, rp.AppliedRevision)
			if hasD && ds.Revision != rp.AppliedRevision {
				s += fmt.Sprintf("→r%d", ds.Revision)
			}
			s += " " + rp.Phase
			if g := genOf(rp, deployName); g > 0 {
				s += fmt.Sprintf(" gen %d", g)
			}
			halves = append(halves, s)
		}
	}
	if len(halves) == 0 {
		halves = []string{"nothing desired yet"}
	}
	s := v + ": " + strings.Join(halves, ", ")
	if r := d.relays[v]; r != nil && r.IsCut() {
		s += " [link CUT]"
	}
	return s
}

func desiredOf(t hubv1.Twin, half string) (hubv1.DesiredSummary, bool) {
	for _, ds := range t.Desired {
		if ds.Half == half {
			return ds, true
		}
	}
	return hubv1.DesiredSummary{}, false
}

func reportedOf(t hubv1.Twin, half string) (hubv1.Reported, bool) {
	for _, r := range t.Reported {
		if r.Half == half {
			return r, true
		}
	}
	return hubv1.Reported{}, false
}

// genOf is the generation of deployment dep the report's revision was
// rendered from (0: none).
func genOf(r hubv1.Reported, dep string) int64 {
	for _, dr := range r.Deployments {
		if dr.Name == dep {
			return dr.Generation
		}
	}
	return 0
}

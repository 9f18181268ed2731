//go:build linux

package linkbench

import (
	"fmt"
	"slices"
	"strings"
	"sync"
	"time"
)

// observer collects, per proxy, when its view of wifi changed.
type observer struct {
	wake chan struct{} // a note changed some proxy's state

	mu     sync.Mutex // guards fields below
	state  []int8     // per proxy: -1 not known yet, 0 down, 1 up
	events [][]event  // per proxy, in the order noted
	misses []miss     // the last latencies' pairs without a sample
}

// miss is a (change, proxy) pair without a sample, with the proxy's
// events around the change, for the log.
type miss struct {
	proxy, change int
	up            bool
	t0            time.Time
	near          []string
}

type event struct {
	at time.Time
	up bool
}

func newObserver(n int) *observer {
	o := &observer{wake: make(chan struct{}, 1), state: make([]int8, n), events: make([][]event, n)}
	for i := range o.state {
		o.state[i] = -1
	}
	return o
}

// note records that proxy i held wifi up (or down) at at; a note that
// repeats the proxy's state is not a change and is dropped.
func (o *observer) note(i int, up bool, at time.Time) {
	s := int8(0)
	if up {
		s = 1
	}
	o.mu.Lock()
	if o.state[i] == s {
		o.mu.Unlock()
		return
	}
	o.state[i] = s
	o.events[i] = append(o.events[i], event{at, up})
	o.mu.Unlock()
	select {
	case o.wake <- struct{}{}:
	default:
	}
}

// count is how many proxies hold wifi in state up.
func (o *observer) count(up bool) int {
	s := int8(0)
	if up {
		s = 1
	}
	o.mu.Lock()
	defer o.mu.Unlock()
	n := 0
	for _, v := range o.state {
		if v == s {
			n++
		}
	}
	return n
}

// waitAll waits, at most d, until every proxy holds wifi in state up.
func (o *observer) waitAll(up bool, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	for o.count(up) < len(o.state) {
		select {
		case <-o.wake:
		case <-t.C:
			return o.count(up) == len(o.state)
		}
	}
	return true
}

// latencies pairs each change that keep selects (nil: all) with each
// proxy's first event of the change's state after its t0 and before the
// next change's: the samples, and the pairs without one.
func (o *observer) latencies(ch []change, keep func(change) bool) (lat []time.Duration, missed int) {
	o.mu.Lock()
	defer o.mu.Unlock()
	o.misses = nil
	for p, evs := range o.events {
		for k, c := range ch {
			if keep != nil && !keep(c) {
				continue
			}
			end := time.Time{}
			if k+1 < len(ch) {
				end = ch[k+1].t0
			}
			j := slices.IndexFunc(evs, func(e event) bool {
				return e.up == c.up && !e.at.Before(c.t0) && (end.IsZero() || e.at.Before(end))
			})
			if j < 0 {
				missed++
				if o.misses = append(o.misses, miss{proxy: p, change: k, up: c.up, t0: c.t0}); len(o.misses) <= 10 {
					var near []string
					for _, e := range evs {
						if d := e.at.Sub(c.t0); d > -3*time.Second && d < 10*time.Second {
							near = append(near, fmt.Sprintf("%v at %+.1f ms", e.up, float64(d)/1e6))
						}
					}
					o.misses[len(o.misses)-1].near = near
				}
				continue
			}
			lat = append(lat, evs[j].at.Sub(c.t0))
		}
	}
	slices.Sort(lat)
	return lat, missed
}

// change is one link change the benchmark made.
type change struct {
	up  bool      // the state wlan0 was set to
	t0  time.Time // just before the netlink call
	ack time.Duration
}

// dist is a latency distribution.
type dist struct {
	n, missed               int
	p50, p90, p99, max, min time.Duration
}

func distOf(lat []time.Duration, missed int) dist {
	d := dist{n: len(lat), missed: missed}
	if len(lat) == 0 {
		return d
	}
	d.p50, d.p90, d.p99 = pct(lat, 50), pct(lat, 90), pct(lat, 99)
	d.min, d.max = lat[0], lat[len(lat)-1]
	return d
}

// pct is the nearest-rank percentile of sorted d.
func pct(d []time.Duration, p int) time.Duration {
	i := (len(d)*p + 99) / 100
	return d[min(max(i-1, 0), len(d)-1)]
}

func ms(d time.Duration) string { return fmt.Sprintf("%.1f", float64(d)/1e6) }

func (d dist) String() string {
	if d.n == 0 {
		return fmt.Sprintf("no samples (%d missed)", d.missed)
	}
	return fmt.Sprintf("%d samples, %d missed: p50 %s ms, p90 %s ms, p99 %s ms, max %s ms (min %s ms)",
		d.n, d.missed, ms(d.p50), ms(d.p90), ms(d.p99), ms(d.max), ms(d.min))
}

// side is one way of getting link state to the proxies, measured.
type side struct {
	name      string
	proxies   int
	lat       dist
	kernel    dist          // the kernel's announcement, as this process read it
	published *dist         // agent sides: kernel change → the agent's publication
	agentCPU  time.Duration // agent sides
	proxyCPU  time.Duration
	cpuWhat   string
	wall      time.Duration // the change loop, pacing included
	timeouts  int           // changes not everywhere within the wait
}

func table(sides []side, changes int) string {
	var b strings.Builder
	fmt.Fprintf(&b, "| side | proxies | samples | missed | p50 ms | p90 ms | p99 ms | max ms | kernel announced, p50 / p99 ms | agent published, p50 / p99 ms | agent CPU | proxies' CPU |\n")
	fmt.Fprintf(&b, "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n")
	for _, s := range sides {
		pub, acpu := "–", "–"
		if s.published != nil {
			pub = ms(s.published.p50) + " / " + ms(s.published.p99)
			acpu = s.agentCPU.Round(time.Millisecond).String()
		}
		fmt.Fprintf(&b, "| %s | %d | %d | %d | %s | %s | %s | %s | %s / %s | %s | %s | %s (%s) |\n", s.name, s.proxies, s.lat.n, s.lat.missed,
			ms(s.lat.p50), ms(s.lat.p90), ms(s.lat.p99), ms(s.lat.max), ms(s.kernel.p50), ms(s.kernel.p99), pub, acpu, s.proxyCPU.Round(time.Millisecond), s.cpuWhat)
	}
	fmt.Fprintf(&b, "\nCPU over the %d changes of each side (its loop: changes, waits and pacing).\n", changes)
	return b.String()
}

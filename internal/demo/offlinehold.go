package demo

import (
	"context"
	"fmt"
	"strings"
	"time"
)

// Marks recorded by the offline-hold scenario.
const (
	markLongDown = "long outage: down"
	markLongUp   = "long outage: up"
)

// OfflineHold is the first demo: the route telemetry may use only wifi and
// holds requests for up to 8s while it cannot. Wifi drops twice while the
// metered cellular link stays up: once for 5s (every request is held and
// then delivered) and once for 12s (requests held longer than 8s get 503
// with Retry-After; the rest are delivered). Every time is multiplied by
// speed.
func OfflineHold(speed float64) Scenario {
	s := func(d time.Duration) time.Duration {
		return time.Duration(float64(d) * speed).Round(time.Millisecond)
	}
	var (
		hold       = s(8 * time.Second)
		down1, up1 = s(4 * time.Second), s(9 * time.Second)
		down2, up2 = s(13 * time.Second), s(25 * time.Second)
		stop       = s(29 * time.Second)
		probe      = s(2 * time.Second)
		backoff    = s(100 * time.Millisecond)
		backoffMax = s(time.Second)
	)
	const (
		host  = "telemetry.cloud.misaki"
		route = "telemetry"
		wlan  = "wlan"
	)
	return Scenario{
		Name:     "offline hold",
		Host:     host,
		Route:    route,
		Rate:     20,
		Duration: stop,
		ProxyConfig: func(a Addrs) string {
			return fmt.Sprintf(`# Written by misaki-demo (scenario: offline hold).
listen: %s
admin: %s
links:
  - {name: wlan,  class: wifi}                    # no match: glob, so driven by the admin API; starts up
  - {name: modem, class: cellular, metered: true}
routes:
  - name: %s
    hosts: [%s]
    upstream: http://%s
    probe: {type: tcp, interval: %v, backoff: {initial: %v, max: %v}}
    offline: {hold: %v, links: [wifi]}            # held while only cellular is up
`, a.Mesh, a.Admin, route, host, a.Upstream, probe, backoff, backoffMax, hold)
		},
		Intro: []string{
			fmt.Sprintf("route %s: wifi only, requests held up to %v when no wifi; links wlan (wifi) and modem (cellular, metered) up", route, hold),
			fmt.Sprintf("plan: wlan down at %v for %v (< hold), down at %v for %v (> hold), app stops at %v",
				down1, up1-down1, down2, up2-down2, stop),
		},
		Steps: []Step{
			{At: 0, Do: func(_ context.Context, e *Env) error {
				e.Say("app sending 20 req/s to %s; all links up, requests go direct", host)
				return nil
			}},
			{At: down1, Do: func(ctx context.Context, e *Env) error {
				if err := e.SetLink(ctx, wlan, "down"); err != nil {
					return err
				}
				e.Say("link wlan DOWN (modem still up, route %s allows only wifi): requests are held up to %v", route, hold)
				return nil
			}},
			{At: up1, Do: func(ctx context.Context, e *Env) error {
				if err := e.SetLink(ctx, wlan, "up"); err != nil {
					return err
				}
				e.Say("link wlan UP after %v (shorter than the %v hold): held requests are released to the upstream", up1-down1, hold)
				return nil
			}},
			{At: down2, Do: func(ctx context.Context, e *Env) error {
				e.Mark(markLongDown)
				if err := e.SetLink(ctx, wlan, "down"); err != nil {
					return err
				}
				e.Say("link wlan DOWN again, for %v (longer than the %v hold): requests waiting %v get 503 + Retry-After", up2-down2, hold, hold)
				return nil
			}},
			{At: up2, Do: func(ctx context.Context, e *Env) error {
				if err := e.SetLink(ctx, wlan, "up"); err != nil {
					return err
				}
				e.Mark(markLongUp)
				e.Say("link wlan UP after %v: requests still held are released, new ones go direct", up2-down2)
				return nil
			}},
			{At: stop, Do: func(_ context.Context, e *Env) error {
				e.Say("app stops sending; waiting for requests in flight")
				return nil
			}},
		},
		Checks: append(deliveryChecks(), Check{
			Name: "failed > 0 only during the long outage",
			Eval: func(r *Result) (bool, string) {
				return failedOnlyBetween(r, markLongDown, markLongUp)
			},
		}),
	}
}

// deliveryChecks are the checks every scenario makes: nothing is lost,
// nothing duplicated, and every request the app saw succeed reached the
// upstream exactly once.
func deliveryChecks() []Check {
	return []Check{
		{Name: "lost == 0", Eval: func(r *Result) (bool, string) {
			a := r.App
			if a.Lost == 0 && a.InFlight == 0 {
				return true, ""
			}
			d := fmt.Sprintf("%d lost, %d unanswered", a.Lost, a.InFlight)
			if len(a.LostErrors) > 0 {
				d += "; e.g. " + a.LostErrors[0]
			}
			return false, d
		}},
		{Name: "upstream duplicates == 0", Eval: func(r *Result) (bool, string) {
			return r.Upstream.Duplicates == 0, ""
		}},
		{Name: "every 2xx answered request reached the upstream exactly once", Eval: func(r *Result) (bool, string) {
			ok := r.App.Direct+r.App.Held == r.Upstream.Unique && r.App.Bad == 0 && r.Upstream.Duplicates == 0
			d := fmt.Sprintf("direct+held=%d, upstream unique=%d", r.App.Direct+r.App.Held, r.Upstream.Unique)
			if r.App.Bad > 0 {
				d += fmt.Sprintf(", %d bad answers (e.g. %s)", r.App.Bad, r.App.BadAnswers[0])
			}
			return ok, d
		}},
		{Name: "held > 0", Eval: func(r *Result) (bool, string) {
			return r.App.Held > 0, fmt.Sprintf("%d held", r.App.Held)
		}},
	}
}

// markSlack allows for a request sent just before a link change that
// reaches the proxy just after it.
const markSlack = 250 * time.Millisecond

// failedOnlyBetween checks that some requests failed, all with 503 and
// Retry-After, and all were sent between the marks from and to.
func failedOnlyBetween(r *Result, from, to string) (bool, string) {
	a := r.App
	if a.Failed == 0 {
		return false, "no request failed; the long outage should have made some wait past the hold"
	}
	var problems []string
	if n := a.FailedByStatus["503"]; n != a.Failed {
		problems = append(problems, fmt.Sprintf("only %d of %d failures were 503 (%v)", n, a.Failed, a.FailedByStatus))
	}
	if a.RetryAfter != a.Failed {
		problems = append(problems, fmt.Sprintf("only %d of %d failures carried Retry-After", a.RetryAfter, a.Failed))
	}
	start, end := r.Marks[from], r.Marks[to]
	if start.IsZero() || end.IsZero() {
		problems = append(problems, "the outage was not recorded")
	} else if a.FirstFailedSent.Before(start.Add(-markSlack)) || a.LastFailedSent.After(end) {
		problems = append(problems, "some were sent outside the outage")
	}
	d := fmt.Sprintf("%d failed, sent %s–%s; outage %s–%s", a.Failed,
		r.T(a.FirstFailedSent), r.T(a.LastFailedSent), r.T(start), r.T(end))
	if len(problems) > 0 {
		d += ": " + strings.Join(problems, "; ")
	}
	return len(problems) == 0, d
}

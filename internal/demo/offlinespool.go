package demo

import (
	"context"
	"fmt"
	"strings"
	"time"
)

// Marks recorded by the offline-spool scenario.
const (
	markKilled    = "proxy killed"
	markRestarted = "proxy restarted"
	// The external name resolved through the proxy's DNS server.
	markDNSOnline  = "dns online"
	markDNSOffline = "dns offline"
	markDNSRestart = "dns after restart"
)

// OfflineSpool is the second demo: a long outage, longer than any hold.
// The route telemetry reaches the upstream through the cloud gateway
// (mutual TLS). Its link goes down; requests are held for 2s and then
// spooled to disk (202). Mid-outage the proxy is killed with SIGKILL and
// started again, still offline. Then the link returns and the backlog
// drains through the gateway. Nothing acknowledged may be lost, and
// nothing may reach the upstream twice.
//
// The app resolves the mesh name through the proxy's DNS server, as an app
// whose resolv.conf names the proxy does, and an external name
// (maps.example.com, TTL 2s) is resolved through it online, offline once
// the cluster's resolver is gone and its TTL is past, and offline again
// after the crash: from the cache file. Every time is multiplied by speed.
func OfflineSpool(speed float64) Scenario {
	s := func(d time.Duration) time.Duration {
		return time.Duration(float64(d) * speed).Round(time.Millisecond)
	}
	var (
		hold          = s(2 * time.Second)
		down          = s(3 * time.Second)
		stale         = s(6 * time.Second)
		kill, restart = s(8 * time.Second), s(9 * time.Second)
		up            = s(14 * time.Second)
		stop          = s(18 * time.Second)
	)
	const (
		host  = "telemetry.cloud.misaki"
		route = "telemetry"
		wlan  = "wlan"
	)
	return Scenario{
		Name:       "offline spool through a crash",
		Host:       host,
		Route:      route,
		Rate:       20,
		Duration:   stop,
		Gateway:    true,
		AppRetries: 40,
		Drain:      true,
		DNS:        true,
		ProxyConfig: func(a Addrs) string {
			return fmt.Sprintf(`# Written by misaki-demo (scenario: offline spool through a crash).
listen: %s
admin: %s
links:
  # The glob matches no interface: the link is down at every start, as a
  # vehicle in a tunnel is, until the connectivity manager says otherwise.
  - {name: wlan, match: "misaki-demo-wlan*", class: wifi}
spool:
  dir: %s/spool
  sync: always
  replay: {concurrency: 8, backoff: {initial: 100ms, max: 1s}}
routes:
  - name: %s
    hosts: [%s]
    upstream: https://%s
    tls: {caFile: %s, certFile: %s, keyFile: %s}
    # batch: the backlog goes to the gateway 16 requests per exchange.
    offline: {hold: %v, spool: true, ttl: 1h, batch: 16}
dns:
  # The app's resolv.conf would name this address.
  listen: %s
  upstreams: [%s]
  staleAfter: 300ms
  # A crash loses what was learnt since the last write: 1s here.
  saveInterval: 1s
`, a.Mesh, a.Admin, a.Dir, route, host, a.Gateway, a.CA, a.VehicleCert, a.VehicleKey, hold, a.DNS, a.Resolver)
		},
		Intro: []string{
			fmt.Sprintf("route %s: through the gateway (mutual TLS); held up to %v, then spooled to disk (202), replayed 16 per exchange", route, hold),
			fmt.Sprintf("plan: wlan down at %v; SIGKILL the proxy at %v, restart at %v (still offline); wlan up at %v; app stops at %v",
				down, kill, restart, up, stop),
		},
		Steps: []Step{
			{At: 0, Do: func(ctx context.Context, e *Env) error {
				if err := e.SetLink(ctx, wlan, "up"); err != nil {
					return err
				}
				e.Say("link wlan up; app sending 20 req/s to %s through the gateway, resolving it through the proxy's DNS", host)
				return e.lookupExternal(ctx, markDNSOnline, "online")
			}},
			{At: down, Do: func(ctx context.Context, e *Env) error {
				if err := e.SetLink(ctx, wlan, "down"); err != nil {
					return err
				}
				e.StopResolver()
				e.Say("link wlan DOWN: requests are held %v, then written to the spool and answered 202; the cluster's resolver is unreachable", hold)
				return nil
			}},
			{At: stale, Do: func(ctx context.Context, e *Env) error {
				return e.lookupExternal(ctx, markDNSOffline, "offline, past its TTL (a stale answer)")
			}},
			{At: kill, Do: func(_ context.Context, e *Env) error {
				if err := e.KillProxy(); err != nil {
					return err
				}
				e.Mark(markKilled)
				e.Say("proxy KILLED (SIGKILL) mid-outage: held requests die with it (never acknowledged; the app sends them again)")
				return nil
			}},
			{At: restart, Do: func(ctx context.Context, e *Env) error {
				if err := e.RestartProxy(ctx); err != nil {
					return err
				}
				e.Mark(markRestarted)
				e.Say("proxy restarted from its spool; still offline")
				return e.lookupExternal(ctx, markDNSRestart, "offline after the crash (from the cache file)")
			}},
			{At: up, Do: func(ctx context.Context, e *Env) error {
				if err := e.SetLink(ctx, wlan, "up"); err != nil {
					return err
				}
				e.Say("link wlan UP: the backlog drains through the gateway, oldest first")
				return nil
			}},
			{At: stop, Do: func(_ context.Context, e *Env) error {
				e.Say("app stops sending; waiting for answers, then for the spool to drain")
				return nil
			}},
		},
		Checks: []Check{
			deliveryChecks()[0], // lost == 0
			{Name: "upstream duplicates == 0", Eval: func(r *Result) (bool, string) {
				return r.Upstream.Duplicates == 0, ""
			}},
			{Name: "every acknowledged request (2xx or 202) reached the upstream exactly once", Eval: func(r *Result) (bool, string) {
				a := r.App
				acked := a.Direct + a.Held + a.Spooled
				ok := acked == r.Upstream.Unique && a.Bad == 0 && r.Upstream.Duplicates == 0
				return ok, fmt.Sprintf("acknowledged=%d (direct %d, held %d, spooled %d), upstream unique=%d", acked, a.Direct, a.Held, a.Spooled, r.Upstream.Unique)
			}},
			{Name: "spooled > 0", Eval: func(r *Result) (bool, string) {
				return r.App.Spooled > 0, fmt.Sprintf("%d spooled", r.App.Spooled)
			}},
			{Name: "maps.example.com resolved through the proxy online, offline, and offline after the crash", Eval: func(r *Result) (bool, string) {
				var at []string
				for _, m := range []string{markDNSOnline, markDNSOffline, markDNSRestart} {
					if r.Marks[m].IsZero() {
						return false, m + ": not resolved"
					}
					at = append(at, r.T(r.Marks[m]))
				}
				return true, strings.Join(at, ", ")
			}},
			{Name: "the app resolved its mesh name through the proxy's DNS", Eval: func(r *Result) (bool, string) {
				// A lookup fails only while the proxy is down; the app then
				// has a connection error and sends again.
				a := r.App
				return a.DNSLookups > 0 && a.DNSFailures <= a.Retried,
					fmt.Sprintf("%d lookups; %d failed, each followed by a send again (%d retried sends)", a.DNSLookups, a.DNSFailures, a.Retried)
			}},
			{Name: "the proxy was killed and restarted mid-outage", Eval: func(r *Result) (bool, string) {
				k, s := r.Marks[markKilled], r.Marks[markRestarted]
				if k.IsZero() || s.IsZero() {
					return false, "not recorded"
				}
				return true, fmt.Sprintf("killed %s, restarted %s", r.T(k), r.T(s))
			}},
		},
	}
}

// lookupExternal resolves the external name through the proxy's DNS
// server, says what it got, and marks mark when it is the right address.
// A wrong answer or none is reported, not fatal: the checks judge it.
func (e *Env) lookupExternal(ctx context.Context, mark, when string) error {
	ip, err := e.Lookup(ctx, externalName)
	switch {
	case err != nil:
		e.Say("DNS %s: %s did not resolve: %v", when, externalName, err)
	case ip != externalIP:
		e.Say("DNS %s: %s resolved to %s, not %s", when, externalName, ip, externalIP)
	default:
		e.Mark(mark)
		e.Say("DNS %s: %s -> %s", when, externalName, ip)
	}
	return nil
}

//go:build linux

package linkbench

import (
	"cmp"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/misaki-io/misaki/internal/proxy/config"
)

const (
	// changeWait bounds the wait for every proxy after one change.
	changeWait = 2 * time.Second
	// startWait bounds the wait for every proxy's first view of wifi.
	startWait = 60 * time.Second
	// idleWindow is how long the agent's idle CPU is counted.
	idleWindow = 3 * time.Second
)

// The node's links, as the agent classifies them and as a proxy without an
// agent configures them.
const linkdConfig = `
listen: 0.0.0.0:%d
links:
  - {name: wifi, match: wlan0, class: wifi}
  - {name: modem, match: wwan0, class: cellular, metered: true}
`

var kernelLinks = []config.Link{
	{Name: "wifi", Match: "wlan0", Class: "wifi"},
	{Name: "modem", Match: "wwan0", Class: "cellular", Metered: true},
}

const proxyBase = `
listen: 127.0.0.1:0
admin: 127.0.0.1:0
`

func envInt(name string, def int) int {
	if v, err := strconv.Atoi(os.Getenv(name)); err == nil && v > 0 {
		return v
	}
	return def
}

func BenchmarkLinkChange(b *testing.B) {
	proxies, changes := envInt("PROXIES", 50), envInt("CHANGES", 200)
	gap := 150 * time.Millisecond
	if d, err := time.ParseDuration(os.Getenv("GAP")); err == nil {
		gap = d
	}
	modes := strings.Split(os.Getenv("MODES"), ",")
	if os.Getenv("MODES") == "" {
		modes = []string{"process", "inprocess"}
	}
	procs, inproc := slices.Contains(modes, "process"), slices.Contains(modes, "inprocess")
	ways := strings.Split(cmp.Or(os.Getenv("SIDES"), "agent,kernel"), ",")
	withAgent, withKernel := slices.Contains(ways, "agent"), slices.Contains(ways, "kernel")
	proxyBin, linkdBin := build(b)
	nd := newNode(b, proxies)
	kernelObs := newObserver(1)
	nd.watchKernel(kernelObs)
	routing := ""
	if os.Getenv("LINKD_ROUTING") == "off" {
		routing = "routing: {disabled: true}\n"
	}
	b.Logf("node: wlan0, wwan0 and %d pods' veths; %d changes of wlan0 (down, up, ...) per side, %v apart (+ up to %v at random); misaki-linkd's policy routing %s",
		proxies, changes, gap, gap/2, map[bool]string{true: "on", false: "off (LINKD_ROUTING=off)"}[routing == ""])

	var sides []side
	measure := func(name string, o *observer, cpu func() time.Duration, cpuWhat string, agent *proc, agentObs *observer) {
		b.Helper()
		if !o.waitAll(true, startWait) {
			b.Fatalf("%s: %d of %d proxies see wifi up after %v", name, o.count(true), proxies, startWait)
		}
		// A round that is not measured: a proxy's first scan comes before
		// its netlink subscription, so a change right after it would wait
		// for the next poll (5 s); here every proxy must follow a change.
		for _, up := range []bool{false, true} {
			if err := nd.setWifi(up); err != nil {
				b.Fatal(err)
			}
			if !o.waitAll(up, startWait) {
				b.Fatalf("%s: warm-up: %d of %d proxies see wifi up=%v after %v", name, o.count(up), proxies, up, startWait)
			}
		}
		var agentCPU0 time.Duration
		if agent != nil {
			agentCPU0 = cpuTime(agent.pid())
		}
		cpu0, busy0, start := cpu(), machineBusy(), time.Now()
		ch, timeouts := nd.run(b, o, changes, gap)
		s := side{name: name, proxies: proxies, proxyCPU: cpu() - cpu0, cpuWhat: cpuWhat, wall: time.Since(start), timeouts: timeouts}
		b.Logf("%s: the machine was busy %v of %v × %d CPUs over the changes (everyone's processes); load average after: %s",
			name, machineBusy()-busy0, s.wall.Round(time.Millisecond), runtime.NumCPU(), loadAvg())
		s.lat = distOf(o.latencies(ch, nil))
		down, up := distOf(o.latencies(ch, isUp(false))), distOf(o.latencies(ch, isUp(true)))
		for _, m := range o.misses[:min(len(o.misses), 10)] {
			b.Logf("%s: proxy %d never had change %d (wlan0 up=%v at %s); its events around it: %v",
				name, m.proxy, m.change, m.up, m.t0.Format("15:04:05.000"), m.near)
		}
		s.kernel = distOf(kernelObs.latencies(ch, nil))
		if agent != nil {
			s.agentCPU = cpuTime(agent.pid()) - agentCPU0
			d := distOf(agentObs.latencies(ch, nil))
			s.published = &d
		}
		var acks []time.Duration
		for _, c := range ch {
			acks = append(acks, c.ack)
		}
		slices.Sort(acks)
		b.Logf("%s: link change → proxy has it: %v", name, s.lat)
		b.Logf("%s:   wlan0 down: %v", name, down)
		b.Logf("%s:   wlan0 up:   %v", name, up)
		b.Logf("%s: link change → kernel announced it: %v", name, s.kernel)
		if s.published != nil {
			b.Logf("%s: link change → agent published: %v; agent CPU %v", name, *s.published, s.agentCPU)
		}
		b.Logf("%s: proxies' CPU %v (%s); %v for %d changes; %d changes not everywhere within %v; netlink call p50 %s ms, max %s ms",
			name, s.proxyCPU, cpuWhat, s.wall.Round(time.Millisecond), changes, timeouts, changeWait, ms(pct(acks, 50)), ms(acks[len(acks)-1]))
		sides = append(sides, s)
	}
	pod := func(i int) string { return nd.pods[i] }
	inNode := func(int) string { return nd.name }

	// With the agent.
	if withAgent {
		agentObs := newObserver(1)
		cfgPath := filepath.Join(b.TempDir(), "linkd.yaml")
		if err := os.WriteFile(cfgPath, fmt.Appendf(nil, linkdConfig+routing, agentPort), 0o600); err != nil {
			b.Fatal(err)
		}
		linkd := start(b, nd.name, linkdBin, []string{"--config", cfgPath, "--node", "bench"}, func(l []byte) {
			if at, up, ok := wifiLine(l, "link"); ok {
				agentObs.note(0, up, at)
			}
		})
		defer stop([]*proc{linkd})
		if !agentObs.waitAll(true, startWait) {
			b.Fatalf("misaki-linkd did not publish wifi up:\n%s", linkd.logTail())
		}
		if procs {
			o := newObserver(proxies)
			ps := startProxies(b, proxyBin, proxies, pod, func(i int) string {
				return proxyBase + fmt.Sprintf("linkAgent: {address: %q}\n", nd.agentAddr(i))
			}, o)
			measure("agent, processes", o, func() time.Duration { return cpuTimes(ps) }, "the proxies' processes", linkd, agentObs)
			b.Logf("agent, processes: %d proxies, RSS %.0f MiB in all", proxies, rssSum(ps))
			stop(ps)
		}
		if inproc {
			o := newObserver(proxies)
			addr := nd.hostLink()
			stopMonitors := runMonitors(b, proxies, pod, nil, func(int) string { return addr }, o)
			measure("agent, in-process", o, selfCPU, "this process", linkd, agentObs)
			stopMonitors()
		}
		idle0 := cpuTime(linkd.pid())
		time.Sleep(idleWindow) // a measurement window
		b.Logf("misaki-linkd idle after the changes, no watchers: %v CPU in %v; %v CPU in all", cpuTime(linkd.pid())-idle0, idleWindow, cpuTime(linkd.pid()))
		stop([]*proc{linkd})
	}

	// The old way: every proxy watches the kernel.
	if withKernel {
		if procs {
			o := newObserver(proxies)
			ps := startProxies(b, proxyBin, proxies, inNode, func(int) string {
				return proxyBase + "links:\n  - {name: wifi, match: wlan0, class: wifi}\n  - {name: modem, match: wwan0, class: cellular, metered: true}\n"
			}, o)
			measure("kernel, processes", o, func() time.Duration { return cpuTimes(ps) }, "the proxies' processes", nil, nil)
			b.Logf("kernel, processes: %d proxies, RSS %.0f MiB in all", proxies, rssSum(ps))
			stop(ps)
		}
		if inproc {
			o := newObserver(proxies)
			stopMonitors := runMonitors(b, proxies, inNode, kernelLinks, func(int) string { return "" }, o)
			measure("kernel, in-process", o, selfCPU, "this process", nil, nil)
			stopMonitors()
		}
	}

	t := table(sides, changes)
	b.Logf("\n%s", t)
	fmt.Print(t)
	for _, s := range sides {
		b.ReportMetric(float64(s.lat.p99)/1e6, strings.NewReplacer(", ", "-", " ", "-").Replace(s.name)+"-p99-ms")
	}
}

func isUp(up bool) func(change) bool { return func(c change) bool { return c.up == up } }

// run makes the changes, each after the proxies have the last, and leaves
// wlan0 up.
func (n *node) run(b *testing.B, o *observer, changes int, gap time.Duration) (ch []change, timeouts int) {
	b.Helper()
	for k := range changes {
		up := k%2 == 1
		t0 := time.Now()
		if err := n.setWifi(up); err != nil {
			b.Fatalf("set wlan0 up=%v: %v", up, err)
		}
		ch = append(ch, change{up: up, t0: t0, ack: time.Since(t0)})
		if !o.waitAll(up, changeWait) {
			timeouts++
		}
		// Pacing, not synchronisation: the next change comes at a random
		// point of everyone's timers.
		time.Sleep(gap + rand.N(gap/2+1))
	}
	if changes%2 == 1 {
		if err := n.setWifi(true); err != nil {
			b.Fatal(err)
		}
		o.waitAll(true, changeWait)
	}
	return ch, timeouts
}

package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/sync/errgroup"

	hubv1 "github.com/misaki-io/misaki/api/hub/v1"
	"github.com/misaki-io/misaki/bench/internal/harness"
	"github.com/misaki-io/misaki/internal/pgtest"
	"github.com/misaki-io/misaki/internal/trust"
)

// deploymentName is the one deployment; its chart is the shuttle test
// chart, through a local chart source.
const deploymentName = "shuttle"

// The image tag before and after the timed change.
const (
	tagBefore = "2.4.1"
	tagAfter  = "2.4.2"
)

// options are the flags.
type options struct {
	vehicles  int
	configs   []string
	hubBin    string
	verify    bool
	wait      time.Duration
	enrollers int
	dialers   int
	settle    time.Duration
	timeout   time.Duration
	pgSync    string
	keep      bool
}

var allConfigs = []string{"sqlite", "postgres", "postgres-2"}

func parse(args []string, stderr io.Writer) (options, error) {
	fs := flag.NewFlagSet("hubbench", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var o options
	var configs string
	fs.IntVar(&o.vehicles, "vehicles", 10_000, "simulated vehicles")
	fs.StringVar(&configs, "configs", strings.Join(allConfigs, ","), "configurations to run, in order: sqlite, postgres, postgres-2")
	fs.StringVar(&o.hubBin, "hub", "", "misaki-hub binary (default: go build ./cmd/misaki-hub into the run's temp dir)")
	fs.BoolVar(&o.verify, "verify", true, "verify every revision with internal/trust's Verifier, as an agent does")
	fs.DurationVar(&o.wait, "wait", 30*time.Second, "the agents' long-poll wait")
	fs.IntVar(&o.enrollers, "enrollers", 32, "concurrent enrolments during setup")
	fs.IntVar(&o.dialers, "dialers", 64, "concurrent connection set-ups during setup")
	fs.DurationVar(&o.settle, "settle", 5*time.Second, "pause between the first rollout and the timed change")
	fs.DurationVar(&o.timeout, "timeout", 10*time.Minute, "give up on a rollout after this")
	fs.StringVar(&o.pgSync, "pg-synchronous-commit", "off", "PostgreSQL's synchronous_commit (off matches the SQLite store's synchronous=NORMAL: no fsync per commit)")
	fs.BoolVar(&o.keep, "keep", false, "keep the temp dirs (hub logs and data)")
	if err := harness.Parse(fs, args); err != nil {
		return o, err
	}
	if o.vehicles < 1 {
		return o, errors.New("-vehicles: at least 1")
	}
	var err error
	o.configs, err = harness.Configs(configs, func(c string) error {
		if !slices.Contains(allConfigs, c) {
			return fmt.Errorf("unknown configuration %q (want %s)", c, strings.Join(allConfigs, ", "))
		}
		return nil
	})
	if err != nil {
		return o, err
	}
	return o, nil
}

// report is a run: each configuration's result, the hub binary, and the
// cost of signing and verifying one of the run's documents.
type report struct {
	results    []*result
	hub        string // what the hub binary was built from
	started    time.Time
	sign       float64 // documents per CPU-second, one goroutine
	verify     float64
	cryptoSize int // payload bytes of the document measured
}

// bench runs the configurations; a configuration that fails is reported
// and the next one runs.
func bench(ctx context.Context, o options, logw io.Writer) (*report, error) {
	logf := func(format string, args ...any) {
		fmt.Fprintf(logw, "%s "+format+"\n", append([]any{time.Now().UTC().Format("15:04:05")}, args...)...)
	}
	nofile, err := raiseNoFile(1 << 16)
	if err != nil {
		return nil, fmt.Errorf("RLIMIT_NOFILE: %w", err)
	}
	if need := uint64(o.vehicles) + 1000; nofile < need {
		return nil, fmt.Errorf("RLIMIT_NOFILE is %d; %d vehicles need about %d", nofile, o.vehicles, need)
	}
	mod, err := moduleDir(ctx)
	if err != nil {
		return nil, err
	}
	chart := filepath.Join(mod, "internal", "hub", "catalog", "testdata", "charts", "shuttle")
	tmp, err := os.MkdirTemp("", "hubbench-")
	if err != nil {
		return nil, err
	}
	if o.keep {
		logf("keeping %s", tmp)
	} else {
		defer os.RemoveAll(tmp)
	}
	rep := &report{started: time.Now().UTC(), hub: "-hub " + o.hubBin}
	bin := o.hubBin
	if bin == "" {
		logf("building misaki-hub")
		if bin, err = buildHub(ctx, tmp); err != nil {
			return nil, err
		}
		desc, _ := exec.CommandContext(ctx, "git", "describe", "--always", "--dirty").Output()
		rep.hub = "go build at " + strings.TrimSpace(string(desc))
	}
	var errs []error
	for _, name := range o.configs {
		logf("%s: %d vehicles (load average %s)", name, o.vehicles, harness.LoadAvg(3))
		r, err := runConfig(ctx, o, name, bin, chart, filepath.Join(tmp, name), logf)
		if r != nil {
			rep.results = append(rep.results, r)
		}
		if err != nil {
			logf("%s: %v", name, err)
			errs = append(errs, fmt.Errorf("%s: %w", name, err))
			if ctx.Err() != nil {
				break
			}
		}
	}
	for _, r := range rep.results {
		if r.sample != nil && ctx.Err() == nil {
			rep.sign, rep.verify, err = cryptoRates(ctx, *r.sample, 2000)
			if err != nil {
				errs = append(errs, fmt.Errorf("signing and verifying rates: %w", err))
			}
			rep.cryptoSize = int(r.payload)
			break
		}
	}
	return rep, errors.Join(errs...)
}

// hubStats is one hub process over the timed phase.
type hubStats struct {
	name                 string
	vehicles             int     // served by it
	cpu                  float64 // seconds of utime+stime
	hwm, rss             int64   // VmHWM and VmRSS at the end of the timed phase
	hits, misses         float64 // render cache
	issuedVeh, issuedCld float64 // revisions signed and written
	issuer               bool    // it signed this phase's revisions
}

// result is one configuration's run.
type result struct {
	name      string
	vehicles  int
	verify    bool
	started   time.Time
	loadStart string
	loadEnd   string

	enrol, connect, firstRollout time.Duration // setup, not timed

	put      time.Duration   // the PUT's round trip
	total    time.Duration   // PUT sent → last report accepted
	wake     []time.Duration // PUT returned → long-poll answered, sorted
	reported []time.Duration // PUT returned → report accepted, sorted
	hubs     []hubStats
	pgCPU    float64 // -1: no PostgreSQL
	selfCPU  float64 // this process: the agents
	selfHWM  int64
	payload  int64 // bytes of a signed payload (vehicle half)
	sample   *hubv1.DesiredState
	polls    int64 // long-poll answers during the timed phase
	verified int64
	errors   int64
	lastErr  error
}

func runConfig(ctx context.Context, o options, name, bin, chart, dir string, logf func(string, ...any)) (*result, error) {
	r := &result{name: name, vehicles: o.vehicles, verify: o.verify, started: time.Now().UTC(), loadStart: harness.LoadAvg(3), pgCPU: -1}
	replicas := 1
	if name == "postgres-2" {
		replicas = 2
	}
	var dbArgs []string
	var pg *pgtest.Server
	if name != "sqlite" {
		var err error
		if pg, err = harness.StartPostgres(ctx, o.pgSync); err != nil {
			return nil, err
		}
		defer pg.Stop()
		dbArgs = []string{"--database", pg.DSN}
	}

	// Replica 1 makes the keys and the fleet CA; replica 2 shares them.
	var hubs []*hubProc
	defer func() {
		for _, h := range hubs {
			h.Stop()
		}
	}()
	d1 := filepath.Join(dir, "hub-1")
	h1, err := startHub(ctx, bin, "hub-1", d1, dbArgs...)
	if err != nil {
		return nil, err
	}
	hubs = append(hubs, h1)
	if replicas == 2 {
		h2, err := startHub(ctx, bin, "hub-2", filepath.Join(dir, "hub-2"), append(dbArgs,
			"--keys-dir", filepath.Join(d1, "keys"),
			"--ca-cert-file", filepath.Join(d1, "pki", "ca.crt"),
			"--ca-key-file", filepath.Join(d1, "pki", "ca.key"))...)
		if err != nil {
			return nil, err
		}
		hubs = append(hubs, h2)
	}
	op, err := newOperator(d1)
	if err != nil {
		return nil, err
	}
	defer op.client.CloseIdleConnections()
	root, err := op.vehicle(h1.URL).Root(ctx, 1) // the root the vehicles pin
	if err != nil {
		return nil, fmt.Errorf("trust root: %w", err)
	}
	var verifier *trust.Verifier
	if o.verify {
		if verifier, err = trust.NewVerifier(root, time.Now()); err != nil {
			return nil, fmt.Errorf("trust root: %w", err)
		}
	}
	if err := op.do(ctx, http.StatusCreated, "POST", h1.URL+"/v1/sources",
		hubv1.ChartSource{Name: "bench", Type: hubv1.SourceLocal, URL: chart}, nil); err != nil {
		return nil, err
	}

	// Enrol.
	start := time.Now()
	f := &fleet{vehicles: make([]*vehicle, o.vehicles), verifier: verifier, wait: o.wait}
	defer func() {
		for _, v := range f.vehicles {
			if v != nil {
				v.c.HTTP.CloseIdleConnections()
			}
		}
	}()
	if err := parallel(ctx, o.enrollers, o.vehicles, func(ctx context.Context, i int) error {
		h := hubs[i%replicas]
		v, err := enrol(ctx, op, h.URL, fmt.Sprintf("v-%05d", i))
		f.vehicles[i] = v
		return err
	}); err != nil {
		return nil, fmt.Errorf("enrol: %w", err)
	}
	r.enrol = time.Since(start)
	logf("%s: enrolled %d vehicles in %v", name, o.vehicles, r.enrol.Round(time.Millisecond))

	// Connect, then start the agents.
	start = time.Now()
	if err := parallel(ctx, o.dialers, o.vehicles, func(ctx context.Context, i int) error {
		return f.vehicles[i].connect(ctx)
	}); err != nil {
		return nil, fmt.Errorf("connect: %w", err)
	}
	r.connect = time.Since(start)
	logf("%s: %d connections in %v", name, o.vehicles, r.connect.Round(time.Millisecond))
	actx, stopAgents := context.WithCancel(ctx)
	var agents sync.WaitGroup
	defer func() {
		stopAgents()
		agents.Wait()
	}()
	for i := range f.vehicles {
		agents.Go(func() { f.run(actx, i) })
	}
	if err := waitWaiters(ctx, op, hubs, o.vehicles); err != nil {
		return nil, err
	}

	// The first rollout (not timed): create the deployment.
	p1 := newPhase(1, o.vehicles)
	f.phase.Store(p1)
	start = time.Now()
	dep := hubv1.Deployment{
		Name:     deploymentName,
		Chart:    hubv1.ChartRef{Source: "bench", Name: "shuttle", Version: "1.0.0"},
		Values:   map[string]any{"image": map[string]any{"tag": tagBefore}},
		Selector: "fleet=bench",
	}
	if err := op.do(ctx, http.StatusCreated, "POST", h1.URL+"/v1/deployments", dep, &dep); err != nil {
		return nil, err
	}
	if err := wait(ctx, p1, o.timeout, f); err != nil {
		return nil, fmt.Errorf("first rollout: %w", err)
	}
	r.firstRollout = time.Since(start)
	logf("%s: first rollout: every vehicle reported revision 1 after %v (%d agent errors)", name, r.firstRollout.Round(time.Millisecond), f.errs.Load())
	select {
	case <-time.After(o.settle):
	case <-ctx.Done():
		return nil, ctx.Err()
	}

	// The timed change.
	before, err := snapshot(ctx, op, hubs, pg)
	if err != nil {
		return nil, err
	}
	polls0, verified0, errs0 := f.polls.Load(), f.verified.Load(), f.errs.Load()
	p2 := newPhase(dep.Generation+1, o.vehicles)
	f.phase.Store(p2)
	dep.Values = map[string]any{"image": map[string]any{"tag": tagAfter}}
	t0 := time.Now()
	if err := op.do(ctx, http.StatusOK, "PUT", h1.URL+"/v1/deployments/"+deploymentName, dep, &dep); err != nil {
		return nil, err
	}
	tPut := time.Now()
	r.put = tPut.Sub(t0)
	if dep.Generation != p2.gen {
		return nil, fmt.Errorf("deployment generation %d after the change, want %d", dep.Generation, p2.gen)
	}
	waitErr := wait(ctx, p2, o.timeout, f)
	after, err := snapshot(ctx, op, hubs, pg)
	if err != nil {
		return nil, err
	}
	if waitErr != nil { // stragglers still write their slots
		stopAgents()
		agents.Wait()
	}
	r.loadEnd = harness.LoadAvg(3)
	r.payload, r.sample = f.payload.Load(), f.sample.Load()
	r.polls, r.verified, r.errors, r.lastErr = f.polls.Load()-polls0, f.verified.Load()-verified0, f.errs.Load()-errs0, f.LastError()
	last := t0
	for i := range o.vehicles {
		if t := p2.reported[i]; !t.IsZero() {
			last = later(last, t)
			r.reported = append(r.reported, t.Sub(tPut))
		}
		if t := p2.fetched[i]; !t.IsZero() {
			r.wake = append(r.wake, t.Sub(tPut))
		}
	}
	slices.Sort(r.wake)
	slices.Sort(r.reported)
	r.total = last.Sub(t0)
	if pg != nil {
		r.pgCPU = after.pgCPU - before.pgCPU
	}
	r.selfCPU = after.selfCPU - before.selfCPU
	r.selfHWM, _, _ = harness.Memory(os.Getpid())
	for i, h := range hubs {
		a, b := after.hubs[i], before.hubs[i]
		hs := hubStats{
			name: h.Name, vehicles: (o.vehicles + replicas - 1 - i) / replicas,
			cpu: a.cpu - b.cpu, hwm: a.hwm, rss: a.rss,
			hits:      a.m["misaki_hub_render_cache_hits_total"] - b.m["misaki_hub_render_cache_hits_total"],
			misses:    a.m["misaki_hub_render_cache_misses_total"] - b.m["misaki_hub_render_cache_misses_total"],
			issuedVeh: a.m[`misaki_hub_revisions_issued_total{half="vehicle"}`] - b.m[`misaki_hub_revisions_issued_total{half="vehicle"}`],
			issuedCld: a.m[`misaki_hub_revisions_issued_total{half="cloud"}`] - b.m[`misaki_hub_revisions_issued_total{half="cloud"}`],
		}
		hs.issuer = hs.issuedVeh+hs.issuedCld > 0
		r.hubs = append(r.hubs, hs)
	}
	if waitErr != nil {
		return r, fmt.Errorf("the change: %w", waitErr)
	}
	logf("%s: the change: every vehicle reported the new revision %v after the PUT (wake p50 %v, p99 %v; %d agent errors)",
		name, r.total.Round(time.Millisecond), pct(r.wake, 50), pct(r.wake, 99), r.errors)
	return r, nil
}

// waitWaiters waits until every agent's long-poll is waiting on its hub.
func waitWaiters(ctx context.Context, op *operator, hubs []*hubProc, want int) error {
	deadline := time.Now().Add(2 * time.Minute)
	for {
		n := 0.0
		for _, h := range hubs {
			m, err := op.metrics(ctx, h.URL)
			if err != nil {
				return err
			}
			n += m["misaki_hub_longpoll_waiters"]
		}
		if int(n) >= want {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%v long-polls waiting after 2 minutes, want %d", n, want)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(200 * time.Millisecond):
		}
	}
}

// wait waits for every vehicle to report p's generation.
func wait(ctx context.Context, p *phase, timeout time.Duration, f *fleet) error {
	select {
	case <-p.done:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	case <-time.After(timeout):
		return fmt.Errorf("%d of %d vehicles reported generation %d within %v (%d agent errors, the last: %v)",
			p.n.Load(), len(p.reported), p.gen, timeout, f.errs.Load(), f.LastError())
	}
}

type procSnap struct {
	cpu      float64
	hwm, rss int64
	m        map[string]float64
}

type snap struct {
	hubs    []procSnap
	pgCPU   float64
	selfCPU float64
}

func snapshot(ctx context.Context, op *operator, hubs []*hubProc, pg *pgtest.Server) (snap, error) {
	var s snap
	for _, h := range hubs {
		cpu, err := harness.CPUSeconds(h.Pid())
		if err != nil {
			return s, err
		}
		hwm, rss, err := harness.Memory(h.Pid())
		if err != nil {
			return s, err
		}
		m, err := op.metrics(ctx, h.URL)
		if err != nil {
			return s, err
		}
		s.hubs = append(s.hubs, procSnap{cpu: cpu, hwm: hwm, rss: rss, m: m})
	}
	if pg != nil {
		s.pgCPU = harness.PostgresCPU(pg)
	}
	s.selfCPU, _ = harness.CPUSeconds(os.Getpid())
	return s, nil
}

// parallel runs fn(i) for i in [0, n) on workers goroutines; the first
// error stops it.
func parallel(ctx context.Context, workers, n int, fn func(ctx context.Context, i int) error) error {
	g, ctx := errgroup.WithContext(ctx)
	var next atomic.Int64
	for range min(workers, n) {
		g.Go(func() error {
			for {
				i := int(next.Add(1) - 1)
				if i >= n || ctx.Err() != nil {
					return ctx.Err()
				}
				if err := fn(ctx, i); err != nil {
					return err
				}
			}
		})
	}
	return g.Wait()
}

func later(a, b time.Time) time.Time {
	if b.After(a) {
		return b
	}
	return a
}

// pct is the p-th percentile of sorted ds (nearest rank), to the
// millisecond.
func pct(ds []time.Duration, p float64) time.Duration {
	return harness.Percentile(ds, p).Round(time.Millisecond)
}

func mib(b int64) string { return fmt.Sprintf("%.0f MiB", float64(b)/(1<<20)) }

func secs(d time.Duration) string { return fmt.Sprintf("%.2f s", d.Seconds()) }

// printResults writes the Markdown table and the setup figures.
func printResults(w io.Writer, o options, rep *report) {
	if rep == nil || len(rep.results) == 0 {
		return
	}
	rs := rep.results
	fmt.Fprintf(w, "\nhubbench: %d vehicles, verify %v, long-poll wait %v, PostgreSQL synchronous_commit=%s; %s UTC; hub: %s; %d CPUs\n\n",
		o.vehicles, o.verify, o.wait, o.pgSync, rep.started.Format("2006-01-02 15:04"), rep.hub, runtime.NumCPU())
	fmt.Fprintln(w, "| configuration | change → every vehicle reported | PUT | wake p50 / p99 / max | reported p50 / p99 | hub CPU (timed phase) | hub peak RSS (VmHWM) | render cache hits / misses | revisions issued (vehicle + cloud) | PostgreSQL CPU | agents' CPU | agent errors |")
	fmt.Fprintln(w, "|---|---:|---:|---|---|---|---|---|---|---:|---:|---:|")
	for _, r := range rs {
		var cpu, hwm, cache, issued []string
		for _, h := range r.hubs {
			label := ""
			if len(r.hubs) > 1 {
				label = h.name + ": "
				if h.issuer {
					label = h.name + " (issuer): "
				}
			}
			cpu = append(cpu, fmt.Sprintf("%s%.2f s", label, h.cpu))
			hwm = append(hwm, label+mib(h.hwm))
			cache = append(cache, fmt.Sprintf("%s%.0f / %.0f", label, h.hits, h.misses))
			issued = append(issued, fmt.Sprintf("%s%.0f + %.0f", label, h.issuedVeh, h.issuedCld))
		}
		pg := "–"
		if r.pgCPU >= 0 {
			pg = fmt.Sprintf("%.2f s", r.pgCPU)
		}
		fmt.Fprintf(w, "| %s | **%s** | %s | %v / %v / %v | %v / %v | %s | %s | %s | %s | %s | %.2f s | %d |\n",
			r.name, secs(r.total), secs(r.put),
			pct(r.wake, 50), pct(r.wake, 99), pct(r.wake, 100), pct(r.reported, 50), pct(r.reported, 99),
			strings.Join(cpu, "; "), strings.Join(hwm, "; "), strings.Join(cache, "; "), strings.Join(issued, "; "),
			pg, r.selfCPU, r.errors)
	}
	fmt.Fprintln(w)
	for _, r := range rs {
		fmt.Fprintf(w, "- %s: setup %s enrolment, %s connections, first rollout %s (untimed); in the timed phase %d long-poll answers, %d verifications, signed payload %d bytes; load average %s before, %s after; this process's peak RSS %s",
			r.name, secs(r.enrol), secs(r.connect), secs(r.firstRollout), r.polls, r.verified, r.payload, r.loadStart, r.loadEnd, mib(r.selfHWM))
		if r.errors > 0 && r.lastErr != nil {
			fmt.Fprintf(w, "; the last agent error: %v", r.lastErr)
		}
		fmt.Fprintln(w)
	}
	if rep.sign > 0 {
		fmt.Fprintf(w, "- one goroutine, this process, after the runs: trust.Keys.Sign %.0f and trust.Verifier.Verify %.0f documents per CPU-second (a vehicle half of %d bytes)\n",
			rep.sign, rep.verify, rep.cryptoSize)
	}
}

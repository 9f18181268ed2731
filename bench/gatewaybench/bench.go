package main

import (
	"bufio"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/misaki-io/misaki/bench/internal/harness"
	"github.com/misaki-io/misaki/internal/devpki"
	"github.com/misaki-io/misaki/internal/pgtest"
	"github.com/misaki-io/misaki/internal/uuidv7"
)

// options are the flags.
type options struct {
	configs  []string
	duration time.Duration
	warmup   time.Duration
	conns    int
	repeat   float64
	bin      string
	pgSync   string
	keep     bool
}

var allConfigs = []string{"local-1", "postgres-1", "postgres-3"}

func parse(args []string, stderr io.Writer) (options, error) {
	fs := flag.NewFlagSet("gatewaybench", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var o options
	var configs string
	fs.StringVar(&configs, "configs", strings.Join(allConfigs, ","), "configurations to run, in order: local-1, postgres-1, postgres-3 (postgres-N: N replicas)")
	fs.DurationVar(&o.duration, "duration", 10*time.Second, "the timed phase of each configuration")
	fs.DurationVar(&o.warmup, "warmup", 2*time.Second, "load before the timed phase")
	fs.IntVar(&o.conns, "conns", 64, "concurrent clients (closed loop), each request on a kept-alive connection")
	fs.Float64Var(&o.repeat, "repeat", 0.5, "fraction of requests that repeat a key already answered")
	fs.StringVar(&o.bin, "proxy", "", "misaki-gateway binary (default: built into the run's temp dir)")
	fs.StringVar(&o.pgSync, "pg-synchronous-commit", "on", "PostgreSQL's synchronous_commit (on: an answer is on disk before the gateway relays it, as the local store's)")
	fs.BoolVar(&o.keep, "keep", false, "keep the temp dir (configs and gateway logs)")
	if err := harness.Parse(fs, args); err != nil {
		return o, err
	}
	var err error
	o.configs, err = harness.Configs(configs, func(c string) error {
		_, _, err := replicasOf(c)
		return err
	})
	if err != nil {
		return o, err
	}
	switch {
	case o.conns < 1:
		return o, errors.New("-conns: at least 1")
	case o.repeat < 0 || o.repeat >= 1:
		return o, errors.New("-repeat: a fraction in [0, 1)")
	case o.duration <= 0:
		return o, errors.New("-duration: positive")
	}
	return o, nil
}

// replicasOf parses a configuration's name: its store and replicas.
func replicasOf(c string) (store string, n int, err error) {
	store, ns, ok := strings.Cut(c, "-")
	if _, err := fmt.Sscanf(ns, "%d", &n); !ok || err != nil || n < 1 || (store != "postgres" && (store != "local" || n != 1)) {
		return "", 0, fmt.Errorf("%q is not a configuration; use local-1 or postgres-N", c)
	}
	return store, n, nil
}

// report is a run's results.
type report struct {
	started time.Time
	build   string // the commit measured
	results []*result
}

// result is one configuration's.
type result struct {
	name               string
	replicas           int
	fresh, repeats     int64 // answered in the timed phase
	errors             int64 // in the timed phase: not the answer expected
	lastErr            string
	secs               float64
	lat, latNew, latRe []time.Duration // sorted
	gwCPU              []float64
	pgCPU              float64 // -1: no PostgreSQL
	selfCPU            float64 // this process's: the clients and the service
	load               string  // /proc/loadavg's 1-minute figure before and after
	keys, duplicates   int     // over the whole run: keys delivered, deliveries past the first
}

// bench runs every configuration.
func bench(ctx context.Context, o options, log io.Writer) (*report, error) {
	rep := &report{started: time.Now().UTC(), build: buildLabel(ctx)}
	work, err := os.MkdirTemp("", "gatewaybench-")
	if err != nil {
		return rep, err
	}
	if o.keep {
		fmt.Fprintln(log, "gatewaybench: keeping", work)
	} else {
		defer os.RemoveAll(work)
	}
	bin := o.bin
	if bin == "" {
		bin = filepath.Join(work, "misaki-gateway")
		fmt.Fprintln(log, "gatewaybench: building misaki-gateway")
		cmd := exec.CommandContext(ctx, "go", "build", "-o", bin, "github.com/misaki-io/misaki/cmd/misaki-gateway")
		if out, err := cmd.CombinedOutput(); err != nil {
			return rep, fmt.Errorf("go build: %v\n%s", err, out)
		}
	}
	pki, err := devpki.Write(work, "bench-car")
	if err != nil {
		return rep, err
	}
	client, err := newClient(pki, o.conns)
	if err != nil {
		return rep, err
	}
	var pg *pgtest.Server
	defer func() {
		if pg != nil {
			pg.Stop()
		}
	}()
	for i, c := range o.configs {
		store, n, _ := replicasOf(c)
		var dsn string
		if store == "postgres" {
			if pg == nil {
				fmt.Fprintln(log, "gatewaybench: starting PostgreSQL, synchronous_commit", o.pgSync)
				if pg, err = harness.StartPostgres(ctx, o.pgSync); err != nil {
					return rep, err
				}
			}
			if dsn, err = createDB(ctx, pg.DSN, fmt.Sprint("gw_", i)); err != nil {
				return rep, err
			}
		}
		fmt.Fprintf(log, "gatewaybench: %s: %d replica(s), %v warm-up, %v timed, %d clients, %.0f%% repeats\n", c, n, o.warmup, o.duration, o.conns, 100*o.repeat)
		r, err := runConfig(ctx, o, c, n, bin, filepath.Join(work, c), pki, dsn, pg, client)
		if err != nil {
			return rep, fmt.Errorf("%s: %w", c, err)
		}
		rep.results = append(rep.results, r)
		fmt.Fprintf(log, "gatewaybench: %s: %.0f requests/s, p99 %v, %d deliveries past the first\n", c, float64(r.fresh+r.repeats)/r.secs, harness.Percentile(r.lat, 99), r.duplicates)
	}
	return rep, nil
}

// createDB creates database name on the server admin names, and returns
// its DSN.
func createDB(ctx context.Context, admin, name string) (string, error) {
	conn, err := pgx.Connect(ctx, admin)
	if err != nil {
		return "", err
	}
	defer conn.Close(context.Background())
	if _, err := conn.Exec(ctx, "CREATE DATABASE "+name); err != nil {
		return "", err
	}
	u, err := url.Parse(admin)
	if err != nil {
		return "", err
	}
	u.Path = "/" + name
	return u.String(), nil
}

// service is the cloud service: 201 and a small JSON body, deliveries
// counted per key.
type service struct {
	*httptest.Server
	mu    sync.Mutex // guards byKey
	byKey map[string]int
}

func newService() *service {
	s := &service{byKey: map[string]int{}}
	s.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.Copy(io.Discard, r.Body)
		key := r.Header.Get("Idempotency-Key")
		s.mu.Lock()
		s.byKey[key]++
		s.mu.Unlock()
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusCreated)
		io.WriteString(w, `{"accepted":true,"key":"`+key+`"}`)
	}))
	return s
}

// runConfig starts a configuration's replicas and service, loads them and
// stops them.
func runConfig(ctx context.Context, o options, name string, replicas int, bin, dir string, pki devpki.Files, dsn string, pg *pgtest.Server, client *http.Client) (*result, error) {
	svc := newService()
	defer svc.Close()
	defer client.CloseIdleConnections()
	store := fmt.Sprintf("{dir: %s}", filepath.Join(dir, "keys"))
	if dsn != "" {
		store = fmt.Sprintf("{postgres: {dsn: %q}}", dsn)
	}
	cfg := fmt.Sprintf(`
role: gateway
listen: 127.0.0.1:0
admin: 127.0.0.1:0
gateway:
  tls: {certFile: %s, keyFile: %s, clientCAFile: %s}
  idempotency: %s
routes:
  - {name: orders, hosts: [orders.cloud.misaki], upstream: %s}
`, pki.ServerCert, pki.ServerKey, pki.CA, store, svc.URL)
	if err := os.MkdirAll(dir, 0o750); err != nil {
		return nil, err
	}
	var gws []*proc
	defer func() {
		for _, g := range gws {
			g.stop()
		}
	}()
	for i := range replicas {
		g, err := startGateway(ctx, bin, cfg, filepath.Join(dir, fmt.Sprint("gateway-", i)))
		if err != nil {
			return nil, err
		}
		gws = append(gws, g)
	}

	r := &result{name: name, replicas: replicas, pgCPU: -1}
	l := &load{o: o, client: client, gws: gws, answered: make([]answeredKey, 0, ringSize)}
	var timed, stop atomic.Bool
	lats := make([][]sample, o.conns)
	var wg sync.WaitGroup
	for w := range o.conns {
		wg.Go(func() {
			rng := rand.New(rand.NewPCG(uint64(w), uint64(time.Now().UnixNano())))
			for !stop.Load() && ctx.Err() == nil {
				s, err := l.one(ctx, rng)
				if !timed.Load() {
					continue
				}
				if err != nil {
					atomic.AddInt64(&r.errors, 1)
					l.setErr(err)
					continue
				}
				lats[w] = append(lats[w], s)
			}
		})
	}
	wait := func(d time.Duration) error {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(d):
			return nil
		}
	}
	if err := wait(o.warmup); err != nil {
		stop.Store(true)
		wg.Wait()
		return nil, err
	}
	cpu0 := make([]float64, len(gws))
	for i, g := range gws {
		cpu0[i], _ = harness.CPUSeconds(g.cmd.Process.Pid)
	}
	pg0 := harness.PostgresCPU(pg)
	self0, _ := harness.CPUSeconds(os.Getpid())
	load0 := harness.LoadAvg(1)
	start := time.Now()
	timed.Store(true)
	err := wait(o.duration)
	timed.Store(false)
	r.secs = time.Since(start).Seconds()
	for i, g := range gws {
		c, _ := harness.CPUSeconds(g.cmd.Process.Pid)
		r.gwCPU = append(r.gwCPU, c-cpu0[i])
	}
	if dsn != "" {
		r.pgCPU = harness.PostgresCPU(pg) - pg0
	}
	self1, _ := harness.CPUSeconds(os.Getpid())
	r.selfCPU = self1 - self0
	r.load = load0 + " → " + harness.LoadAvg(1)
	stop.Store(true)
	wg.Wait()
	if err != nil {
		return nil, err
	}
	for _, ws := range lats {
		for _, s := range ws {
			r.lat = append(r.lat, s.d)
			if s.repeat {
				r.repeats++
				r.latRe = append(r.latRe, s.d)
			} else {
				r.fresh++
				r.latNew = append(r.latNew, s.d)
			}
		}
	}
	for _, s := range [][]time.Duration{r.lat, r.latNew, r.latRe} {
		slices.Sort(s)
	}
	r.lastErr = l.lastErr
	svc.mu.Lock()
	for _, n := range svc.byKey {
		r.keys++
		r.duplicates += n - 1
	}
	svc.mu.Unlock()
	return r, nil
}

// ringSize is how many answered keys the load keeps to repeat.
const ringSize = 50_000

type answeredKey struct {
	key     string
	replica int
}

// load sends the requests.
type load struct {
	o      options
	client *http.Client
	gws    []*proc
	next   atomic.Uint64 // round robin of new keys

	mu       sync.Mutex // guards the fields below
	answered []answeredKey
	pos      int
	lastErr  string
}

type sample struct {
	d      time.Duration
	repeat bool
}

func (l *load) setErr(err error) {
	l.mu.Lock()
	l.lastErr = err.Error()
	l.mu.Unlock()
}

// one sends a new key, or repeats an answered one to another replica, and
// checks the answer.
func (l *load) one(ctx context.Context, rng *rand.Rand) (sample, error) {
	var k answeredKey
	repeat := false
	if rng.Float64() < l.o.repeat {
		l.mu.Lock()
		if n := len(l.answered); n > 0 {
			k, repeat = l.answered[rng.IntN(n)], true
		}
		l.mu.Unlock()
	}
	if repeat {
		if len(l.gws) > 1 {
			k.replica = (k.replica + 1 + rng.IntN(len(l.gws)-1)) % len(l.gws)
		}
	} else {
		k = answeredKey{key: uuidv7.New(), replica: int(l.next.Add(1) % uint64(len(l.gws)))}
	}
	req, _ := http.NewRequestWithContext(ctx, http.MethodPost, "https://"+l.gws[k.replica].addr+"/v1/orders", strings.NewReader(`{"order":"`+k.key+`","items":3}`))
	req.Host = "orders.cloud.misaki"
	req.Header.Set("Idempotency-Key", k.key)
	req.Header.Set("Content-Type", "application/json")
	start := time.Now()
	resp, err := l.client.Do(req)
	if err != nil {
		return sample{}, err
	}
	body, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	d := time.Since(start)
	replayed := resp.Header.Get("Misaki-Replayed") == "true"
	switch want := `{"accepted":true,"key":"` + k.key + `"}`; {
	case err != nil:
		return sample{}, err
	case resp.StatusCode != http.StatusCreated || string(body) != want:
		return sample{}, fmt.Errorf("%s to replica %d: %d %q", k.key, k.replica, resp.StatusCode, body)
	case replayed != repeat:
		return sample{}, fmt.Errorf("%s to replica %d: Misaki-Replayed %v for a repeat %v", k.key, k.replica, replayed, repeat)
	}
	if !repeat {
		l.mu.Lock()
		if len(l.answered) < ringSize {
			l.answered = append(l.answered, k)
		} else {
			l.answered[l.pos] = k
			l.pos = (l.pos + 1) % ringSize
		}
		l.mu.Unlock()
	}
	return sample{d: d, repeat: repeat}, nil
}

// newClient is the vehicles' client: mutual TLS, HTTP/1.1, up to conns
// connections per replica kept alive.
func newClient(pki devpki.Files, conns int) (*http.Client, error) {
	caPEM, err := os.ReadFile(pki.CA)
	if err != nil {
		return nil, err
	}
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(caPEM)
	cert, err := tls.LoadX509KeyPair(pki.ClientCert, pki.ClientKey)
	if err != nil {
		return nil, err
	}
	return &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{
		TLSClientConfig: &tls.Config{RootCAs: pool, Certificates: []tls.Certificate{cert}},
		MaxConnsPerHost: conns, MaxIdleConnsPerHost: conns,
	}}, nil
}

// proc is one gateway replica's process.
type proc struct {
	cmd    *exec.Cmd
	addr   string
	exited chan struct{}
}

// startGateway starts a replica with cfg, its log in dir, and waits for
// its listening line.
func startGateway(ctx context.Context, bin, cfg, dir string) (*proc, error) {
	if err := os.MkdirAll(dir, 0o750); err != nil {
		return nil, err
	}
	path := filepath.Join(dir, "gateway.yaml")
	if err := os.WriteFile(path, []byte(cfg), 0o600); err != nil {
		return nil, err
	}
	logf, err := os.Create(filepath.Join(dir, "gateway.log"))
	if err != nil {
		return nil, err
	}
	cmd := exec.Command(bin, "--config", path)
	stderr, err := cmd.StderrPipe()
	if err != nil {
		return nil, err
	}
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	p := &proc{cmd: cmd, exited: make(chan struct{})}
	found := make(chan string, 1)
	go func() {
		defer logf.Close()
		sc := bufio.NewScanner(stderr)
		for sc.Scan() {
			fmt.Fprintln(logf, sc.Text())
			var rec struct{ Msg, Addr string }
			if json.Unmarshal(sc.Bytes(), &rec) == nil && rec.Msg == "listening" {
				select {
				case found <- rec.Addr:
				default:
				}
			}
		}
		io.Copy(logf, stderr)
		cmd.Wait()
		close(p.exited)
	}()
	select {
	case p.addr = <-found:
		return p, nil
	case <-p.exited:
		return nil, fmt.Errorf("the gateway exited at start; see %s", logf.Name())
	case <-time.After(30 * time.Second):
		p.stop()
		return nil, fmt.Errorf("the gateway did not start; see %s", logf.Name())
	case <-ctx.Done():
		p.stop()
		return nil, ctx.Err()
	}
}

// stop interrupts the process and waits for it (killing it after 15 s).
func (p *proc) stop() {
	p.cmd.Process.Signal(os.Interrupt)
	select {
	case <-p.exited:
	case <-time.After(15 * time.Second):
		p.cmd.Process.Kill()
		<-p.exited
	}
}

// buildLabel names the commit measured, with "+" if the tree differs.
func buildLabel(ctx context.Context) string {
	out, err := exec.CommandContext(ctx, "git", "rev-parse", "--short", "HEAD").Output()
	if err != nil {
		return "unknown"
	}
	label := strings.TrimSpace(string(out))
	if st, err := exec.CommandContext(ctx, "git", "status", "--porcelain", "--untracked-files=no").Output(); err == nil && len(st) > 0 {
		label += "+ (work tree modified)"
	}
	return label
}

func ms(d time.Duration) string { return fmt.Sprintf("%.2f ms", float64(d.Microseconds())/1000) }

func printResults(w io.Writer, o options, rep *report) {
	if rep == nil || len(rep.results) == 0 {
		return
	}
	fmt.Fprintf(w, "\ngatewaybench: %s UTC; misaki %s; %d CPUs; %d clients (closed loop, HTTP/1.1 over mutual TLS), %.0f%% repeats of answered keys (to another replica than the one that answered); %v timed after %v of warm-up; PostgreSQL synchronous_commit=%s, fsync on\n\n",
		rep.started.Format("2006-01-02 15:04"), rep.build, runtime.NumCPU(), o.conns, 100*o.repeat, o.duration, o.warmup, o.pgSync)
	fmt.Fprintln(w, "| configuration | requests/s | new keys/s | repeats/s | p50 | p99 | p99 new | p99 repeat | max | gateway CPU (s per 1,000 requests) | PostgreSQL CPU (s per 1,000) | clients + service CPU | load average | deliveries past the first | errors |")
	fmt.Fprintln(w, "|---|---:|---:|---:|---:|---:|---:|---:|---:|---|---:|---:|---|---:|---:|")
	for _, r := range rep.results {
		total := float64(r.fresh + r.repeats)
		var cpu []string
		sum := 0.0
		for _, c := range r.gwCPU {
			cpu = append(cpu, fmt.Sprintf("%.2f", c))
			sum += c
		}
		gw := fmt.Sprintf("%.2f s (%.3f)", sum, 1000*sum/max(total, 1))
		if len(cpu) > 1 {
			gw = fmt.Sprintf("%s = %.2f s (%.3f)", strings.Join(cpu, " + "), sum, 1000*sum/max(total, 1))
		}
		pgc := "–"
		if r.pgCPU >= 0 {
			pgc = fmt.Sprintf("%.2f s (%.3f)", r.pgCPU, 1000*r.pgCPU/max(total, 1))
		}
		errs := fmt.Sprint(r.errors)
		if r.errors > 0 {
			errs += " (last: " + r.lastErr + ")"
		}
		fmt.Fprintf(w, "| %s | %.0f | %.0f | %.0f | %s | %s | %s | %s | %s | %s | %s | %.2f s | %s | %d of %d keys | %s |\n",
			r.name, total/r.secs, float64(r.fresh)/r.secs, float64(r.repeats)/r.secs,
			ms(harness.Percentile(r.lat, 50)), ms(harness.Percentile(r.lat, 99)),
			ms(harness.Percentile(r.latNew, 99)), ms(harness.Percentile(r.latRe, 99)), ms(harness.Percentile(r.lat, 100)),
			gw, pgc, r.selfCPU, r.load, r.duplicates, r.keys, errs)
	}
}

//go:build linux

package agentbench

import (
	"bufio"
	"context"
	"crypto/x509"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/go-logr/logr"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	ctrllog "sigs.k8s.io/controller-runtime/pkg/log"

	hubv1 "github.com/misaki-io/misaki/api/hub/v1"
	"github.com/misaki-io/misaki/internal/agent/identity"
	"github.com/misaki-io/misaki/internal/clock"
	"github.com/misaki-io/misaki/internal/clustertest"
	"github.com/misaki-io/misaki/internal/hub"
	"github.com/misaki-io/misaki/internal/hub/hubtest"
	"github.com/misaki-io/misaki/internal/hubclient"
)

const (
	deadline = 15 * time.Minute // the whole run, builds included (kustomize-controller's first build is most of it)
	settle   = 20 * time.Second // after start, before the idle window
	window   = 30 * time.Second // idle windows
	bulk     = 194              // the gadget chart's bulk ConfigMaps: 194 + 6 objects
	objects  = 200
	vehicle  = "car-bench"
	drift    = 10 * time.Second // the restarted agent's --drift-interval
)

// agentRun is one agent's measurements.
type agentRun struct {
	extra        string // AGENT_ROWS item: "NAME=value" (environment) or "--flag=value"; "" for none
	idle, after  idle
	apply        burst
	heapIdle     metrics // the agent's /metrics at the end of the idle window
	heapAfter    metrics
	revision     int64
	id, stateDir string
	port         string
	args         []string // the agent's flags, for the restart
	pods         string   // podTimeline after the apply
}

func BenchmarkFootprint(b *testing.B) {
	ctx, cancel := context.WithTimeout(context.Background(), deadline)
	defer cancel()
	ctrllog.SetLogger(logr.Discard()) // envtest's start-up lines
	assets := clustertest.Assets(b)
	bin := buildAgent(ctx, b)
	built := source(ctx) // the agent's code as built, not as it is when the run ends
	defaults := agentDefaults(ctx, bin)
	flux, fluxErr := peerTools(ctx)
	if fluxErr != nil {
		b.Logf("kustomize-controller not measured: %v", fluxErr)
	}

	b.Logf("starting the cluster (kube-apiserver, etcd, kube-controller-manager, kube-scheduler, kwok) and the hub")
	cluster := clustertest.Start(b)
	cluster.AddNode(b, "car-node", corev1.ResourceList{corev1.ResourceCPU: resource.MustParse("16"), corev1.ResourceMemory: resource.MustParse("32Gi")})
	charts, err := filepath.Abs("../../internal/agent/testdata/charts")
	if err != nil {
		b.Fatal(err)
	}
	h := hubtest.Start(b, hub.Config{LocalChartRoots: []string{charts}})
	h.Admin(b, http.StatusCreated, "POST", "/v1/sources", hubv1.ChartSource{Name: "local", Type: hubv1.SourceLocal, URL: charts}, nil)
	root, err := hubclient.New(h.URL, h.CA, nil).Root(ctx, 1)
	if err != nil {
		b.Fatal(err)
	}

	// The agent as a vehicle runs it, then one more row for each item of
	// AGENT_ROWS (such as "GOMEMLIMIT=32MiB --kube-qps=200"): each row is
	// its own vehicle, deployment and namespace.
	var runs []*agentRun
	rows := append([]string{""}, strings.Fields(os.Getenv("AGENT_ROWS"))...)
	for i, extra := range rows {
		r := &agentRun{extra: extra}
		runAgent(ctx, b, cluster, h, bin, root, i, r)
		runs = append(runs, r)
	}

	// One drift pass: the first agent restarted with --drift-interval 10s.
	dr := measureDrift(ctx, b, bin, runs[0])

	// The desired state the agent applied, for the peers.
	objs := desiredObjects(ctx, b, h, runs[0])

	kubectl := filepath.Join(assets, "kubectl")
	kr := runKubectl(ctx, b, cluster, kubectl, objs)

	var fr *fluxRun
	if fluxErr == nil {
		if fr, fluxErr = runFlux(ctx, b, cluster, kubectl, flux, objs); fluxErr != nil {
			b.Logf("kustomize-controller: %v", fluxErr)
		}
	}

	md := report(runs, dr, kr, fr, fluxErr, built, defaults, fileSize(bin), fileSize(filepath.Join(flux, "kustomize-controller")))
	fmt.Print("\n" + md)
	if dir := os.Getenv("RESULTS_DIR"); dir != "-" {
		if dir == "" {
			dir = "../results"
		}
		name := "agent-"
		if len(rows) > 1 {
			name += "rows-"
		}
		path := filepath.Join(dir, name+time.Now().Format("20060102")+".md")
		if err := os.WriteFile(path, []byte(md), 0o644); err != nil {
			b.Errorf("write results: %v", err)
		} else {
			b.Logf("wrote %s", path)
		}
	}
	b.ReportMetric(float64(runs[0].idle.Start.RSS)/(1<<20), "idle-RSS-MiB")
	b.ReportMetric(runs[0].apply.Ready.Seconds(), "apply200-s")
}

// runAgent enrols vehicle n's agent and measures it idle, applying the
// gadget chart with 200 objects, and idle again.
func runAgent(ctx context.Context, b *testing.B, cluster *clustertest.Cluster, h *hubtest.Hub, bin string, root []byte, n int, r *agentRun) {
	b.Helper()
	id, fleet, ns := fmt.Sprintf("%s-%d", vehicle, n), fmt.Sprintf("bench-%d", n), fmt.Sprintf("gadget-%d", n)
	h.Admin(b, http.StatusCreated, "POST", "/v1/vehicles", hubv1.Vehicle{ID: id, Labels: map[string]string{"fleet": fleet},
		Allocatable: hubv1.ResourceList{"cpu": "16", "memory": "32Gi"}}, nil)
	var tok hubv1.BootstrapToken
	h.Admin(b, http.StatusCreated, "POST", "/v1/vehicles/"+id+"/tokens", nil, &tok)
	dir := b.TempDir()
	files := map[string][]byte{"token": []byte(tok.Token + "\n"), "ca.crt": h.CAPEM, "root.json": root}
	for name, c := range files {
		if err := os.WriteFile(filepath.Join(dir, name), c, 0o600); err != nil {
			b.Fatal(err)
		}
	}
	port := freePort(b)
	r.id, r.stateDir, r.port = id, filepath.Join(dir, "state"), port
	r.args = []string{"--hub", h.URL, "--hub-ca-file", filepath.Join(dir, "ca.crt"),
		"--bootstrap-token-file", filepath.Join(dir, "token"), "--root-file", filepath.Join(dir, "root.json"),
		"--state-dir", r.stateDir, "--kubeconfig", cluster.Kubeconfig, "--listen", "127.0.0.1:" + port}
	var env []string
	switch {
	case strings.HasPrefix(r.extra, "--"):
		r.args = append(r.args, r.extra)
	case r.extra != "":
		env = []string{r.extra}
	}
	p, err := startProcess("misaki-agent", env, bin, r.args...)
	if err != nil {
		b.Fatal(err)
	}
	defer p.stop()
	name := r.name()

	t0 := time.Now()
	if _, err := p.waitLog(ctx, t0, "agent starting", nil); err != nil {
		b.Fatal(err)
	}
	b.Logf("%s: enrolled as %s in %v; idle: %v to settle, then %v", name, id, time.Since(t0).Round(time.Millisecond), settle, window)
	if r.idle, err = measureIdle(ctx, p.pid(), settle, window); err != nil {
		b.Fatal(err)
	}
	r.heapIdle = scrape(ctx, port)
	b.Logf("%s idle: RSS %s (anon %s, file %s), CPU %v in %v", name, mib(r.idle.Start.RSS), mib(r.idle.Start.Anon), mib(r.idle.Start.File), r.idle.CPU, r.idle.Window.Round(time.Millisecond))

	// The 200-object deployment.
	w, err := startWatch(p.pid())
	if err != nil {
		b.Fatal(err)
	}
	d := hubv1.Deployment{Name: ns, Namespace: ns, Chart: hubv1.ChartRef{Source: "local", Name: "gadget", Version: "1.0.0"},
		Values: map[string]any{"bulk": bulk}, Selector: "fleet=" + fleet, DefaultPlacement: hubv1.PlaceVehicle}
	h.Admin(b, http.StatusCreated, "POST", "/v1/deployments", d, nil)
	acc, err := p.waitLog(ctx, w.start, "revision accepted", func(l logLine) bool { return l.Fields["objects"] == float64(objects) })
	if err != nil {
		b.Fatal(err)
	}
	r.revision = int64(acc.Fields["revision"].(float64))
	applied, err := p.waitLog(ctx, w.start, "applied", nil)
	if err != nil {
		b.Fatal(err)
	}
	for {
		var tw hubv1.Twin
		h.Admin(b, http.StatusOK, "GET", "/v1/vehicles/"+id, nil, &tw)
		if healthy(tw, r.revision) {
			break
		}
		if sleep(ctx, 50*time.Millisecond) != nil {
			b.Fatalf("%s: revision %d not Healthy in the twin: %+v\n%s", name, r.revision, tw.Reported, p.tail())
		}
	}
	if r.apply, err = w.end(); err != nil {
		b.Fatal(err)
	}
	r.apply.Applied = applied.At.Sub(w.start)
	r.pods = podTimeline(ctx, cluster, ns)
	b.Logf("%s: 200 objects applied after %v, Healthy in the twin after %v; peak RSS %s, CPU %v (%s)",
		name, r.apply.Applied.Round(time.Millisecond), r.apply.Ready.Round(time.Millisecond), mib(r.apply.Peak), r.apply.CPU, r.pods)

	if r.after, err = measureIdle(ctx, p.pid(), 5*time.Second, window); err != nil {
		b.Fatal(err)
	}
	r.heapAfter = scrape(ctx, port)
	b.Logf("%s idle after: RSS %s, CPU %v in %v", name, mib(r.after.Start.RSS), r.after.CPU, r.after.Window.Round(time.Millisecond))
}

func (r *agentRun) name() string {
	if r.extra == "" {
		return "misaki-agent"
	}
	return "misaki-agent " + r.extra
}

func healthy(tw hubv1.Twin, rev int64) bool {
	for _, rep := range tw.Reported {
		if rep.Half == hubv1.HalfVehicle && rep.AppliedRevision == rev && rep.Phase == hubv1.PhaseHealthy {
			return true
		}
	}
	return false
}

// driftRun is the agent restarted with --drift-interval 10s.
type driftRun struct {
	restart idle // RSS after the restart (its first pass included) and CPU over window, with window/drift passes in it
}

// measureDrift restarts run's agent with --drift-interval 10s: its start
// re-applies the ledger's 200 objects once (a drift pass), then one more
// every 10 s. The window, 30 s after a 5 s settle, holds three passes.
func measureDrift(ctx context.Context, b *testing.B, bin string, run *agentRun) driftRun {
	b.Helper()
	args := append(append([]string(nil), run.args...), "--drift-interval", drift.String())
	p, err := startProcess("misaki-agent", nil, bin, args...)
	if err != nil {
		b.Fatal(err)
	}
	defer p.stop()
	if _, err := p.waitLog(ctx, time.Time{}, "agent starting", nil); err != nil {
		b.Fatal(err)
	}
	var dr driftRun
	if dr.restart, err = measureIdle(ctx, p.pid(), 5*time.Second, window); err != nil {
		b.Fatal(err)
	}
	b.Logf("misaki-agent --drift-interval %v: RSS %s (peak %s), CPU %v in %v", drift, mib(dr.restart.End.RSS), mib(dr.restart.End.HWM), dr.restart.CPU, dr.restart.Window.Round(time.Millisecond))
	return dr
}

// desiredObjects fetches the revision the agent applied, as the agent
// does (its own key and certificate, from its state directory), and
// returns the signed payload's objects.
func desiredObjects(ctx context.Context, b *testing.B, h *hubtest.Hub, run *agentRun) []json.RawMessage {
	b.Helper()
	id, err := identity.Load(run.stateDir, clock.Real{})
	if err != nil {
		b.Fatal(err)
	}
	roots := x509.NewCertPool()
	roots.AppendCertsFromPEM(h.CAPEM)
	d, err := id.Client(h.URL, id.Roots(roots)).Desired(ctx, id.Vehicle(), hubv1.HalfVehicle, run.revision-1, 0)
	if err != nil || d == nil || d.Revision != run.revision {
		b.Fatalf("desired revision %d: %+v, %v", run.revision, d, err)
	}
	var st hubv1.DesiredState
	if err := json.Unmarshal(d.Envelope.Payload, &st); err != nil {
		b.Fatal(err)
	}
	if len(st.Objects) != objects {
		b.Fatalf("revision %d has %d objects, want %d", run.revision, len(st.Objects), objects)
	}
	return st.Objects
}

// metrics are the agent's Go runtime gauges.
type metrics map[string]float64

// scrape reads the agent's /metrics (after a measurement window, never
// during one).
func scrape(ctx context.Context, port string) metrics {
	m := metrics{}
	req, _ := http.NewRequestWithContext(ctx, "GET", "http://127.0.0.1:"+port+"/metrics", nil)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return m
	}
	defer resp.Body.Close()
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) != 2 || strings.HasPrefix(f[0], "#") {
			continue
		}
		if v, err := strconv.ParseFloat(f[1], 64); err == nil {
			m[f[0]] = v
		}
	}
	return m
}

// buildAgent builds cmd/misaki-agent as make cross does.
func buildAgent(ctx context.Context, b *testing.B) string {
	b.Helper()
	bin := filepath.Join(b.TempDir(), "misaki-agent")
	cmd := exec.CommandContext(ctx, "go", "build", "-trimpath", "-ldflags", "-s -w", "-o", bin, "github.com/misaki-io/misaki/cmd/misaki-agent")
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := cmd.CombinedOutput(); err != nil {
		b.Fatalf("build misaki-agent: %v\n%s", err, out)
	}
	return bin
}

// peerTools builds kustomize-controller once (peer-tools.sh) and returns
// its directory.
func peerTools(ctx context.Context) (string, error) {
	cmd := exec.CommandContext(ctx, "bash", "peer-tools.sh")
	cmd.Stderr = os.Stderr
	out, err := cmd.Output()
	if err != nil {
		return "", fmt.Errorf("peer-tools.sh: %w", err)
	}
	return strings.TrimSpace(string(out)), nil
}

func freePort(b *testing.B) string {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	defer ln.Close()
	return strconv.Itoa(ln.Addr().(*net.TCPAddr).Port)
}

// machine says what ran the benchmark.
func machine() string {
	model := "?"
	if f, err := os.ReadFile("/proc/cpuinfo"); err == nil {
		for l := range strings.SplitSeq(string(f), "\n") {
			if v, ok := strings.CutPrefix(l, "model name"); ok {
				model = strings.TrimSpace(strings.TrimPrefix(strings.TrimSpace(v), ":"))
				break
			}
		}
	}
	var mem string
	if f, err := os.ReadFile("/proc/meminfo"); err == nil {
		l, _, _ := strings.Cut(string(f), "\n")
		if fs := strings.Fields(l); len(fs) >= 2 {
			kb, _ := strconv.ParseInt(fs[1], 10, 64)
			mem = fmt.Sprintf(", %.0f GiB", float64(kb)/(1<<20))
		}
	}
	return fmt.Sprintf("%d cores (%s)%s, %s, %s/%s", runtime.NumCPU(), model, mem, runtime.Version(), runtime.GOOS, runtime.GOARCH)
}

func fileSize(path string) int64 {
	fi, err := os.Stat(path)
	if err != nil {
		return 0
	}
	return fi.Size()
}

// source names the commit the agent was built from and the files of its
// packages that the work tree had changed from it (other work in the
// same checkout).
func source(ctx context.Context) string {
	out, err := exec.CommandContext(ctx, "git", "rev-parse", "--short=12", "HEAD").Output()
	if err != nil {
		return "an unknown commit"
	}
	rev := "`" + strings.TrimSpace(string(out)) + "`"
	top, err := exec.CommandContext(ctx, "git", "rev-parse", "--show-toplevel").Output()
	if err != nil {
		return rev
	}
	root := strings.TrimSpace(string(top))
	deps, err := exec.CommandContext(ctx, "go", "list", "-deps", "-f", "{{if not .Standard}}{{.Dir}}{{end}}", "github.com/misaki-io/misaki/cmd/misaki-agent").Output()
	if err != nil {
		return rev
	}
	args := []string{"status", "--porcelain", "--", "go.mod", "go.sum"}
	for d := range strings.FieldsSeq(string(deps)) {
		if rel, err := filepath.Rel(root, d); err == nil && !strings.HasPrefix(rel, "..") {
			args = append(args, ":(glob)"+rel+"/*.go")
		}
	}
	st, err := exec.CommandContext(ctx, "git", args...).Output()
	if err != nil || len(strings.TrimSpace(string(st))) == 0 {
		return rev
	}
	var files []string
	for l := range strings.Lines(string(st)) {
		if l = strings.TrimSpace(l); !strings.HasSuffix(l, "_test.go") {
			files = append(files, l)
		}
	}
	if len(files) == 0 {
		return rev
	}
	return rev + " with the work tree's changes to " + strings.Join(files, ", ")
}

// agentDefaults are the built agent's defaults that bear on the
// figures, from its -h.
func agentDefaults(ctx context.Context, bin string) string {
	out, _ := exec.CommandContext(ctx, bin, "-h").CombinedOutput()
	lines := strings.Split(string(out), "\n")
	var parts []string
	for _, name := range []string{"kube-qps", "kube-burst", "poll-wait", "drift-interval"} {
		for i, l := range lines {
			f := strings.Fields(l)
			if len(f) > 0 && f[0] == "-"+name && i+1 < len(lines) {
				if _, d, ok := strings.Cut(lines[i+1], "(default "); ok {
					parts = append(parts, "--"+name+" "+strings.TrimSuffix(strings.TrimSpace(d), ")"))
				}
			}
		}
	}
	return strings.Join(parts, ", ")
}

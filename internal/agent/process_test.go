package agent_test

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"sigs.k8s.io/controller-runtime/pkg/client"

	hubv1 "github.com/misaki-io/misaki/api/hub/v1"
	"github.com/misaki-io/misaki/internal/agent/apply"
	"github.com/misaki-io/misaki/internal/agent/ledger"
)

// buildAgent builds cmd/misaki-agent once per test binary.
func buildAgent(t *testing.T) string {
	t.Helper()
	bin := filepath.Join(t.TempDir(), "misaki-agent")
	cmd := exec.Command("go", "build", "-o", bin, "../../cmd/misaki-agent")
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("build misaki-agent: %v\n%s", err, out)
	}
	return bin
}

// proc is the agent binary running as a user runs it.
type proc struct {
	cmd   *exec.Cmd
	lines chan string
	done  chan struct{}
}

func (e *env) run(bin string, args ...string) *proc {
	e.t.Helper()
	cmd := exec.Command(bin, args...)
	stderr, err := cmd.StderrPipe()
	if err != nil {
		e.t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		e.t.Fatal(err)
	}
	p := &proc{cmd: cmd, lines: make(chan string, 4096), done: make(chan struct{})}
	go func() {
		defer close(p.done)
		sc := bufio.NewScanner(stderr)
		sc.Buffer(make([]byte, 1<<20), 1<<20)
		for sc.Scan() {
			if testing.Verbose() {
				fmt.Fprintln(os.Stderr, "agent:", sc.Text())
			}
			select {
			case p.lines <- sc.Text():
			default:
			}
		}
		cmd.Wait()
	}()
	e.t.Cleanup(func() { p.kill() })
	return p
}

// kill sends SIGKILL and waits for the process to be gone.
func (p *proc) kill() {
	p.cmd.Process.Kill()
	<-p.done
}

// waitLog waits for a log line containing s.
func (p *proc) waitLog(t *testing.T, s string, timeout time.Duration) {
	t.Helper()
	deadline := time.After(timeout)
	for {
		select {
		case l := <-p.lines:
			if strings.Contains(l, s) {
				return
			}
		case <-p.done:
			t.Fatalf("the agent exited before logging %q", s)
		case <-deadline:
			t.Fatalf("no %q in the agent's log within %v", s, timeout)
		}
	}
}

// ownedConfigMaps counts the ConfigMaps the agent of vehicle carries.
func (e *env) ownedConfigMaps(vehicle string) int {
	e.t.Helper()
	l := &unstructured.UnstructuredList{}
	l.SetAPIVersion("v1")
	l.SetKind("ConfigMapList")
	if err := e.kube.List(context.Background(), l, client.MatchingLabels{apply.LabelVehicle: vehicle}); err != nil {
		e.t.Fatal(err)
	}
	return len(l.Items)
}

// The agent binary, installed the way docs/agent.md says (a bootstrap
// token, the hub's CA, the pinned root), is killed with SIGKILL in the
// middle of applying 150 objects, and again in the middle of a revision
// that drops 60 of them. Each restart converges to the same state, and
// the ledger's inventory is exactly the objects of the revision.
func TestKillDuringApply(t *testing.T) {
	bin := buildAgent(t)
	e := newEnv(t)
	const id = "car-k"
	e.hub.Admin(t, http.StatusCreated, "POST", "/v1/vehicles", hubv1.Vehicle{ID: id, Labels: map[string]string{"fleet": "kill"}, Allocatable: hubv1.ResourceList{"cpu": "4", "memory": "8Gi"}}, nil)
	var tok hubv1.BootstrapToken
	e.hub.Admin(t, http.StatusCreated, "POST", "/v1/vehicles/"+id+"/tokens", nil, &tok)
	dir := t.TempDir()
	files := map[string][]byte{"token": []byte(tok.Token + "\n"), "ca.crt": e.hub.CAPEM, "root.json": e.pinned}
	for name, b := range files {
		if err := os.WriteFile(filepath.Join(dir, name), b, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	state := filepath.Join(dir, "state")
	args := []string{"--hub", e.link.URL(), "--hub-ca-file", filepath.Join(dir, "ca.crt"),
		"--bootstrap-token-file", filepath.Join(dir, "token"), "--root-file", filepath.Join(dir, "root.json"),
		"--state-dir", state, "--kubeconfig", e.cluster.Kubeconfig, "--poll-wait", "2s", "--listen", ""}

	dep := func(values map[string]any) {
		d := hubv1.Deployment{Name: "bulk", Namespace: "bulk", Chart: hubv1.ChartRef{Source: "local", Name: "gadget", Version: "1.0.0"},
			Values: values, Selector: "fleet=kill", DefaultPlacement: hubv1.PlaceVehicle}
		var cur hubv1.Deployment
		if code, _ := e.hub.Do(t, e.hub.Client(), e.hub.Token, "GET", "/v1/deployments/bulk", nil, &cur); code == http.StatusOK {
			d.Generation = cur.Generation
			e.hub.Admin(t, http.StatusOK, "PUT", "/v1/deployments/bulk", d, nil)
			return
		}
		e.hub.Admin(t, http.StatusCreated, "POST", "/v1/deployments", d, nil)
	}
	report := func(timeout time.Duration, ok func(hubv1.Reported) error) hubv1.Reported {
		var last hubv1.Reported
		e.cluster.Eventually(t, timeout, func() error {
			var tw hubv1.Twin
			e.hub.Admin(t, http.StatusOK, "GET", "/v1/vehicles/"+id, nil, &tw)
			for _, r := range tw.Reported {
				if r.Half == hubv1.HalfVehicle {
					last = r
					return ok(r)
				}
			}
			return fmt.Errorf("no report from %s yet", id)
		})
		return last
	}
	checkInventory := func(rev int64, want int) {
		t.Helper()
		_, rec, err := ledger.Open(state, hubv1.HalfVehicle)
		if err != nil {
			t.Fatal(err)
		}
		if rec.AppliedRevision != rev || len(rec.Inventory) != want {
			t.Fatalf("ledger: applied revision %d with %d objects in the inventory; want %d with %d", rec.AppliedRevision, len(rec.Inventory), rev, want)
		}
		refs := make([]apply.Ref, 0, len(rec.Applied))
		us, err := decodeAll(rec.Applied)
		if err != nil {
			t.Fatal(err)
		}
		for _, u := range us {
			refs = append(refs, apply.RefOf(u))
		}
		if extra := ledger.Minus(rec.Inventory, refs); len(extra) > 0 {
			t.Errorf("inventory lists %v beyond the revision's objects", extra)
		}
		if missing := ledger.Minus(refs, rec.Inventory); len(missing) > 0 {
			t.Errorf("inventory misses %v", missing)
		}
	}

	// 150 bulk ConfigMaps + the chart's 6 objects.
	dep(map[string]any{"bulk": 150, "message": "one"})
	p := e.run(bin, args...)
	p.waitLog(t, `"msg":"enrolled"`, 60*time.Second)
	p.waitLog(t, `"msg":"revision accepted"`, 60*time.Second)
	e.cluster.Eventually(t, 60*time.Second, func() error {
		if n := e.ownedConfigMaps(id); n < 10 {
			return fmt.Errorf("%d ConfigMaps applied", n)
		}
		return nil
	})
	p.kill()
	n := e.ownedConfigMaps(id)
	t.Logf("killed with %d of 152 ConfigMaps applied", n)
	if n >= 152 {
		t.Logf("the apply finished before the kill; the restart still has to converge")
	}

	p = e.run(bin, args...) // enrolled: the token file is not read again
	r := report(120*time.Second, func(r hubv1.Reported) error {
		if r.Phase != hubv1.PhaseHealthy {
			return fmt.Errorf("phase %q at revision %d", r.Phase, r.AppliedRevision)
		}
		return nil
	})
	rev1 := r.AppliedRevision
	if n := e.ownedConfigMaps(id); n != 152 {
		t.Errorf("%d ConfigMaps after the restart, want 152", n)
	}
	checkInventory(rev1, 156)
	if r.Facts == nil || r.Facts.KubernetesVersion == "" || r.Allocatable["cpu"] != "4" {
		t.Errorf("report facts %+v, allocatable %v: want the cluster's version and the node's 4 CPUs", r.Facts, r.Allocatable)
	}
	// Applied once in effect: one field manager, the right data.
	cm, err := e.get("v1", "ConfigMap", "bulk", "bulk-bulk-149")
	if err != nil {
		t.Fatal(err)
	}
	if msg, _, _ := unstructured.NestedString(cm.Object, "data", "message"); msg != "one" {
		t.Errorf("bulk-149 message %q", msg)
	}
	for _, mf := range cm.GetManagedFields() {
		if mf.Manager != "misaki-agent" {
			t.Errorf("bulk-149 has field manager %s", mf.Manager)
		}
	}

	// A revision that drops 50 bulk ConfigMaps and the extras, killed
	// while it applies.
	dep(map[string]any{"bulk": 100, "message": "two", "extra": false})
	p.waitLog(t, `"msg":"revision accepted"`, 60*time.Second)
	p.kill()
	p = e.run(bin, args...)
	r = report(120*time.Second, func(r hubv1.Reported) error {
		if r.AppliedRevision <= rev1 || r.Phase != hubv1.PhaseHealthy {
			return fmt.Errorf("phase %q at revision %d", r.Phase, r.AppliedRevision)
		}
		return nil
	})
	if n := e.ownedConfigMaps(id); n != 101 {
		t.Errorf("%d ConfigMaps after the second restart, want 101 (100 bulk and the config)", n)
	}
	// The chart's Namespace gadget-extra is kept (not in the inventory
	// any more); bulk 100-149 and the extra ConfigMap are gone.
	checkInventory(r.AppliedRevision, 104)
	if _, err := e.get("v1", "ConfigMap", "bulk", "bulk-bulk-120"); err == nil {
		t.Error("bulk-bulk-120 survived the revision that dropped it")
	}
	p.kill()
}

func decodeAll(objs []json.RawMessage) ([]*unstructured.Unstructured, error) {
	out := make([]*unstructured.Unstructured, 0, len(objs))
	for _, raw := range objs {
		u := &unstructured.Unstructured{}
		if err := u.UnmarshalJSON(raw); err != nil {
			return nil, err
		}
		out = append(out, u)
	}
	return out, nil
}

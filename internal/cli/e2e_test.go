package cli

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"sigs.k8s.io/yaml"

	hubv1 "github.com/misaki-io/misaki/api/hub/v1"
	"github.com/misaki-io/misaki/internal/hub"
	"github.com/misaki-io/misaki/internal/hub/catalog/catalogtest"
	"github.com/misaki-io/misaki/internal/hub/hubtest"
)

// misaki runs the CLI's Run with args, as a shell would run the binary.
func misaki(t *testing.T, args ...string) (code int, stdout, stderr string) {
	t.Helper()
	var out, errb bytes.Buffer
	code = Run(context.Background(), args, &out, &errb)
	if testing.Verbose() {
		t.Logf("$ misaki %s\n%s%s(exit %d)", strings.Join(args, " "), out.String(), errb.String(), code)
	}
	return code, out.String(), errb.String()
}

// ok runs the CLI and fails the test unless it exits 0.
func ok(t *testing.T, args ...string) string {
	t.Helper()
	code, out, errOut := misaki(t, args...)
	if code != 0 {
		t.Fatalf("misaki %s: exit %d\nstdout: %s\nstderr: %s", strings.Join(args, " "), code, out, errOut)
	}
	return out
}

// okJSON runs the CLI with -o json and decodes its stdout into v.
func okJSON(t *testing.T, v any, args ...string) {
	t.Helper()
	out := ok(t, append(args, "-o", "json")...)
	dec := json.NewDecoder(strings.NewReader(out))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		t.Fatalf("misaki %s -o json: %v\n%s", strings.Join(args, " "), err, out)
	}
}

// fails runs the CLI and fails the test unless it exits with code and
// stderr holds every want.
func fails(t *testing.T, code int, want []string, args ...string) {
	t.Helper()
	got, out, errOut := misaki(t, args...)
	if got != code {
		t.Errorf("misaki %s: exit %d, want %d\nstdout: %s\nstderr: %s", strings.Join(args, " "), got, code, out, errOut)
		return
	}
	for _, w := range want {
		if !strings.Contains(errOut, w) {
			t.Errorf("misaki %s: stderr lacks %q:\n%s", strings.Join(args, " "), w, errOut)
		}
	}
}

// table finds a row of a table whose cells (split on runs of spaces)
// start with the cells given.
func hasRow(out string, cells ...string) bool {
	sp := regexp.MustCompile(`\s{2,}`)
	for _, line := range strings.Split(out, "\n") {
		got := sp.Split(strings.TrimSpace(line), -1)
		if len(got) >= len(cells) && slices.Equal(got[:len(cells)], cells) {
			return true
		}
	}
	return false
}

// desired long-polls for the vehicle half's revision above after, as the
// agent does, and checks the signed payload names the vehicle and the
// revision.
func desired(t *testing.T, h *hubtest.Hub, v *hubtest.Vehicle, after int64) (hubv1.Desired, hubv1.DesiredState) {
	t.Helper()
	var d *hubv1.Desired
	for deadline := time.Now().Add(60 * time.Second); d == nil; {
		if time.Now().After(deadline) {
			t.Fatalf("desired after %d: no new revision in 60s", after)
		}
		_, d = h.Desired(t, v, hubv1.HalfVehicle, after, 10*time.Second)
	}
	var s hubv1.DesiredState
	if d.Envelope.PayloadType != hubv1.PayloadTypeDesired || len(d.Envelope.Signatures) == 0 {
		t.Fatalf("desired revision %d: envelope %q with %d signatures", d.Revision, d.Envelope.PayloadType, len(d.Envelope.Signatures))
	}
	if err := json.Unmarshal(d.Envelope.Payload, &s); err != nil {
		t.Fatalf("desired payload: %v", err)
	}
	if s.Vehicle != v.ID || s.Revision != d.Revision {
		t.Fatalf("desired payload for %s revision %d, want %s revision %d", s.Vehicle, s.Revision, v.ID, d.Revision)
	}
	return *d, s
}

// report says the vehicle applied s, every object healthy.
func report(t *testing.T, h *hubtest.Hub, v *hubtest.Vehicle, s hubv1.DesiredState) {
	t.Helper()
	rep := hubv1.Reported{Half: s.Half, AppliedRevision: s.Revision, Phase: hubv1.PhaseHealthy, AgentVersion: "test"}
	for _, raw := range s.Objects {
		var o struct {
			APIVersion string `json:"apiVersion"`
			Kind       string `json:"kind"`
			Metadata   struct {
				Name, Namespace string
			} `json:"metadata"`
		}
		if err := json.Unmarshal(raw, &o); err != nil {
			t.Fatal(err)
		}
		rep.Objects = append(rep.Objects, hubv1.ObjectStatus{APIVersion: o.APIVersion, Kind: o.Kind, Namespace: o.Metadata.Namespace, Name: o.Metadata.Name, State: hubv1.StateHealthy})
	}
	if code, body := h.Do(t, v.Client, "", http.MethodPut, "/v1/vehicles/"+v.ID+"/reported", rep, nil); code != http.StatusNoContent {
		t.Fatalf("report: %d %s", code, body)
	}
}

// TestEndToEnd is the README's path through the CLI, against the real hub
// on loopback: add a chart repository, register a vehicle and make its
// bootstrap token, enrol it as an agent would, deploy to it, and see the
// signed desired revision in the twin; then the other commands, and bad
// input that must fail clearly and change nothing.
func TestEndToEnd(t *testing.T) {
	h := hubtest.Start(t, hub.Config{})
	// The user's setup: the config the hub wrote on first start.
	t.Setenv("MISAKI_CONFIG", filepath.Join(h.DataDir, "misaki.yaml"))

	// Chart sources and charts.
	repo := catalogtest.ServeRepo(t, catalogtest.ShuttleChart(t))
	if out := ok(t, "repo", "add", "charts", repo); out != "source/charts added (http "+repo+")\n" {
		t.Errorf("repo add: %q", out)
	}
	if out := ok(t, "repo", "list"); !hasRow(out, "charts", "http", repo) {
		t.Errorf("repo list:\n%s", out)
	}
	var srcs hubv1.List[hubv1.ChartSource]
	okJSON(t, &srcs, "repo", "list")
	if len(srcs.Items) != 1 || srcs.Items[0].Type != hubv1.SourceHTTP {
		t.Errorf("repo list -o json: %+v", srcs)
	}
	if out := ok(t, "chart", "list"); !hasRow(out, "charts", "shuttle", "1.0.0", "2.4.1", "no") {
		t.Errorf("chart list:\n%s", out)
	}
	var cv hubv1.ChartVersion
	okJSON(t, &cv, "chart", "show", "charts/shuttle", "1.0.0")
	if !strings.HasPrefix(cv.Digest, "sha256:") || !bytes.Contains(cv.ValuesSchema, []byte(`"replicas"`)) {
		t.Errorf("chart show -o json: digest %q, schema %s", cv.Digest, cv.ValuesSchema)
	}
	if out := ok(t, "chart", "show", "charts/shuttle", "-o", "yaml"); !strings.Contains(out, "valuesSchema:") || !strings.Contains(out, "version: 1.0.0") {
		t.Errorf("chart show -o yaml (newest version):\n%s", out)
	}

	// A vehicle, its bootstrap token, and the agent's enrolment.
	if out := ok(t, "vehicle", "create", "car-1", "--label", "fleet=eu", "--allocatable", "cpu=2,memory=4Gi"); out != "vehicle/car-1 created\n" {
		t.Errorf("vehicle create: %q", out)
	}
	code, tokOut, tokErr := misaki(t, "vehicle", "token", "car-1", "--ttl", "1h")
	if code != 0 || !regexp.MustCompile(`^[^\s]+\.[^\s]+\n$`).MatchString(tokOut) || !strings.Contains(tokErr, "shown once") {
		t.Fatalf("vehicle token: exit %d, stdout %q (want the token alone), stderr %q", code, tokOut, tokErr)
	}
	car := h.EnrolToken(t, strings.TrimSpace(tokOut))
	if car.ID != "car-1" {
		t.Fatalf("enrolled as %q", car.ID)
	}
	var vs hubv1.List[hubv1.Vehicle]
	okJSON(t, &vs, "vehicle", "list", "-l", "fleet=eu")
	if len(vs.Items) != 1 || vs.Items[0].Enrolled == nil {
		t.Errorf("vehicle list -l fleet=eu -o json: %+v", vs)
	}
	if out := ok(t, "vehicle", "show", "car-1"); !strings.Contains(out, "Enrolled:") || !strings.Contains(out, "Bootstrap tokens:") {
		t.Errorf("vehicle show:\n%s", out)
	}

	// The deployment, and the signed desired revision the agent reads.
	out := ok(t, "deploy", "create", "shuttle", "--chart", "charts/shuttle", "--version", "1.0.0",
		"--selector", "fleet=eu", "--set", "replicas=2", "--health-deadline", "10m", "--rollback")
	if !strings.HasPrefix(out, "deployment/shuttle created (chart charts/shuttle 1.0.0, sha256:") {
		t.Errorf("deploy create: %q", out)
	}
	d, state := desired(t, h, car, 0)
	place := map[string]string{}
	for _, p := range state.Placement {
		place[p.Component] = p.Place
	}
	if place["api"] != hubv1.PlaceVehicle || place["planner"] != hubv1.PlaceCloud {
		t.Errorf("placement in revision %d: %+v", d.Revision, state.Placement)
	}
	if len(state.Deployments) != 1 || state.Deployments[0].Health == nil || *state.Deployments[0].Health != (hubv1.HealthPolicy{Deadline: "10m", Rollback: true}) {
		t.Errorf("the health policy in revision %d: %+v", d.Revision, state.Deployments)
	}
	report(t, h, car, state)

	// The twin shows it: desired and applied, the digest, placement.
	rev := fmt.Sprint(d.Revision)
	out = ok(t, "twin", "car-1")
	n := len(state.Objects)
	if !hasRow(out, "vehicle", rev, rev, "Healthy", shortDigest(d.Digest)) || !strings.Contains(out, fmt.Sprintf("%d/%d", n, n)) ||
		!hasRow(out, "planner", "shuttle", "auto", "cloud") || !hasRow(out, "api", "shuttle", "vehicle", "vehicle") {
		t.Errorf("twin (want vehicle half %s applied %s, %s):\n%s", rev, rev, shortDigest(d.Digest), out)
	}
	var tw hubv1.Twin
	okJSON(t, &tw, "twin", "car-1")
	if len(tw.Desired) == 0 || tw.Desired[0].Digest != d.Digest || len(tw.Reported) != 1 || tw.Reported[0].AppliedRevision != d.Revision {
		t.Errorf("twin -o json: desired %+v reported %+v", tw.Desired, tw.Reported)
	}
	if out := ok(t, "twin", "car-1", "-o", "yaml"); !strings.Contains(out, "digest: "+d.Digest) {
		t.Errorf("twin -o yaml:\n%s", out)
	}

	// Deployments: list, show, update (a new revision follows), preview.
	if out := ok(t, "deploy", "list"); !hasRow(out, "shuttle", "charts/shuttle", "1.0.0", "fleet=eu", "1") {
		t.Errorf("deploy list:\n%s", out)
	}
	var dep hubv1.Deployment
	okJSON(t, &dep, "deploy", "show", "shuttle")
	if dep.Generation != 1 || !strings.HasPrefix(dep.Chart.Digest, "sha256:") || fmt.Sprint(dep.Values["replicas"]) != "2" {
		t.Errorf("deploy show -o json: %+v", dep)
	}
	if out := ok(t, "deploy", "show", "shuttle"); !strings.Contains(out, "Values:\n  replicas: 2") || !regexp.MustCompile(`\nHealth: +deadline 10m, then rollback\n`).MatchString(out) {
		t.Errorf("deploy show:\n%s", out)
	}
	if dep.Health == nil || *dep.Health != (hubv1.HealthPolicy{Deadline: "10m", Rollback: true}) {
		t.Errorf("deploy show -o json: health %+v", dep.Health)
	}
	if out := ok(t, "deploy", "update", "shuttle", "--set", "config.logLevel=debug", "--placement", "api=vehicle", "--rollback=false"); out != "deployment/shuttle updated (generation 2)\n" {
		t.Errorf("deploy update: %q", out)
	}
	dep = hubv1.Deployment{}
	okJSON(t, &dep, "deploy", "show", "shuttle")
	if fmt.Sprint(dep.Values["replicas"]) != "2" || dep.Placement["api"] != "vehicle" {
		t.Errorf("after update, values and placement: %+v %+v", dep.Values, dep.Placement)
	}
	if dep.Health == nil || *dep.Health != (hubv1.HealthPolicy{Deadline: "10m"}) {
		t.Errorf("after update --rollback=false, health: %+v", dep.Health)
	}
	if d2, _ := desired(t, h, car, d.Revision); d2.Revision <= d.Revision {
		t.Errorf("after update: revision %d", d2.Revision)
	}
	out = ok(t, "deploy", "preview", "shuttle", "--vehicle", "car-1", "--placement", "planner=vehicle")
	if !strings.Contains(out, "# vehicle half\n") || !strings.Contains(out, "name: shuttle-planner") || !strings.Contains(out, "matches the vehicle") {
		t.Errorf("deploy preview:\n%s", out)
	}
	var docs int
	for _, doc := range strings.Split(out, "\n---\n")[1:] {
		var m map[string]any
		if err := yaml.Unmarshal([]byte(doc), &m); err != nil || m["kind"] == nil {
			t.Errorf("deploy preview: a document that is not an object (%v):\n%s", err, doc)
		}
		docs++
	}
	if docs == 0 {
		t.Errorf("deploy preview: no manifests:\n%s", out)
	}
	var pv hubv1.Preview
	okJSON(t, &pv, "deploy", "preview", "trial", "--chart", "charts/shuttle", "--version", "1.0.0", "--selector", "fleet=us", "--vehicle", "car-1")
	if len(pv.Vehicle) == 0 || len(pv.Placement) == 0 || pv.Matches {
		t.Errorf("preview of a new deployment: %d vehicle objects, placement %+v, matches %v", len(pv.Vehicle), pv.Placement, pv.Matches)
	}

	// Labels (kubectl semantics) and paging.
	ok(t, "vehicle", "create", "car-2", "--label", "fleet=us")
	if out := ok(t, "vehicle", "label", "car-2", "tier=a", "fleet-"); out != "vehicle/car-2 labeled\n" {
		t.Errorf("vehicle label: %q", out)
	}
	fails(t, 1, []string{`label "tier" already has a value (a), and --overwrite is false`}, "vehicle", "label", "car-2", "tier=b")
	var v2 hubv1.Vehicle
	okJSON(t, &v2, "vehicle", "show", "car-2")
	if len(v2.Labels) != 1 || v2.Labels["tier"] != "a" {
		t.Errorf("car-2 labels: %v", v2.Labels)
	}
	code, page, pageErr := misaki(t, "vehicle", "list", "--limit", "1")
	if code != 0 || !hasRow(page, "car-1") || hasRow(page, "car-2") || !strings.Contains(pageErr, "--after car-1") {
		t.Errorf("vehicle list --limit 1: exit %d\n%s%s", code, page, pageErr)
	}
	okJSON(t, &vs, "vehicle", "list", "--limit", "1", "--all")
	if len(vs.Items) != 2 || vs.Next != "" {
		t.Errorf("vehicle list --limit 1 --all: %d items, next %q", len(vs.Items), vs.Next)
	}
	// car-1's agent has polled; car-2 never has.
	okJSON(t, &vs, "vehicle", "list", "--state", "online")
	if len(vs.Items) != 1 || vs.Items[0].ID != "car-1" {
		t.Errorf("vehicle list --state online: %+v", vs.Items)
	}
	if out := ok(t, "vehicle", "list", "--state", "offline"); !hasRow(out, "car-2", "no", "-", "no") || hasRow(out, "car-1") {
		t.Errorf("vehicle list --state offline:\n%s", out)
	}
	code, tok2, _ := misaki(t, "vehicle", "token", "car-3", "--create", "--label", "fleet=eu")
	if code != 0 || strings.Count(tok2, "\n") != 1 {
		t.Errorf("vehicle token --create: exit %d, %q", code, tok2)
	}
	fails(t, 1, []string{"vehicle car-9 does not exist", "or add --create"}, "vehicle", "token", "car-9")
	// Removing the last label leaves none (an empty labels map on the wire).
	ok(t, "vehicle", "label", "car-3", "fleet-")
	var v3 hubv1.Vehicle
	okJSON(t, &v3, "vehicle", "show", "car-3")
	if len(v3.Labels) != 0 {
		t.Errorf("car-3 labels after removing its only one: %v", v3.Labels)
	}
	if out := ok(t, "vehicle", "delete", "car-3"); out != "vehicle/car-3 deleted\n" {
		t.Errorf("vehicle delete: %q", out)
	}

	// Bad input: a clear message, a non-zero exit, and nothing changed.
	fails(t, 1, []string{"nope", "(field: chart"}, "deploy", "create", "bad", "--chart", "charts/nope", "--version", "1.0.0", "--selector", "fleet=eu")
	fails(t, 1, []string{`no chart source "nowhere"`, "(field: chart.source)"}, "deploy", "create", "bad", "--chart", "nowhere/shuttle", "--version", "1.0.0", "--selector", "fleet=eu")
	fails(t, 1, []string{"values:", "replicas", "(field: values)"}, "deploy", "create", "bad", "--chart", "charts/shuttle", "--version", "1.0.0", "--selector", "fleet=eu", "--set", "replicas=-1")
	fails(t, 1, []string{"selector", "does not parse", "(field: selector)"}, "deploy", "create", "bad", "--chart", "charts/shuttle", "--version", "1.0.0", "--selector", "fleet in (eu")
	fails(t, 1, []string{"(field: selector)"}, "vehicle", "list", "-l", "fleet in (eu")
	fails(t, 1, []string{"values:", "(field: values)"}, "deploy", "update", "shuttle", "--set", "image.pullPolicy=Sometimes")
	fails(t, 1, []string{`"soon"`, "(field: health.deadline)"}, "deploy", "update", "shuttle", "--health-deadline", "soon")
	fails(t, 1, []string{`"48h"`, "(field: health.deadline)"}, "deploy", "create", "bad", "--chart", "charts/shuttle", "--version", "1.0.0", "--selector", "fleet=eu", "--health-deadline", "48h")
	fails(t, 1, []string{"not found"}, "twin", "car-404")
	var deps hubv1.List[hubv1.Deployment]
	okJSON(t, &deps, "deploy", "list")
	if len(deps.Items) != 1 || deps.Items[0].Generation != 2 {
		t.Errorf("after bad input, deployments: %+v", deps.Items)
	}

	// Operator tokens: a read-only token reads and may not write.
	code, secret, _ := misaki(t, "token", "create", "ci", "--scope", "read")
	secret = strings.TrimSpace(secret)
	if code != 0 || !strings.HasPrefix(secret, "mkh_") {
		t.Fatalf("token create: exit %d, %q", code, secret)
	}
	if out := ok(t, "token", "list"); !hasRow(out, "ci", "read") || !hasRow(out, "admin", "admin") {
		t.Errorf("token list:\n%s", out)
	}
	ok(t, "deploy", "list", "--token", secret)
	fails(t, 1, []string{"read-only"}, "deploy", "delete", "shuttle", "--token", secret)
	fails(t, 1, []string{"unknown operator token", "check --token"}, "deploy", "list", "--token", "mkh_wrong")
	ok(t, "token", "delete", "ci")
	code, cloud, _ := misaki(t, "token", "create", "cloud", "--scope", "cloud-agent")
	if code != 0 || !strings.HasPrefix(cloud, "mkh_") {
		t.Fatalf("token create --scope cloud-agent: exit %d, %q", code, cloud)
	}
	if out := ok(t, "token", "list"); !hasRow(out, "cloud", "cloud-agent") {
		t.Errorf("token list:\n%s", out)
	}
	fails(t, 1, []string{"cloud-agent scope"}, "deploy", "list", "--token", strings.TrimSpace(cloud))
	ok(t, "token", "delete", "cloud")

	// Keys and the audit log.
	var root struct {
		Signed struct {
			Type    string `json:"_type"`
			Version int64  `json:"version"`
		} `json:"signed"`
	}
	if err := json.Unmarshal([]byte(ok(t, "keys", "root", "1")), &root); err != nil || root.Signed.Type != "root" || root.Signed.Version != 1 {
		t.Errorf("keys root 1: %+v, %v", root, err)
	}
	fails(t, 2, []string{"want a number"}, "keys", "root", "zero")
	if out := ok(t, "keys", "rotate"); !regexp.MustCompile(`^targets key rotated; trust root version \d+\n$`).MatchString(out) {
		t.Errorf("keys rotate: %q", out)
	}
	var audit hubv1.List[hubv1.AuditEntry]
	okJSON(t, &audit, "audit", "--limit", "3")
	if len(audit.Items) != 3 || audit.Items[0].Action != "rotate" {
		t.Errorf("audit --limit 3: %+v", audit.Items)
	}
	if out := ok(t, "audit"); !hasRow(out, audit.Items[0].Time.UTC().Format(time.RFC3339), "operator/admin", "rotate", "keys/targets") {
		t.Errorf("audit:\n%s", out)
	}

	// Without the hub's CA the hub's certificate is not trusted, and the
	// message says what to do.
	noCA := filepath.Join(t.TempDir(), "config.yaml")
	if err := os.WriteFile(noCA, []byte("hub: "+h.URL+"\ntoken: x\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	fails(t, 1, []string{"certificate", "--ca-file"}, "vehicle", "list", "--config", noCA)

	if out := ok(t, "deploy", "delete", "shuttle"); out != "deployment/shuttle deleted\n" {
		t.Errorf("deploy delete: %q", out)
	}
	if out := ok(t, "repo", "remove", "charts"); out != "source/charts removed\n" {
		t.Errorf("repo remove: %q", out)
	}
}

package cli

import (
	"bytes"
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	hubv1 "github.com/misaki-io/misaki/api/hub/v1"
)

var update = flag.Bool("update", false, "rewrite the golden files under testdata/")

// golden compares got with testdata/name, or rewrites it with -update.
func golden(t *testing.T, name string, got []byte) {
	t.Helper()
	path := filepath.Join("testdata", name)
	if *update {
		if err := os.MkdirAll("testdata", 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(path, got, 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("%v (go test -run %s -update writes it)", err, t.Name())
	}
	if diff := cmp.Diff(string(want), string(got)); diff != "" {
		t.Errorf("%s (-want +got):\n%s", path, diff)
	}
}

func TestTable(t *testing.T) {
	tests := []struct {
		name string
		rows [][]string
		want string
	}{
		{
			name: "aligned with three spaces",
			rows: [][]string{{"car-1", "yes", "fleet=eu"}, {"a-much-longer-id", "no", "fleet=us,tier=a"}},
			want: "" +
				"ID                 ONLINE   LABELS\n" +
				"car-1              yes      fleet=eu\n" +
				"a-much-longer-id   no       fleet=us,tier=a\n",
		},
		{
			name: "empty cells say none; tabs and newlines stay in the cell",
			rows: [][]string{{"x", "", "a\tb\nc"}},
			want: "" +
				"ID   ONLINE   LABELS\n" +
				"x    <none>   a b c\n",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tb := newTable("ID", "ONLINE", "LABELS")
			for _, r := range tt.rows {
				tb.add(r...)
			}
			var b bytes.Buffer
			if err := tb.write(&b); err != nil {
				t.Fatal(err)
			}
			if diff := cmp.Diff(tt.want, b.String()); diff != "" {
				t.Errorf("(-want +got):\n%s", diff)
			}
		})
	}
}

func TestShortDigest(t *testing.T) {
	for in, want := range map[string]string{
		"sha256:0123456789abcdef0123": "sha256:0123456789ab",
		"sha256:abc":                  "sha256:abc",
		"":                            "",
		"weird":                       "weird",
	} {
		if got := shortDigest(in); got != want {
			t.Errorf("shortDigest(%q) = %q, want %q", in, got, want)
		}
	}
}

func ptr[T any](v T) *T { return &v }

func TestTwinTable(t *testing.T) {
	e, _, _ := testEnv()
	now := e.now()
	tw := hubv1.Twin{
		Vehicle: hubv1.Vehicle{ID: "car-1", Labels: map[string]string{"fleet": "eu", "tier": "a"}, Online: true, LastSeen: ptr(now.Add(-5 * time.Second))},
		Desired: []hubv1.DesiredSummary{
			{Half: "vehicle", Revision: 3, Digest: "sha256:00112233445566778899aabbccddeeff", IssuedAt: now.Add(-10 * time.Minute), Expires: now.Add(14 * 24 * time.Hour),
				Objects: []string{"ConfigMap/default/shuttle-config", "Deployment/default/shuttle-api", "Service/default/shuttle-api"}},
			{Half: "cloud", Revision: 1, Digest: "sha256:ffeeddccbbaa99887766554433221100", IssuedAt: now.Add(-time.Hour), Expires: now.Add(13 * 24 * time.Hour),
				Objects: []string{"Deployment/misaki-v-car-1/shuttle-planner"}},
		},
		Reported: []hubv1.Reported{{
			Half: "vehicle", AppliedRevision: 2, Phase: hubv1.PhaseProgressing, AgentVersion: "v0.1.0", Time: now.Add(-30 * time.Second),
			Objects: []hubv1.ObjectStatus{
				{Kind: "ConfigMap", Namespace: "default", Name: "shuttle-config", State: "healthy"},
				{Kind: "Deployment", Namespace: "default", Name: "shuttle-api", State: "progressing", Reason: "1 of 2 replicas ready"},
			},
		}},
		Placement: []hubv1.ComponentPlacement{
			{Deployment: "shuttle", Component: "api", Policy: "auto", Place: "vehicle", Reason: "requests cpu=250m,memory=256Mi fit allocatable"},
			{Deployment: "shuttle", Component: "planner", Policy: "auto", Place: "cloud", Reason: "requests cpu=4 exceed allocatable cpu=2"},
		},
		Delta: []hubv1.Delta{
			{Half: "vehicle", Kind: "revision", Detail: "desired revision 3, applied 2"},
			{Half: "vehicle", Kind: "missing", Object: "Service/default/shuttle-api", Detail: "desired, not reported"},
			{Half: "vehicle", Kind: "unhealthy", Object: "Deployment/default/shuttle-api", Detail: "progressing: 1 of 2 replicas ready"},
			{Half: "cloud", Kind: "revision", Detail: "desired revision 1, nothing reported"},
		},
	}
	var b bytes.Buffer
	if err := e.writeTwin(&b, tw); err != nil {
		t.Fatal(err)
	}
	golden(t, "twin.golden", b.Bytes())

	t.Run("failed", func(t *testing.T) {
		tw := tw
		tw.Reported = []hubv1.Reported{tw.Reported[0]}
		r := &tw.Reported[0]
		r.Phase = hubv1.PhaseFailed
		r.Failure = &hubv1.Failure{Revision: 2, Reason: "not ready within 10m: Deployment/default/shuttle-api progressing", Deployments: []string{"shuttle"}, RolledBackTo: 1}
		tw.Delta = []hubv1.Delta{
			{Half: "vehicle", Kind: "revision", Detail: "desired revision 3, applied 2"},
			{Half: "vehicle", Kind: "failed", Detail: "revision 2 failed: not ready within 10m: Deployment/default/shuttle-api progressing; deployments shuttle; rolled back to revision 1"},
			{Half: "vehicle", Kind: "missing", Object: "Service/default/shuttle-api", Detail: "desired, not reported"},
			{Half: "vehicle", Kind: "failed", Object: "Deployment/default/shuttle-api", Detail: "progressing: 1 of 2 replicas ready"},
			{Half: "cloud", Kind: "revision", Detail: "desired revision 1, nothing reported"},
		}
		var b bytes.Buffer
		if err := e.writeTwin(&b, tw); err != nil {
			t.Fatal(err)
		}
		golden(t, "twin-failed.golden", b.Bytes())
	})

	t.Run("new vehicle", func(t *testing.T) {
		var b bytes.Buffer
		if err := e.writeTwin(&b, hubv1.Twin{Vehicle: hubv1.Vehicle{ID: "car-2"}}); err != nil {
			t.Fatal(err)
		}
		golden(t, "twin-empty.golden", b.Bytes())
	})
}

func TestPreviewOutput(t *testing.T) {
	p := hubv1.Preview{
		Vehicle: []json.RawMessage{
			json.RawMessage(`{"apiVersion":"v1","kind":"ConfigMap","metadata":{"name":"shuttle-config","namespace":"default"},"data":{"logLevel":"info"}}`),
		},
		Cloud: []json.RawMessage{
			json.RawMessage(`{"apiVersion":"apps/v1","kind":"Deployment","metadata":{"name":"shuttle-planner","namespace":"misaki-v-car-1"},"spec":{"replicas":1}}`),
		},
		CloudNamespace: "misaki-v-car-1",
		Placement: []hubv1.ComponentPlacement{
			{Deployment: "shuttle", Component: "api", Policy: "vehicle", Place: "vehicle", Reason: "policy vehicle"},
			{Deployment: "shuttle", Component: "planner", Policy: "auto", Place: "cloud", Reason: "requests cpu=4 exceed allocatable cpu=2"},
		},
		Matches: true,
	}
	var b bytes.Buffer
	if err := writePreview(&b, "shuttle", "car-1", p); err != nil {
		t.Fatal(err)
	}
	golden(t, "preview.golden", b.Bytes())
}

func TestLabelChange(t *testing.T) {
	tests := []struct {
		name      string
		args      []string
		labels    map[string]string
		overwrite bool
		want      map[string]string
		warnings  []string
		wantErr   string
	}{
		{
			name:   "set and remove",
			args:   []string{"fleet=eu", "tier-"},
			labels: map[string]string{"tier": "a", "keep": "x"},
			want:   map[string]string{"fleet": "eu", "keep": "x"},
		},
		{
			name:   "same value is no change",
			args:   []string{"fleet=eu"},
			labels: map[string]string{"fleet": "eu"},
			want:   map[string]string{"fleet": "eu"},
		},
		{
			name:    "another value needs --overwrite",
			args:    []string{"fleet=us"},
			labels:  map[string]string{"fleet": "eu"},
			wantErr: `label "fleet" already has a value (eu), and --overwrite is false`,
		},
		{
			name:      "--overwrite",
			args:      []string{"fleet=us"},
			labels:    map[string]string{"fleet": "eu"},
			overwrite: true,
			want:      map[string]string{"fleet": "us"},
		},
		{
			name:     "removing a missing label warns",
			args:     []string{"gone-"},
			labels:   nil,
			want:     map[string]string{},
			warnings: []string{`label "gone" not found`},
		},
		{
			name:    "set and remove the same key",
			args:    []string{"a=1", "a-"},
			wantErr: `label "a": cannot both set and remove it`,
		},
		{
			name:    "neither form",
			args:    []string{"fleet"},
			wantErr: `label "fleet": want key=value to set or key- to remove`,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ch, err := parseLabelArgs(tt.args)
			var got map[string]string
			var warnings []string
			if err == nil {
				got, warnings, err = ch.apply(tt.labels, tt.overwrite)
			}
			if tt.wantErr != "" {
				if err == nil || err.Error() != tt.wantErr {
					t.Fatalf("err = %v, want %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if diff := cmp.Diff(tt.want, got); diff != "" {
				t.Errorf("labels (-want +got):\n%s", diff)
			}
			if diff := cmp.Diff(tt.warnings, warnings); diff != "" {
				t.Errorf("warnings (-want +got):\n%s", diff)
			}
		})
	}
}

func TestDeployFlags(t *testing.T) {
	dir := t.TempDir()
	slow := writeFile(t, filepath.Join(dir, "slow.yaml"), "planner:\n  replicas: 0\n")
	stored := hubv1.Deployment{
		Name: "shuttle", Generation: 4,
		Chart:          hubv1.ChartRef{Source: "charts", Name: "shuttle", Version: "1.0.0", Digest: "sha256:aa"},
		Values:         map[string]any{"replicas": float64(2), "image": map[string]any{"tag": "1"}},
		Selector:       "fleet=eu",
		Placement:      map[string]string{"planner": "cloud", "api": "vehicle"},
		Customizations: []hubv1.Customization{{Name: "old", Selector: "tier=a"}, {Name: "slow", Selector: "x=y"}},
	}
	tests := []struct {
		name    string
		args    []string
		base    hubv1.Deployment
		want    hubv1.Deployment
		wantErr string
	}{
		{
			name: "create",
			args: []string{"--chart", "charts/shuttle", "--version", "1.0.0", "--selector", "fleet=eu", "--set", "replicas=2",
				"--namespace", "apps", "--placement", "planner=cloud", "--default-placement", "vehicle", "--customization", "slow:tier=low:" + slow},
			base: hubv1.Deployment{Name: "shuttle"},
			want: hubv1.Deployment{
				Name: "shuttle", Namespace: "apps",
				Chart:            hubv1.ChartRef{Source: "charts", Name: "shuttle", Version: "1.0.0"},
				Values:           map[string]any{"replicas": int64(2)},
				Selector:         "fleet=eu",
				Placement:        map[string]string{"planner": "cloud"},
				DefaultPlacement: "vehicle",
				Customizations:   []hubv1.Customization{{Name: "slow", Selector: "tier=low", Values: map[string]any{"planner": map[string]any{"replicas": float64(0)}}}},
			},
		},
		{
			name: "update changes only what the flags name; values merge",
			args: []string{"--version", "1.1.0", "--set", "image.tag=2", "--placement", "api-", "--placement", "db=auto",
				"--remove-customization", "old", "--customization", "slow:tier in (b,c):" + slow},
			base: stored,
			want: hubv1.Deployment{
				Name: "shuttle", Generation: 4,
				Chart:     hubv1.ChartRef{Source: "charts", Name: "shuttle", Version: "1.1.0", Digest: "sha256:aa"},
				Values:    map[string]any{"replicas": float64(2), "image": map[string]any{"tag": int64(2)}},
				Selector:  "fleet=eu",
				Placement: map[string]string{"planner": "cloud", "db": "auto"},
				Customizations: []hubv1.Customization{
					{Name: "slow", Selector: "tier in (b,c)", Values: map[string]any{"planner": map[string]any{"replicas": float64(0)}}},
				},
			},
		},
		{
			name: "--reset-values",
			args: []string{"--reset-values", "--set", "replicas=1"},
			base: hubv1.Deployment{Name: "d", Values: map[string]any{"image": map[string]any{"tag": "1"}}},
			want: hubv1.Deployment{Name: "d", Values: map[string]any{"replicas": int64(1)}},
		},
		{
			name: "the selector may be emptied",
			args: []string{"-l", ""},
			base: hubv1.Deployment{Name: "d", Selector: "a=b"},
			want: hubv1.Deployment{Name: "d"},
		},
		{
			name: "a health policy",
			args: []string{"--health-deadline", "10m", "--rollback"},
			base: hubv1.Deployment{Name: "d"},
			want: hubv1.Deployment{Name: "d", Health: &hubv1.HealthPolicy{Deadline: "10m", Rollback: true}},
		},
		{
			name: "the deadline changes, the rollback stays",
			args: []string{"--health-deadline", "5m"},
			base: hubv1.Deployment{Name: "d", Health: &hubv1.HealthPolicy{Deadline: "10m", Rollback: true}},
			want: hubv1.Deployment{Name: "d", Health: &hubv1.HealthPolicy{Deadline: "5m", Rollback: true}},
		},
		{
			name: "rollback without a deadline",
			args: []string{"--rollback"},
			base: hubv1.Deployment{Name: "d"},
			want: hubv1.Deployment{Name: "d", Health: &hubv1.HealthPolicy{Rollback: true}},
		},
		{
			name: "no deadline and no rollback is no policy",
			args: []string{"--health-deadline", "", "--rollback=false"},
			base: hubv1.Deployment{Name: "d", Health: &hubv1.HealthPolicy{Deadline: "10m", Rollback: true}},
			want: hubv1.Deployment{Name: "d"},
		},
		{
			name: "other flags keep the policy",
			args: []string{"--selector", "a=b"},
			base: hubv1.Deployment{Name: "d", Health: &hubv1.HealthPolicy{Deadline: "10m"}},
			want: hubv1.Deployment{Name: "d", Selector: "a=b", Health: &hubv1.HealthPolicy{Deadline: "10m"}},
		},
		{
			name: "a rollout policy",
			args: []string{"--canary", "1", "--wave", "25%", "--wave", "eu=selector:fleet=eu,tier in (a,b)", "--max-unavailable", "2",
				"--bake-time", "30m", "--wave-deadline", "2h", "--failure-threshold", "5%", "--gate", "parked", "--gate", "battery>=30", "--gate", "window 02:00-05:00"},
			base: hubv1.Deployment{Name: "d"},
			want: hubv1.Deployment{Name: "d", Rollout: &hubv1.RolloutPolicy{
				Canary:         &hubv1.Wave{Size: "1"},
				Waves:          []hubv1.Wave{{Size: "25%"}, {Name: "eu", Selector: "fleet=eu,tier in (a,b)"}},
				MaxUnavailable: "2", BakeTime: "30m", WaveDeadline: "2h", FailureThreshold: "5%",
				Gates: []string{"parked", "battery>=30", "window 02:00-05:00"},
			}},
		},
		{
			name: "a canary by selector, named",
			args: []string{"--canary", "pilot=selector:tier=test"},
			base: hubv1.Deployment{Name: "d"},
			want: hubv1.Deployment{Name: "d", Rollout: &hubv1.RolloutPolicy{Canary: &hubv1.Wave{Name: "pilot", Selector: "tier=test"}}},
		},
		{
			name: "rollout flags change only what they name",
			args: []string{"--bake-time", "1h", "--max-unavailable", ""},
			base: hubv1.Deployment{Name: "d", Rollout: &hubv1.RolloutPolicy{Canary: &hubv1.Wave{Size: "1"}, Waves: []hubv1.Wave{{Size: "50%"}}, MaxUnavailable: "3", Gates: []string{"parked"}}},
			want: hubv1.Deployment{Name: "d", Rollout: &hubv1.RolloutPolicy{Canary: &hubv1.Wave{Size: "1"}, Waves: []hubv1.Wave{{Size: "50%"}}, BakeTime: "1h", Gates: []string{"parked"}}},
		},
		{
			name: "--wave and --gate replace them all",
			args: []string{"--wave", "10%", "--wave", "late=90%", "--gate", "!moving"},
			base: hubv1.Deployment{Name: "d", Rollout: &hubv1.RolloutPolicy{Waves: []hubv1.Wave{{Size: "50%"}}, Gates: []string{"parked", "battery>=30"}}},
			want: hubv1.Deployment{Name: "d", Rollout: &hubv1.RolloutPolicy{Waves: []hubv1.Wave{{Size: "10%"}, {Name: "late", Size: "90%"}}, Gates: []string{"!moving"}}},
		},
		{
			name: "empty --wave and --gate drop them",
			args: []string{"--wave", "", "--gate", ""},
			base: hubv1.Deployment{Name: "d", Rollout: &hubv1.RolloutPolicy{Canary: &hubv1.Wave{Size: "1"}, Waves: []hubv1.Wave{{Size: "50%"}}, Gates: []string{"parked"}}},
			want: hubv1.Deployment{Name: "d", Rollout: &hubv1.RolloutPolicy{Canary: &hubv1.Wave{Size: "1"}}},
		},
		{
			name: "a policy left empty is none",
			args: []string{"--canary", "", "--failure-threshold", ""},
			base: hubv1.Deployment{Name: "d", Rollout: &hubv1.RolloutPolicy{Canary: &hubv1.Wave{Size: "1"}, FailureThreshold: "2"}},
			want: hubv1.Deployment{Name: "d"},
		},
		{
			name: "--clear-rollout",
			args: []string{"--clear-rollout"},
			base: hubv1.Deployment{Name: "d", Rollout: &hubv1.RolloutPolicy{Canary: &hubv1.Wave{Size: "1"}, Gates: []string{"parked"}}},
			want: hubv1.Deployment{Name: "d"},
		},
		{
			name: "--clear-rollout with rollout flags is a new policy of those",
			args: []string{"--clear-rollout", "--wave", "50%"},
			base: hubv1.Deployment{Name: "d", Rollout: &hubv1.RolloutPolicy{Canary: &hubv1.Wave{Size: "1"}, Gates: []string{"parked"}}},
			want: hubv1.Deployment{Name: "d", Rollout: &hubv1.RolloutPolicy{Waves: []hubv1.Wave{{Size: "50%"}}}},
		},
		{
			name: "other flags keep the rollout policy",
			args: []string{"--set", "replicas=1"},
			base: hubv1.Deployment{Name: "d", Rollout: &hubv1.RolloutPolicy{Canary: &hubv1.Wave{Size: "1"}}},
			want: hubv1.Deployment{Name: "d", Values: map[string]any{"replicas": int64(1)}, Rollout: &hubv1.RolloutPolicy{Canary: &hubv1.Wave{Size: "1"}}},
		},
		{name: "a wave neither size nor selector", args: []string{"--wave", "ten"}, wantErr: `--wave "ten": want a size (5 or 10%) or selector:<selector>, optionally after name=`},
		{name: "a selector without selector:", args: []string{"--wave", "fleet=eu"}, wantErr: `--wave "fleet=eu": want a size (5 or 10%) or selector:<selector>, optionally after name=; a wave by label selector is selector:fleet=eu`},
		{name: "a canary without a name before =", args: []string{"--canary", "=5"}, wantErr: `--canary "=5": the wave's name before '=' is empty`},
		{name: "an empty selector", args: []string{"--wave", "eu=selector:"}, wantErr: `--wave "eu=selector:": selector: needs a label selector`},
		{name: "bad chart", args: []string{"--chart", "shuttle"}, wantErr: `chart "shuttle": want <source>/<chart>`},
		{name: "bad placement", args: []string{"--placement", "api=moon"}, wantErr: "--placement api=moon: want vehicle, cloud or auto"},
		{name: "bad default placement", args: []string{"--default-placement", "edge"}, wantErr: "--default-placement=edge: want vehicle, cloud or auto"},
		{name: "bad customization", args: []string{"--customization", "nameonly"}, wantErr: `--customization "nameonly": want name:selector:values.yaml`},
		{name: "unknown customization", args: []string{"--remove-customization", "nope"}, wantErr: "the deployment has no customization nope"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e, _, _ := testEnv()
			fs := e.flags()
			var d deployFlags
			d.register(fs, true)
			if _, err := e.parse(fs, tt.args, 0, 0); err != nil {
				t.Fatal(err)
			}
			got := tt.base
			got.Placement = cloneMap(tt.base.Placement)
			got.Customizations = append([]hubv1.Customization(nil), tt.base.Customizations...)
			before := fmt.Sprintf("%+v", tt.base.Rollout)
			if tt.base.Rollout != nil {
				before = fmt.Sprintf("%+v %+v", *tt.base.Rollout, tt.base.Rollout.Canary)
			}
			err := d.apply(fs, &got, strings.NewReader(""))
			if errorWanted(t, err, tt.wantErr) {
				return
			}
			after := fmt.Sprintf("%+v", tt.base.Rollout)
			if tt.base.Rollout != nil {
				after = fmt.Sprintf("%+v %+v", *tt.base.Rollout, tt.base.Rollout.Canary)
			}
			if before != after {
				t.Errorf("apply changed the stored policy it read: %s, then %s", before, after)
			}
			if diff := cmp.Diff(tt.want, got); diff != "" {
				t.Errorf("deployment (-want +got):\n%s", diff)
			}
		})
	}
}

func cloneMap(m map[string]string) map[string]string {
	if m == nil {
		return nil
	}
	out := map[string]string{}
	for k, v := range m {
		out[k] = v
	}
	return out
}

package cli

import (
	"bytes"
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	hubv1 "github.com/misaki-io/misaki/api/hub/v1"
)

// A wave prints as the flags take it, so what deploy show prints can be
// given back to --wave.
func TestWaveRoundTrip(t *testing.T) {
	for _, s := range []string{"1", "5%", "selector:tier=test", "eu=selector:fleet=eu,tier in (a,b)", "early=25%", "selector:a=b=c"} {
		w, err := parseWave("--wave", s)
		if err != nil {
			t.Errorf("parseWave(%q): %v", s, err)
			continue
		}
		if got := formatWave(w); got != s {
			t.Errorf("formatWave(parseWave(%q)) = %q (%+v)", s, got, w)
		}
	}
}

func TestDescribePolicy(t *testing.T) {
	tests := []struct {
		name string
		p    *hubv1.RolloutPolicy
		want string
	}{
		{name: "none", p: nil, want: "none: every targeted vehicle at once, no gates"},
		{
			name: "defaults",
			p:    &hubv1.RolloutPolicy{},
			want: "waves: one, of every targeted vehicle\nmax unavailable no cap, bake time 0, wave deadline 24h, failure threshold 0\ngates: none",
		},
		{
			name: "named as the hub names them",
			p: &hubv1.RolloutPolicy{
				Canary: &hubv1.Wave{Size: "1"}, Waves: []hubv1.Wave{{Size: "25%"}, {Name: "eu", Selector: "fleet=eu"}, {Size: "75%"}},
				MaxUnavailable: "10%", BakeTime: "30m", WaveDeadline: "2h", FailureThreshold: "2", Gates: []string{"parked", "battery>=30"},
			},
			want: "waves: canary=1, wave-2=25%, eu=selector:fleet=eu, wave-4=75%, then the rest\n" +
				"max unavailable 10%, bake time 30m, wave deadline 2h, failure threshold 2\ngates: parked, battery>=30",
		},
		{
			name: "no canary: wave-1 first",
			p:    &hubv1.RolloutPolicy{Waves: []hubv1.Wave{{Size: "50%"}}, Canary: nil},
			want: "waves: wave-1=50%, then the rest\nmax unavailable no cap, bake time 0, wave deadline 24h, failure threshold 0\ngates: none",
		},
		{
			name: "a named canary",
			p:    &hubv1.RolloutPolicy{Canary: &hubv1.Wave{Name: "pilot", Selector: "tier=test"}, Gates: []string{"window 02:00-05:00"}},
			want: "waves: pilot=selector:tier=test, then the rest\nmax unavailable no cap, bake time 0, wave deadline 24h, failure threshold 0\ngates: window 02:00-05:00",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if diff := cmp.Diff(tt.want, describePolicy(tt.p)); diff != "" {
				t.Errorf("(-want +got):\n%s", diff)
			}
		})
	}
}

// The hub names the policy field at fault; the message names the flag.
func TestRolloutFieldErrors(t *testing.T) {
	tests := []struct {
		field, want string
	}{
		{"rollout.waves[0].size", `"ten" is neither a count (5) nor a percentage (10%) (field: rollout.waves[0].size, flag --wave)`},
		{"rollout.waves", `"ten" is neither a count (5) nor a percentage (10%) (field: rollout.waves, flag --wave)`},
		{"rollout.canary.selector", `"ten" is neither a count (5) nor a percentage (10%) (field: rollout.canary.selector, flag --canary)`},
		{"rollout.gates[2]", `"ten" is neither a count (5) nor a percentage (10%) (field: rollout.gates[2], flag --gate)`},
		{"rollout.maxUnavailable", `"ten" is neither a count (5) nor a percentage (10%) (field: rollout.maxUnavailable, flag --max-unavailable)`},
		{"rollout.bakeTime", `"ten" is neither a count (5) nor a percentage (10%) (field: rollout.bakeTime, flag --bake-time)`},
		{"rollout.waveDeadline", `"ten" is neither a count (5) nor a percentage (10%) (field: rollout.waveDeadline, flag --wave-deadline)`},
		{"rollout.failureThreshold", `"ten" is neither a count (5) nor a percentage (10%) (field: rollout.failureThreshold, flag --failure-threshold)`},
		{"rollout", `"ten" is neither a count (5) nor a percentage (10%) (field: rollout)`},
		{"health.deadline", `"ten" is neither a count (5) nor a percentage (10%) (field: health.deadline)`},
	}
	for _, tt := range tests {
		t.Run(tt.field, func(t *testing.T) {
			err := &apiError{status: http.StatusBadRequest, body: hubv1.Error{Code: 400, Message: `"ten" is neither a count (5) nor a percentage (10%)`, Field: tt.field}}
			if got := err.Error(); got != tt.want {
				t.Errorf("got  %s\nwant %s", got, tt.want)
			}
		})
	}
}

// deploy show prints the rollout policy under the health policy.
func TestDeployShowPolicy(t *testing.T) {
	e, _, _ := testEnv()
	d := hubv1.Deployment{
		Name: "shuttle", Chart: hubv1.ChartRef{Source: "charts", Name: "shuttle", Version: "1.0.0", Digest: "sha256:aa"},
		Selector: "fleet=eu", Health: &hubv1.HealthPolicy{Deadline: "10m", Rollback: true},
		Rollout: &hubv1.RolloutPolicy{
			Canary: &hubv1.Wave{Size: "1"}, Waves: []hubv1.Wave{{Size: "25%"}, {Name: "eu", Selector: "fleet=eu"}},
			MaxUnavailable: "2", BakeTime: "30m", FailureThreshold: "5%", Gates: []string{"parked", "battery>=30"},
		},
		Generation: 4, Created: e.now().Add(-time.Hour), Updated: e.now().Add(-time.Minute), CreatedBy: "operator/admin",
	}
	var b bytes.Buffer
	if err := e.describeDeployment(&b, d); err != nil {
		t.Fatal(err)
	}
	golden(t, "deploy-show.golden", b.Bytes())
}

// testRollout is a rollout paused by its failure threshold halfway: the
// canary done and baked, wave-2 with a failure, the rest pending.
func testRollout(now time.Time) hubv1.Rollout {
	at := func(d time.Duration) *time.Time { t := now.Add(d); return &t }
	return hubv1.Rollout{
		Deployment: "shuttle", Generation: 3, From: 2,
		Policy: hubv1.RolloutPolicy{Canary: &hubv1.Wave{Size: "1"}, Waves: []hubv1.Wave{{Size: "50%"}}, BakeTime: "10m", Gates: []string{"parked"}},
		Phase:  hubv1.RolloutPaused,
		Reason: "failure threshold 0 passed: car-3 failed: vehicle half revision 7: shuttle not ready by 5m",
		Waves: []hubv1.WaveStatus{
			{Name: "canary", Vehicles: 1, Started: at(-40 * time.Minute), Done: at(-35 * time.Minute), BakeUntil: at(-25 * time.Minute), Counts: map[string]int{"healthy": 1}},
			{Name: "wave-2", Vehicles: 2, Started: at(-25 * time.Minute), Counts: map[string]int{"healthy": 1, "failed": 1}},
			{Name: "rest", Vehicles: 3, Counts: map[string]int{"pending": 2, "offline": 1}},
		},
		Counts:    map[string]int{"healthy": 2, "failed": 1, "pending": 2, "offline": 1},
		Tolerated: 1,
		Created:   now.Add(-time.Hour), Updated: now.Add(-20 * time.Minute), CreatedBy: "operator/admin",
	}
}

func TestRolloutShow(t *testing.T) {
	e, _, _ := testEnv()
	ro := testRollout(e.now())
	failed := hubv1.List[hubv1.RolloutVehicle]{Items: []hubv1.RolloutVehicle{
		{Vehicle: "car-3", Wave: 1, Released: true, State: "failed", Reason: "vehicle half revision 7: shuttle not ready by 5m"},
	}, Next: "car-3"}
	var b bytes.Buffer
	if err := e.writeRollout(&b, ro, failed); err != nil {
		t.Fatal(err)
	}
	golden(t, "rollout.golden", b.Bytes())

	t.Run("not split yet", func(t *testing.T) {
		ro := hubv1.Rollout{Deployment: "trial", Generation: 1, Phase: hubv1.RolloutProgressing, Waves: []hubv1.WaveStatus{}, Created: e.now(), Updated: e.now()}
		var b bytes.Buffer
		if err := e.writeRollout(&b, ro, hubv1.List[hubv1.RolloutVehicle]{}); err != nil {
			t.Fatal(err)
		}
		golden(t, "rollout-new.golden", b.Bytes())
	})
}

func TestRolloutList(t *testing.T) {
	e, out, _ := testEnv()
	now := e.now()
	done := now.Add(-time.Hour)
	l := hubv1.List[hubv1.Rollout]{Items: []hubv1.Rollout{
		testRollout(now),
		{Deployment: "shuttle", Generation: 2, Phase: hubv1.RolloutSuperseded, Reason: "generation 3 took over",
			Waves: []hubv1.WaveStatus{{Name: "rest", Vehicles: 6, Started: &done}}, Counts: map[string]int{"applying": 2, "waiting": 1, "healthy": 3}, Created: now.Add(-2 * time.Hour)},
		{Deployment: "radio", Generation: 1, Phase: hubv1.RolloutCompleted, Waves: []hubv1.WaveStatus{{Name: "rest", Vehicles: 2, Done: &done}},
			Counts: map[string]int{"healthy": 2}, Created: now.Add(-72 * time.Hour)},
		{Deployment: "trial", Generation: 1, Phase: hubv1.RolloutProgressing, Waves: []hubv1.WaveStatus{}, Created: now},
	}}
	if err := showList(e, l, "rollouts", rolloutHeader, e.rolloutRow); err != nil {
		t.Fatal(err)
	}
	golden(t, "rollouts.golden", out.Bytes())
}

func TestRolloutWatchLine(t *testing.T) {
	now := time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)
	ro := testRollout(now)
	tests := []struct {
		name   string
		change func(*hubv1.Rollout)
		want   string
	}{
		{
			name:   "paused in a wave",
			change: func(*hubv1.Rollout) {},
			want:   "rollout/shuttle/3 Paused: waves 1/3 done; wave-2 releasing; 6 vehicles: 2 healthy, 1 failed, 1 offline, 2 pending (failure threshold 0 passed: car-3 failed: vehicle half revision 7: shuttle not ready by 5m)",
		},
		{
			name: "baking before the next wave",
			change: func(ro *hubv1.Rollout) {
				ro.Phase, ro.Reason = hubv1.RolloutProgressing, ""
				ro.Waves[1].Started = nil
				ro.Waves[0].BakeUntil = ptr(now.Add(5 * time.Minute))
			},
			want: "rollout/shuttle/3 Progressing: waves 1/3 done; wave-2 after 2026-03-01T12:05:00Z; 6 vehicles: 2 healthy, 1 failed, 1 offline, 2 pending",
		},
		{
			name: "completed",
			change: func(ro *hubv1.Rollout) {
				ro.Phase, ro.Reason = hubv1.RolloutCompleted, ""
				for i := range ro.Waves {
					ro.Waves[i].Started, ro.Waves[i].Done = &now, &now
				}
				ro.Counts = map[string]int{"healthy": 6}
			},
			want: "rollout/shuttle/3 Completed: waves 3/3 done; 6 vehicles: 6 healthy",
		},
		{
			name: "not split",
			change: func(ro *hubv1.Rollout) {
				ro.Waves, ro.Counts, ro.Reason, ro.Phase = nil, nil, "", hubv1.RolloutProgressing
			},
			want: "rollout/shuttle/3 Progressing: waves - done; 0 vehicles",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ro := ro
			ro.Waves = append([]hubv1.WaveStatus(nil), ro.Waves...)
			tt.change(&ro)
			if got := watchLine(ro); got != tt.want {
				t.Errorf("got  %s\nwant %s", got, tt.want)
			}
		})
	}
}

func TestStateCounts(t *testing.T) {
	for _, tt := range []struct {
		counts map[string]int
		want   string
	}{
		{nil, ""},
		{map[string]int{"pending": 3, "healthy": 1, "failed": 0}, "1 healthy, 3 pending"},
		{map[string]int{"superseded": 1, "waiting": 2, "applying": 1, "zzz": 1, "aaa": 2}, "1 applying, 2 waiting, 1 superseded, 2 aaa, 1 zzz"},
	} {
		if got := stateCounts(tt.counts); got != tt.want {
			t.Errorf("stateCounts(%v) = %q, want %q", tt.counts, got, tt.want)
		}
	}
}

func TestWaveIndex(t *testing.T) {
	ro := testRollout(time.Now())
	for _, tt := range []struct {
		arg     string
		want    int
		wantErr string
	}{
		{arg: "0", want: 0},
		{arg: "wave-2", want: 1},
		{arg: "rest", want: 2},
		{arg: "3", wantErr: "--wave 3: rollout shuttle/3 has waves 0 to 2"},
		{arg: "-1", wantErr: "--wave -1: rollout shuttle/3 has waves 0 to 2"},
		{arg: "late", wantErr: "--wave late: rollout shuttle/3 has no wave late (its waves: canary, wave-2, rest)"},
	} {
		got, err := waveIndex(ro, tt.arg)
		if errorWanted(t, err, tt.wantErr) {
			continue
		}
		if got != tt.want {
			t.Errorf("waveIndex(%q) = %d, want %d", tt.arg, got, tt.want)
		}
	}
}

func TestTruncate(t *testing.T) {
	for _, tt := range []struct {
		s    string
		n    int
		want string
	}{
		{"short", 10, "short"},
		{"exactly10!", 10, "exactly10!"},
		{"a bit longer than ten", 10, "a bit lon…"},
		{"ééééééééééé", 5, "éééé…"},
	} {
		if got := truncate(tt.s, tt.n); got != tt.want {
			t.Errorf("truncate(%q, %d) = %q, want %q", tt.s, tt.n, got, tt.want)
		}
	}
}

// rollout watch against a hub that answers what the test says: it prints
// a line per change only, retries a hub that is away, ends 0 on
// completion, 1 on an abort or at --timeout, and 0 when the user stops it.
func TestRolloutWatch(t *testing.T) {
	progressing := func(healthy int) hubv1.Rollout {
		return hubv1.Rollout{Deployment: "shuttle", Generation: 2, Phase: hubv1.RolloutProgressing,
			Waves:  []hubv1.WaveStatus{{Name: "rest", Vehicles: 2, Started: ptr(time.Now())}},
			Counts: map[string]int{"healthy": healthy, "applying": 2 - healthy}}
	}
	completed := progressing(2)
	completed.Phase = hubv1.RolloutCompleted
	completed.Waves[0].Done = ptr(time.Now())
	aborted := progressing(1)
	aborted.Phase, aborted.Reason = hubv1.RolloutAborted, "aborted by operator/admin: wrong values"
	away := hubv1.Rollout{} // the hub answers 503

	tests := []struct {
		name string
		// answers are the hub's, one per read of the rollout; the last
		// repeats.
		answers  []hubv1.Rollout
		args     []string
		stop     int // cancel the context at this read (0: never)
		wantCode int
		wantOut  []string
		wantErr  string
	}{
		{
			name:     "a line per change, until completed",
			answers:  []hubv1.Rollout{progressing(0), progressing(0), progressing(1), progressing(1), away, away, progressing(1), completed},
			wantCode: 0,
			wantOut: []string{
				"rollout/shuttle/2 Progressing: waves 0/1 done; rest releasing; 2 vehicles: 2 applying",
				"rollout/shuttle/2 Progressing: waves 0/1 done; rest releasing; 2 vehicles: 1 healthy, 1 applying",
				"rollout/shuttle/2 Completed: waves 1/1 done; 2 vehicles: 2 healthy",
			},
			wantErr: "warning: GET /v1/deployments/shuttle/rollouts/2: the hub answered 503 Service Unavailable: away (retrying every 10ms)\n",
		},
		{
			name:     "aborted",
			answers:  []hubv1.Rollout{progressing(1), aborted},
			wantCode: 1,
			wantOut: []string{
				"rollout/shuttle/2 Progressing: waves 0/1 done; rest releasing; 2 vehicles: 1 healthy, 1 applying",
				"rollout/shuttle/2 Aborted: waves 0/1 done; rest releasing; 2 vehicles: 1 healthy, 1 applying (aborted by operator/admin: wrong values)",
			},
			wantErr: "error: rollout shuttle/2 Aborted: aborted by operator/admin: wrong values\n",
		},
		{
			name:     "--timeout",
			answers:  []hubv1.Rollout{progressing(1)},
			args:     []string{"--timeout", "300ms"},
			wantCode: 1,
			wantOut:  []string{"rollout/shuttle/2 Progressing: waves 0/1 done; rest releasing; 2 vehicles: 1 healthy, 1 applying"},
			wantErr:  "error: rollout shuttle/2 still Progressing after --timeout 300ms\n",
		},
		{
			name:     "stopped by the user",
			answers:  []hubv1.Rollout{progressing(1)},
			stop:     3,
			wantCode: 0,
			wantOut:  []string{"rollout/shuttle/2 Progressing: waves 0/1 done; rest releasing; 2 vehicles: 1 healthy, 1 applying"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			var mu sync.Mutex // guards reads
			reads := 0
			srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				if r.URL.Path != "/v1/deployments/shuttle/rollouts/2" {
					t.Errorf("unexpected request %s", r.URL)
					http.NotFound(w, r)
					return
				}
				mu.Lock()
				ro := tt.answers[min(reads, len(tt.answers)-1)]
				reads++
				if reads == tt.stop {
					cancel()
				}
				mu.Unlock()
				if ro.Deployment == "" {
					http.Error(w, "away", http.StatusServiceUnavailable)
					return
				}
				json.NewEncoder(w).Encode(ro)
			}))
			defer srv.Close()
			e, out, errb := testEnv()
			e.cmd = nil
			args := append([]string{"rollout", "watch", "shuttle", "2", "--interval", "10ms", "--hub", srv.URL, "--token", "t"}, tt.args...)
			code := e.run(ctx, args)
			if code != tt.wantCode || errb.String() != tt.wantErr {
				t.Errorf("exit %d, stderr %q; want %d, %q", code, errb.String(), tt.wantCode, tt.wantErr)
			}
			var lines []string
			for _, l := range strings.Split(strings.TrimSuffix(out.String(), "\n"), "\n") {
				lines = append(lines, strings.TrimPrefix(l, "2026-03-01T12:00:00Z "))
			}
			if diff := cmp.Diff(tt.wantOut, lines); diff != "" {
				t.Errorf("lines (-want +got):\n%s", diff)
			}
		})
	}
}

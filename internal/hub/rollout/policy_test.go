package rollout

import (
	"errors"
	"strings"
	"testing"
	"time"

	hubv1 "github.com/misaki-io/misaki/api/hub/v1"
)

func TestParsePolicy(t *testing.T) {
	noGate := func(s string) error {
		if strings.HasPrefix(s, "?") {
			return errors.New("does not parse")
		}
		return nil
	}
	for _, tc := range []struct {
		name  string
		p     *hubv1.RolloutPolicy
		field string // "" for no error
	}{
		{"nil", nil, ""},
		{"full", &hubv1.RolloutPolicy{Canary: &hubv1.Wave{Size: "1"}, Waves: []hubv1.Wave{{Size: "10%"}, {Selector: "region=eu"}, {Size: "50%"}}, MaxUnavailable: "10%", BakeTime: "30m", WaveDeadline: "2h", FailureThreshold: "5%", Gates: []string{"parked"}}, ""},
		{"canary without size or selector", &hubv1.RolloutPolicy{Canary: &hubv1.Wave{}}, "rollout.canary"},
		{"wave with both", &hubv1.RolloutPolicy{Waves: []hubv1.Wave{{Size: "1", Selector: "a=b"}}}, "rollout.waves[0]"},
		{"bad selector", &hubv1.RolloutPolicy{Waves: []hubv1.Wave{{Selector: "a in"}}}, "rollout.waves[0].selector"},
		{"bad size", &hubv1.RolloutPolicy{Waves: []hubv1.Wave{{Size: "ten"}}}, "rollout.waves[0].size"},
		{"size above 100%", &hubv1.RolloutPolicy{Waves: []hubv1.Wave{{Size: "150%"}}}, "rollout.waves[0].size"},
		{"shrinking sizes", &hubv1.RolloutPolicy{Waves: []hubv1.Wave{{Size: "50%"}, {Size: "10%"}}}, "rollout.waves"},
		{"duplicate names", &hubv1.RolloutPolicy{Canary: &hubv1.Wave{Size: "1"}, Waves: []hubv1.Wave{{Name: "canary", Size: "2"}}}, "rollout.waves"},
		{"zero max unavailable", &hubv1.RolloutPolicy{MaxUnavailable: "0"}, "rollout.maxUnavailable"},
		{"bad threshold", &hubv1.RolloutPolicy{FailureThreshold: "-1"}, "rollout.failureThreshold"},
		{"bad bake", &hubv1.RolloutPolicy{BakeTime: "soon"}, "rollout.bakeTime"},
		{"huge deadline", &hubv1.RolloutPolicy{WaveDeadline: "9000h"}, "rollout.waveDeadline"},
		{"zero deadline", &hubv1.RolloutPolicy{WaveDeadline: "0s"}, "rollout.waveDeadline"},
		{"bad gate", &hubv1.RolloutPolicy{Gates: []string{"parked", "?x"}}, "rollout.gates[1]"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := ParsePolicy(tc.p, noGate)
			var fe *FieldError
			switch {
			case tc.field == "" && err != nil:
				t.Fatalf("error %v", err)
			case tc.field == "":
			case !errors.As(err, &fe):
				t.Fatalf("error %v, want a FieldError for %s", err, tc.field)
			case fe.Field != tc.field:
				t.Fatalf("field %q (%v), want %q", fe.Field, err, tc.field)
			}
		})
	}
}

func TestPolicyDefaults(t *testing.T) {
	p, err := ParsePolicy(&hubv1.RolloutPolicy{Canary: &hubv1.Wave{Size: "1"}, Waves: []hubv1.Wave{{Size: "10%"}}}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if p.Deadline != 24*time.Hour || p.Bake != 0 || !p.MaxUnavailable.IsZero() || !p.Threshold.IsZero() {
		t.Errorf("defaults %+v", p)
	}
	if p.Waves[0].Name != "canary" || p.Waves[1].Name != "wave-2" {
		t.Errorf("names %q %q", p.Waves[0].Name, p.Waves[1].Name)
	}
}

func TestQuantity(t *testing.T) {
	for _, tc := range []struct {
		s           string
		total       int
		ceil, floor int
	}{
		{"5", 100, 5, 5},
		{"10%", 100, 10, 10},
		{"10%", 9, 1, 0},
		{"1%", 250, 3, 2},
		{"100%", 7, 7, 7},
		{"0%", 7, 0, 0},
	} {
		q, err := ParseQuantity(tc.s)
		if err != nil {
			t.Fatal(err)
		}
		if q.Of(tc.total) != tc.ceil || q.Floor(tc.total) != tc.floor || q.String() != tc.s {
			t.Errorf("%s of %d: %d, %d, %q; want %d, %d", tc.s, tc.total, q.Of(tc.total), q.Floor(tc.total), q.String(), tc.ceil, tc.floor)
		}
	}
}

package config

import (
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/misaki-io/misaki/internal/h2guard"
)

func TestHTTP2Limits(t *testing.T) {
	for _, tc := range []struct {
		name string
		yaml string
		want h2guard.Limits
		errs []string // substrings of the error; empty means valid
	}{
		{"defaults", "log: {level: info}\n", h2guard.Limits{
			Resets:   h2guard.Rate{Burst: 500, PerSecond: 100},
			Settings: h2guard.Rate{Burst: 100, PerSecond: 10}, Pings: h2guard.Rate{Burst: 100, PerSecond: 10},
			MaxContinuations: 64, MaxStreams: 250,
		}, nil},
		{"set, and off", "limits: {http2: {maxConcurrentStreams: 100, resets: {burst: 50}, settings: {perSecond: 1}, pings: {burst: -1}, maxContinuationFrames: -1}}\n", h2guard.Limits{
			Resets:     h2guard.Rate{Burst: 50, PerSecond: 100},
			Settings:   h2guard.Rate{Burst: 100, PerSecond: 1},
			MaxStreams: 100,
		}, nil},
		{"negative", "limits: {http2: {maxConcurrentStreams: -1, resets: {burst: -2, perSecond: -1}, maxContinuationFrames: -5}}\n", h2guard.Limits{}, []string{
			"limits.http2.maxConcurrentStreams: -1 must be between 1 and 1048576",
			"limits.http2.resets.burst: -2 must be positive, or -1 for no limit",
			"limits.http2.resets.perSecond: must not be negative",
			"limits.http2.maxContinuationFrames: -5 must be positive, or -1 for no limit",
		}},
		{"unknown field", "limits: {http2: {maxStreams: 1}}\n", h2guard.Limits{}, []string{`limits.http2.maxStreams: unknown field`}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c, err := Parse([]byte(tc.yaml))
			if len(tc.errs) > 0 {
				if err == nil {
					t.Fatal("no error")
				}
				for _, want := range tc.errs {
					if !strings.Contains(err.Error(), want) {
						t.Errorf("error lacks %q:\n%v", want, err)
					}
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if diff := cmp.Diff(tc.want, c.Limits.HTTP2.Guard()); diff != "" {
				t.Errorf("limits (-want +got):\n%s", diff)
			}
		})
	}
}

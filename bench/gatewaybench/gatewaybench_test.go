package main

import (
	"io"
	"strings"
	"testing"

	"github.com/misaki-io/misaki/bench/internal/harness"
)

// The benchmark end to end for a second per configuration: every
// configuration PostgreSQL allows here (all in CI) answers requests, with
// no error, and no key reaches the service twice.
func TestSmoke(t *testing.T) {
	if testing.Short() {
		t.Skip("builds misaki-proxy and runs gateway replicas")
	}
	configs := []string{"local-1"}
	if harness.HavePostgres(t) {
		configs = append(configs, "postgres-3")
	}
	rep := program.Test(t, []string{"-duration", "1s", "-warmup", "300ms", "-conns", "8", "-configs", strings.Join(configs, ",")})
	if len(rep.results) != len(configs) {
		t.Fatalf("%d results for %d configurations", len(rep.results), len(configs))
	}
	for _, r := range rep.results {
		switch {
		case r.fresh == 0 || r.repeats == 0:
			t.Errorf("%s: %d new, %d repeats answered", r.name, r.fresh, r.repeats)
		case r.errors != 0:
			t.Errorf("%s: %d errors, the last: %s", r.name, r.errors, r.lastErr)
		case r.duplicates != 0:
			t.Errorf("%s: %d deliveries past the first", r.name, r.duplicates)
		case len(r.gwCPU) != r.replicas:
			t.Errorf("%s: CPU of %d gateways, want %d", r.name, len(r.gwCPU), r.replicas)
		}
	}
}

func TestParse(t *testing.T) {
	for _, bad := range [][]string{{"-configs", "local-2"}, {"-configs", "sqlite-1"}, {"-repeat", "1"}, {"-conns", "0"}} {
		if _, err := parse(bad, io.Discard); err == nil {
			t.Errorf("%v accepted", bad)
		}
	}
	if o, err := parse(nil, io.Discard); err != nil || len(o.configs) != 3 {
		t.Fatalf("defaults: %+v %v", o, err)
	}
}

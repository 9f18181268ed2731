package main

import (
	"context"
	"os"
	"syscall"
	"time"

	hubv1 "github.com/misaki-io/misaki/api/hub/v1"
	"github.com/misaki-io/misaki/internal/trust"
)

// cryptoRates measures, on one goroutine in this process, what signing
// (the hub's trust.Keys.Sign: JSON of the state, then ed25519 over its
// DSSE PAE) and verifying (an agent's trust.Verifier.Verify) cost for st,
// a state a vehicle received: documents per CPU-second of this process.
// It runs after the configurations, with the agents stopped.
func cryptoRates(ctx context.Context, st hubv1.DesiredState, n int) (sign, verify float64, err error) {
	dir, err := os.MkdirTemp("", "hubbench-keys-")
	if err != nil {
		return 0, 0, err
	}
	defer os.RemoveAll(dir)
	now := time.Now()
	if err := trust.Init(dir, now, trust.InitOptions{}); err != nil {
		return 0, 0, err
	}
	k, err := trust.LoadKeys(dir)
	if err != nil {
		return 0, 0, err
	}
	_, root := k.Root()
	v, err := trust.NewVerifier(root, now)
	if err != nil {
		return 0, 0, err
	}
	st.IssuedAt, st.Expires = now.UTC().Truncate(time.Second), now.Add(14*24*time.Hour).UTC().Truncate(time.Second)
	var d hubv1.Desired
	start := cpuTime()
	for range n {
		if d, err = k.Sign(ctx, st); err != nil {
			return 0, 0, err
		}
	}
	sign = float64(n) / (cpuTime() - start).Seconds()
	want := trust.Expect{Vehicle: st.Vehicle, Half: st.Half, After: st.Revision - 1}
	start = cpuTime()
	for range n {
		if _, err := v.Verify(d, want, now); err != nil {
			return 0, 0, err
		}
	}
	verify = float64(n) / (cpuTime() - start).Seconds()
	return sign, verify, nil
}

// cpuTime is this process's user+system time (getrusage, microseconds).
func cpuTime() time.Duration {
	var ru syscall.Rusage
	syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

package budget

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/misaki-io/misaki/internal/clock"
)

func TestLedger(t *testing.T) {
	path := filepath.Join(t.TempDir(), "budgets.json")
	clk := clock.NewFake(time.Date(2026, 12, 31, 23, 0, 0, 0, time.UTC))
	l, err := Open(path, clk)
	if err != nil {
		t.Fatal(err)
	}
	lim := Limits{Daily: 1000, Monthly: 1500}
	l.Add("video", 600)
	if s := l.Status("video", lim); s.Exceeded || s.DailyBytes != 600 {
		t.Fatalf("after 600 bytes: %+v", s)
	}
	l.Add("video", 400)
	s := l.Status("video", lim)
	if !s.Exceeded || s.Resets == nil || !s.Resets.Equal(time.Date(2027, 1, 1, 0, 0, 0, 0, time.UTC)) {
		t.Fatalf("at the daily limit: %+v", s)
	}
	if s := l.Status("telemetry", Limits{}); s.Exceeded {
		t.Fatalf("a route without limits is never over: %+v", s)
	}

	// The counts survive a restart.
	if err := l.Flush(); err != nil {
		t.Fatal(err)
	}
	l2, err := Open(path, clk)
	if err != nil {
		t.Fatal(err)
	}
	if s := l2.Status("video", lim); !s.Exceeded || s.DailyBytes != 1000 || s.MonthlyBytes != 1000 {
		t.Fatalf("after a restart: %+v", s)
	}

	// A new day (and month, and year) starts both counts again.
	clk.Advance(2 * time.Hour)
	if s := l2.Status("video", lim); s.Exceeded || s.DailyBytes != 0 || s.MonthlyBytes != 0 || s.Day != "2027-01-01" || s.Month != "2027-01" {
		t.Fatalf("on a new day: %+v", s)
	}

	// The month's allowance outlasts the day's.
	l2.Add("video", 900)
	clk.Advance(24 * time.Hour)
	l2.Add("video", 700)
	s = l2.Status("video", lim)
	if !s.Exceeded || s.DailyBytes != 700 || s.MonthlyBytes != 1600 || !s.Resets.Equal(time.Date(2027, 2, 1, 0, 0, 0, 0, time.UTC)) {
		t.Fatalf("over the month: %+v", s)
	}
}

func TestOpenDamaged(t *testing.T) {
	path := filepath.Join(t.TempDir(), "budgets.json")
	if err := os.WriteFile(path, []byte(`{"video":{"day":`), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := Open(path, clock.Real{}); err == nil || !strings.Contains(err.Error(), "damaged") {
		t.Fatalf("Open of a damaged file: %v", err)
	}
}

package budget

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
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

func TestOpenEmptyOrNull(t *testing.T) {
	for _, content := range []string{"{}", `{"video":null}`} {
		path := filepath.Join(t.TempDir(), "budgets.json")
		if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
		l, err := Open(path, clock.NewFake(time.Date(2026, 5, 1, 12, 0, 0, 0, time.UTC)))
		if err != nil {
			t.Fatalf("Open(%s): %v", content, err)
		}
		l.Add("video", 10)
		if s := l.Status("video", Limits{Daily: 10}); !s.Exceeded || s.DailyBytes != 10 {
			t.Fatalf("%s: after 10 bytes: %+v", content, s)
		}
	}
}

// Flush writes only when a count changed, and a failed write is tried
// again at the next Flush.
func TestFlush(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "spool")
	path := filepath.Join(dir, "budgets.json")
	clk := clock.NewFake(time.Date(2026, 5, 1, 12, 0, 0, 0, time.UTC))
	l, err := Open(path, clk)
	if err != nil {
		t.Fatal(err)
	}
	l.Status("video", Limits{Daily: 1}) // reading a count is not a change
	if err := l.Flush(); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(path); !os.IsNotExist(err) {
		t.Fatalf("Flush without a change wrote the file: %v", err)
	}
	l.Add("video", 0) // nor is adding nothing
	l.Add("video", -5)
	if err := l.Flush(); err != nil {
		t.Fatal(err)
	}

	l.Add("video", 100)
	if err := l.Flush(); err == nil {
		t.Fatal("Flush into a missing directory succeeded")
	}
	if err := os.Mkdir(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	if err := l.Flush(); err != nil {
		t.Fatalf("Flush after the directory came back: %v", err)
	}
	l2, err := Open(path, clk)
	if err != nil {
		t.Fatal(err)
	}
	if s := l2.Status("video", Limits{}); s.DailyBytes != 100 {
		t.Fatalf("the failed count was not written later: %+v", s)
	}
	if _, err := os.Stat(path + ".tmp"); !os.IsNotExist(err) {
		t.Fatalf("the temporary file is left: %v", err)
	}

	// A new day is a change too: the file says so after the next Flush.
	clk.Advance(24 * time.Hour)
	l2.Status("video", Limits{})
	if err := l2.Flush(); err != nil {
		t.Fatal(err)
	}
	l3, _ := Open(path, clk)
	if s := l3.Status("video", Limits{}); s.DailyBytes != 0 || s.MonthlyBytes != 100 {
		t.Fatalf("after a new day: %+v", s)
	}
}

func TestLedgerConcurrent(t *testing.T) {
	path := filepath.Join(t.TempDir(), "budgets.json")
	l, err := Open(path, clock.Real{})
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	flushed := make(chan error, 1)
	go func() {
		for {
			select {
			case <-done:
				flushed <- l.Flush()
				return
			default:
				if err := l.Flush(); err != nil {
					flushed <- err
					return
				}
			}
		}
	}()
	var wg sync.WaitGroup
	for i := range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range 1000 {
				l.Add(fmt.Sprint("r", i%2), 1)
				l.Status("r0", Limits{Daily: 5000})
			}
		}()
	}
	wg.Wait()
	close(done)
	if err := <-flushed; err != nil {
		t.Fatal(err)
	}
	l2, err := Open(path, clock.Real{})
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range []string{"r0", "r1"} {
		if s := l2.Status(r, Limits{}); s.DailyBytes != 2000 && s.Day == l.Status(r, Limits{}).Day {
			t.Fatalf("%s: %d bytes on disk, want 2000", r, s.DailyBytes)
		}
	}
}

func TestOpenNull(t *testing.T) {
	path := filepath.Join(t.TempDir(), "budgets.json")
	if err := os.WriteFile(path, []byte("null"), 0o600); err != nil {
		t.Fatal(err)
	}
	l, err := Open(path, clock.Real{})
	if err != nil {
		t.Fatal(err)
	}
	l.Add("video", 10)
	if s := l.Status("video", Limits{Daily: 5}); !s.Exceeded {
		t.Fatalf("%+v", s)
	}
}

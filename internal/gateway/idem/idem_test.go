package idem

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

func TestClaimCompleteSweepAndAbandon(t *testing.T) {
	now := time.Date(2026, 11, 24, 12, 0, 0, 0, time.UTC)
	clock := func() time.Time { return now }
	path := filepath.Join(t.TempDir(), "keys.db")
	s, err := Open(path, 24*time.Hour, clock)
	if err != nil {
		t.Fatal(err)
	}
	k := Scope("vin1", "a")
	if e, err := s.Claim(k); err != nil || e != nil {
		t.Fatalf("first claim: %v %v", e, err)
	}
	if e, _ := s.Claim(k); e == nil || e.State != InFlight {
		t.Fatalf("second claim while in flight: %+v", e)
	}
	if e, _ := s.Claim(Scope("vin2", "a")); e != nil {
		t.Fatal("keys are scoped by vehicle")
	}
	if err := s.Complete(k, &Entry{Status: 201, Body: []byte("x"), Fingerprint: []byte{1}}); err != nil {
		t.Fatal(err)
	}
	if e, _ := s.Claim(k); e == nil || e.State != Done || e.Status != 201 || string(e.Body) != "x" {
		t.Fatalf("after complete: %+v", e)
	}
	// An in-flight claim from an earlier run is abandoned at restart.
	b := Scope("vin1", "b")
	s.Claim(b)
	s.Close()
	s, err = Open(path, 24*time.Hour, clock)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if e, _ := s.Claim(b); e != nil {
		t.Fatalf("claim of an earlier run not abandoned: %+v", e)
	}
	if e, _ := s.Claim(k); e == nil || e.State != Done {
		t.Fatalf("a done key was forgotten across restart: %+v", e)
	}
	// Past the window, keys are swept.
	now = now.Add(25 * time.Hour)
	if n, err := s.Sweep(); err != nil || n != 1 { // claims are not stored
		t.Fatalf("swept %d, %v; want 1", n, err)
	}
	if s.Len() != 0 {
		t.Fatalf("%d keys left", s.Len())
	}
}

// Answers completed together share transactions, and every one is durable
// (readable after a reopen) once its Complete returned.
func TestConcurrentCompletesAreAllStored(t *testing.T) {
	path := filepath.Join(t.TempDir(), "keys.db")
	s, err := Open(path, time.Hour, time.Now)
	if err != nil {
		t.Fatal(err)
	}
	const n = 500
	var wg sync.WaitGroup
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			k := Scope("vin", fmt.Sprint(i))
			if e, err := s.Claim(k); e != nil || err != nil {
				t.Errorf("claim %d: %v %v", i, e, err)
				return
			}
			if err := s.Complete(k, &Entry{Status: 200, Body: []byte(fmt.Sprint(i))}); err != nil {
				t.Errorf("complete %d: %v", i, err)
			}
		}()
	}
	wg.Wait()
	if st := s.Stats(); st.Answers != n || st.Commits >= st.Answers {
		t.Fatalf("%d answers in %d log groups: none shared a group", st.Answers, st.Commits)
	}
	s.Close()
	s, err = Open(path, time.Hour, time.Now)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	for i := range n {
		e, err := s.Claim(Scope("vin", fmt.Sprint(i)))
		if err != nil || e == nil || e.State != Done || string(e.Body) != fmt.Sprint(i) {
			t.Fatalf("key %d after reopen: %+v %v", i, e, err)
		}
	}
	if s.Len() != n {
		t.Fatalf("%d keys stored, want %d", s.Len(), n)
	}
}

// A crash before a checkpoint leaves answers only in the log: the next
// start applies them (up to a torn frame at the end) to bbolt.
func TestAnswersInTheLogSurviveACrash(t *testing.T) {
	dir := t.TempDir()
	s, err := Open(filepath.Join(dir, "keys.db"), time.Hour, time.Now)
	if err != nil {
		t.Fatal(err)
	}
	s.mu.Lock()
	s.every = time.Hour // no checkpoint during the test
	s.mu.Unlock()
	for i := range 3 {
		k := Scope("vin", fmt.Sprint(i))
		s.Claim(k)
		if err := s.Complete(k, &Entry{Status: 200 + i}); err != nil {
			t.Fatal(err)
		}
	}
	// The crash: copy the files as they are on disk now (bbolt's last
	// transaction is complete; the answers are only in the log), with half
	// a frame more at the log's end.
	crashed := t.TempDir()
	for _, name := range []string{"keys.db", fmt.Sprintf("keys.db.wal-%016x", 1)} {
		b, err := os.ReadFile(filepath.Join(dir, name))
		if err != nil {
			t.Fatal(err)
		}
		if strings.Contains(name, "wal") {
			if len(b) == 0 {
				t.Fatal("answers not in the log")
			}
			b = append(b, b[:len(b)/6]...)
		}
		os.WriteFile(filepath.Join(crashed, name), b, 0o600)
	}
	s.Close()

	s, err = Open(filepath.Join(crashed, "keys.db"), time.Hour, time.Now)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	for i := range 3 {
		e, err := s.Claim(Scope("vin", fmt.Sprint(i)))
		if err != nil || e == nil || e.State != Done || e.Status != 200+i {
			t.Fatalf("answer %d after the crash: %+v %v", i, e, err)
		}
	}
	if logs, _ := filepath.Glob(filepath.Join(crashed, "keys.db.wal-*")); len(logs) != 1 {
		t.Fatalf("logs after recovery: %v (want only the new one)", logs)
	}
}

package idem

import (
	"path/filepath"
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
	if n, err := s.Sweep(); err != nil || n != 3 {
		t.Fatalf("swept %d, %v; want 3", n, err)
	}
	if s.Len() != 0 {
		t.Fatalf("%d keys left", s.Len())
	}
}

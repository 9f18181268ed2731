package replay

import (
	"errors"
	"net/http"
	"os"
	"path/filepath"
	"testing"
	"time"
)

func TestResultsKeepAndSweep(t *testing.T) {
	now := time.Date(2026, 11, 24, 12, 0, 0, 0, time.UTC)
	dir := t.TempDir()
	rs, err := NewResults(dir, time.Hour, func() time.Time { return now })
	if err != nil {
		t.Fatal(err)
	}
	put := func(r *Result) {
		t.Helper()
		if err := rs.Put(r); err != nil {
			t.Fatal(err)
		}
	}
	put(&Result{ID: "1", Route: "r", State: OutcomeDelivered, Finished: now.Add(-2 * time.Hour),
		Response: &Response{Status: 200, Header: http.Header{"A": {"b"}}, Body: []byte{0, 1, 2}}})
	put(&Result{ID: "2", Route: "r", State: OutcomeDelivered, Finished: now, Callback: "http://app/cb"})
	put(&Result{ID: "3", Route: "r", State: OutcomeFailed, Finished: now, Callback: "http://app/cb", CallbackDone: true})
	os.WriteFile(filepath.Join(dir, "4.json.tmp"), []byte("{"), 0o640) // a crash mid-write

	if r, err := rs.Get("1"); err != nil || r.Response.Status != 200 || string(r.Response.Body) != "\x00\x01\x02" {
		t.Fatalf("Get: %+v %v", r, err)
	}
	owed := rs.Sweep()
	if len(owed) != 1 || owed[0].ID != "2" {
		t.Fatalf("owed callbacks: %+v", owed)
	}
	if _, err := rs.Get("1"); !errors.Is(err, ErrNoResult) {
		t.Fatalf("past retention: %v", err)
	}
	if _, err := os.Stat(filepath.Join(dir, "4.json.tmp")); !os.IsNotExist(err) {
		t.Fatal("temporary file left")
	}
	for _, bad := range []string{"../x", "", "1a"} {
		if _, err := rs.Get(bad); !errors.Is(err, ErrNoResult) {
			t.Fatalf("Get(%q): %v", bad, err)
		}
	}
}

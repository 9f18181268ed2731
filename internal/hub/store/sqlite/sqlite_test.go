package sqlite_test

import (
	"bufio"
	"database/sql"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/google/go-cmp/cmp"
	hubv1 "github.com/misaki-io/misaki/api/hub/v1"
	"github.com/misaki-io/misaki/internal/hub/store"
	"github.com/misaki-io/misaki/internal/hub/store/sqlite"
	"github.com/misaki-io/misaki/internal/hub/store/storetest"
)

func openAt(t testing.TB, path string) *sqlite.Store {
	t.Helper()
	s, err := sqlite.Open(t.Context(), path, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := s.Close(); err != nil {
			t.Errorf("close: %v", err)
		}
	})
	return s
}

func TestStore(t *testing.T) {
	storetest.Run(t, func(t *testing.T) store.Store { return openAt(t, filepath.Join(t.TempDir(), "hub.db")) })
}

func TestOpenRefusesNonFiles(t *testing.T) {
	for _, path := range []string{"", ":memory:", "file:hub.db", "hub.db?mode=ro"} {
		t.Run(strconv.Quote(path), func(t *testing.T) {
			if s, err := sqlite.Open(t.Context(), path, nil); err == nil {
				s.Close()
				t.Errorf("Open(%q): no error", path)
			}
		})
	}
}

func rev(vehicle string, n int64) store.Desired {
	return store.Desired{Desired: hubv1.Desired{Vehicle: vehicle, Half: hubv1.HalfVehicle, Revision: n,
		Digest: fmt.Sprintf("sha256:%064x", n), IssuedAt: time.Unix(n, 0), Expires: time.Unix(n+3600, 0)}}
}

// TestReopen: what one Store wrote, the next one on the file reads, and
// the sequence goes on from where it was.
func TestReopen(t *testing.T) {
	path := filepath.Join(t.TempDir(), "hub.db")
	s, err := sqlite.Open(t.Context(), path, nil)
	if err != nil {
		t.Fatal(err)
	}
	ctx := t.Context()
	v := hubv1.Vehicle{ID: "car-1", Labels: map[string]string{"fleet": "eu"}, Created: time.Unix(100, 5000).UTC()}
	if err := s.CreateVehicle(ctx, v); err != nil {
		t.Fatal(err)
	}
	for n := int64(1); n <= 3; n++ {
		if err := s.PutDesired(ctx, rev("car-1", n)); err != nil {
			t.Fatal(err)
		}
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}

	s2 := openAt(t, path)
	got, err := s2.GetVehicle(ctx, "car-1")
	if err != nil {
		t.Fatal(err)
	}
	v.ResourceVersion = 1
	if d := cmp.Diff(v, got); d != "" {
		t.Errorf("vehicle after reopening (-want +got):\n%s", d)
	}
	if seq, err := s2.Sequence(ctx); err != nil || seq != 3 {
		t.Errorf("sequence after reopening = %d, %v; want 3", seq, err)
	}
	if err := s2.PutDesired(ctx, rev("car-1", 3)); err == nil {
		t.Error("revision 3 again after reopening: no ErrStale")
	}
	if err := s2.PutDesired(ctx, rev("car-1", 4)); err != nil {
		t.Fatal(err)
	}
	if d, err := s2.GetDesired(ctx, "car-1", hubv1.HalfVehicle); err != nil || d.Seq != 4 {
		t.Errorf("next write after reopening: seq %d, %v; want 4", d.Seq, err)
	}
}

// TestTwoHandlesOnOneFile: two Stores (two processes, say) writing one
// file at once wait for each other through busy_timeout instead of
// failing with SQLITE_BUSY.
func TestTwoHandlesOnOneFile(t *testing.T) {
	path := filepath.Join(t.TempDir(), "hub.db")
	a, b := openAt(t, path), openAt(t, path)
	ctx := t.Context()
	var wg sync.WaitGroup
	errs := make(chan error, 1000)
	for i, s := range []*sqlite.Store{a, b, a, b} {
		wg.Go(func() {
			id := fmt.Sprintf("car-%d", i)
			if err := s.CreateVehicle(ctx, hubv1.Vehicle{ID: id}); err != nil {
				errs <- err
				return
			}
			for n := int64(1); n <= 50; n++ {
				if err := s.PutDesiredBatch(ctx, []store.Desired{rev(id, 2*n-1), rev(id, 2*n)}); err != nil {
					errs <- err
				}
				if err := s.Seen(ctx, id, time.Unix(n, 0)); err != nil {
					errs <- err
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	if seq, err := b.Sequence(ctx); err != nil || seq != 4*100 {
		t.Errorf("sequence = %d, %v; want 400", seq, err)
	}
}

const crashEnv = "MISAKI_SQLITE_CRASH_CHILD"

// TestKill9LosesNothingCommitted kills a process that writes desired
// revisions as fast as it can, with SIGKILL, and checks that every write
// it reported committed is in the file and the file is intact: with
// synchronous=NORMAL a process crash loses nothing (only a power loss or
// kernel crash can, see the package doc).
func TestKill9LosesNothingCommitted(t *testing.T) {
	path := filepath.Join(t.TempDir(), "hub.db")
	s, err := sqlite.Open(t.Context(), path, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.CreateVehicle(t.Context(), hubv1.Vehicle{ID: "car-1"}); err != nil {
		t.Fatal(err)
	}
	s.Close()

	cmd := exec.Command(os.Args[0], "-test.run=^TestCrashChild$", "-test.count=1")
	cmd.Env = append(os.Environ(), crashEnv+"="+path)
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	var committed int64
	sc := bufio.NewScanner(out)
	for sc.Scan() {
		n, ok := strings.CutPrefix(sc.Text(), "committed ")
		if !ok {
			continue
		}
		if committed, err = strconv.ParseInt(n, 10, 64); err != nil {
			t.Fatal(err)
		}
		if committed >= 300 {
			break
		}
	}
	if err := cmd.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	cmd.Wait()
	if committed < 300 {
		t.Fatalf("the writer reported %d commits before it ended", committed)
	}

	db, err := sql.Open("sqlite", path)
	if err != nil {
		t.Fatal(err)
	}
	var check string
	if err := db.QueryRow("PRAGMA integrity_check").Scan(&check); err != nil || check != "ok" {
		t.Errorf("integrity check after kill -9: %q, %v", check, err)
	}
	db.Close()
	s2 := openAt(t, path)
	d, err := s2.GetDesired(t.Context(), "car-1", hubv1.HalfVehicle)
	if err != nil {
		t.Fatal(err)
	}
	if d.Revision < committed {
		t.Errorf("after kill -9: revision %d stored, but %d was reported committed", d.Revision, committed)
	}
	t.Logf("killed after %d reported commits; %d in the file", committed, d.Revision)
}

// TestCrashChild is TestKill9LosesNothingCommitted's writer process.
func TestCrashChild(t *testing.T) {
	path := os.Getenv(crashEnv)
	if path == "" {
		t.Skip("the writer TestKill9LosesNothingCommitted runs in a child process")
	}
	s, err := sqlite.Open(t.Context(), path, nil)
	if err != nil {
		t.Fatal(err)
	}
	for n := int64(1); n < 1_000_000; n++ {
		if n%2 == 0 {
			err = s.PutDesired(t.Context(), rev("car-1", n))
		} else {
			err = s.PutDesiredBatch(t.Context(), []store.Desired{rev("car-1", n)})
		}
		if err != nil {
			t.Fatal(err)
		}
		fmt.Fprintf(os.Stdout, "committed %d\n", n)
	}
}

// FuzzLabels: any label keys and values (valid UTF-8, as the JSON API
// accepts them) come back as they went.
func FuzzLabels(f *testing.F) {
	for _, seed := range [][2]string{
		{"fleet", "eu"}, {"", ""}, {"k", "\x00"}, {"ü", "\u2028\u2029"}, {`"quoted"`, `back\slash`}, {"emoji", "🚗"},
	} {
		f.Add(seed[0], seed[1])
	}
	s := openAt(f, filepath.Join(f.TempDir(), "hub.db"))
	var n atomic.Int64
	f.Fuzz(func(t *testing.T, k, v string) {
		if !utf8.ValidString(k) || !utf8.ValidString(v) {
			t.Skip("the API takes labels from JSON, which is UTF-8")
		}
		want := hubv1.Vehicle{ID: fmt.Sprintf("car-%d", n.Add(1)), Labels: map[string]string{k: v, "other": k}, Created: time.Unix(1, 0).UTC(), ResourceVersion: 1}
		if err := s.CreateVehicle(t.Context(), want); err != nil {
			t.Fatal(err)
		}
		got, err := s.GetVehicle(t.Context(), want.ID)
		if err != nil {
			t.Fatal(err)
		}
		if d := cmp.Diff(want, got); d != "" {
			t.Errorf("round trip (-want +got):\n%s", d)
		}
	})
}

func BenchmarkStore(b *testing.B) {
	storetest.Bench(b, func(b *testing.B) store.Store { return openAt(b, filepath.Join(b.TempDir(), "hub.db")) })
}

package idem

import (
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"hash/crc32"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/misaki-io/misaki/internal/framelog"
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
	if e, err := s.Claim(t.Context(), k); err != nil || e != nil {
		t.Fatalf("first claim: %v %v", e, err)
	}
	if e, _ := s.Claim(t.Context(), k); e == nil || e.State != InFlight {
		t.Fatalf("second claim while in flight: %+v", e)
	}
	if e, _ := s.Claim(t.Context(), Scope("vin2", "a")); e != nil {
		t.Fatal("keys are scoped by vehicle")
	}
	if err := s.Complete(t.Context(), k, &Entry{Status: 201, Body: []byte("x"), Fingerprint: []byte{1}}); err != nil {
		t.Fatal(err)
	}
	if e, _ := s.Claim(t.Context(), k); e == nil || e.State != Done || e.Status != 201 || string(e.Body) != "x" {
		t.Fatalf("after complete: %+v", e)
	}
	// An in-flight claim from an earlier run is abandoned at restart.
	b := Scope("vin1", "b")
	s.Claim(t.Context(), b)
	s.Close()
	s, err = Open(path, 24*time.Hour, clock)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if e, _ := s.Claim(t.Context(), b); e != nil {
		t.Fatalf("claim of an earlier run not abandoned: %+v", e)
	}
	if e, _ := s.Claim(t.Context(), k); e == nil || e.State != Done {
		t.Fatalf("a done key was forgotten across restart: %+v", e)
	}
	// Past the window, keys are swept.
	now = now.Add(25 * time.Hour)
	if n, err := s.Sweep(t.Context()); err != nil || n != 1 { // claims are not stored
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
			if e, err := s.Claim(t.Context(), k); e != nil || err != nil {
				t.Errorf("claim %d: %v %v", i, e, err)
				return
			}
			if err := s.Complete(t.Context(), k, &Entry{Status: 200, Body: []byte(fmt.Sprint(i))}); err != nil {
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
		e, err := s.Claim(t.Context(), Scope("vin", fmt.Sprint(i)))
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
		s.Claim(t.Context(), k)
		if err := s.Complete(t.Context(), k, &Entry{Status: 200 + i}); err != nil {
			t.Fatal(err)
		}
	}
	// The crash: copy the files as they are on disk now (bbolt's last
	// transaction is complete; the answers are only in the log), with half
	// a frame more at the log's end.
	crashed := t.TempDir()
	logs := logFiles(t, dir)
	if len(logs) != 1 {
		t.Fatalf("logs: %v", logs)
	}
	for _, name := range []string{"keys.db", filepath.Base(logs[0])} {
		b, err := os.ReadFile(filepath.Join(dir, name))
		if err != nil {
			t.Fatal(err)
		}
		if name != "keys.db" {
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
		e, err := s.Claim(t.Context(), Scope("vin", fmt.Sprint(i)))
		if err != nil || e == nil || e.State != Done || e.Status != 200+i {
			t.Fatalf("answer %d after the crash: %+v %v", i, e, err)
		}
	}
	if logs := logFiles(t, crashed); len(logs) != 1 {
		t.Fatalf("logs after recovery: %v (want only the new one)", logs)
	}
}

// logFiles returns the store's logs in dir.
func logFiles(t *testing.T, dir string) []string {
	t.Helper()
	logs, err := filepath.Glob(filepath.Join(dir, "keys.db.*-*"))
	if err != nil {
		t.Fatal(err)
	}
	return logs
}

// A bit flipped in the middle of the log costs the answer it lands in and
// no other: every key stored after it is still remembered, so its repeat
// is answered from the store and never reaches the service again.
func TestBitFlipInTheLogKeepsLaterKeys(t *testing.T) {
	dir := t.TempDir()
	s, err := Open(filepath.Join(dir, "keys.db"), time.Hour, time.Now)
	if err != nil {
		t.Fatal(err)
	}
	s.mu.Lock()
	s.every = time.Hour // no checkpoint: the answers stay in the log
	s.mu.Unlock()
	const n = 20
	for i := range n {
		k := Scope("vin", fmt.Sprint(i))
		s.Claim(t.Context(), k)
		if err := s.Complete(t.Context(), k, &Entry{Status: 200, Body: []byte(fmt.Sprintf("answer %d", i))}); err != nil {
			t.Fatal(err)
		}
	}
	// The crash: the files as they are on disk now, with one bit of the
	// log flipped in the middle.
	crashed := t.TempDir()
	logs := logFiles(t, dir)
	if len(logs) != 1 {
		t.Fatalf("logs: %v", logs)
	}
	for _, p := range []string{filepath.Join(dir, "keys.db"), logs[0]} {
		b, err := os.ReadFile(p)
		if err != nil {
			t.Fatal(err)
		}
		if p == logs[0] {
			b[len(b)/2] ^= 0x04
		}
		os.WriteFile(filepath.Join(crashed, filepath.Base(p)), b, 0o600)
	}
	s.Close()

	s, err = Open(filepath.Join(crashed, "keys.db"), time.Hour, time.Now)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	var forgotten []int
	for i := range n {
		e, err := s.Claim(t.Context(), Scope("vin", fmt.Sprint(i)))
		switch {
		case err != nil:
			t.Fatal(err)
		case e == nil:
			forgotten = append(forgotten, i) // the repeat would reach the service
		case e.State != Done || string(e.Body) != fmt.Sprintf("answer %d", i):
			t.Fatalf("key %d: %+v", i, e)
		}
	}
	if len(forgotten) != 1 || forgotten[0] < n/2-2 || forgotten[0] > n/2+1 {
		t.Fatalf("keys forgotten after one flipped bit: %v (want the one it hit, in the middle)", forgotten)
	}
	if st := s.Stats(); st.DamagedFrames != 1 {
		t.Fatalf("damage found at start: %+v", st)
	}
}

// crashImage copies the store's files in dir as they are on disk now (no
// checkpoint since: the answers are only in the log) to a new directory.
func crashImage(t *testing.T, dir string) string {
	t.Helper()
	crashed := t.TempDir()
	for _, p := range append([]string{filepath.Join(dir, "keys.db")}, logFiles(t, dir)...) {
		b, err := os.ReadFile(p)
		if err != nil {
			t.Fatal(err)
		}
		os.WriteFile(filepath.Join(crashed, filepath.Base(p)), b, 0o600)
	}
	return crashed
}

// A full disk is a clear error from Complete, naming the log; every
// answer whose Complete returned nil is remembered after a crash, and the
// store stores answers again once there is room.
func TestDiskFull(t *testing.T) {
	for _, op := range []framelog.Op{framelog.OpWrite, framelog.OpSync} {
		t.Run(string(op), func(t *testing.T) {
			dir := t.TempDir()
			var armed atomic.Bool
			s, err := open(filepath.Join(dir, "keys.db"), time.Hour, time.Now, func(o framelog.Op, path string) error {
				if o == op && strings.Contains(path, "keys.db.log-") && armed.Load() {
					return syscall.ENOSPC
				}
				return nil
			})
			if err != nil {
				t.Fatal(err)
			}
			s.mu.Lock()
			s.every = time.Hour
			s.mu.Unlock()
			var acked []int
			complete := func(i int) error {
				k := Scope("vin", fmt.Sprint(i))
				s.Claim(t.Context(), k)
				err := s.Complete(t.Context(), k, &Entry{Status: 200, Body: []byte(fmt.Sprint(i))})
				if err == nil {
					acked = append(acked, i)
				}
				return err
			}
			for i := range 5 {
				if err := complete(i); err != nil {
					t.Fatal(err)
				}
			}
			armed.Store(true)
			err = complete(5)
			if logs := logFiles(t, dir); !errors.Is(err, syscall.ENOSPC) || !strings.Contains(err.Error(), logs[0]) {
				t.Fatalf("Complete on a full disk: %v; want ENOSPC naming %s", err, logs[0])
			}
			if st := s.Stats(); st.CommitError != 1 {
				t.Fatalf("commit errors %d", st.CommitError)
			}
			armed.Store(false)
			for i := 6; i < 10; i++ {
				if err := complete(i); err != nil {
					t.Fatalf("Complete once there is room: %v", err)
				}
			}
			crashed := crashImage(t, dir)
			s.Close()
			s, err = Open(filepath.Join(crashed, "keys.db"), time.Hour, time.Now)
			if err != nil {
				t.Fatal(err)
			}
			defer s.Close()
			for _, i := range acked {
				if e, err := s.Claim(t.Context(), Scope("vin", fmt.Sprint(i))); err != nil || e == nil || string(e.Body) != fmt.Sprint(i) {
					t.Fatalf("acknowledged key %d after a crash: %+v, %v", i, e, err)
				}
			}
		})
	}
}

// The previous release's log (keys.db.wal-N, frames without magic) that a
// crash left is applied at start, up to its first bad frame as that
// release read it, and removed; new logs number on from it.
func TestPreviousReleaseLogIsApplied(t *testing.T) {
	dir := t.TempDir()
	var old []byte
	for i := range 4 {
		payload := []byte{frameV1}
		key := Scope("vin", fmt.Sprint(i))
		payload = binary.AppendUvarint(payload, uint64(len(key)))
		payload = append(payload, key...)
		enc, _ := json.Marshal(&Entry{State: Done, Status: 200 + i, Created: time.Now().UnixNano()})
		payload = append(payload, enc...)
		old = binary.LittleEndian.AppendUint32(old, uint32(len(payload)))
		old = binary.LittleEndian.AppendUint32(old, crc32.Checksum(payload, crc32.MakeTable(crc32.Castagnoli)))
		old = append(old, payload...)
	}
	legacy := filepath.Join(dir, fmt.Sprintf("keys.db.wal-%016x", 7))
	os.WriteFile(legacy, old[:len(old)-3], 0o600) // the last frame torn
	s, err := Open(filepath.Join(dir, "keys.db"), time.Hour, time.Now)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	for i := range 3 {
		if e, err := s.Claim(t.Context(), Scope("vin", fmt.Sprint(i))); err != nil || e == nil || e.Status != 200+i {
			t.Fatalf("key %d of the previous release's log: %+v, %v", i, e, err)
		}
	}
	if e, _ := s.Claim(t.Context(), Scope("vin", "3")); e != nil {
		t.Fatalf("the torn answer: %+v", e)
	}
	if logs := logFiles(t, dir); len(logs) != 1 || logs[0] != filepath.Join(dir, fmt.Sprintf("keys.db.log-%016x", 8)) {
		t.Fatalf("logs after the start: %v", logs)
	}
}

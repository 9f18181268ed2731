package replay

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"hash/crc32"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/misaki-io/misaki/internal/framelog"
)

// testNow is the results tests' wall clock.
var testNow = time.Date(2026, 11, 24, 12, 0, 0, 0, time.UTC)

func openResults(t *testing.T, dir string, clock func() time.Time) *Results {
	t.Helper()
	rs, err := NewResults(dir, time.Hour, clock)
	if err != nil {
		t.Fatal(err)
	}
	return rs
}

func TestResultsKeepAndSweep(t *testing.T) {
	now := testNow
	dir := t.TempDir()
	clock := func() time.Time { return now }
	rs := openResults(t, dir, clock)
	var err error
	put := func(r *Result) {
		t.Helper()
		if err := rs.Put(r); err != nil {
			t.Fatal(err)
		}
	}
	put(&Result{ID: "1", Route: "r", State: OutcomeDelivered, Finished: now.Add(-2 * time.Hour),
		Response: &Response{Status: 200, Header: http.Header{"A": {"b"}}, Body: []byte{0, 1, 2}}})
	put(&Result{ID: "2", Route: "r", State: OutcomeDelivered, Finished: now, Callback: "http://app/cb"})
	put(&Result{ID: "3", Route: "r", State: OutcomeFailed, Finished: now, Callback: "http://app/cb"})
	put(&Result{ID: "3", Route: "r", State: OutcomeFailed, Finished: now, Callback: "http://app/cb", CallbackDone: true})
	put(&Result{ID: "5000", Route: "r", State: OutcomeExpired, Finished: now.Add(-2 * time.Hour)}) // another file
	if err := rs.Flush(); err != nil {
		t.Fatal(err)
	}
	if r, err := rs.Get("3"); err != nil || !r.CallbackDone {
		t.Fatalf("the later version of a result must win: %+v %v", r, err)
	}
	if _, err := rs.Get("1"); !errors.Is(err, ErrNoResult) {
		t.Fatalf("past retention: %v", err)
	}
	rs.Close()

	// A restart: the owed callbacks are found again.
	rs, err = NewResults(dir, time.Hour, clock)
	if err != nil {
		t.Fatal(err)
	}
	defer rs.Close()
	owed := rs.Owed()
	if len(owed) != 1 || owed[0].ID != "2" {
		t.Fatalf("owed callbacks: %+v", owed)
	}
	if r, err := rs.Get("2"); err != nil || r.State != OutcomeDelivered {
		t.Fatalf("Get after restart: %+v %v", r, err)
	}
	// The file holding only results past the retention goes; the other
	// stays while it holds a live one.
	rs.Sweep()
	if _, err := os.Stat(rs.bucketPath(5000 >> bucketShift)); !os.IsNotExist(err) {
		t.Fatalf("file past retention kept: %v", err)
	}
	if _, err := os.Stat(rs.bucketPath(0)); err != nil {
		t.Fatalf("file with live results removed: %v", err)
	}
	now = now.Add(2 * time.Hour)
	rs.Sweep()
	if _, err := os.Stat(rs.bucketPath(0)); !os.IsNotExist(err) {
		t.Fatalf("file past retention kept: %v", err)
	}
	for _, bad := range []string{"../x", "", "1a"} {
		if _, err := rs.Get(bad); !errors.Is(err, ErrNoResult) {
			t.Fatalf("Get(%q): %v", bad, err)
		}
	}
}

// A crash mid-append leaves a torn frame at a file's end: every earlier
// result stays readable, and the next append cuts the torn bytes off so
// that results written after the restart are readable too.
func TestResultsTornTail(t *testing.T) {
	now := time.Date(2026, 11, 24, 12, 0, 0, 0, time.UTC)
	dir := t.TempDir()
	clock := func() time.Time { return now }
	rs := openResults(t, dir, clock)
	for i := 1; i <= 3; i++ {
		if err := rs.Put(&Result{ID: fmt.Sprint(i), State: OutcomeDelivered, Finished: now}); err != nil {
			t.Fatal(err)
		}
	}
	rs.Flush()
	rs.Close()
	p := rs.bucketPath(0)
	full, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	for cut := 2*len(full)/3 + 1; cut < len(full); cut += 7 { // inside the last of three frames of equal size
		os.WriteFile(p, full[:cut], 0o640)
		rs, _ := NewResults(dir, time.Hour, clock)
		for _, id := range []string{"1", "2"} {
			if _, err := rs.Get(id); err != nil {
				t.Fatalf("cut at %d: result %s: %v", cut, id, err)
			}
		}
		if _, err := rs.Get("3"); !errors.Is(err, ErrNoResult) {
			t.Fatalf("cut at %d: torn result read back: %v", cut, err)
		}
		if err := rs.Put(&Result{ID: "4", State: OutcomeDelivered, Finished: now}); err != nil {
			t.Fatal(err)
		}
		if r, err := rs.Get("4"); err != nil || r.ID != "4" {
			t.Fatalf("cut at %d: result written after the torn tail: %+v %v", cut, r, err)
		}
		rs.Close()
	}
}

// Looking a result up steps over the other results, with bodies larger
// and smaller than the reader's buffer (the two ways a frame is skipped),
// and finds the last version of the one asked for.
func TestResultsGetSkipsOtherFrames(t *testing.T) {
	now := time.Date(2026, 11, 24, 12, 0, 0, 0, time.UTC)
	rs, _ := NewResults(t.TempDir(), time.Hour, func() time.Time { return now })
	defer rs.Close()
	big := make([]byte, 200<<10) // past the reader's buffer: skipped by seeking
	for i := 1; i <= 20; i++ {
		body := []byte(fmt.Sprint(i))
		if i%3 == 0 {
			body = big
		}
		if err := rs.Put(&Result{ID: fmt.Sprint(i), State: OutcomeDelivered, Finished: now, Response: &Response{Status: 200, Body: body}}); err != nil {
			t.Fatal(err)
		}
	}
	rs.Put(&Result{ID: "7", State: OutcomeDelivered, Finished: now, CallbackDone: true, Response: &Response{Status: 201}})
	for i := 1; i <= 20; i++ {
		r, err := rs.Get(fmt.Sprint(i))
		if err != nil {
			t.Fatalf("Get(%d): %v", i, err)
		}
		switch {
		case i == 7:
			if r.Response.Status != 201 || !r.CallbackDone {
				t.Fatalf("Get(7) is not the last version: %+v", r)
			}
		case i%3 == 0:
			if len(r.Response.Body) != len(big) {
				t.Fatalf("Get(%d): body of %d bytes", i, len(r.Response.Body))
			}
		default:
			if string(r.Response.Body) != fmt.Sprint(i) {
				t.Fatalf("Get(%d): body %q", i, r.Response.Body)
			}
		}
	}
}

// PutAll writes a batch's results, across a file boundary, readable before
// and after a restart.
func TestResultsPutAll(t *testing.T) {
	now, dir := testNow, t.TempDir()
	clock := func() time.Time { return now }
	rs := openResults(t, dir, clock)
	var batch []*Result
	for _, id := range []string{"4094", "4095", "4096", "4097"} {
		batch = append(batch, &Result{ID: id, Route: "r", State: OutcomeDelivered, Finished: now, Response: &Response{Status: 201, Body: []byte("answer " + id)}})
	}
	if err := rs.PutAll(batch); err != nil {
		t.Fatal(err)
	}
	if err := rs.PutAll([]*Result{{ID: "x"}}); !errors.Is(err, ErrNoResult) {
		t.Fatalf("a bad id: %v", err)
	}
	check := func(when string) {
		t.Helper()
		for _, r := range batch {
			got, err := rs.Get(r.ID)
			if err != nil || string(got.Response.Body) != "answer "+r.ID {
				t.Fatalf("%s: Get(%s): %+v %v", when, r.ID, got, err)
			}
		}
	}
	check("before Flush")
	if err := rs.Flush(); err != nil {
		t.Fatal(err)
	}
	rs.Close()
	rs = openResults(t, dir, clock)
	defer rs.Close()
	check("after a restart")
	for _, b := range []uint64{0, 1} {
		if _, err := os.Stat(rs.bucketPath(b)); err != nil {
			t.Fatalf("file %d: %v", b, err)
		}
	}
}

// A bit flipped in the middle of a results file costs the result it lands
// in and no other: the results after it stay readable (Get and Owed), and
// results put after a restart are appended and readable too.
func TestResultsBitFlipInTheMiddle(t *testing.T) {
	now, dir := testNow, t.TempDir()
	clock := func() time.Time { return now }
	rs := openResults(t, dir, clock)
	const n = 20
	for i := 1; i <= n; i++ {
		r := &Result{ID: fmt.Sprint(i), Route: "r", State: OutcomeDelivered, Finished: now, Callback: "http://app/cb",
			Response: &Response{Status: 200, Body: []byte(fmt.Sprintf("answer %d", i))}}
		if err := rs.Put(r); err != nil {
			t.Fatal(err)
		}
	}
	if err := rs.Flush(); err != nil {
		t.Fatal(err)
	}
	rs.Close()
	p := rs.bucketPath(0)
	img, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	img[len(img)/2] ^= 0x10 // inside result 10 or 11
	os.WriteFile(p, img, 0o640)

	rs = openResults(t, dir, clock)
	defer rs.Close()
	var lost []string
	for i := 1; i <= n; i++ {
		r, err := rs.Get(fmt.Sprint(i))
		switch {
		case errors.Is(err, ErrNoResult):
			lost = append(lost, fmt.Sprint(i))
		case err != nil:
			t.Fatal(err)
		case string(r.Response.Body) != fmt.Sprintf("answer %d", i):
			t.Fatalf("result %d: body %q", i, r.Response.Body)
		}
	}
	if len(lost) != 1 {
		t.Fatalf("results lost to one flipped bit: %v (want exactly the one it hit)", lost)
	}
	if owed := rs.Owed(); len(owed) != n-1 {
		t.Fatalf("%d callbacks owed after the flip, want %d", len(owed), n-1)
	}
	if err := rs.Put(&Result{ID: "21", State: OutcomeDelivered, Finished: now}); err != nil {
		t.Fatal(err)
	}
	for _, id := range []string{"20", "21"} {
		if _, err := rs.Get(id); err != nil {
			t.Fatalf("result %s after an append past the damage: %v", id, err)
		}
	}
}

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// appendLegacy appends a result frame as the release before framelog
// wrote it: payload length, CRC-32C of id and payload, id, JSON.
func appendLegacy(t *testing.T, b []byte, r *Result) []byte {
	t.Helper()
	enc, err := json.Marshal(r)
	if err != nil {
		t.Fatal(err)
	}
	id, _ := strconv.ParseUint(r.ID, 10, 64)
	idb := binary.LittleEndian.AppendUint64(nil, id)
	b = binary.LittleEndian.AppendUint32(b, uint32(len(enc)))
	b = binary.LittleEndian.AppendUint32(b, crc32.Update(crc32.Checksum(idb, castagnoli), castagnoli, enc))
	return append(append(b, idb...), enc...)
}

// The previous release's files are converted at start: their results are
// found, owed callbacks are owed, the old file is gone. A conversion that
// crashed before removing the old file (both files there, the new one
// appended to since) loses nothing and keeps the later versions winning.
func TestResultsConvertsThePreviousFormat(t *testing.T) {
	now, dir := testNow, t.TempDir()
	clock := func() time.Time { return now }
	var old []byte
	for i := 1; i <= 5; i++ {
		old = appendLegacy(t, old, &Result{ID: fmt.Sprint(i), State: OutcomeDelivered, Finished: now, Callback: "http://app/cb",
			Response: &Response{Status: 200, Body: []byte(fmt.Sprintf("answer %d", i))}})
	}
	torn := appendLegacy(t, nil, &Result{ID: "6", State: OutcomeDelivered, Finished: now})
	oldPath := filepath.Join(dir, fmt.Sprintf("%016x.log", 0))
	os.WriteFile(oldPath, append(bytes.Clone(old), torn[:len(torn)/2]...), 0o640)

	check := func(when string, rs *Results, owed int) {
		t.Helper()
		for i := 1; i <= 5; i++ {
			r, err := rs.Get(fmt.Sprint(i))
			if err != nil || string(r.Response.Body) != fmt.Sprintf("answer %d", i) {
				t.Fatalf("%s: result %d: %+v, %v", when, i, r, err)
			}
		}
		if got := rs.Owed(); len(got) != owed {
			t.Fatalf("%s: %d callbacks owed, want %d", when, len(got), owed)
		}
		if rep := rs.Report(); len(rep.Unconverted) != 0 {
			t.Fatalf("%s: %v", when, rep.Unconverted)
		}
		if _, err := os.Stat(oldPath); !errors.Is(err, os.ErrNotExist) {
			t.Fatalf("%s: the old file is left: %v", when, err)
		}
	}
	rs := openResults(t, dir, clock)
	check("converted", rs, 5)
	// The callback for 3 was accepted: a later version.
	rs.Put(&Result{ID: "3", State: OutcomeDelivered, Finished: now, Callback: "http://app/cb", CallbackDone: true,
		Response: &Response{Status: 200, Body: []byte("answer 3")}})
	rs.Flush()
	rs.Close()

	// The crash after the rename: the old file is back beside the new one.
	os.WriteFile(oldPath, old, 0o640)
	rs = openResults(t, dir, clock)
	defer rs.Close()
	check("converted again", rs, 4)
	if r, _ := rs.Get("3"); !r.CallbackDone {
		t.Fatal("the later version of a result lost to a second conversion")
	}
}

// A full disk is a clear error naming the file, from Put (the write) or
// Flush (the fsync); the results flushed before it are all kept, and the
// store takes results again once there is room.
func TestResultsDiskFull(t *testing.T) {
	for _, op := range []framelog.Op{framelog.OpWrite, framelog.OpSync} {
		t.Run(string(op), func(t *testing.T) {
			now, dir := testNow, t.TempDir()
			clock := func() time.Time { return now }
			rs := openResults(t, dir, clock)
			var armed atomic.Bool
			rs.failpoint = func(o framelog.Op, path string) error {
				if o == op && armed.Load() {
					return syscall.ENOSPC
				}
				return nil
			}
			put := func(i int) error {
				return rs.Put(&Result{ID: fmt.Sprint(i), State: OutcomeDelivered, Finished: now})
			}
			for i := 1; i <= 10; i++ {
				if err := put(i); err != nil {
					t.Fatal(err)
				}
			}
			if err := rs.Flush(); err != nil {
				t.Fatal(err)
			}
			armed.Store(true)
			err := put(11)
			if op == framelog.OpSync {
				if err != nil {
					t.Fatal(err)
				}
				err = rs.Flush()
			}
			if !errors.Is(err, syscall.ENOSPC) || !strings.Contains(err.Error(), rs.bucketPath(0)) {
				t.Fatalf("on a full disk: %v; want ENOSPC naming %s", err, rs.bucketPath(0))
			}
			armed.Store(false)
			if err := put(12); err != nil {
				t.Fatal(err)
			}
			if err := rs.Flush(); err != nil {
				t.Fatalf("Flush once there is room: %v", err)
			}
			rs.Close()
			rs = openResults(t, dir, clock)
			defer rs.Close()
			for i := 1; i <= 12; i++ {
				_, err := rs.Get(fmt.Sprint(i))
				if i == 11 && op == framelog.OpWrite {
					if !errors.Is(err, ErrNoResult) {
						t.Fatalf("the result whose write failed: %v", err)
					}
					continue
				}
				if err != nil {
					t.Fatalf("result %d after a restart: %v", i, err)
				}
			}
		})
	}
}

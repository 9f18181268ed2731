package spool

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/misaki-io/misaki/internal/framelog"
)

// clock is a settable wall clock.
type clock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *clock) Advance(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}

func newClock() *clock { return &clock{t: time.Date(2026, 11, 24, 12, 0, 0, 0, time.UTC)} }

func open(t *testing.T, dir string, mod ...func(*Options)) *Spool {
	t.Helper()
	o := Options{Dir: dir}
	for _, m := range mod {
		m(&o)
	}
	s, err := Open(o)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

func request(route string, i int, body []byte) *Record {
	return &Record{
		Route: route, Method: "POST", URL: fmt.Sprintf("/v1/items/%d?x=1", i),
		IdempotencyKey: fmt.Sprintf("key-%s-%d", route, i),
		Header:         http.Header{"Content-Type": {"application/json"}, "X-Multi": {"a", "b"}},
		Body:           body,
	}
}

func enqueue(t *testing.T, s *Spool, r *Record, lim Limits) uint64 {
	t.Helper()
	seq, err := s.Enqueue(r, nil, lim)
	if err != nil {
		t.Fatalf("enqueue %s: %v", r.URL, err)
	}
	return seq
}

// drain takes every record of route in order, finishing each.
func drain(t *testing.T, s *Spool, route string) []*Record {
	t.Helper()
	var out []*Record
	for {
		r, err := s.Next(route)
		if err != nil {
			t.Fatal(err)
		}
		if r == nil {
			return out
		}
		out = append(out, r)
		if err := s.Finish(r.Seq, Delivered); err != nil {
			t.Fatal(err)
		}
	}
}

func readBody(t *testing.T, s *Spool, r *Record) []byte {
	t.Helper()
	rc, err := s.OpenBody(r)
	if err != nil {
		t.Fatal(err)
	}
	defer rc.Close()
	b, err := io.ReadAll(rc)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestRoundTripAcrossRestart(t *testing.T) {
	for _, policy := range []SyncPolicy{SyncAlways, SyncInterval} {
		t.Run(string(policy), func(t *testing.T) {
			dir := t.TempDir()
			s := open(t, dir, func(o *Options) { o.Sync = policy; o.InlineMax = 1024 })
			big := bytes.Repeat([]byte("0123456789abcdef"), 1000) // 16,000 B: a body file
			var want [][]byte
			for i := range 6 {
				body := []byte(fmt.Sprintf(`{"i":%d}`, i))
				if i%3 == 2 {
					body = append(big, byte(i))
				}
				want = append(want, body)
				r := request("telemetry", i, nil)
				if _, err := s.Enqueue(r, bytes.NewReader(body), Limits{}); err != nil {
					t.Fatal(err)
				}
			}
			if err := s.Close(); err != nil {
				t.Fatal(err)
			}

			s = open(t, dir, func(o *Options) { o.Sync = policy; o.InlineMax = 1024 })
			if rs := s.Routes(); len(rs) != 1 || rs[0].Records != 6 {
				t.Fatalf("after restart: %+v", rs)
			}
			got := drain(t, s, "telemetry")
			if len(got) != 6 {
				t.Fatalf("drained %d records, want 6", len(got))
			}
			for i, r := range got {
				w := request("telemetry", i, nil)
				if r.URL != w.URL || r.Method != w.Method || r.IdempotencyKey != w.IdempotencyKey || !reflect.DeepEqual(r.Header, w.Header) {
					t.Errorf("record %d: %+v", i, r)
				}
				if b := readBody(t, s, r); !bytes.Equal(b, want[i]) {
					t.Errorf("record %d body: %d bytes, want %d", i, len(b), len(want[i]))
				}
			}
			if err := s.Close(); err != nil {
				t.Fatal(err)
			}
			s = open(t, dir)
			if rs := s.Routes(); len(rs) != 0 {
				t.Fatalf("after drain and restart: %+v", rs)
			}
			if bodies, _ := os.ReadDir(filepath.Join(dir, "bodies")); len(bodies) != 0 {
				t.Fatalf("%d body files left after drain", len(bodies))
			}
		})
	}
}

func TestOrderPerRouteAcrossRestarts(t *testing.T) {
	dir := t.TempDir()
	s := open(t, dir)
	for i := range 30 {
		enqueue(t, s, request([]string{"a", "b", "c"}[i%3], i, []byte("x")), Limits{})
	}
	// Deliver some of a, out of order within the in-flight window.
	r1, _ := s.Next("a")
	r2, _ := s.Next("a")
	s.Finish(r2.Seq, Delivered)
	s.Retry(r1.Seq)
	s.Close()

	s = open(t, dir)
	for _, route := range []string{"a", "b", "c"} {
		var last int
		got := drain(t, s, route)
		for k, r := range got {
			var i int
			fmt.Sscanf(r.URL, "/v1/items/%d", &i)
			if k > 0 && i <= last {
				t.Fatalf("route %s: item %d after %d", route, i, last)
			}
			last = i
		}
		want := 10
		if route == "a" {
			want = 9
		}
		if len(got) != want {
			t.Fatalf("route %s: %d records, want %d", route, len(got), want)
		}
	}
}

func TestRetryKeepsPlaceAndCountsAttempts(t *testing.T) {
	dir := t.TempDir()
	s := open(t, dir)
	first := enqueue(t, s, request("r", 0, nil), Limits{})
	enqueue(t, s, request("r", 1, nil), Limits{})
	for range 3 {
		r, _ := s.Next("r")
		if r.Seq != first {
			t.Fatalf("Next gave %d, want the head %d", r.Seq, first)
		}
		s.Retry(r.Seq)
	}
	s.Close()
	s = open(t, dir)
	if n, err := s.Attempts(first); err != nil || n != 3 {
		t.Fatalf("attempts after restart: %d, %v", n, err)
	}
}

func TestSegmentsRotateAndAreReclaimed(t *testing.T) {
	dir := t.TempDir()
	s := open(t, dir, func(o *Options) { o.SegmentBytes = 4096 })
	for i := range 200 {
		enqueue(t, s, request("r", i, bytes.Repeat([]byte("b"), 100)), Limits{})
	}
	if n := s.Stats().Segments; n < 10 {
		t.Fatalf("%d segments, want many at 4 KiB each", n)
	}
	s.Close()
	s = open(t, dir, func(o *Options) { o.SegmentBytes = 4096 })
	if got := drain(t, s, "r"); len(got) != 200 {
		t.Fatalf("drained %d", len(got))
	}
	if n := s.Stats().Segments; n != 1 {
		t.Fatalf("%d segments after the drain, want 1", n)
	}
	s.Close()
	s = open(t, dir, func(o *Options) { o.SegmentBytes = 4096 })
	// Sequence numbers never go back, even with every segment drained.
	if seq := enqueue(t, s, request("r", 0, nil), Limits{}); seq <= 200 {
		t.Fatalf("sequence %d reused after a drain", seq)
	}
}

func TestGroupCommit(t *testing.T) {
	s := open(t, t.TempDir())
	var wg sync.WaitGroup
	for c := range 64 {
		wg.Go(func() {
			for i := range 20 {
				if _, err := s.Enqueue(request("r", c*100+i, []byte("payload")), nil, Limits{}); err != nil {
					t.Error(err)
				}
			}
		})
	}
	wg.Wait()
	st := s.Stats()
	if st.Enqueued != 1280 || st.Fsyncs >= st.Enqueued {
		t.Fatalf("%d enqueues took %d fsyncs; concurrent enqueues must share them", st.Enqueued, st.Fsyncs)
	}
	t.Logf("%d enqueues, %d fsyncs", st.Enqueued, st.Fsyncs)
}

func TestQuotas(t *testing.T) {
	t.Run("reject", func(t *testing.T) {
		s := open(t, t.TempDir())
		lim := Limits{MaxRecords: 3, Evict: Reject}
		for i := range 3 {
			enqueue(t, s, request("r", i, nil), lim)
		}
		_, err := s.Enqueue(request("r", 3, nil), nil, lim)
		if !errors.Is(err, ErrFull) || !strings.Contains(err.Error(), "route r holds 3 requests") {
			t.Fatalf("4th enqueue: %v", err)
		}
		if _, err := s.Enqueue(request("other", 0, nil), nil, lim); err != nil {
			t.Fatalf("another route is not limited by r's quota: %v", err)
		}
		if st := s.Stats(); st.Rejected != 1 {
			t.Fatalf("rejected %d", st.Rejected)
		}
	})
	t.Run("drop-oldest", func(t *testing.T) {
		s := open(t, t.TempDir())
		lim := Limits{MaxRecords: 3, Evict: DropOldest}
		for i := range 5 {
			enqueue(t, s, request("r", i, nil), lim)
		}
		got := drain(t, s, "r")
		if len(got) != 3 || got[0].URL != "/v1/items/2?x=1" {
			t.Fatalf("kept %d, first %q; want the newest 3", len(got), got[0].URL)
		}
		if st := s.Stats(); st.Evicted != 2 {
			t.Fatalf("evicted %d", st.Evicted)
		}
		if ev := s.Sweep(); len(ev) != 2 || ev[0].Outcome != Evicted || ev[0].Seq != 1 || ev[1].Seq != 2 {
			t.Fatalf("Sweep after evictions: %+v", ev)
		}
	})
	t.Run("total bytes", func(t *testing.T) {
		s := open(t, t.TempDir(), func(o *Options) { o.MaxBytes = 2000 })
		var err error
		n := 0
		for ; err == nil; n++ {
			_, err = s.Enqueue(request(fmt.Sprint("r", n%4), n, bytes.Repeat([]byte("z"), 300)), nil, Limits{})
		}
		if !errors.Is(err, ErrFull) || !strings.Contains(err.Error(), "the spool holds") || n < 3 {
			t.Fatalf("after %d: %v", n, err)
		}
	})
	t.Run("drop-oldest cannot evict in-flight records", func(t *testing.T) {
		s := open(t, t.TempDir())
		lim := Limits{MaxRecords: 1, Evict: DropOldest}
		enqueue(t, s, request("r", 0, nil), lim)
		s.Next("r")
		if _, err := s.Enqueue(request("r", 1, nil), nil, lim); !errors.Is(err, ErrFull) {
			t.Fatalf("got %v, want ErrFull", err)
		}
	})
}

func TestTTLByWallClock(t *testing.T) {
	dir := t.TempDir()
	clk := newClock()
	s := open(t, dir, func(o *Options) { o.Now = clk.Now })
	short := request("r", 0, nil)
	short.Expires = clk.Now().Add(time.Minute).UnixNano()
	enqueue(t, s, short, Limits{})
	long := request("r", 1, nil)
	long.Expires = clk.Now().Add(time.Hour).UnixNano()
	enqueue(t, s, long, Limits{})
	enqueue(t, s, request("r", 2, nil), Limits{}) // no TTL
	s.Close()

	// "Power off" for two minutes: the TTL runs on the wall clock.
	clk.Advance(2 * time.Minute)
	s = open(t, dir, func(o *Options) { o.Now = clk.Now })
	if exp := s.Sweep(); len(exp) != 1 || exp[0].Seq != 1 || exp[0].Outcome != Expired || exp[0].Route != "r" {
		t.Fatalf("expired %v, want seq 1", exp)
	}
	clk.Advance(time.Hour)
	if exp := s.Sweep(); len(exp) != 1 || exp[0].Seq != 2 {
		t.Fatalf("expired %v, want seq 2", exp)
	}
	if got := drain(t, s, "r"); len(got) != 1 || got[0].Seq != 3 {
		t.Fatalf("left %d records", len(got))
	}
	if st := s.Stats(); st.Expired != 2 {
		t.Fatalf("expired count %d", st.Expired)
	}
}

func TestCancel(t *testing.T) {
	s := open(t, t.TempDir())
	a := enqueue(t, s, request("r", 0, nil), Limits{})
	b := enqueue(t, s, request("r", 1, nil), Limits{})
	if st, route, ok := s.Lookup(b); !ok || st != StateQueued || route != "r" {
		t.Fatalf("lookup: %v %v %v", st, route, ok)
	}
	s.Next("r") // a is in flight
	if err := s.Cancel(a); !errors.Is(err, ErrInFlight) {
		t.Fatalf("cancel in flight: %v", err)
	}
	if st, _, _ := s.Lookup(a); st != StateDelivering {
		t.Fatalf("state %v", st)
	}
	if err := s.Cancel(b); err != nil {
		t.Fatal(err)
	}
	if err := s.Cancel(b); !errors.Is(err, ErrNotFound) {
		t.Fatalf("second cancel: %v", err)
	}
}

// segmentFiles returns the spool's segment paths, oldest first.
func segmentFiles(t *testing.T, dir string) []string {
	t.Helper()
	m, _ := filepath.Glob(filepath.Join(dir, "seg-*.log"))
	return m
}

func copyDir(t *testing.T, from, to string) {
	t.Helper()
	if out, err := exec.Command("cp", "-a", from+"/.", to).CombinedOutput(); err != nil {
		t.Fatalf("cp: %v %s", err, out)
	}
}

// A crash can cut the newest segment anywhere inside its last frame: the
// spool opens, cuts the torn frame, and keeps every earlier record.
func TestTornTailAtEveryOffset(t *testing.T) {
	base := t.TempDir()
	s := open(t, base)
	const n = 5
	for i := range n {
		enqueue(t, s, request("r", i, []byte(fmt.Sprintf("body-%d", i))), Limits{})
	}
	s.Close()
	seg := segmentFiles(t, base)[0]
	full, _ := os.ReadFile(seg)
	lastStart := lastFrameStart(t, full)
	if lastStart <= 0 {
		t.Fatalf("last frame at %d", lastStart)
	}
	for cut := lastStart; cut < len(full); cut++ {
		dir := t.TempDir()
		copyDir(t, base, dir)
		if err := os.Truncate(segmentFiles(t, dir)[0], int64(cut)); err != nil {
			t.Fatal(err)
		}
		s, err := Open(Options{Dir: dir})
		if err != nil {
			t.Fatalf("cut at %d: %v", cut, err)
		}
		got := drain(t, s, "r")
		if len(got) != n-1 {
			t.Fatalf("cut at %d: %d records, want %d", cut, len(got), n-1)
		}
		for i, r := range got {
			if string(r.Body) != fmt.Sprintf("body-%d", i) {
				t.Fatalf("cut at %d: record %d body %q", cut, i, r.Body)
			}
		}
		if st := s.Stats(); st.TornBytes != int64(cut-lastStart) || st.DamagedSpans != 0 {
			t.Fatalf("cut at %d: torn %d damaged %d", cut, st.TornBytes, st.DamagedSpans)
		}
		// The spool appends after the cut, and the new record survives.
		enqueue(t, s, request("r", 99, []byte("after")), Limits{})
		s.Close()
		s2, err := Open(Options{Dir: dir})
		if err != nil {
			t.Fatal(err)
		}
		if got := drain(t, s2, "r"); len(got) != 1 || string(got[0].Body) != "after" {
			t.Fatalf("cut at %d: after reopening, %d records", cut, len(got))
		}
		s2.Close()
	}
}

// lastFrameStart walks the frames of a segment image.
func lastFrameStart(t *testing.T, b []byte) int {
	t.Helper()
	off, last := 0, -1
	for off < len(b) {
		_, _, n, err := readFrame(b[off:])
		if err != nil {
			t.Fatalf("frame at %d: %v", off, err)
		}
		last = off
		off += n
	}
	return last
}

// Bit flips anywhere are found, quarantined and counted; every record
// whose frame is intact is still delivered, and nothing panics.
func TestBitFlips(t *testing.T) {
	base := t.TempDir()
	s := open(t, base)
	const n = 50
	for i := range n {
		enqueue(t, s, request("r", i, bytes.Repeat([]byte{byte('a' + i%26)}, 200)), Limits{})
	}
	s.Close()
	seg := segmentFiles(t, base)[0]
	img, _ := os.ReadFile(seg)
	frames := frameStarts(t, img)
	rng := rand.New(rand.NewPCG(1, 2))
	for trial := range 40 {
		dir := t.TempDir()
		copyDir(t, base, dir)
		b := append([]byte(nil), img...)
		flips := 1 + trial%3
		hit := map[int]bool{} // frame indexes damaged
		for range flips {
			off := rng.IntN(len(b))
			b[off] ^= 1 << rng.IntN(8)
			hit[frameAt(frames, off)] = true
		}
		os.WriteFile(segmentFiles(t, dir)[0], b, 0o640)
		s, err := Open(Options{Dir: dir})
		if err != nil {
			t.Fatalf("trial %d: %v", trial, err)
		}
		got := drain(t, s, "r")
		intact := 0
		for i := 1; i < len(frames); i++ { // frame 0 is the segment start
			if !hit[i] {
				intact++
			}
		}
		st := s.Stats()
		if len(got) < intact || len(got) > n {
			t.Fatalf("trial %d: delivered %d, intact frames %d", trial, len(got), intact)
		}
		if st.DamagedSpans+boolInt(st.TornBytes > 0) == 0 {
			t.Fatalf("trial %d: %d flips went unnoticed", trial, flips)
		}
		for _, r := range got {
			var i int
			fmt.Sscanf(r.URL, "/v1/items/%d", &i)
			if !bytes.Equal(r.Body, bytes.Repeat([]byte{byte('a' + i%26)}, 200)) {
				t.Fatalf("trial %d: record %d delivered with a damaged body", trial, i)
			}
		}
		if q, _ := os.ReadDir(filepath.Join(dir, "quarantine")); len(q) == 0 {
			t.Fatalf("trial %d: nothing quarantined", trial)
		}
		s.Close()
	}
}

func boolInt(b bool) int64 {
	if b {
		return 1
	}
	return 0
}

func frameStarts(t *testing.T, b []byte) []int {
	var starts []int
	for off := 0; off < len(b); {
		_, _, n, err := readFrame(b[off:])
		if err != nil {
			t.Fatal(err)
		}
		starts = append(starts, off)
		off += n
	}
	return starts
}

func frameAt(starts []int, off int) int {
	i := 0
	for i+1 < len(starts) && starts[i+1] <= off {
		i++
	}
	return i
}

// A full disk is a clear error to the caller; nothing acknowledged is lost,
// and the spool takes requests again once there is room.
func TestDiskFull(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root to mount a small tmpfs")
	}
	dir := t.TempDir()
	if out, err := exec.Command("mount", "-t", "tmpfs", "-o", "size=256k", "tmpfs", dir).CombinedOutput(); err != nil {
		t.Skipf("mount tmpfs: %v %s", err, out)
	}
	defer exec.Command("umount", "-l", dir).Run()
	spoolDir := filepath.Join(dir, "spool")
	s, err := Open(Options{Dir: spoolDir, InlineMax: 4096})
	if err != nil {
		t.Fatal(err)
	}
	var acked int
	body := bytes.Repeat([]byte("d"), 2000)
	for i := 0; ; i++ {
		_, err := s.Enqueue(request("r", i, body), nil, Limits{})
		if err != nil {
			if !errors.Is(err, syscall.ENOSPC) {
				t.Fatalf("enqueue %d: %v, want ENOSPC", i, err)
			}
			break
		}
		acked++
		if i > 1000 {
			t.Fatal("the tmpfs never filled")
		}
	}
	// A large body hits the full disk in its own file.
	if _, err := s.Enqueue(request("r", -1, nil), bytes.NewReader(bytes.Repeat([]byte("L"), 100<<10)), Limits{}); !errors.Is(err, syscall.ENOSPC) {
		t.Fatalf("large body on a full disk: %v", err)
	}
	s.Close()
	s, err = Open(Options{Dir: spoolDir, InlineMax: 4096})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if rs := s.Routes(); len(rs) != 1 || rs[0].Records != int64(acked) {
		t.Fatalf("after the full disk: %+v, want %d records", rs, acked)
	}
	// Draining gives the space back (the segment is cut back, with no new
	// file needed), and the spool takes requests again.
	if got := drain(t, s, "r"); len(got) != acked {
		t.Fatalf("drained %d of %d", len(got), acked)
	}
	for i := range acked / 2 {
		if _, err := s.Enqueue(request("r", i, body), nil, Limits{}); err != nil {
			t.Fatalf("enqueue %d after space returned: %v", i, err)
		}
	}
}

func FuzzDecodeRecord(f *testing.F) {
	f.Add(appendRecord(nil, request("r", 1, []byte("body"))))
	f.Add(appendRecord(nil, &Record{Route: "x", BodyFile: "00ff", BodySize: 9, BodyCRC: 7}))
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, p []byte) {
		r, err := decodeRecord(p)
		m, merr := skimRecord(p)
		if (err == nil) != (merr == nil) {
			t.Fatalf("decode %v, skim %v", err, merr)
		}
		if err != nil {
			return
		}
		if m.seq != r.Seq || string(m.route) != r.Route || m.bodyFile != r.BodyFile || m.bodySize != r.BodySize {
			t.Fatalf("skim %+v disagrees with decode %+v", m, r)
		}
		// What decodes re-encodes to a payload that decodes the same.
		r2, err := decodeRecord(appendRecord(nil, r))
		if err != nil || !reflect.DeepEqual(r, r2) {
			t.Fatalf("re-encode: %v\n%+v\n%+v", err, r, r2)
		}
	})
}

// A queue past offHeapEntries moves its index off the heap and keeps
// every entry through the move, FIFO; draining it unmaps the memory.
func TestLargeQueueIndexOffHeap(t *testing.T) {
	if entrySize != 32 {
		t.Fatalf("entry is %d bytes, want 32", entrySize)
	}
	var q queue
	n := 3*offHeapEntries + 5
	for i := range n {
		q.push(entry{seq: uint64(i + 1), size: 1})
		q.live++
	}
	if q.mem == nil {
		t.Fatal("a large queue's entries are still on the heap")
	}
	for i := range n {
		if j := q.find(uint64(i + 1)); j != 0 {
			t.Fatalf("entry %d at %d, want the front", i+1, j)
		}
		q.markDone(0)
	}
	if q.mem != nil || len(q.entries) != 0 {
		t.Fatalf("drained queue keeps %d entries, mapped %v", len(q.entries), q.mem != nil)
	}
}

// FinishAll ends a batch's records with one write; a seq not in the spool
// does not keep the others from ending, and the ends survive a restart.
func TestFinishAll(t *testing.T) {
	dir := t.TempDir()
	s := open(t, dir)
	var seqs []uint64
	for i := range 5 {
		seqs = append(seqs, enqueue(t, s, request("r", i, []byte("b")), Limits{}))
	}
	for range 3 {
		if r, err := s.Next("r"); err != nil || r == nil {
			t.Fatalf("Next: %v %v", r, err)
		}
	}
	before := s.Stats()
	err := s.FinishAll([]uint64{seqs[0], 9999, seqs[1], seqs[2]}, []Outcome{Delivered, Delivered, Failed, Delivered})
	if !errors.Is(err, ErrNotFound) {
		t.Fatalf("FinishAll with an unknown seq: %v, want ErrNotFound", err)
	}
	after := s.Stats()
	if after.Delivered-before.Delivered != 2 || after.Failed-before.Failed != 1 {
		t.Fatalf("counted %d delivered and %d failed, want 2 and 1", after.Delivered-before.Delivered, after.Failed-before.Failed)
	}
	s.Close()
	s = open(t, dir)
	got := drain(t, s, "r")
	if len(got) != 2 || got[0].Seq != seqs[3] || got[1].Seq != seqs[4] {
		t.Fatalf("after a restart the spool holds %d records, want the 2 not finished", len(got))
	}
}

// NextN gives what as many calls of Next would: the route's queued
// records in order, among other routes' records, body files and ended
// records, however n cuts them.
func TestNextNAsNext(t *testing.T) {
	base := t.TempDir()
	s := open(t, base)
	for i := range 60 {
		body := bytes.Repeat([]byte{byte('a' + i%26)}, 100+i)
		if i%7 == 3 {
			body = bytes.Repeat([]byte{byte('a' + i%26)}, 70<<10) // over the inline limit: a body file
		}
		enqueue(t, s, request("r", i, body), Limits{})
		enqueue(t, s, request("other", i, []byte("o")), Limits{})
	}
	for range 5 { // ended records leave done frames between the others
		r, _ := s.Next("r")
		s.Finish(r.Seq, Delivered)
	}
	s.Close()
	want := func() []*Record {
		dir := t.TempDir()
		copyDir(t, base, dir)
		return drain(t, open(t, dir), "r")
	}()
	for _, n := range []int{1, 2, 7, 32, 100} {
		dir := t.TempDir()
		copyDir(t, base, dir)
		s := open(t, dir)
		var got []*Record
		calls, reads0 := 0, s.segmentReads.Load()
		for {
			calls++
			recs, err := s.NextN("r", n)
			if err != nil {
				t.Fatal(err)
			}
			if len(recs) > n {
				t.Fatalf("NextN(%d) gave %d", n, len(recs))
			}
			if len(recs) == 0 {
				break
			}
			for _, r := range recs {
				if err := s.Finish(r.Seq, Delivered); err != nil {
					t.Fatal(err)
				}
			}
			got = append(got, recs...)
		}
		if len(got) != len(want) {
			t.Fatalf("NextN(%d): %d records, Next %d", n, len(got), len(want))
		}
		// Neighbouring records come with one read: the other route's
		// records and done frames between them do not split a batch.
		if reads := s.segmentReads.Load() - reads0; n > 1 && reads > int64(calls) {
			t.Fatalf("NextN(%d): %d reads for %d calls", n, reads, calls)
		}
		if st := s.Stats(); st.DamagedSpans != 0 {
			t.Fatalf("NextN(%d): %d damaged spans in a healthy spool", n, st.DamagedSpans)
		}
		for i := range want {
			if got[i].Seq != want[i].Seq || got[i].URL != want[i].URL || !bytes.Equal(readBody(t, s, got[i]), readBody(t, s, want[i])) {
				t.Fatalf("NextN(%d): record %d is %d %s, want %d %s", n, i, got[i].Seq, got[i].URL, want[i].Seq, want[i].URL)
			}
		}
	}
}

// A record damaged on disk after Open is skipped and counted by NextN as
// by Next; the records read with it are delivered.
func TestNextNSkipsDamageFoundLate(t *testing.T) {
	dir := t.TempDir()
	s := open(t, dir)
	for i := range 10 {
		enqueue(t, s, request("r", i, bytes.Repeat([]byte{'x'}, 300)), Limits{})
	}
	img, _ := os.ReadFile(segmentFiles(t, dir)[0])
	frames := frameStarts(t, img)
	f, err := os.OpenFile(segmentFiles(t, dir)[0], os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.WriteAt([]byte{'!'}, int64(frames[4]+200)); err != nil { // inside record 3 (frame 0 starts the segment)
		t.Fatal(err)
	}
	f.Close()
	recs, err := s.NextN("r", 32)
	if err != nil || len(recs) != 9 {
		t.Fatalf("NextN: %d records, %v; want the 9 intact", len(recs), err)
	}
	for _, r := range recs {
		if r.URL == "/v1/items/3?x=1" {
			t.Fatal("the damaged record was delivered")
		}
	}
	if st := s.Stats(); st.DamagedSpans != 1 {
		t.Fatalf("DamagedSpans %d, want 1", st.DamagedSpans)
	}
	if recs, err := s.NextN("r", 32); err != nil || len(recs) != 0 {
		t.Fatalf("a second NextN: %d, %v; want none (all in flight or ended)", len(recs), err)
	}
	s.Close()

	// One at a time, a damaged record at the head is skipped and the next
	// one returned, not nothing.
	s = open(t, dir)
	for range 3 {
		r, err := s.Next("r")
		if err != nil || r == nil {
			t.Fatalf("Next: %v, %v", r, err)
		}
		s.Finish(r.Seq, Delivered)
	}
	f, err = os.OpenFile(segmentFiles(t, dir)[0], os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	f.WriteAt([]byte{'!'}, int64(frames[5]+200)) // inside record 4, now the head
	f.Close()
	if recs, err := s.NextN("r", 1); err != nil || len(recs) != 1 || recs[0].URL != "/v1/items/5?x=1" {
		t.Fatalf("NextN(1) over a damaged head: %d records, %v; want record 5", len(recs), err)
	}
	s.Close()
	if _, err := s.NextN("r", 1); !errors.Is(err, ErrClosed) {
		t.Fatalf("after Close: %v", err)
	}
}

// A segment that cannot be opened when its records are taken costs those
// records (counted), and the route goes on with the next segment's.
func TestNextNSkipsAMissingSegment(t *testing.T) {
	dir := t.TempDir()
	s := open(t, dir, func(o *Options) { o.SegmentBytes = 4096 })
	for i := range 40 {
		enqueue(t, s, request("r", i, bytes.Repeat([]byte{'x'}, 300)), Limits{})
	}
	s.Close()
	s = open(t, dir, func(o *Options) { o.SegmentBytes = 4096 })
	segs := segmentFiles(t, dir)
	if len(segs) < 3 {
		t.Fatalf("%d segments, want several", len(segs))
	}
	if err := os.Remove(segs[0]); err != nil {
		t.Fatal(err)
	}
	recs, err := s.NextN("r", 40)
	if err != nil || len(recs) == 0 || len(recs) == 40 {
		t.Fatalf("NextN: %d records, %v; want those of the segments left", len(recs), err)
	}
	if st := s.Stats(); st.DamagedSpans != int64(40-len(recs)) {
		t.Fatalf("DamagedSpans %d, want the %d records of the missing segment", st.DamagedSpans, 40-len(recs))
	}
}

// Each failpoint a segment has: a failed write (a full disk) or fsync is
// a clear error naming the segment, the request is not acknowledged and
// never delivered, every acknowledged one is delivered after a restart,
// and the spool takes requests again once the fault is gone. A torn tail
// that cannot be cut fails Open with the segment's name.
func TestFailpoints(t *testing.T) {
	for _, op := range []framelog.Op{framelog.OpWrite, framelog.OpSync} {
		t.Run(string(op), func(t *testing.T) {
			dir := t.TempDir()
			var armed atomic.Bool
			fp := func(o framelog.Op, path string) error {
				if o == op && strings.Contains(path, "seg-") && armed.Load() {
					return syscall.ENOSPC
				}
				return nil
			}
			s := open(t, dir, func(o *Options) { o.Failpoint = fp })
			var acked []string
			try := func(i int) error {
				r := request("r", i, []byte(fmt.Sprint(i)))
				_, err := s.Enqueue(r, nil, Limits{})
				if err == nil {
					acked = append(acked, r.URL)
				}
				return err
			}
			for i := range 10 {
				if err := try(i); err != nil {
					t.Fatal(err)
				}
			}
			armed.Store(true)
			for i := 10; i < 13; i++ {
				err := try(i)
				if !errors.Is(err, syscall.ENOSPC) || !strings.Contains(err.Error(), segmentFiles(t, dir)[0]) {
					t.Fatalf("enqueue on a failing disk: %v; want ENOSPC naming the segment", err)
				}
			}
			if rs := s.Routes(); len(rs) != 1 || rs[0].Records != 10 {
				t.Fatalf("after the failed enqueues: %+v, want the 10 acknowledged", rs)
			}
			armed.Store(false)
			for i := 13; i < 20; i++ {
				if err := try(i); err != nil {
					t.Fatalf("enqueue once the fault is gone: %v", err)
				}
			}
			s.Close()
			s = open(t, dir)
			var got []string
			for _, r := range drain(t, s, "r") {
				got = append(got, r.URL)
			}
			if !reflect.DeepEqual(got, acked) {
				t.Fatalf("after a restart: %v\nwant the acknowledged %v", got, acked)
			}
			if st := s.Stats(); st.DamagedSpans != 0 {
				t.Fatalf("damage after a fault: %+v", st)
			}
		})
	}
	t.Run(string(framelog.OpTruncate), func(t *testing.T) {
		dir := t.TempDir()
		s := open(t, dir)
		enqueue(t, s, request("r", 1, nil), Limits{})
		s.Close()
		seg := segmentFiles(t, dir)[0]
		f, _ := os.OpenFile(seg, os.O_WRONLY|os.O_APPEND, 0)
		f.Write(framelog.AppendFrame(nil, typeRequest, appendRecord(nil, request("r", 2, nil)))[:30])
		f.Close()
		_, err := Open(Options{Dir: dir, Failpoint: func(o framelog.Op, _ string) error {
			if o == framelog.OpTruncate {
				return syscall.EIO
			}
			return nil
		}})
		if !errors.Is(err, syscall.EIO) || !strings.Contains(err.Error(), seg) {
			t.Fatalf("Open with a torn tail it cannot cut: %v", err)
		}
		s = open(t, dir)
		if got := drain(t, s, "r"); len(got) != 1 || s.Stats().TornBytes != 30 {
			t.Fatalf("once the fault is gone: %d records, %+v", len(got), s.Stats())
		}
	})
}

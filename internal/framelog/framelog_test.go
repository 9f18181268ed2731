package framelog

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
)

// payload is frame i's payload in the tests: sizes vary, some are empty.
func payload(i int) []byte {
	return bytes.Repeat([]byte{byte('a' + i%26)}, (i*37)%300)
}

// writeLog appends n frames to a new log at path and closes it.
func writeLog(t *testing.T, path string, n int) {
	t.Helper()
	l, _, err := Open(path, Options{}, nil)
	if err != nil {
		t.Fatal(err)
	}
	for i := range n {
		_, pos, err := l.Append(AppendFrame(nil, byte(1+i%3), payload(i)))
		if err != nil {
			t.Fatal(err)
		}
		if err := l.Commit(pos); err != nil {
			t.Fatal(err)
		}
	}
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
}

// scanFile scans the file at path and returns the indexes of its frames
// (decoded from their payloads by payload's rule) and the report.
func scanFile(t *testing.T, path string) ([]int, Report) {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	st, _ := f.Stat()
	sc := NewScanner(f, st.Size(), 0)
	var got []int
	for sc.Next() {
		got = append(got, frameIndex(t, sc.Frame()))
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	return got, sc.Report()
}

// frameIndex finds which payload(i) a frame holds, i below 300.
func frameIndex(t *testing.T, fr Frame) int {
	t.Helper()
	for i := range 300 {
		if byte(1+i%3) == fr.Type && bytes.Equal(fr.Payload, payload(i)) {
			return i
		}
	}
	t.Fatalf("frame at %d holds no test payload", fr.Off)
	return -1
}

// frameStarts returns the offsets of the frames of an intact log image.
func frameStarts(t *testing.T, b []byte) []int {
	t.Helper()
	var starts []int
	for off := 0; off < len(b); {
		_, _, n, err := ReadFrame(b[off:], DefaultMaxPayload)
		if err != nil {
			t.Fatalf("frame at %d: %v", off, err)
		}
		starts = append(starts, off)
		off += n
	}
	return starts
}

func seq(from, to int, except ...int) []int {
	var s []int
	for i := from; i < to; i++ {
		if !bytes.Contains(intsKey(except), intsKey([]int{i})) {
			s = append(s, i)
		}
	}
	return s
}

func intsKey(s []int) []byte {
	var b []byte
	for _, i := range s {
		b = fmt.Appendf(b, ",%d,", i)
	}
	return b
}

func equal(a, b []int) bool { return bytes.Equal(intsKey(a), intsKey(b)) }

func TestAppendAndReopen(t *testing.T) {
	path := filepath.Join(t.TempDir(), "log")
	writeLog(t, path, 50)
	var got []int
	l, rep, err := Open(path, Options{}, func(fr Frame) error {
		got = append(got, frameIndex(t, fr))
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	if !equal(got, seq(0, 50)) || rep.Frames != 50 || rep.Damaged != 0 || rep.TornBytes != 0 {
		t.Fatalf("reopened: %v, %+v", got, rep)
	}
	st, _ := os.Stat(path)
	if rep.End != st.Size() || l.Size() != st.Size() {
		t.Fatalf("end %d, size %d, file %d", rep.End, l.Size(), st.Size())
	}
	// An error from the callback ends Open.
	stop := errors.New("stop")
	if _, _, err := Open(path, Options{}, func(Frame) error { return stop }); !errors.Is(err, stop) {
		t.Fatalf("callback error: %v", err)
	}
}

// The one rule: a bit flipped anywhere costs the frame it lands in and no
// other. Every byte of the file is tried.
func TestBitFlipCostsOneFrame(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "log")
	const n = 8
	writeLog(t, path, n)
	img, _ := os.ReadFile(path)
	starts := frameStarts(t, img)
	for off := range img {
		hit := 0
		for hit+1 < len(starts) && starts[hit+1] <= off {
			hit++
		}
		b := bytes.Clone(img)
		b[off] ^= 1 << (off % 8)
		p := filepath.Join(dir, "flipped")
		os.WriteFile(p, b, 0o640)
		var damage []Span
		var got []int
		l, rep, err := Open(p, Options{OnDamage: func(s Span) { damage = append(damage, s) }}, func(fr Frame) error {
			got = append(got, frameIndex(t, fr))
			return nil
		})
		if err != nil {
			t.Fatalf("flip at %d: %v", off, err)
		}
		if !equal(got, seq(0, n, hit)) {
			t.Fatalf("flip at %d (frame %d): frames %v", off, hit, got)
		}
		if len(damage) != 1 || damage[0].Off != int64(starts[hit]) {
			t.Fatalf("flip at %d (frame %d at %d): damage %+v", off, hit, starts[hit], damage)
		}
		last := hit == n-1
		if !last && (rep.Damaged != 1 || damage[0].Tail || rep.DamagedBytes != damage[0].Len) {
			t.Fatalf("flip at %d: report %+v, damage %+v", off, rep, damage)
		}
		if last && (rep.End != int64(starts[hit]) || l.Size() != rep.End) {
			t.Fatalf("flip in the last frame at %d: end %d, size %d", off, rep.End, l.Size())
		}
		l.Close()
	}
}

// A crash can cut the log anywhere: Open keeps every whole frame, cuts the
// rest off as torn, and appends go on after them.
func TestTornTailAtEveryCut(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "log")
	const n = 6
	writeLog(t, path, n)
	img, _ := os.ReadFile(path)
	starts := append(frameStarts(t, img), len(img))
	for cut := 0; cut < len(img); cut++ {
		whole := 0
		for whole < n && starts[whole+1] <= cut {
			whole++
		}
		p := filepath.Join(dir, "cut")
		os.WriteFile(p, img[:cut], 0o640)
		var got []int
		l, rep, err := Open(p, Options{}, func(fr Frame) error {
			got = append(got, frameIndex(t, fr))
			return nil
		})
		if err != nil {
			t.Fatalf("cut at %d: %v", cut, err)
		}
		if !equal(got, seq(0, whole)) || rep.Damaged != 0 || rep.TornBytes != int64(cut-starts[whole]) {
			t.Fatalf("cut at %d: frames %v, report %+v", cut, got, rep)
		}
		if st, _ := os.Stat(p); st.Size() != int64(starts[whole]) {
			t.Fatalf("cut at %d: %d bytes left, want %d", cut, st.Size(), starts[whole])
		}
		if _, _, err := l.Append(AppendFrame(nil, 1, payload(99))); err != nil {
			t.Fatal(err)
		}
		l.Close()
		if got, _ := scanFile(t, p); !equal(got, append(seq(0, whole), 99)) {
			t.Fatalf("cut at %d: after an append, %v", cut, got)
		}
	}
}

// Zeros at the end (a file system extended the file before the data
// reached it) are a torn tail; other garbage there is damage. Both are cut.
func TestBadTails(t *testing.T) {
	for _, tc := range []struct {
		name string
		tail []byte
		torn bool
	}{
		{"zeros", make([]byte, 5000), true},
		{"garbage", []byte("not a frame at all"), false},
		{"header of a long frame", AppendFrame(nil, 1, make([]byte, 1000))[:500], true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "log")
			writeLog(t, path, 3)
			img, _ := os.ReadFile(path)
			os.WriteFile(path, append(bytes.Clone(img), tc.tail...), 0o640)
			l, rep, err := Open(path, Options{}, nil)
			if err != nil {
				t.Fatal(err)
			}
			l.Close()
			if rep.Frames != 3 || rep.End != int64(len(img)) {
				t.Fatalf("report %+v", rep)
			}
			if tc.torn && (rep.TornBytes != int64(len(tc.tail)) || rep.Damaged != 0) ||
				!tc.torn && (rep.DamagedBytes != int64(len(tc.tail)) || rep.Damaged != 1) {
				t.Fatalf("report %+v", rep)
			}
			if got, _ := os.ReadFile(path); !bytes.Equal(got, img) {
				t.Fatalf("%d bytes left, want %d", len(got), len(img))
			}
		})
	}
}

// countingReader counts the bytes a scan reads.
type countingReader struct {
	r io.ReaderAt
	n atomic.Int64
}

func (c *countingReader) ReadAt(b []byte, off int64) (int, error) {
	n, err := c.r.ReadAt(b, off)
	c.n.Add(int64(n))
	return n, err
}

// A garbage length cannot make the search read more than the payload
// bound per candidate: headers that claim huge frames are refused at
// once, and one that claims a frame within the bound costs one read of
// it.
func TestGarbageLengthsAreBounded(t *testing.T) {
	var img []byte
	for i := range 100 {
		img = AppendFrame(img, 1, payload(i))
	}
	mid := len(img) / 2
	var bad []byte
	for range 1000 { // headers claiming 4 GiB frames
		bad = append(bad, magic0, magic1, 1, 0, 0xff, 0xff, 0xff, 0xff, 0, 0, 0, 0)
	}
	img = slicesInsert(img, mid, bad)
	r := &countingReader{r: bytes.NewReader(img)}
	sc := NewScanner(r, int64(len(img)), 64<<10)
	frames := 0
	for sc.Next() {
		frames++
	}
	if rep := sc.Report(); frames < 98 || rep.Damaged < 1 {
		t.Fatalf("%d frames, report %+v", frames, rep)
	}
	if n := r.n.Load(); n > 4*int64(len(img)) {
		t.Fatalf("read %d bytes of a %d-byte file", n, len(img))
	}
}

func slicesInsert(b []byte, at int, ins []byte) []byte {
	return append(append(append([]byte(nil), b[:at]...), ins...), b[at:]...)
}

// Concurrent appenders share fsyncs, and every committed frame is there
// after a reopen.
func TestGroupCommit(t *testing.T) {
	path := filepath.Join(t.TempDir(), "log")
	l, _, err := Open(path, Options{}, nil)
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	for g := range 32 {
		wg.Go(func() {
			for i := range 8 {
				_, pos, err := l.Append(AppendFrame(nil, byte(1+(g*8+i)%3), payload(g*8+i)))
				if err == nil {
					err = l.Commit(pos)
				}
				if err != nil {
					t.Error(err)
				}
			}
		})
	}
	wg.Wait()
	if s := l.Syncs(); s >= 256 || s == 0 {
		t.Fatalf("256 commits took %d fsyncs", s)
	}
	if l.Synced() != l.Pos() || l.Dirty() {
		t.Fatalf("synced %d of %d", l.Synced(), l.Pos())
	}
	l.Close()
	if got, rep := scanFile(t, path); len(got) != 256 || rep.Damaged != 0 {
		t.Fatalf("%d frames after reopen, %+v", len(got), rep)
	}
}

func TestSyncPolicies(t *testing.T) {
	for _, p := range []SyncPolicy{SyncAlways, SyncInterval, SyncNone} {
		t.Run(string(p), func(t *testing.T) {
			l, _, err := Open(filepath.Join(t.TempDir(), "log"), Options{Sync: p}, nil)
			if err != nil {
				t.Fatal(err)
			}
			_, pos, _ := l.Append(AppendFrame(nil, 1, []byte("x")))
			if err := l.Commit(pos); err != nil {
				t.Fatal(err)
			}
			if got := l.Synced() >= pos; got != (p == SyncAlways) {
				t.Fatalf("synced after Commit: %v", got)
			}
			if err := l.Close(); err != nil || l.Synced() < pos {
				t.Fatalf("Close: %v, synced %d of %d", err, l.Synced(), pos)
			}
			if _, _, err := l.Append([]byte("x")); !errors.Is(err, ErrClosed) {
				t.Fatalf("append after Close: %v", err)
			}
			if err := l.Sync(pos); err != nil {
				t.Fatalf("a synced position after Close: %v", err)
			}
		})
	}
}

// BeforeSync runs before each fsync, and its error fails the Sync.
func TestBeforeSync(t *testing.T) {
	var calls int
	var fail error
	l, _, err := Open(filepath.Join(t.TempDir(), "log"), Options{BeforeSync: func() error { calls++; return fail }}, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	_, pos, _ := l.Append(AppendFrame(nil, 1, []byte("x")))
	if err := l.Sync(pos); err != nil || calls != 1 {
		t.Fatalf("Sync: %v, %d calls", err, calls)
	}
	fail = errors.New("results not flushed")
	_, pos, _ = l.Append(AppendFrame(nil, 1, []byte("y")))
	if err := l.Sync(pos); !errors.Is(err, fail) {
		t.Fatalf("Sync with BeforeSync failing: %v", err)
	}
}

// Reset cuts the log back to its head frame; positions go on growing.
func TestReset(t *testing.T) {
	path := filepath.Join(t.TempDir(), "log")
	writeLog(t, path, 1) // payload(0) is empty: the head is frame 0's length
	l, _, err := Open(path, Options{}, nil)
	if err != nil {
		t.Fatal(err)
	}
	for i := 1; i < 20; i++ {
		l.Append(AppendFrame(nil, byte(1+i%3), payload(i)))
	}
	before := l.Pos()
	head := AppendFrame(nil, 1, payload(0))
	if err := l.Reset(head); err != nil {
		t.Fatal(err)
	}
	if l.Size() != int64(len(head)) || l.Pos() <= before || l.Synced() != l.Pos() {
		t.Fatalf("size %d, pos %d (was %d), synced %d", l.Size(), l.Pos(), before, l.Synced())
	}
	l.Append(AppendFrame(nil, 2, payload(1)))
	l.Close()
	if got, _ := scanFile(t, path); !equal(got, []int{0, 1}) {
		t.Fatalf("after Reset and an append: %v", got)
	}
}

// A lookup steps over the frames it does not want, and still finds every
// wanted frame after one whose length was damaged.
func TestFilter(t *testing.T) {
	var img []byte
	for i := range 40 {
		img = AppendFrame(img, 1, binary.LittleEndian.AppendUint64(nil, uint64(i)))
	}
	img = AppendFrame(img, 1, binary.LittleEndian.AppendUint64(nil, 7)) // a later version of 7
	find := func(img []byte, id uint64) (n int, stepped int) {
		sc := NewScanner(bytes.NewReader(img), int64(len(img)), 0)
		sc.Filter(8, func(_ byte, head []byte) bool {
			ok := len(head) == 8 && binary.LittleEndian.Uint64(head) == id
			if !ok {
				stepped++
			}
			return ok
		})
		for sc.Next() {
			if binary.LittleEndian.Uint64(sc.Frame().Payload) != id {
				t.Fatalf("frame %d returned for %d", binary.LittleEndian.Uint64(sc.Frame().Payload), id)
			}
			n++
		}
		return n, stepped
	}
	if n, stepped := find(img, 7); n != 2 || stepped != 39 {
		t.Fatalf("found %d, stepped over %d", n, stepped)
	}
	// Frame 3's length grows by 1: stepping over it lands one byte into
	// frame 4, which is no header, so frame 3 is checked, found bad and
	// skipped; 4 onwards are found.
	b := bytes.Clone(img)
	off := 3 * (HeaderSize + 8)
	b[off+4]++
	for id := uint64(4); id < 40; id++ {
		if n, _ := find(b, id); n != 1+boolInt(id == 7) {
			t.Fatalf("id %d after a damaged length: found %d", id, n)
		}
	}
	if n, _ := find(b, 3); n != 0 {
		t.Fatal("the damaged frame was returned")
	}
}

func boolInt(b bool) int {
	if b {
		return 1
	}
	return 0
}

func TestScanLegacy(t *testing.T) {
	var img []byte
	for i := range 5 {
		id := binary.LittleEndian.AppendUint64(nil, uint64(i))
		p := payload(i + 1)
		img = binary.LittleEndian.AppendUint32(img, uint32(len(p)))
		img = binary.LittleEndian.AppendUint32(img, crc32.Update(crc32.Checksum(id, castagnoli), castagnoli, p))
		img = append(append(img, id...), p...)
	}
	read := func(b []byte) []uint64 {
		var ids []uint64
		if _, err := ScanLegacy(bytes.NewReader(b), 8, 0, func(prefix, p []byte) error {
			ids = append(ids, binary.LittleEndian.Uint64(prefix))
			if !bytes.Equal(p, payload(len(ids))) {
				t.Fatalf("frame %d: payload %q", len(ids), p)
			}
			return nil
		}); err != nil {
			t.Fatal(err)
		}
		return ids
	}
	if ids := read(img); len(ids) != 5 {
		t.Fatalf("ids %v", ids)
	}
	if ids := read(img[:len(img)-3]); len(ids) != 4 {
		t.Fatalf("cut: ids %v", ids)
	}
	b := bytes.Clone(img)
	b[len(b)/2] ^= 1
	if ids := read(b); len(ids) >= 5 {
		t.Fatalf("damaged: ids %v", ids)
	}
}

// failOn returns a failpoint that fails op on paths containing name with
// err, while armed.
func failOn(op Op, name string, err error, armed *atomic.Bool) Failpoint {
	return func(o Op, path string) error {
		if o == op && strings.Contains(path, name) && armed.Load() {
			return err
		}
		return nil
	}
}

// The failpoint suite: each call the package makes fails in turn, with a
// full disk and with an I/O error. The error names the file, nothing
// acknowledged is lost, and the log works again once the fault is gone.
func TestFailpoints(t *testing.T) {
	for _, errno := range []syscall.Errno{syscall.ENOSPC, syscall.EIO} {
		t.Run(errno.Error(), func(t *testing.T) { failpointSuite(t, errno) })
	}
}

func failpointSuite(t *testing.T, errno syscall.Errno) {
	// checkErr checks that err is errno and names path.
	checkErr := func(t *testing.T, err error, path string) {
		t.Helper()
		if !errors.Is(err, errno) || !strings.Contains(err.Error(), path) {
			t.Fatalf("error %v: want %v naming %s", err, errno, path)
		}
	}
	// appendN commits frames from..to-1 and returns those acknowledged.
	appendN := func(l *Log, from, to int) (acked []int, errs []error) {
		for i := from; i < to; i++ {
			_, pos, err := l.Append(AppendFrame(nil, byte(1+i%3), payload(i)))
			if err == nil {
				err = l.Commit(pos)
			}
			if err != nil {
				errs = append(errs, err)
				continue
			}
			acked = append(acked, i)
		}
		return acked, errs
	}
	// contains reports whether every acknowledged frame is in got, in order.
	contains := func(got, acked []int) bool {
		k := 0
		for _, g := range got {
			if k < len(acked) && g == acked[k] {
				k++
			}
		}
		return k == len(acked)
	}

	t.Run("write", func(t *testing.T) {
		for _, alsoTruncate := range []bool{false, true} {
			t.Run(fmt.Sprintf("truncate fails too %v", alsoTruncate), func(t *testing.T) {
				path := filepath.Join(t.TempDir(), "log")
				var armed atomic.Bool
				fp := failOn(OpWrite, "log", errno, &armed)
				if alsoTruncate {
					w, tr := fp, failOn(OpTruncate, "log", errno, &armed)
					fp = func(op Op, p string) error { return errors.Join(w(op, p), tr(op, p)) }
				}
				l, _, err := Open(path, Options{Failpoint: fp}, nil)
				if err != nil {
					t.Fatal(err)
				}
				acked, _ := appendN(l, 0, 10)
				size := l.Size()
				armed.Store(true)
				bad, errs := appendN(l, 10, 13)
				if len(bad) != 0 || len(errs) != 3 {
					t.Fatalf("appends on a failing disk: acked %v", bad)
				}
				checkErr(t, errs[0], path)
				if l.Size() != size {
					t.Fatalf("size %d after failed appends, want %d", l.Size(), size)
				}
				armed.Store(false)
				more, errs := appendN(l, 13, 20)
				if len(errs) != 0 {
					t.Fatalf("appends once the disk has room: %v", errs)
				}
				acked = append(acked, more...)
				l.Close()
				got, rep := scanFile(t, path)
				if !equal(got, acked) || rep.Damaged != 0 {
					t.Fatalf("after reopen: %v, %+v; want %v", got, rep, acked)
				}
			})
		}
	})

	t.Run("fsync", func(t *testing.T) {
		path := filepath.Join(t.TempDir(), "log")
		var armed atomic.Bool
		l, _, err := Open(path, Options{Failpoint: failOn(OpSync, "log", errno, &armed)}, nil)
		if err != nil {
			t.Fatal(err)
		}
		acked, _ := appendN(l, 0, 10)
		armed.Store(true)
		_, pos, err := l.Append(AppendFrame(nil, 2, payload(10)))
		if err != nil {
			t.Fatal(err)
		}
		err = l.Commit(pos)
		checkErr(t, err, path)
		armed.Store(false)
		// What the failed fsync covered is never reported durable: a
		// second fsync could succeed without the data reaching the disk.
		if err := l.Sync(pos); !errors.Is(err, errno) {
			t.Fatalf("a second Sync of a failed position: %v", err)
		}
		if l.Dirty() {
			t.Fatal("a failed position counts as dirty: the interval loop would retry it for ever")
		}
		more, errs := appendN(l, 11, 20)
		if len(errs) != 0 {
			t.Fatalf("appends after the fault: %v", errs)
		}
		acked = append(acked, more...)
		if err := l.Close(); err != nil {
			t.Fatalf("Close: %v", err)
		}
		if got, _ := scanFile(t, path); !contains(got, acked) {
			t.Fatalf("after reopen: %v; acknowledged %v", got, acked)
		}
	})

	t.Run("fsync of the directory", func(t *testing.T) {
		dir := t.TempDir()
		var armed atomic.Bool
		armed.Store(true)
		fp := failOn(OpSync, dir, errno, &armed)
		_, err := Create(filepath.Join(dir, "new"), Options{Failpoint: fp})
		checkErr(t, err, dir)
		if _, err := os.Stat(filepath.Join(dir, "new")); !errors.Is(err, os.ErrNotExist) {
			t.Fatalf("a log whose creation failed is left: %v", err)
		}
		_, _, err = Open(filepath.Join(dir, "new"), Options{Failpoint: fp}, nil)
		checkErr(t, err, dir)
	})

	t.Run("truncate", func(t *testing.T) {
		path := filepath.Join(t.TempDir(), "log")
		writeLog(t, path, 5)
		img, _ := os.ReadFile(path)
		torn := append(bytes.Clone(img), AppendFrame(nil, 1, payload(5))[:20]...)
		os.WriteFile(path, torn, 0o640)
		var armed atomic.Bool
		armed.Store(true)
		_, _, err := Open(path, Options{Failpoint: failOn(OpTruncate, "log", errno, &armed)}, nil)
		checkErr(t, err, path)
		if b, _ := os.ReadFile(path); !bytes.Equal(b, torn) {
			t.Fatal("the file changed though its truncation failed")
		}
		armed.Store(false)
		l, rep, err := Open(path, Options{Failpoint: failOn(OpTruncate, "log", errno, &armed)}, nil)
		if err != nil || rep.Frames != 5 || rep.TornBytes != 20 {
			t.Fatalf("Open once the fault is gone: %+v, %v", rep, err)
		}
		l.Close()
		// A failed cut in Reset leaves the frames, and the head in front.
		l, _, _ = Open(path, Options{Failpoint: failOn(OpTruncate, "log", errno, &armed)}, nil)
		armed.Store(true)
		checkErr(t, l.Reset(AppendFrame(nil, 1, payload(0))), path)
		l.Close()
		if got, _ := scanFile(t, path); !equal(got, seq(0, 5)) {
			t.Fatalf("after a failed Reset: %v", got)
		}
	})

	t.Run("WriteFile", func(t *testing.T) {
		for _, op := range []Op{OpWrite, OpSync, OpRename} {
			t.Run(string(op), func(t *testing.T) {
				dir := t.TempDir()
				path := filepath.Join(dir, "file")
				write := func(n int) func(io.Writer) error {
					return func(w io.Writer) error {
						for i := range n {
							if _, err := w.Write(AppendFrame(nil, byte(1+i%3), payload(i))); err != nil {
								return err
							}
						}
						return nil
					}
				}
				if err := WriteFile(path, nil, write(3)); err != nil {
					t.Fatal(err)
				}
				var armed atomic.Bool
				armed.Store(true)
				err := WriteFile(path, failOn(op, "file", errno, &armed), write(8))
				checkErr(t, err, path)
				if got, _ := scanFile(t, path); !equal(got, seq(0, 3)) {
					t.Fatalf("the old file after a failed replace: %v", got)
				}
				if des, _ := os.ReadDir(dir); len(des) != 1 {
					t.Fatalf("files left: %v", des)
				}
				if op == OpSync { // the directory's fsync, after the rename
					dirFault := func(o Op, p string) error {
						if o == OpSync && p == dir {
							return errno
						}
						return nil
					}
					checkErr(t, WriteFile(path, dirFault, write(8)), dir)
				}
				if err := WriteFile(path, nil, write(8)); err != nil {
					t.Fatal(err)
				}
				if got, _ := scanFile(t, path); !equal(got, seq(0, 8)) {
					t.Fatalf("after a replace once the fault is gone: %v", got)
				}
			})
		}
	})
}

package replay

import (
	"bufio"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	proxyv1 "github.com/misaki-io/misaki/api/proxy/v1"
	"github.com/misaki-io/misaki/internal/framelog"
)

// Result is a finished spooled request: the admin API's wire type itself,
// as GET /v1/requests/{id} serves it, the callback POSTs it and the
// results files hold it (JSON). Its State is delivered (the upstream
// answered 1xx–3xx), failed (a final 4xx, or a request that could not be
// read back), expired (its TTL passed first), cancelled or evicted.
type Result = proxyv1.Request

// Response is an upstream answer kept for the app, cut at
// spool.maxResponseBytes (Truncated says so).
type Response = proxyv1.Response

// Results keeps finished requests' outcomes for the retention period, in
// append-only framelog files each holding the results of 4,096
// consecutive request ids (results/<id>>12, 16 hex digits>.results). Ids
// are spool sequence numbers, and requests finish roughly in order, so the
// results written together go to one or two files. A Put appends one frame
// (the id, 8 bytes little endian, then the result as JSON) and does not
// sync (framelog.SyncNone); Flush, run by the spool before each of its
// fsyncs (spool.Options.BeforeSync), fsyncs the files written since the
// last Flush, so that a request's done frame is never on disk before its
// result, and the results finished together share one fsync (group
// commit).
//
// Get scans one file for the id's last frame, reading only the headers of
// the others. Retention is kept by whole files: a file whose newest result
// is past the retention is removed. A later Put of the same id (a callback
// that was accepted) appends a new version, which wins. Damage follows
// framelog's one rule: a damaged frame costs its own result and no other;
// a torn frame at a file's end (a crash mid-write) is cut off when the
// file is next appended to.
//
// The previous release wrote <bucket>.log files of another frame shape;
// NewResults converts them (see convertLegacy).
//
// One file per result, the first design, spent a third of the replay's CPU
// creating and renaming files, and flushing them took a syncfs(2) of the
// whole file system (bench/spoolbench BenchmarkDrain).
type Results struct {
	dir       string
	retention time.Duration
	now       func() time.Time
	failpoint framelog.Failpoint // tests

	flushMu sync.Mutex // one Flush at a time

	mu     sync.Mutex               // guards the fields below
	logs   map[uint64]*framelog.Log // buckets open for appending
	dirty  map[uint64]bool          // buckets written since the last Flush
	newest map[uint64]time.Time     // bucket → its newest result's Finished
	report ResultsReport
}

// ResultsReport is what reading the results files found since the start.
type ResultsReport struct {
	// DamagedFrames and DamagedBytes count the damage Owed's read of every
	// file skipped (each costs the result it held).
	DamagedFrames int
	DamagedBytes  int64
	// Unconverted are the previous release's files NewResults could not
	// convert: they are kept, and tried again at the next start.
	Unconverted []error
}

const (
	bucketShift  = 12 // 4,096 ids per file
	typeResult   = 1  // a result frame: id (8 bytes LE), then JSON
	maxFrame     = 64 << 20
	bucketSuffix = ".results"
	legacySuffix = ".log" // the previous release's files
)

// NewResults keeps results in dir (created if missing). Files the previous
// release left are converted first, once.
func NewResults(dir string, retention time.Duration, now func() time.Time) (*Results, error) {
	if err := os.MkdirAll(dir, 0o750); err != nil {
		return nil, fmt.Errorf("results: %w", err)
	}
	rs := &Results{
		dir: dir, retention: retention, now: now,
		logs: map[uint64]*framelog.Log{}, dirty: map[uint64]bool{}, newest: map[uint64]time.Time{},
	}
	rs.convertLegacy()
	return rs, nil
}

// ErrNoResult means no result is kept under that id.
var ErrNoResult = errors.New("results: no such request")

func (rs *Results) bucketPath(b uint64) string {
	return filepath.Join(rs.dir, fmt.Sprintf("%016x%s", b, bucketSuffix))
}

// Put stores r; it is durable after the next Flush.
func (rs *Results) Put(r *Result) error { return rs.PutAll([]*Result{r}) }

// PutAll stores results as Put does, with one write per file they go to
// (usually one: a batch's results are of neighbouring ids).
func (rs *Results) PutAll(results []*Result) error {
	// The frames for each file, in the order first met: a batch's ids are
	// neighbours, so nearly always one file, and a linear search is enough.
	type group struct {
		bucket uint64
		frames []byte
		newest time.Time
	}
	var groups []group
	var payload []byte
	for _, r := range results {
		id, err := strconv.ParseUint(r.ID, 10, 64)
		if err != nil {
			return ErrNoResult
		}
		enc, err := json.Marshal(r)
		if err != nil {
			return err
		}
		if len(enc)+8 > maxFrame {
			return fmt.Errorf("results: result %s is %d bytes", r.ID, len(enc))
		}
		payload = append(binary.LittleEndian.AppendUint64(payload[:0], id), enc...)
		b := id >> bucketShift
		k := slices.IndexFunc(groups, func(g group) bool { return g.bucket == b })
		if k < 0 {
			groups, k = append(groups, group{bucket: b}), len(groups)
		}
		g := &groups[k]
		g.frames = framelog.AppendFrame(g.frames, typeResult, payload)
		if r.Finished.After(g.newest) {
			g.newest = r.Finished
		}
	}
	rs.mu.Lock()
	defer rs.mu.Unlock()
	for _, g := range groups {
		l, err := rs.logLocked(g.bucket)
		if err != nil {
			return fmt.Errorf("results: %w", err)
		}
		if _, _, err := l.Append(g.frames); err != nil {
			return fmt.Errorf("results: %w", err)
		}
		rs.dirty[g.bucket] = true
		if g.newest.After(rs.newest[g.bucket]) {
			rs.newest[g.bucket] = g.newest
		}
	}
	return nil
}

// logLocked returns bucket b open for appending. The first time this run,
// its file is scanned and a torn frame at its end (a crash mid-write) is
// cut off.
func (rs *Results) logLocked(b uint64) (*framelog.Log, error) {
	if l := rs.logs[b]; l != nil {
		return l, nil
	}
	l, _, err := framelog.Open(rs.bucketPath(b), rs.logOptions(), nil)
	if err != nil {
		return nil, err
	}
	rs.logs[b] = l
	return l, nil
}

func (rs *Results) logOptions() framelog.Options {
	return framelog.Options{Sync: framelog.SyncNone, MaxPayload: maxFrame, Failpoint: rs.failpoint}
}

// scanFile scans the results file at path, calling fn with each intact
// result frame's id and JSON. With want set, frames of other ids are
// stepped over unread (framelog's Filter), so that looking one result up
// costs a read of the file's frame headers and not of every response body
// in it.
func scanFile(path string, want func(id uint64) bool, fn func(id uint64, enc []byte)) (framelog.Report, error) {
	f, err := os.Open(path)
	if err != nil {
		return framelog.Report{}, err
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return framelog.Report{}, err
	}
	sc := framelog.NewScanner(f, st.Size(), maxFrame)
	if want != nil {
		sc.Filter(8, func(typ byte, head []byte) bool {
			return typ == typeResult && len(head) == 8 && want(binary.LittleEndian.Uint64(head))
		})
	}
	for sc.Next() {
		if fr := sc.Frame(); fr.Type == typeResult && len(fr.Payload) >= 8 {
			fn(binary.LittleEndian.Uint64(fr.Payload), fr.Payload[8:])
		}
	}
	return sc.Report(), sc.Err()
}

// Flush makes every result whose Put returned before Flush was called
// durable. Puts may go on meanwhile; they are for the next Flush. A file
// whose fsync failed is not tried again: framelog never reports a failed
// fsync's bytes durable, and the spool's fsync waiting on this one fails.
func (rs *Results) Flush() error {
	rs.flushMu.Lock()
	defer rs.flushMu.Unlock()
	rs.mu.Lock()
	var logs []*framelog.Log
	for b := range rs.dirty {
		logs = append(logs, rs.logs[b])
	}
	clear(rs.dirty)
	rs.mu.Unlock()

	var err error
	for _, l := range logs {
		err = errors.Join(err, l.Sync(l.Pos()))
	}
	if err != nil {
		return fmt.Errorf("results: %w", err)
	}
	rs.mu.Lock()
	defer rs.mu.Unlock()
	// Keep the two newest buckets open; the others are done with.
	open := slices.Sorted(maps.Keys(rs.logs))
	for i, b := range open {
		if i < len(open)-2 && !rs.dirty[b] {
			rs.logs[b].Close()
			delete(rs.logs, b)
		}
	}
	return nil
}

// Get returns the result stored under id.
func (rs *Results) Get(id string) (*Result, error) {
	n, err := strconv.ParseUint(id, 10, 64)
	if err != nil {
		return nil, ErrNoResult
	}
	var last []byte
	_, err = scanFile(rs.bucketPath(n>>bucketShift), func(got uint64) bool { return got == n }, func(_ uint64, enc []byte) {
		last = append(last[:0], enc...)
	})
	if errors.Is(err, os.ErrNotExist) {
		return nil, ErrNoResult
	}
	if err != nil {
		return nil, fmt.Errorf("results: %w", err)
	}
	if last == nil {
		return nil, ErrNoResult
	}
	var r Result
	if err := json.Unmarshal(last, &r); err != nil {
		return nil, fmt.Errorf("results: %s: %w", id, err)
	}
	if r.Finished.Before(rs.now().Add(-rs.retention)) {
		return nil, ErrNoResult
	}
	return &r, nil
}

// Owed reads every kept result, learning each file's newest, and returns
// the results whose callback is still owed. Run it once, at start; Report
// then says what damage it skipped.
func (rs *Results) Owed() []*Result {
	des, err := os.ReadDir(rs.dir)
	if err != nil {
		return nil
	}
	cutoff := rs.now().Add(-rs.retention)
	var owed []*Result
	for _, de := range des {
		b, ok := bucketOf(de.Name(), bucketSuffix)
		if !ok {
			continue
		}
		latest := map[uint64]*Result{}
		var newest time.Time
		rep, _ := scanFile(filepath.Join(rs.dir, de.Name()), nil, func(id uint64, enc []byte) {
			var r Result
			if json.Unmarshal(enc, &r) != nil {
				return
			}
			latest[id] = &r
			if r.Finished.After(newest) {
				newest = r.Finished
			}
		})
		rs.mu.Lock()
		if newest.After(rs.newest[b]) {
			rs.newest[b] = newest
		}
		rs.report.DamagedFrames += rep.Damaged
		rs.report.DamagedBytes += rep.DamagedBytes
		rs.mu.Unlock()
		for _, r := range latest {
			if r.Callback != "" && !r.CallbackDone && !r.Finished.Before(cutoff) {
				owed = append(owed, r)
			}
		}
	}
	slices.SortFunc(owed, func(a, b *Result) int { return strings.Compare(a.ID, b.ID) })
	return owed
}

// Report returns what reading the files found since the start.
func (rs *Results) Report() ResultsReport {
	rs.mu.Lock()
	defer rs.mu.Unlock()
	rep := rs.report
	rep.Unconverted = slices.Clone(rep.Unconverted)
	return rep
}

func bucketOf(name, suffix string) (uint64, bool) {
	h, ok := strings.CutSuffix(name, suffix)
	if !ok || len(h) != 16 {
		return 0, false
	}
	b, err := strconv.ParseUint(h, 16, 64)
	return b, err == nil
}

// Sweep removes the files whose newest result is past the retention. A
// file not seen since the start (Owed not run yet, or run before it was
// found) is kept until it is.
func (rs *Results) Sweep() {
	cutoff := rs.now().Add(-rs.retention)
	rs.mu.Lock()
	defer rs.mu.Unlock()
	for b, newest := range rs.newest {
		if !newest.Before(cutoff) || rs.dirty[b] {
			continue
		}
		if l := rs.logs[b]; l != nil {
			l.Close()
			delete(rs.logs, b)
		}
		if err := os.Remove(rs.bucketPath(b)); err == nil || errors.Is(err, os.ErrNotExist) {
			delete(rs.newest, b)
		}
	}
}

// Close closes the open files (after a last Flush by the caller).
func (rs *Results) Close() error {
	rs.mu.Lock()
	defer rs.mu.Unlock()
	var err error
	for b, l := range rs.logs {
		err = errors.Join(err, l.Close())
		delete(rs.logs, b)
	}
	return err
}

// convertLegacy converts the previous release's files, <bucket>.log: frames
// of a payload length, a CRC-32C, the id and the JSON, with no magic, read
// up to the first bad one as that release read them (framelog.ScanLegacy).
// Each becomes <bucket>.results, written whole and crash-safely: its
// results, then whatever the new file already holds (results put after a
// conversion that failed, or a copy of its own made by a conversion that
// crashed before removing the old file; later versions still come last
// and win), and then the old file is removed. A file that cannot be
// converted (a full disk) is kept, reported (Report) and tried again at
// the next start; until then its results are not found.
func (rs *Results) convertLegacy() {
	des, err := os.ReadDir(rs.dir)
	if err != nil {
		rs.report.Unconverted = append(rs.report.Unconverted, fmt.Errorf("results: %w", err))
		return
	}
	for _, de := range des {
		b, ok := bucketOf(de.Name(), legacySuffix)
		if !ok {
			continue
		}
		old := filepath.Join(rs.dir, de.Name())
		if err := rs.convert(old, rs.bucketPath(b)); err != nil {
			rs.report.Unconverted = append(rs.report.Unconverted, fmt.Errorf("results: converting %s: %w", old, err))
			continue
		}
		os.Remove(old) // a removal a crash undoes costs a second, harmless conversion
	}
}

func (rs *Results) convert(old, path string) error {
	in, err := os.Open(old)
	if err != nil {
		return err
	}
	defer in.Close()
	cur, err := os.Open(path)
	if errors.Is(err, os.ErrNotExist) {
		cur = nil
	} else if err != nil {
		return err
	}
	if cur != nil {
		defer cur.Close()
	}
	return framelog.WriteFile(path, rs.failpoint, func(w io.Writer) error {
		bw := bufio.NewWriterSize(w, 256<<10)
		var frame, payload []byte
		if _, err := framelog.ScanLegacy(in, 8, maxFrame, func(id, enc []byte) error {
			payload = append(append(payload[:0], id...), enc...)
			frame = framelog.AppendFrame(frame[:0], typeResult, payload)
			_, err := bw.Write(frame)
			return err
		}); err != nil {
			return err
		}
		if cur != nil {
			if _, err := io.Copy(bw, cur); err != nil {
				return err
			}
		}
		return bw.Flush()
	})
}

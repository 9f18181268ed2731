package replay

import (
	"bufio"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"maps"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/misaki-io/misaki/internal/durable"
)

// Result is a finished spooled request as the app sees it at
// GET /v1/requests/{id}.
type Result struct {
	ID    string `json:"id"`
	Route string `json:"route"`
	// State is delivered (the upstream answered 1xx–3xx), failed (a final
	// 4xx, or a request that could not be read back), expired (its TTL
	// passed first), cancelled or evicted.
	State    string    `json:"state"`
	Reason   string    `json:"reason,omitempty"`
	Finished time.Time `json:"finished"`
	Attempts int       `json:"attempts"`
	// Response is the upstream's answer, when there was one.
	Response *Response `json:"response,omitempty"`
	// Callback is where the result is POSTed; CallbackDone says it was
	// accepted (2xx).
	Callback     string `json:"callback,omitempty"`
	CallbackDone bool   `json:"callbackDone,omitempty"`
}

// Response is an upstream answer kept for the app.
type Response struct {
	Status int         `json:"status"`
	Header http.Header `json:"headers"`
	// Body is the body, cut at spool.maxResponseBytes (Truncated says so).
	Body      []byte `json:"body"`
	Truncated bool   `json:"truncated,omitempty"`
}

// Results keeps finished requests' outcomes for the retention period, in
// append-only files each holding the results of 4,096 consecutive request
// ids (results/<id>>12, 16 hex digits>.log). Ids are spool sequence numbers,
// and requests finish roughly in order, so the results written together go
// to one or two files. A Put appends one frame (length, id, CRC-32C, JSON)
// and does not sync; Flush, run by the spool before each of its fsyncs
// (spool.Options.BeforeSync), fsyncs the files written since the last
// Flush, so that a request's done frame is never on disk before its result,
// and the results finished together share one fsync (group commit).
//
// Get scans one file for the id's last frame, reading only the headers of
// the others. Retention is kept by whole files: a file whose newest result
// is past the retention is removed. A later Put of the same id (a callback
// that was accepted) appends a new version, which wins. A torn frame at a
// file's end (a crash mid-write) is cut off when the file is next appended
// to; a damaged frame elsewhere hides the frames after it from Get, and
// costs those results, never the spool's requests.
//
// One file per result, the first design, spent a third of the replay's CPU
// creating and renaming files, and flushing them took a syncfs(2) of the
// whole file system (bench/spoolbench BenchmarkDrain).
type Results struct {
	dir       string
	retention time.Duration
	now       func() time.Time

	flushMu sync.Mutex // one Flush at a time

	mu     sync.Mutex           // guards the fields below
	files  map[uint64]*os.File  // buckets open for appending
	dirty  map[uint64]bool      // buckets written since the last Flush
	newDir bool                 // a bucket file was created since the last Flush
	newest map[uint64]time.Time // bucket → its newest result's Finished
}

const (
	bucketShift = 12 // 4,096 ids per file
	frameHeader = 16 // payload length u32, CRC-32C u32 (of id and payload), id u64
	maxFrame    = 64 << 20
)

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// NewResults keeps results in dir (created if missing).
func NewResults(dir string, retention time.Duration, now func() time.Time) (*Results, error) {
	if err := os.MkdirAll(dir, 0o750); err != nil {
		return nil, fmt.Errorf("results: %w", err)
	}
	return &Results{
		dir: dir, retention: retention, now: now,
		files: map[uint64]*os.File{}, dirty: map[uint64]bool{}, newest: map[uint64]time.Time{},
	}, nil
}

// ErrNoResult means no result is kept under that id.
var ErrNoResult = errors.New("results: no such request")

func (rs *Results) bucketPath(b uint64) string {
	return filepath.Join(rs.dir, fmt.Sprintf("%016x.log", b))
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
	for _, r := range results {
		id, err := strconv.ParseUint(r.ID, 10, 64)
		if err != nil {
			return ErrNoResult
		}
		payload, err := json.Marshal(r)
		if err != nil {
			return err
		}
		if len(payload) > maxFrame {
			return fmt.Errorf("results: result %s is %d bytes", r.ID, len(payload))
		}
		b := id >> bucketShift
		k := slices.IndexFunc(groups, func(g group) bool { return g.bucket == b })
		if k < 0 {
			groups, k = append(groups, group{bucket: b}), len(groups)
		}
		g := &groups[k]
		start := len(g.frames)
		g.frames = append(g.frames, make([]byte, frameHeader)...)
		binary.LittleEndian.PutUint32(g.frames[start:], uint32(len(payload)))
		binary.LittleEndian.PutUint64(g.frames[start+8:], id)
		g.frames = append(g.frames, payload...)
		binary.LittleEndian.PutUint32(g.frames[start+4:], crc32.Checksum(g.frames[start+8:], castagnoli))
		if r.Finished.After(g.newest) {
			g.newest = r.Finished
		}
	}
	rs.mu.Lock()
	defer rs.mu.Unlock()
	for _, g := range groups {
		f, err := rs.fileLocked(g.bucket)
		if err != nil {
			return fmt.Errorf("results: %w", err)
		}
		if _, err := f.Write(g.frames); err != nil {
			return fmt.Errorf("results: %w", err)
		}
		rs.dirty[g.bucket] = true
		if g.newest.After(rs.newest[g.bucket]) {
			rs.newest[g.bucket] = g.newest
		}
	}
	return nil
}

// fileLocked returns bucket b open for appending. The first time this run,
// a torn frame at its end (a crash mid-write) is cut off.
func (rs *Results) fileLocked(b uint64) (*os.File, error) {
	if f := rs.files[b]; f != nil {
		return f, nil
	}
	p := rs.bucketPath(b)
	f, err := os.OpenFile(p, os.O_RDWR|os.O_CREATE, 0o640)
	if err != nil {
		return nil, err
	}
	end, err := validPrefix(f, func(uint64, []byte) {})
	if err == nil {
		var fi os.FileInfo
		if fi, err = f.Stat(); err == nil {
			if fi.Size() == 0 {
				rs.newDir = true
			}
			if fi.Size() != end {
				err = f.Truncate(end)
			}
		}
	}
	if err == nil {
		_, err = f.Seek(end, io.SeekStart)
	}
	if err != nil {
		f.Close()
		return nil, err
	}
	rs.files[b] = f
	return f, nil
}

// validPrefix reads f's frames from the start, calling fn with each
// intact one, and returns where the intact frames end.
func validPrefix(f *os.File, fn func(id uint64, payload []byte)) (int64, error) {
	return scan(f, nil, fn)
}

// scan reads f's frames from the start, calling fn with each intact one
// that want accepts (every one if want is nil), and returns where the
// frames read end. A frame want refuses is skipped unread, its checksum
// unchecked, so that looking one result up costs a read of the file's
// frame headers and not of every response body in it.
func scan(f *os.File, want func(id uint64) bool, fn func(id uint64, payload []byte)) (int64, error) {
	sr := io.NewSectionReader(f, 0, 1<<62)
	r := bufio.NewReaderSize(sr, 64<<10)
	var off int64
	hdr := make([]byte, frameHeader)
	var buf []byte
	for {
		if _, err := io.ReadFull(r, hdr); err != nil {
			return off, nil
		}
		n := binary.LittleEndian.Uint32(hdr[0:])
		if n > maxFrame {
			return off, nil
		}
		id := binary.LittleEndian.Uint64(hdr[8:])
		next := off + int64(frameHeader) + int64(n)
		if want != nil && !want(id) {
			if int(n) <= r.Buffered() {
				r.Discard(int(n))
			} else {
				if _, err := sr.Seek(next, io.SeekStart); err != nil {
					return off, err
				}
				r.Reset(sr)
			}
			off = next
			continue
		}
		if cap(buf) < int(n) {
			buf = make([]byte, n)
		}
		buf = buf[:n]
		if _, err := io.ReadFull(r, buf); err != nil {
			return off, nil
		}
		c := crc32.Update(crc32.Checksum(hdr[8:], castagnoli), castagnoli, buf)
		if c != binary.LittleEndian.Uint32(hdr[4:]) {
			return off, nil
		}
		fn(id, buf)
		off = next
	}
}

// Flush makes every result whose Put returned before Flush was called
// durable. Puts may go on meanwhile; they are for the next Flush.
func (rs *Results) Flush() error {
	rs.flushMu.Lock()
	defer rs.flushMu.Unlock()
	rs.mu.Lock()
	var files []*os.File
	var buckets []uint64
	for b := range rs.dirty {
		files = append(files, rs.files[b])
		buckets = append(buckets, b)
	}
	clear(rs.dirty)
	newDir := rs.newDir
	rs.newDir = false
	rs.mu.Unlock()

	var err error
	for _, f := range files {
		if serr := durable.Fdatasync(f); serr != nil && err == nil {
			err = serr
		}
	}
	if err == nil && newDir {
		err = durable.SyncDir(rs.dir)
	}
	rs.mu.Lock()
	defer rs.mu.Unlock()
	if err != nil {
		for _, b := range buckets {
			rs.dirty[b] = true
		}
		rs.newDir = rs.newDir || newDir
		return fmt.Errorf("results: fsync: %w", err)
	}
	// Keep the two newest buckets open; the others are done with.
	open := slices.Sorted(maps.Keys(rs.files))
	for i, b := range open {
		if i < len(open)-2 && !rs.dirty[b] {
			rs.files[b].Close()
			delete(rs.files, b)
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
	f, err := os.Open(rs.bucketPath(n >> bucketShift))
	if errors.Is(err, os.ErrNotExist) {
		return nil, ErrNoResult
	}
	if err != nil {
		return nil, fmt.Errorf("results: %w", err)
	}
	defer f.Close()
	var last []byte
	if _, err := scan(f, func(got uint64) bool { return got == n }, func(_ uint64, payload []byte) {
		last = append(last[:0], payload...)
	}); err != nil {
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
// the results whose callback is still owed. Run it once, at start.
func (rs *Results) Owed() []*Result {
	des, err := os.ReadDir(rs.dir)
	if err != nil {
		return nil
	}
	cutoff := rs.now().Add(-rs.retention)
	var owed []*Result
	for _, de := range des {
		b, ok := bucketOf(de.Name())
		if !ok {
			continue
		}
		f, err := os.Open(filepath.Join(rs.dir, de.Name()))
		if err != nil {
			continue
		}
		latest := map[uint64]*Result{}
		var newest time.Time
		validPrefix(f, func(id uint64, payload []byte) {
			var r Result
			if json.Unmarshal(payload, &r) != nil {
				return
			}
			latest[id] = &r
			if r.Finished.After(newest) {
				newest = r.Finished
			}
		})
		f.Close()
		rs.mu.Lock()
		if newest.After(rs.newest[b]) {
			rs.newest[b] = newest
		}
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

func bucketOf(name string) (uint64, bool) {
	h, ok := strings.CutSuffix(name, ".log")
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
		if f := rs.files[b]; f != nil {
			f.Close()
			delete(rs.files, b)
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
	for b, f := range rs.files {
		f.Close()
		delete(rs.files, b)
	}
	return nil
}

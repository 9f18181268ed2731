package framelog

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sync"

	"github.com/misaki-io/misaki/internal/durable"
)

// SyncPolicy says what Commit waits for; the package doc gives each one's
// loss window.
type SyncPolicy string

// Fsync policies.
const (
	SyncAlways   SyncPolicy = "always"
	SyncInterval SyncPolicy = "interval"
	SyncNone     SyncPolicy = "none"
)

// Op names a file-system call a Failpoint can fail.
type Op string

// The calls a Failpoint is asked about.
const (
	OpWrite    Op = "write"
	OpSync     Op = "fsync" // fdatasync of a log, or fsync of its directory
	OpRename   Op = "rename"
	OpTruncate Op = "truncate"
)

// Failpoint is asked before each write, fsync, rename and truncate of
// path; an error fails the call instead of making it. A failed write
// writes the first half of its bytes first, as a disk that fills up
// mid-write does. Tests set it; production code leaves it nil.
type Failpoint func(op Op, path string) error

// Options configure a Log. The zero value of each field is its default.
type Options struct {
	// Sync is the fsync policy Commit follows. Default SyncAlways.
	Sync SyncPolicy
	// MaxPayload bounds a frame's payload; a length field past it is
	// damage. Default DefaultMaxPayload.
	MaxPayload int
	// BeforeSync, if set, runs before every fdatasync of the log, after
	// the range that fsync covers is fixed; an error fails the Sync.
	BeforeSync func() error
	// OnDamage, if set, is called by Open with each span its scan skips or
	// cuts, before anything is cut.
	OnDamage func(Span)
	// Failpoint fails file-system calls on purpose, for tests.
	Failpoint Failpoint
}

// Log is one append-only file of frames, open for appending.
//
// Positions: Append returns the frame's offset in the file and the log's
// position after it (bytes appended since the log was opened, never
// reused even when Reset cuts the file); Sync and Commit take positions.
//
// Lock order: mu, then syncMu.
type Log struct {
	path string
	opts Options

	mu     sync.Mutex // guards the fields below
	f      *os.File
	size   int64  // the file's length: where the next append goes
	pos    uint64 // bytes appended since Open
	closed bool

	syncMu   sync.Mutex // guards the fields below
	synced   uint64     // position known durable
	syncing  bool       // a Sync is running fdatasync
	syncDone *sync.Cond
	// A failed fsync covered (failFrom, failTo]: Syncs of those positions
	// fail with failErr.
	failFrom, failTo uint64
	failErr          error
	syncs            int64
}

// Open opens the log at path for appending, creating it (and fsyncing its
// directory) if it is missing. It scans the log first, calling fn (if
// set) with each intact frame in order, skipping damage, and cuts a bad
// tail off. An error from fn ends the scan and is returned.
func Open(path string, opts Options, fn func(Frame) error) (*Log, Report, error) {
	_, statErr := os.Stat(path)
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o640)
	if err != nil {
		return nil, Report{}, err
	}
	l := newLog(path, opts, f)
	rep, err := l.recover(fn, errors.Is(statErr, fs.ErrNotExist))
	if err != nil {
		f.Close()
		return nil, rep, err
	}
	return l, rep, nil
}

// Create creates a new, empty log at path (an existing file is an error)
// and fsyncs its directory.
func Create(path string, opts Options) (*Log, error) {
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE|os.O_EXCL, 0o640)
	if err != nil {
		return nil, err
	}
	l := newLog(path, opts, f)
	if err := l.syncDir(); err != nil {
		f.Close()
		os.Remove(path)
		return nil, err
	}
	return l, nil
}

func newLog(path string, opts Options, f *os.File) *Log {
	if opts.Sync == "" {
		opts.Sync = SyncAlways
	}
	opts.MaxPayload = maxPayload(opts.MaxPayload)
	l := &Log{path: path, opts: opts, f: f}
	l.syncDone = sync.NewCond(&l.syncMu)
	return l
}

func (l *Log) recover(fn func(Frame) error, created bool) (Report, error) {
	st, err := l.f.Stat()
	if err != nil {
		return Report{}, err
	}
	sc := NewScanner(l.f, st.Size(), l.opts.MaxPayload)
	sc.OnDamage = l.opts.OnDamage
	for sc.Next() {
		if fn != nil {
			if err := fn(sc.Frame()); err != nil {
				return sc.Report(), err
			}
		}
	}
	rep := sc.Report()
	if err := sc.Err(); err != nil {
		return rep, fmt.Errorf("framelog: read %s: %w", l.path, err)
	}
	if rep.End < st.Size() {
		if err := l.truncate(rep.End); err != nil {
			return rep, err
		}
		if err := l.fdatasync(); err != nil {
			return rep, err
		}
	}
	l.size = rep.End
	if created {
		if err := l.syncDir(); err != nil {
			return rep, err
		}
	}
	return rep, nil
}

// Path returns the log's file name.
func (l *Log) Path() string { return l.path }

// Append writes frames (one or more, from AppendFrame) at the end of the
// log in one write, and returns where they start and the log's position
// after them. They are readable at once, durable after a Sync that covers
// the position. A failed write is cut back, so the log still ends on a
// frame boundary; its error names the file.
func (l *Log) Append(frames []byte) (off int64, pos uint64, err error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.closed {
		return 0, 0, ErrClosed
	}
	off = l.size
	if err := l.writeAt(frames, off); err != nil {
		// The size is unchanged, so the next append overwrites whatever
		// part was written even if the cut fails too.
		if terr := l.truncate(off); terr != nil {
			err = errors.Join(err, terr)
		}
		return 0, 0, err
	}
	l.size += int64(len(frames))
	l.pos += uint64(len(frames))
	return off, l.pos, nil
}

// Commit returns once the append up to pos may be acknowledged under the
// log's fsync policy: after a Sync under SyncAlways, at once otherwise.
func (l *Log) Commit(pos uint64) error {
	if l.opts.Sync == SyncAlways {
		return l.Sync(pos)
	}
	return nil
}

// Sync returns once everything appended up to pos is durable. Concurrent
// calls share one fdatasync: one caller runs it for everything appended
// before it started, and the others wait for it (group commit).
func (l *Log) Sync(pos uint64) error {
	l.syncMu.Lock()
	defer l.syncMu.Unlock()
	for {
		if l.failErr != nil && pos > l.failFrom && pos <= l.failTo {
			return l.failErr
		}
		if l.synced >= pos {
			return nil
		}
		if l.syncing {
			l.syncDone.Wait()
			continue
		}
		l.syncing = true
		from := l.synced
		l.syncMu.Unlock()
		target, err := l.syncOnce()
		l.syncMu.Lock()
		l.syncing = false
		l.syncDone.Broadcast()
		switch {
		case errors.Is(err, ErrClosed):
			return err
		case err != nil:
			if l.failErr == nil || from < l.failFrom {
				l.failFrom = from
			}
			l.failTo, l.failErr = max(l.failTo, target), err
		default:
			l.synced = max(l.synced, target)
		}
	}
}

// syncOnce runs one fdatasync of everything appended so far, and returns
// the position it covers.
func (l *Log) syncOnce() (uint64, error) {
	l.mu.Lock()
	target, closed := l.pos, l.closed
	l.mu.Unlock()
	if closed {
		return 0, ErrClosed
	}
	if h := l.opts.BeforeSync; h != nil {
		if err := h(); err != nil {
			return target, fmt.Errorf("framelog: before fsync of %s: %w", l.path, err)
		}
	}
	if err := l.fdatasync(); err != nil {
		return target, err
	}
	l.syncMu.Lock()
	l.syncs++
	l.syncMu.Unlock()
	return target, nil
}

// Reset empties the log but for head, which must be the length of the
// log's first frame (the spool's segment start): head is written over the
// first frame and fsynced before the rest is cut, so a crash between the
// two leaves head and frames the user has finished with. Appends wait.
func (l *Log) Reset(head []byte) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.closed {
		return ErrClosed
	}
	if err := l.writeAt(head, 0); err != nil {
		return err
	}
	l.pos += uint64(len(head))
	if h := l.opts.BeforeSync; h != nil {
		if err := h(); err != nil {
			return fmt.Errorf("framelog: before fsync of %s: %w", l.path, err)
		}
	}
	if err := l.fdatasync(); err != nil {
		return err
	}
	l.syncMu.Lock()
	l.synced = max(l.synced, l.pos)
	l.syncs++
	l.syncMu.Unlock()
	if err := l.truncate(int64(len(head))); err != nil {
		return err
	}
	l.size = int64(len(head))
	return l.fdatasync()
}

// ReadAt reads the log's bytes at off.
func (l *Log) ReadAt(b []byte, off int64) (int, error) { return l.f.ReadAt(b, off) }

// Size returns the log's length in bytes.
func (l *Log) Size() int64 {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.size
}

// Pos returns the log's position: bytes appended since Open.
func (l *Log) Pos() uint64 {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.pos
}

// Synced returns the position known durable.
func (l *Log) Synced() uint64 {
	l.syncMu.Lock()
	defer l.syncMu.Unlock()
	return l.synced
}

// Dirty reports whether frames were appended that no fsync has covered
// yet, successfully or not.
func (l *Log) Dirty() bool {
	pos := l.Pos()
	l.syncMu.Lock()
	defer l.syncMu.Unlock()
	return pos > l.synced && (l.failErr == nil || pos > l.failTo)
}

// Syncs returns how many fdatasyncs of appended frames the log has run.
func (l *Log) Syncs() int64 {
	l.syncMu.Lock()
	defer l.syncMu.Unlock()
	return l.syncs
}

// Close syncs what was appended and closes the file. Positions synced
// before stay synced: a Sync of one returns nil after Close.
func (l *Log) Close() error {
	l.mu.Lock()
	if l.closed {
		l.mu.Unlock()
		return nil
	}
	pos := l.pos
	l.mu.Unlock()
	err := l.Sync(pos)
	l.mu.Lock()
	l.closed = true
	l.mu.Unlock()
	l.syncMu.Lock()
	for l.syncing {
		l.syncDone.Wait()
	}
	l.syncMu.Unlock()
	return errors.Join(err, l.f.Close())
}

// The calls the failpoint is asked about. Errors name the file.

func (l *Log) fail(op Op, path string) error {
	if fp := l.opts.Failpoint; fp != nil {
		return fp(op, path)
	}
	return nil
}

func (l *Log) writeAt(b []byte, off int64) error {
	if err := l.fail(OpWrite, l.path); err != nil {
		l.f.WriteAt(b[:len(b)/2], off)
		return &os.PathError{Op: "write", Path: l.path, Err: err}
	}
	_, err := l.f.WriteAt(b, off)
	return err // an *os.PathError, which names the file
}

func (l *Log) fdatasync() error {
	err := l.fail(OpSync, l.path)
	if err == nil {
		err = durable.Fdatasync(l.f)
	}
	if err != nil {
		return &os.PathError{Op: "fdatasync", Path: l.path, Err: err}
	}
	return nil
}

func (l *Log) truncate(size int64) error {
	if err := l.fail(OpTruncate, l.path); err != nil {
		return &os.PathError{Op: "truncate", Path: l.path, Err: err}
	}
	return l.f.Truncate(size)
}

func (l *Log) syncDir() error {
	return syncDir(filepath.Dir(l.path), l.opts.Failpoint)
}

func syncDir(dir string, fp Failpoint) error {
	var err error
	if fp != nil {
		err = fp(OpSync, dir)
	}
	if err == nil {
		err = durable.SyncDir(dir)
	}
	if err != nil {
		var pe *os.PathError
		if !errors.As(err, &pe) {
			err = &os.PathError{Op: "fsync", Path: dir, Err: err}
		}
	}
	return err
}

package spool

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"os"

	"github.com/misaki-io/misaki/internal/framelog"
)

// segmentReader is a segment open for reading: the active one's log, or a
// sealed one's file.
type segmentReader interface {
	io.ReaderAt
	Close() error
}

func segName(ord uint32) string { return fmt.Sprintf("seg-%08x.log", ord) }

// appendLocked writes b at the end of the active segment. On failure
// (disk full) the segment is cut back, so a later append starts on a frame
// boundary.
func (s *Spool) appendLocked(b []byte) error {
	_, _, err := s.active.Append(b)
	return err
}

// sealIfFullLocked seals the active segment once it is full: it is
// fsynced (so everything in it is durable) and a new one started.
func (s *Spool) sealIfFullLocked() error {
	if s.active.Size() < s.opts.SegmentBytes {
		return nil
	}
	old, oldOrd := s.active, s.activeOrd
	if err := old.Sync(old.Pos()); err != nil {
		return err
	}
	if err := s.createSegmentLocked(oldOrd + 1); err != nil {
		return err
	}
	s.stats.Fsyncs += old.Syncs()
	s.sealed[oldOrd] = old
	return nil
}

// createSegmentLocked starts segment ord, with its start frame.
func (s *Spool) createSegmentLocked(ord uint32) error {
	l, err := framelog.Create(s.path(segName(ord)), s.logOptions(ord, true))
	if err != nil {
		return err
	}
	s.active, s.activeOrd = l, ord
	s.segments = append(s.segments, ord)
	return s.appendLocked(s.startFrame())
}

// startFrame is a segment's first frame: the next sequence number, so that
// numbers never repeat even when every record has been drained.
func (s *Spool) startFrame() []byte {
	return framelog.AppendFrame(nil, typeStart, binary.LittleEndian.AppendUint64(nil, s.nextSeq))
}

// resetActiveAt is the size past which a drained active segment is cut
// back to its start frame.
const resetActiveAt = 64 << 10

// resetActiveLocked empties the active segment once the whole spool is
// drained, so the space comes back without creating a file (which a full
// disk would refuse). The start frame is rewritten in place with the
// current next sequence number and fsynced before the cut (framelog's
// Reset): a crash in between leaves only finished records behind it.
func (s *Spool) resetActiveLocked() {
	if err := s.active.Reset(s.startFrame()); err != nil {
		s.log.Warn("emptying the drained segment", "segment", s.activeOrd, "err", err)
		return
	}
	s.unlinkDurableLocked()
}

// reclaimLocked removes sealed segments with no live record, oldest
// first: a done frame in a later segment may still refer to a record in an
// earlier one, so an earlier segment never outlives a later one's removal.
// Once the whole spool is drained, it cuts the active segment back too
// (resetActiveLocked), if that holds resetActiveAt bytes or more.
func (s *Spool) reclaimLocked() {
	for len(s.segments) > 1 && s.liveBySegment[s.segments[0]] == 0 {
		ord := s.segments[0]
		if f := s.sealed[ord]; f != nil {
			f.Close()
			delete(s.sealed, ord)
		}
		if err := os.Remove(s.path(segName(ord))); err != nil && !errors.Is(err, os.ErrNotExist) {
			s.log.Warn("removing a drained segment", "segment", ord, "err", err)
			return
		}
		delete(s.liveBySegment, ord)
		s.segments = s.segments[1:]
	}
	if len(s.segments) == 1 && s.liveRecords == 0 && s.active.Size() >= resetActiveAt {
		s.resetActiveLocked()
	}
}

// segmentFileLocked returns segment ord open for reading.
func (s *Spool) segmentFileLocked(ord uint32) (segmentReader, error) {
	if ord == s.activeOrd {
		return s.active, nil
	}
	if f := s.sealed[ord]; f != nil {
		return f, nil
	}
	f, err := os.Open(s.path(segName(ord)))
	if err != nil {
		return nil, err
	}
	s.sealed[ord] = f
	return f, nil
}

func (s *Spool) closeFiles() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.closeFilesLocked()
}

// closeFilesLocked closes the files and releases the index (Close, or a
// failed Open), and returns the active segment's last fsync's error.
func (s *Spool) closeFilesLocked() error {
	for _, q := range s.queues {
		q.release()
	}
	var err error
	if s.active != nil {
		err = s.active.Close()
	}
	for ord, f := range s.sealed {
		f.Close()
		delete(s.sealed, ord)
	}
	return err
}

package spool

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"os"
	"slices"
	"strconv"
	"strings"

	"github.com/misaki-io/misaki/internal/durable"
)

// scanChunk is how much of a segment recovery reads at once.
const scanChunk = 1 << 20

// recover rebuilds the index from the segment files.
func (s *Spool) recover() error {
	names, err := os.ReadDir(s.opts.Dir)
	if err != nil {
		return fmt.Errorf("spool: %w", err)
	}
	var ords []uint32
	for _, de := range names {
		n := de.Name()
		if !strings.HasPrefix(n, "seg-") || !strings.HasSuffix(n, ".log") {
			continue
		}
		ord, err := strconv.ParseUint(strings.TrimSuffix(strings.TrimPrefix(n, "seg-"), ".log"), 16, 32)
		if err != nil {
			continue
		}
		ords = append(ords, uint32(ord))
	}
	slices.Sort(ords)
	s.mu.Lock()
	defer s.mu.Unlock()
	for i, ord := range ords {
		last := i == len(ords)-1
		f, err := os.OpenFile(s.path(segName(ord)), os.O_RDWR, 0)
		if err != nil {
			return fmt.Errorf("spool: open segment %d: %w", ord, err)
		}
		end, err := s.scanSegment(f, ord, last)
		if err != nil {
			f.Close()
			return fmt.Errorf("spool: read segment %d: %w", ord, err)
		}
		s.segs = append(s.segs, ord)
		if last {
			s.active, s.activeOrd, s.size = f, ord, end
		} else {
			f.Close()
		}
	}
	if s.active == nil {
		if err := s.createSegmentLocked(0); err != nil {
			return fmt.Errorf("spool: create segment: %w", err)
		}
	}
	// Everything recovered is on disk as far as this process knows.
	s.synced = s.lsn
	for _, q := range s.queues {
		q.compact()
		if q.live == 0 {
			delete(s.queues, q.route)
		}
	}
	s.reclaimLocked()
	s.removeOrphanBodies()
	s.log.Info("spool opened", "dir", s.opts.Dir, "records", s.records, "bytes", s.bytes,
		"segments", len(s.segs), "damagedSpans", s.stats.DamagedSpans, "tornBytes", s.stats.TornBytes)
	return nil
}

// scanSegment indexes one segment's frames and returns the offset where
// appending may go on. Damage is quarantined: a span of bad bytes followed
// by a good frame is copied out and skipped; at the end of the newest
// segment, the bad tail is copied out and cut off (a write the crash left
// unfinished, most likely).
func (s *Spool) scanSegment(f *os.File, ord uint32, last bool) (int64, error) {
	st, err := f.Stat()
	if err != nil {
		return 0, err
	}
	w := &window{f: f, size: st.Size()}
	off := int64(0)
	for off < w.size {
		typ, payload, n, ferr := w.frame(off)
		if ferr == nil {
			s.indexFrame(ord, off, n, typ, payload)
			off += int64(n)
			continue
		}
		if !errors.Is(ferr, errShortFrame) && !errors.Is(ferr, errBadFrame) {
			return 0, ferr
		}
		next, err := w.resync(off + 1)
		if err != nil {
			return 0, err
		}
		if next >= 0 {
			s.quarantine(ord, f, off, next)
			off = next
			continue
		}
		// The damage runs to the end of the file.
		if !last {
			s.quarantine(ord, f, off, w.size)
			return w.size, nil
		}
		torn, err := w.tornTail(off, ferr)
		if err != nil {
			return 0, err
		}
		if torn {
			s.stats.TornBytes += w.size - off
			s.copyOut(ord, f, off, w.size, "torn")
			s.log.Warn("cut an unfinished write from the newest segment", "segment", ord, "offset", off, "bytes", w.size-off)
		} else {
			s.quarantine(ord, f, off, w.size)
		}
		if err := f.Truncate(off); err != nil {
			return 0, err
		}
		if err := durable.Fdatasync(f); err != nil {
			return 0, err
		}
		return off, nil
	}
	return off, nil
}

// indexFrame applies one good frame to the index.
func (s *Spool) indexFrame(ord uint32, off int64, n int, typ byte, payload []byte) {
	s.lsn += uint64(n)
	switch typ {
	case typeStart:
		if len(payload) != 8 {
			s.damagedFrame(ord, off, n, errBadPayload)
			return
		}
		if next := binary.LittleEndian.Uint64(payload); next > s.nextSeq {
			s.nextSeq = next
		}
	case typeRequest:
		m, err := skimRecord(payload)
		if err != nil {
			s.damagedFrame(ord, off, n, err)
			return
		}
		size := int64(n) + m.bodySize
		q := s.queues[string(m.route)]
		if q == nil {
			q = s.queueLocked(string(m.route))
		}
		if len(q.entries) > 0 && q.entries[len(q.entries)-1].seq >= m.seq {
			s.damagedFrame(ord, off, n, fmt.Errorf("sequence %d out of order", m.seq))
			return
		}
		q.priority = m.priority
		q.push(entry{
			seq: m.seq, seg: ord, off: uint32(off), size: uint32(size),
			enq: uint32(m.enqueued / 1e9), exp: expirySeconds(m.expires),
		})
		q.live++
		q.bytes += size
		s.segLive[ord]++
		s.records++
		s.bytes += size
		if m.bodyFile != "" {
			s.bodies[m.seq] = m.bodyFile
		}
		if m.seq >= s.nextSeq {
			s.nextSeq = m.seq + 1
		}
	case typeDone:
		seq, _, err := decodeDone(payload)
		if err != nil {
			s.damagedFrame(ord, off, n, err)
			return
		}
		if q, i := s.findLocked(seq); q != nil {
			e := q.entries[i]
			q.remove(i)
			s.records--
			s.bytes -= int64(e.size)
			s.segLive[e.seg]--
			delete(s.bodies, seq)
		}
	case typeAttempt:
		seq, err := decodeAttempt(payload)
		if err != nil {
			s.damagedFrame(ord, off, n, err)
			return
		}
		if q, i := s.findLocked(seq); q != nil && q.entries[i].attempts < 1<<16-1 {
			q.entries[i].attempts++
		}
	}
}

// damagedFrame handles a frame whose checksum is good but whose payload
// does not decode (a bug or a format from elsewhere): counted, skipped.
func (s *Spool) damagedFrame(ord uint32, off int64, n int, err error) {
	s.stats.DamagedSpans++
	s.stats.DamagedBytes += int64(n)
	s.log.Warn("undecodable record skipped", "segment", ord, "offset", off, "err", err)
}

// quarantine copies a damaged span out and counts it.
func (s *Spool) quarantine(ord uint32, f *os.File, from, to int64) {
	s.stats.DamagedSpans++
	s.stats.DamagedBytes += to - from
	s.copyOut(ord, f, from, to, "damaged")
	s.log.Warn("damaged bytes quarantined", "segment", ord, "offset", from, "bytes", to-from)
}

// copyOut saves bytes [from, to) of segment ord in the quarantine
// directory, so that nothing recovery skips or cuts is destroyed.
func (s *Spool) copyOut(ord uint32, f *os.File, from, to int64, kind string) {
	name := s.path("quarantine", fmt.Sprintf("seg-%08x-%012x.%s", ord, from, kind))
	out, err := os.OpenFile(name, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o640)
	if err != nil {
		s.log.Error("quarantine", "err", err)
		return
	}
	_, err = io.Copy(out, io.NewSectionReader(f, from, to-from))
	if cerr := out.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		s.log.Error("quarantine", "err", err)
	}
}

// removeOrphanBodies removes body files no live record refers to: left
// by a crash between writing a body and its record, or after a record's
// done frame became durable.
func (s *Spool) removeOrphanBodies() {
	live := make(map[string]bool, len(s.bodies))
	for _, name := range s.bodies {
		live[name] = true
	}
	des, err := os.ReadDir(s.path("bodies"))
	if err != nil {
		s.log.Warn("listing body files", "err", err)
		return
	}
	for _, de := range des {
		if !live[de.Name()] {
			os.Remove(s.path("bodies", de.Name()))
		}
	}
}

// recordMeta is what the index needs of a request record.
type recordMeta struct {
	seq               uint64
	enqueued, expires int64
	priority          int
	route             []byte
	bodyFile          string
	bodySize          int64
}

// skimRecord reads a request payload's index fields without decoding
// its headers or copying its body.
func skimRecord(p []byte) (recordMeta, error) {
	d := &decoder{b: p}
	m := recordMeta{seq: d.uvarint(), enqueued: d.varint(), expires: d.varint(), priority: int(d.varint())}
	m.route = d.bytes()
	for range 4 { // method, URL, idempotency key, callback
		d.bytes()
	}
	nh := d.uvarint()
	if nh > uint64(len(d.b)) {
		return m, errBadPayload
	}
	for range nh {
		d.bytes()
		nv := d.uvarint()
		if nv > uint64(len(d.b)) {
			return m, errBadPayload
		}
		for range nv {
			d.bytes()
		}
		if d.err != nil {
			return m, d.err
		}
	}
	switch d.byte() {
	case bodyInline:
		d.bytes()
	case bodyFile:
		m.bodyFile = string(d.bytes())
		m.bodySize = int64(d.uvarint())
		if len(d.b) < 4 {
			return m, errBadPayload
		}
		d.b = d.b[4:]
		if d.err == nil && !validBodyName(m.bodyFile) {
			return m, errBadPayload
		}
	default:
		d.err = errBadPayload
	}
	if d.err == nil && len(d.b) != 0 {
		d.err = errBadPayload
	}
	return m, d.err
}

// window reads a file through one buffer, for recovery's sequential scan.
type window struct {
	f    *os.File
	size int64
	base int64
	buf  []byte
}

// at returns the bytes [off, off+n), fewer at the end of the file.
func (w *window) at(off int64, n int) ([]byte, error) {
	if off >= w.base && off+int64(n) <= w.base+int64(len(w.buf)) {
		return w.buf[off-w.base : off-w.base+int64(n)], nil
	}
	want := int64(max(n, scanChunk))
	if want > w.size-off {
		want = w.size - off
	}
	if int64(cap(w.buf)) < want {
		w.buf = make([]byte, want)
	}
	w.buf = w.buf[:want]
	if _, err := w.f.ReadAt(w.buf, off); err != nil && err != io.EOF {
		return nil, err
	}
	w.base = off
	return w.buf[:min(int64(n), want)], nil
}

// frame reads the frame at off.
func (w *window) frame(off int64) (typ byte, payload []byte, n int, err error) {
	b, err := w.at(off, frameHeader)
	if err != nil {
		return 0, nil, 0, err
	}
	if len(b) == frameHeader && b[0] == magic0 && b[1] == magic1 {
		if l := binary.LittleEndian.Uint32(b[4:8]); l <= maxPayload {
			if b, err = w.at(off, frameHeader+int(l)); err != nil {
				return 0, nil, 0, err
			}
		}
	}
	return readFrame(b)
}

// tornTail reports whether the bad tail from off looks like a write the
// crash left unfinished: a frame cut short, or zeros (a file system may
// extend a file before the data reaches it).
func (w *window) tornTail(off int64, ferr error) (bool, error) {
	if errors.Is(ferr, errShortFrame) {
		return true, nil
	}
	for o := off; o < w.size; {
		b, err := w.at(o, scanChunk)
		if err != nil {
			return false, err
		}
		for _, c := range b {
			if c != 0 {
				return false, nil
			}
		}
		o += int64(len(b))
	}
	return true, nil
}

// resync returns the offset of the first good frame at or after from, or
// -1 if there is none.
func (w *window) resync(from int64) (int64, error) {
	for off := from; off < w.size; {
		b, err := w.at(off, scanChunk)
		if err != nil {
			return 0, err
		}
		i := bytes.IndexByte(b, magic0)
		if i < 0 {
			off += int64(len(b))
			continue
		}
		off += int64(i)
		if _, _, _, err := w.frame(off); err == nil {
			return off, nil
		}
		off++
	}
	return -1, nil
}

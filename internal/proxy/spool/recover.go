package spool

import (
	"encoding/binary"
	"fmt"
	"io"
	"os"
	"slices"
	"strconv"
	"strings"

	"github.com/misaki-io/misaki/internal/framelog"
)

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
		index := func(fr framelog.Frame) error {
			s.indexFrame(ord, fr.Off, int(fr.Len()), fr.Type, fr.Payload)
			return nil
		}
		if i == len(ords)-1 {
			// The newest segment is appended to: framelog cuts a bad tail.
			l, _, err := framelog.Open(s.path(segName(ord)), s.logOptions(ord, true), index)
			if err != nil {
				return fmt.Errorf("spool: open segment %d: %w", ord, err)
			}
			s.active, s.activeOrd = l, ord
		} else if err := s.scanSealed(ord, index); err != nil {
			return err
		}
		s.segments = append(s.segments, ord)
	}
	if s.active == nil {
		if err := s.createSegmentLocked(0); err != nil {
			return fmt.Errorf("spool: create segment: %w", err)
		}
	}
	for _, q := range s.queues {
		q.compact()
		if q.live == 0 {
			delete(s.queues, q.route)
		}
	}
	s.reclaimLocked()
	s.removeOrphanBodies()
	s.log.Info("spool opened", "dir", s.opts.Dir, "records", s.liveRecords, "bytes", s.liveBytes,
		"segments", len(s.segments), "damagedSpans", s.stats.DamagedSpans, "tornBytes", s.stats.TornBytes)
	return nil
}

// scanSealed indexes a sealed segment's frames, read only: damage is
// skipped (and quarantined by logOptions' OnDamage), nothing is cut.
func (s *Spool) scanSealed(ord uint32, index func(framelog.Frame) error) error {
	f, err := os.Open(s.path(segName(ord)))
	if err != nil {
		return fmt.Errorf("spool: open segment %d: %w", ord, err)
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return fmt.Errorf("spool: read segment %d: %w", ord, err)
	}
	sc := framelog.NewScanner(f, st.Size(), maxPayload)
	sc.OnDamage = s.logOptions(ord, false).OnDamage
	for sc.Next() {
		index(sc.Frame())
	}
	if err := sc.Err(); err != nil {
		return fmt.Errorf("spool: read segment %d: %w", ord, err)
	}
	return nil
}

// logOptions are segment ord's framelog options. Every span recovery
// skips or cuts is copied to quarantine/ first and counted: at the end of
// the newest segment (newest) a torn tail is a write the crash left
// unfinished; anywhere else, bad bytes are damage.
func (s *Spool) logOptions(ord uint32, newest bool) framelog.Options {
	return framelog.Options{
		Sync:       s.opts.Sync,
		MaxPayload: maxPayload,
		BeforeSync: s.opts.BeforeSync,
		Failpoint:  s.opts.Failpoint,
		OnDamage: func(sp framelog.Span) {
			if newest && sp.Torn {
				s.stats.TornBytes += sp.Len
				s.copyToQuarantine(ord, sp.Off, sp.Off+sp.Len, "torn")
				s.log.Warn("cut an unfinished write from the newest segment", "segment", ord, "offset", sp.Off, "bytes", sp.Len)
				return
			}
			s.quarantine(ord, sp.Off, sp.Off+sp.Len)
		},
	}
}

// indexFrame applies one good frame to the index.
func (s *Spool) indexFrame(ord uint32, off int64, n int, typ byte, payload []byte) {
	switch typ {
	case typeStart:
		if len(payload) != 8 {
			s.skipUndecodable(ord, off, n, errBadPayload)
			return
		}
		if next := binary.LittleEndian.Uint64(payload); next > s.nextSeq {
			s.nextSeq = next
		}
	case typeRequest:
		m, err := skimRecord(payload)
		if err != nil {
			s.skipUndecodable(ord, off, n, err)
			return
		}
		size := int64(n) + m.bodySize
		q := s.queues[string(m.route)]
		if q == nil {
			q = s.queueLocked(string(m.route))
		}
		if len(q.entries) > 0 && q.entries[len(q.entries)-1].seq >= m.seq {
			s.skipUndecodable(ord, off, n, fmt.Errorf("sequence %d out of order", m.seq))
			return
		}
		q.priority = m.priority
		q.push(entry{
			seq: m.seq, seg: ord, off: uint32(off), size: uint32(size),
			enq: uint32(m.enqueued / 1e9), exp: expirySeconds(m.expires),
		})
		q.live++
		q.bytes += size
		s.liveBySegment[ord]++
		s.liveRecords++
		s.liveBytes += size
		if m.bodyFile != "" {
			s.bodies[m.seq] = m.bodyFile
		}
		if m.seq >= s.nextSeq {
			s.nextSeq = m.seq + 1
		}
	case typeDone:
		seq, _, err := decodeDone(payload)
		if err != nil {
			s.skipUndecodable(ord, off, n, err)
			return
		}
		if q, i := s.findLocked(seq); q != nil {
			e := q.entries[i]
			q.markDone(i)
			s.liveRecords--
			s.liveBytes -= int64(e.size)
			s.liveBySegment[e.seg]--
			delete(s.bodies, seq)
		}
	case typeAttempt:
		seq, err := decodeAttempt(payload)
		if err != nil {
			s.skipUndecodable(ord, off, n, err)
			return
		}
		if q, i := s.findLocked(seq); q != nil && q.entries[i].attempts < 1<<16-1 {
			q.entries[i].attempts++
		}
	default:
		s.skipUndecodable(ord, off, n, fmt.Errorf("%w: frame type %d", errBadPayload, typ))
	}
}

// skipUndecodable handles a frame whose checksum is good but whose payload
// does not decode (a bug or a format from elsewhere): counted, skipped.
func (s *Spool) skipUndecodable(ord uint32, off int64, n int, err error) {
	s.stats.DamagedSpans++
	s.stats.DamagedBytes += int64(n)
	s.log.Warn("undecodable record skipped", "segment", ord, "offset", off, "err", err)
}

// quarantine copies a damaged span out and counts it.
func (s *Spool) quarantine(ord uint32, from, to int64) {
	s.stats.DamagedSpans++
	s.stats.DamagedBytes += to - from
	s.copyToQuarantine(ord, from, to, "damaged")
	s.log.Warn("damaged bytes quarantined", "segment", ord, "offset", from, "bytes", to-from)
}

// copyToQuarantine saves bytes [from, to) of segment ord in the quarantine
// directory, so that nothing recovery skips or cuts is destroyed.
func (s *Spool) copyToQuarantine(ord uint32, from, to int64, kind string) {
	f, err := os.Open(s.path(segName(ord)))
	if err != nil {
		s.log.Error("quarantine", "err", err)
		return
	}
	defer f.Close()
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

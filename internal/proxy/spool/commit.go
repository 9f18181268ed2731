package spool

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"time"

	"github.com/misaki-io/misaki/internal/framelog"
)

// SyncPolicy says when an enqueued record is forced to disk: framelog's
// policies, of which the spool takes two.
type SyncPolicy = framelog.SyncPolicy

const (
	// SyncAlways: Enqueue returns only after the record (and its body file)
	// is fsynced. Concurrent enqueues share one fsync (group commit).
	SyncAlways = framelog.SyncAlways
	// SyncInterval: Enqueue returns once the record is written to the
	// page cache; Run fsyncs every Options.SyncInterval.
	// A power loss or kernel crash loses at most the records of that last
	// interval; a crash of the proxy alone loses none.
	SyncInterval = framelog.SyncInterval
)

// Enqueue stores r, with its body read from body (nil: r.Body as it is),
// under the route's limits, and returns its sequence number. Under
// SyncAlways it returns once the record is on disk. r.Seq and r.Enqueued
// are set by the spool; r.Expires is kept (0: never).
func (s *Spool) Enqueue(r *Record, body io.Reader, lim Limits) (uint64, error) {
	if body == nil && len(r.Body) > s.opts.InlineMax {
		body, r.Body = bytes.NewReader(r.Body), nil
	}
	var bodyPath string
	if body != nil {
		var err error
		if bodyPath, err = s.stageBody(r, body); err != nil {
			return 0, err
		}
	}
	fail := func(err error) (uint64, error) {
		if bodyPath != "" {
			os.Remove(bodyPath)
		}
		return 0, err
	}
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return fail(ErrClosed)
	}
	r.Seq = s.nextSeq
	r.Enqueued = s.opts.Now().UnixNano()
	payload := appendRecord(nil, r)
	if len(payload) > maxPayload {
		s.mu.Unlock()
		return fail(fmt.Errorf("%w: a request head of %d bytes is too large to spool", ErrFull, len(payload)))
	}
	s.frameBuf = framelog.AppendFrame(s.frameBuf[:0], typeRequest, payload)
	size := int64(len(s.frameBuf)) + r.BodySize
	if err := s.makeRoomLocked(r.Route, size, lim); err != nil {
		s.stats.Rejected++
		s.mu.Unlock()
		return fail(err)
	}
	seg := s.active
	off, pos, err := seg.Append(s.frameBuf)
	if err != nil {
		s.mu.Unlock()
		return fail(fmt.Errorf("spool: append: %w", err))
	}
	s.nextSeq++
	q := s.queueLocked(r.Route)
	q.priority = r.Priority
	q.push(entry{
		seq: r.Seq, seg: s.activeOrd, off: uint32(off), size: uint32(size),
		enq: uint32(r.Enqueued / 1e9), exp: expirySeconds(r.Expires),
	})
	q.live++
	q.bytes += size
	s.liveBySegment[s.activeOrd]++
	s.liveRecords++
	s.liveBytes += size
	if r.BodyFile != "" {
		s.bodies[r.Seq] = r.BodyFile
	}
	s.stats.Enqueued++
	sealErr := s.sealIfFullLocked()
	s.mu.Unlock()
	if sealErr != nil {
		s.log.Error("sealing a full segment", "err", sealErr)
	}
	// Under SyncAlways, one fsync for every enqueue waiting (group
	// commit); sealing the segment meanwhile has synced it already.
	if err := seg.Commit(pos); err != nil {
		// Not acknowledged: take it back so it is never delivered.
		s.withdraw(r.Seq)
		return 0, fmt.Errorf("spool: %w", err)
	}
	return r.Seq, nil
}

// withdraw takes back a record whose fsync failed: it was not acknowledged.
func (s *Spool) withdraw(seq uint64) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if q, i := s.findLocked(seq); q != nil {
		s.finishLocked(q, i, Cancelled)
		s.stats.Cancelled--
		s.stats.Enqueued--
	}
}

// Run fsyncs every SyncInterval until ctx ends: under SyncInterval, and
// under either policy whenever frames that need no fsync of their own (done,
// attempt) are waiting; then it removes the body files of finished records
// whose done frames are durable.
func (s *Spool) Run(ctx context.Context) error {
	t := time.NewTicker(s.opts.SyncInterval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
		s.mu.Lock()
		active, closed := s.active, s.closed
		s.mu.Unlock()
		if closed {
			return nil
		}
		if active.Dirty() {
			if err := active.Sync(active.Pos()); err != nil && !errors.Is(err, framelog.ErrClosed) {
				s.log.Error("periodic fsync", "err", err)
			}
		}
		s.mu.Lock()
		if !s.closed {
			s.unlinkDurableLocked()
		}
		s.mu.Unlock()
	}
}

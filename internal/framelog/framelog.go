// Package framelog is the one append-only record log the proxy and the
// gateway keep on disk: the spool's segments, the replay results, the
// gateway's idempotency log and the DNS cache file are all sequences of
// frames written and recovered by this package, under one rule.
//
// # Frames
//
// A frame is a 12-byte header and a payload:
//
//	0  magic   "MS"
//	2  type    1–255, the user's (0 is never written)
//	3  flags   0
//	4  length  uint32 little endian, payload bytes
//	8  crc     uint32 little endian, CRC-32C (Castagnoli) of bytes 2..8 and the payload
//	12 payload
//
// This is the spool's frame as the releases before this package wrote it,
// so spool segments already on vehicles are read as they are. The magic
// lets a scan find the next frame after damage; the checksum covers the
// type and length too, so a flipped length is caught.
//
// # The one recovery rule
//
// A Scanner reads frames in order. A frame whose header or checksum is
// bad is skipped, and the scan goes on at the next offset that holds a
// whole frame with a good checksum, so every intact frame after damage is
// kept. A length field is never trusted past the log's MaxPayload, so
// garbage cannot make the search read more than that per candidate. What
// runs bad to the end of the file is the tail: torn (a frame cut short, or
// zeros, as a crash mid-write leaves) or damaged. Open, which opens a log
// for appending, cuts the tail off so appends continue on a frame boundary.
// Every span skipped or cut is reported (OnDamage, Report) for the user
// to count, log or quarantine.
//
// # Writes and fsync
//
// Append writes frames at the end of the log in one write; a failed write
// (a full disk) is cut back, so the log still ends on a frame boundary and
// the error names the file. Sync makes everything up to a position
// durable: concurrent callers share one fdatasync (group commit: one of
// them runs it for all that were appended before it started). A user that
// gathers concurrent appends into one buffer first, as the gateway's
// committer does, gets one write and one fdatasync per group. Commit is
// what the fsync policy asks before an append may be acknowledged:
//
//   - SyncAlways: Commit waits for the fsync. Nothing acknowledged is lost
//     to a crash or a power loss.
//   - SyncInterval: Commit returns at once and the owner fsyncs every
//     interval (the spool's Run). A crash of the process loses nothing (the
//     data is in the page cache); a power loss or kernel crash loses at
//     most the last interval.
//   - SyncNone: Commit returns at once; the owner calls Sync when it needs
//     to (the results log is synced just before each spool fsync) and Close
//     syncs. A power loss loses what was appended since the last Sync.
//
// A failed fsync fails every Sync waiting on it and every later Sync of a
// position it covered: after a failed fsync Linux may have dropped the
// dirty pages, and a second fsync would report success for data that never
// reached the disk. Later appends are fsynced afresh.
//
// WriteFile replaces a whole file of frames crash-safely (the DNS cache):
// a temporary file, fdatasynced, renamed over the old one, the directory
// fsynced.
//
// Options.Failpoint is asked before every write, fsync, rename and
// truncate, so tests make each one fail (a full disk, an I/O error)
// without mounting anything.
//
// # Why here and not a library
//
// bbolt rewrites B+tree pages and syncs twice per transaction; these logs
// are written once, in order, and read in order, so an append and one
// fdatasync per group is the whole cost. The Go write-ahead-log libraries
// (etcd's wal, tidwall/wal, hashicorp/raft-wal) are shaped for a Raft log:
// entries addressed by index, truncation at an index, and a damaged record
// treated as the end of the log or as an error; none reads the spool
// frames already on disk, and none keeps the intact records after damage,
// which is the point here. What is needed is a few hundred lines over the
// standard library and x/sys, which keeps the edge binary small.
package framelog

import (
	"encoding/binary"
	"errors"
	"hash/crc32"
)

// HeaderSize is the size of a frame's header.
const HeaderSize = 12

const (
	magic0 = 'M'
	magic1 = 'S'

	// DefaultMaxPayload is a log's MaxPayload when none is set.
	DefaultMaxPayload = 4 << 20
	// maxPayloadLimit bounds any log's MaxPayload.
	maxPayloadLimit = 1 << 30
)

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// Errors from decoding a frame.
var (
	// ErrShortFrame means the bytes end inside a frame whose header is
	// plausible: a write cut short at the end of a file.
	ErrShortFrame = errors.New("framelog: frame runs past the end")
	// ErrBadFrame means the bytes are not a frame: bad magic, flags,
	// type, length or checksum.
	ErrBadFrame = errors.New("framelog: damaged frame (bad magic, length or checksum)")
	// ErrClosed means the log is closed.
	ErrClosed = errors.New("framelog: log closed")
)

// AppendFrame appends a frame of type typ (1–255) around payload to dst.
func AppendFrame(dst []byte, typ byte, payload []byte) []byte {
	start := len(dst)
	dst = append(dst, magic0, magic1, typ, 0, 0, 0, 0, 0, 0, 0, 0, 0)
	binary.LittleEndian.PutUint32(dst[start+4:], uint32(len(payload)))
	dst = append(dst, payload...)
	crc := crc32.Update(0, castagnoli, dst[start+2:start+8])
	crc = crc32.Update(crc, castagnoli, payload)
	binary.LittleEndian.PutUint32(dst[start+8:], crc)
	return dst
}

// ReadFrame decodes the frame at the start of b, whose payload may be at
// most max bytes: its type, its payload (a slice of b) and its total
// length. ErrShortFrame means b ends inside a frame whose header is
// plausible; ErrBadFrame means the bytes are not a frame.
func ReadFrame(b []byte, max int) (typ byte, payload []byte, n int, err error) {
	length, err := header(b, max)
	if err != nil {
		return 0, nil, 0, err
	}
	end := HeaderSize + length
	if len(b) < end {
		return 0, nil, 0, ErrShortFrame
	}
	crc := crc32.Update(0, castagnoli, b[2:8])
	crc = crc32.Update(crc, castagnoli, b[HeaderSize:end])
	if crc != binary.LittleEndian.Uint32(b[8:12]) {
		return 0, nil, 0, ErrBadFrame
	}
	return b[2], b[HeaderSize:end], end, nil
}

// header checks the header at the start of b, as much of it as b holds,
// and returns the payload length.
func header(b []byte, max int) (int, error) {
	switch {
	case len(b) > 0 && b[0] != magic0,
		len(b) > 1 && b[1] != magic1,
		len(b) > 2 && b[2] == 0,
		len(b) > 3 && b[3] != 0:
		return 0, ErrBadFrame
	case len(b) < HeaderSize:
		return 0, ErrShortFrame
	}
	length := binary.LittleEndian.Uint32(b[4:8])
	if uint64(length) > uint64(max) {
		return 0, ErrBadFrame
	}
	return int(length), nil
}

// isFrameErr reports whether err is a decoding error rather than a read's.
func isFrameErr(err error) bool {
	return errors.Is(err, ErrShortFrame) || errors.Is(err, ErrBadFrame)
}

// maxPayload returns the payload bound a log or scan uses for max.
func maxPayload(max int) int {
	if max <= 0 {
		return DefaultMaxPayload
	}
	return min(max, maxPayloadLimit)
}

package h2guard

import "encoding/binary"

// Frame types and flags this package reads (RFC 9113, section 6).
const (
	frameData         = 0x0
	frameHeaders      = 0x1
	frameRSTStream    = 0x3
	frameSettings     = 0x4
	framePing         = 0x6
	frameGoAway       = 0x7
	frameContinuation = 0x9

	flagEndStream = 0x1 // DATA, HEADERS
	flagAck       = 0x1 // SETTINGS, PING
)

// Error codes (RFC 9113, section 7).
const (
	codeProtocol     = 0x1
	codeFlowControl  = 0x3
	codeStreamClosed = 0x5
	codeFrameSize    = 0x6
	codeCalm         = 0xb
)

// clientPreface is what a client sends before its first frame.
const clientPreface = "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"

// frame is a frame's header, and for RST_STREAM its error code.
type frame struct {
	length uint32
	typ    uint8
	flags  uint8
	stream uint32
	code   uint32 // RST_STREAM only
}

// scanner follows one direction of a connection, a stream of frames
// written in pieces of any size, by frame headers alone: it skips each
// payload, except RST_STREAM's error code. It allocates nothing.
type scanner struct {
	preface int     // preface bytes still to skip
	hdr     [9]byte // the frame header being read
	nhdr    int     // bytes of it read
	cur     frame   // the frame whose payload is being read
	need    int     // payload bytes to collect before cur is reported (RST_STREAM's code)
	pay     [4]byte // the payload bytes collected
	npay    int     // bytes of them collected
	skip    uint32  // payload bytes left to skip
	start   int     // offset in the current chunk where cur's header began (negative: in an earlier chunk)
}

// scan reads p, the next piece of the stream, calling fn with each frame
// once its header (and for RST_STREAM its code) is complete. If fn
// returns false, scan stops and returns false, the offset in p where that
// frame began (-1 if it began in an earlier piece), and the offset just
// after what was read of it: the header, and RST_STREAM's code, so its
// end when the frame is well formed. Otherwise it returns true. A stopped
// scanner is not to be used again.
func (s *scanner) scan(p []byte, fn func(frame) bool) (ok bool, start, end int) {
	i := 0
	if s.preface > 0 {
		n := min(s.preface, len(p))
		s.preface -= n
		i = n
	}
	for i < len(p) {
		switch {
		case s.skip > 0:
			n := uint32(len(p) - i)
			if n > s.skip {
				n = s.skip
			}
			s.skip -= n
			i += int(n)
		case s.need > 0:
			n := copy(s.pay[s.npay:s.npay+s.need], p[i:])
			s.npay += n
			s.need -= n
			i += n
			if s.need == 0 {
				s.cur.code = binary.BigEndian.Uint32(s.pay[:])
				if !fn(s.cur) {
					return false, s.start, i
				}
				s.skip = s.cur.length - 4
			}
		default:
			if s.nhdr == 0 {
				s.start = i
			}
			n := copy(s.hdr[s.nhdr:], p[i:])
			s.nhdr += n
			i += n
			if s.nhdr < len(s.hdr) {
				break
			}
			s.nhdr = 0
			h := s.hdr
			s.cur = frame{
				length: uint32(h[0])<<16 | uint32(h[1])<<8 | uint32(h[2]),
				typ:    h[3],
				flags:  h[4],
				stream: binary.BigEndian.Uint32(h[5:]) & (1<<31 - 1),
			}
			if s.cur.typ == frameRSTStream && s.cur.length >= 4 {
				s.need, s.npay = 4, 0
				break
			}
			if !fn(s.cur) {
				return false, s.start, i
			}
			s.skip = s.cur.length
		}
	}
	// The frame in progress, if any, began before the next piece.
	s.start = -1
	return true, len(p), len(p)
}

// finish reads p up to the end of the frame in progress, without
// reporting it, and returns how many bytes of p that took and whether
// the frame ended in p (then the stream is between frames). A stream
// between frames is finished at once.
func (s *scanner) finish(p []byte) (n int, done bool) {
	i := 0
	for !s.between() {
		if i == len(p) {
			return i, false
		}
		switch {
		case s.skip > 0:
			n := min(uint32(len(p)-i), s.skip)
			s.skip -= n
			i += int(n)
		case s.need > 0: // RST_STREAM's code: the rest of it, then the payload after it
			n := min(s.need, len(p)-i)
			s.need -= n
			i += n
			if s.need == 0 {
				s.skip = s.cur.length - 4
			}
		default:
			n := copy(s.hdr[s.nhdr:], p[i:])
			s.nhdr += n
			i += n
			if s.nhdr == len(s.hdr) {
				s.nhdr = 0
				s.skip = uint32(s.hdr[0])<<16 | uint32(s.hdr[1])<<8 | uint32(s.hdr[2])
			}
		}
	}
	return i, true
}

// between reports whether the stream is between frames.
func (s *scanner) between() bool { return s.nhdr == 0 && s.skip == 0 && s.need == 0 }

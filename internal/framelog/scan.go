package framelog

import (
	"bytes"
	"io"
)

// scanChunk is how much of a file a scan reads at once.
const scanChunk = 1 << 20

// Frame is one intact frame found by a scan.
type Frame struct {
	Off  int64 // where the frame starts
	Type byte
	// Payload is valid until the scanner's next call of Next.
	Payload []byte
}

// Len returns the frame's length on disk, header included.
func (f Frame) Len() int64 { return HeaderSize + int64(len(f.Payload)) }

// Span is a run of bytes a scan skipped.
type Span struct {
	Off, Len int64
	// Tail means the span runs to the end of the file: Open cuts it off.
	Tail bool
	// Torn means a tail that looks like a write a crash left unfinished (a
	// frame cut short, or zeros, which a file system may leave where it
	// extended the file before the data reached it); otherwise the bytes
	// are damage.
	Torn bool
}

// Report says what a scan found.
type Report struct {
	Frames       int   // intact frames
	Damaged      int   // spans of damage skipped, a damaged tail included
	DamagedBytes int64 // their bytes
	TornBytes    int64 // a torn tail's bytes
	// End is where the intact frames end: the file's size, or where the
	// tail starts.
	End int64
}

// Scanner reads a file's frames in order by the one recovery rule: a
// damaged frame is skipped and every intact frame after it kept.
//
//	sc := framelog.NewScanner(f, size, max)
//	for sc.Next() {
//		use(sc.Frame())
//	}
//	if err := sc.Err(); err != nil { ... }
type Scanner struct {
	// OnDamage, if set, is called with each span skipped, as it is found.
	OnDamage func(Span)

	r     io.ReaderAt
	size  int64
	max   int
	chunk int

	base int64 // the window: buf holds the file's bytes from base
	buf  []byte

	off    int64 // where the next frame is looked for
	frame  Frame
	report Report
	err    error

	peek    int
	want    func(typ byte, head []byte) bool
	stepped int64 // the last frame stepped over unchecked; -1: none
}

// NewScanner returns a scanner of the first size bytes of r, whose
// frames' payloads are at most max bytes (0: DefaultMaxPayload).
func NewScanner(r io.ReaderAt, size int64, max int) *Scanner {
	return &Scanner{r: r, size: size, max: maxPayload(max), chunk: scanChunk, stepped: -1,
		report: Report{End: size}}
}

// Filter makes the scan step over the frames that want refuses without
// reading their payloads past the first peek bytes (head) or checking
// their checksums: a lookup of one record reads the other frames' headers
// only. A frame stepped over whose length turns out not to lead to a
// frame is checked after all, and skipped as damage if it is bad, so
// damage still costs only the damaged frame. Report counts are then
// approximate: use a filter for lookups, not for recovery.
func (s *Scanner) Filter(peek int, want func(typ byte, head []byte) bool) {
	s.peek, s.want = peek, want
	s.chunk = 64 << 10 // stepping over large frames: read little past a header
}

// Next advances to the next intact frame, and reports whether there is one.
func (s *Scanner) Next() bool {
	for s.err == nil && s.off < s.size {
		off := s.off
		if s.want != nil {
			if n, typ, head, ok := s.plausible(off); ok && !s.want(typ, head) {
				s.stepped, s.off = off, off+int64(n)
				s.report.Frames++
				continue
			}
		}
		typ, payload, n, err := s.read(off)
		if err == nil {
			s.stepped = -1
			s.off = off + int64(n)
			s.report.Frames++
			s.frame = Frame{Off: off, Type: typ, Payload: payload}
			return true
		}
		if !isFrameErr(err) {
			s.err = err
			return false
		}
		if st := s.stepped; st >= 0 {
			// The frame stepped over may have had a bad length that led
			// here: check it, and skip from it if it is bad.
			s.stepped = -1
			if _, _, _, serr := s.read(st); serr != nil {
				if !isFrameErr(serr) {
					s.err = serr
					return false
				}
				s.report.Frames--
				off, err = st, serr
			}
		}
		s.skip(off, err)
	}
	return false
}

// Frame returns the frame Next found.
func (s *Scanner) Frame() Frame { return s.frame }

// Err returns the first read error (not damage, which is skipped).
func (s *Scanner) Err() error { return s.err }

// Report returns what the scan found so far.
func (s *Scanner) Report() Report { return s.report }

// skip steps over the damage at off, which failed with ferr: to the next
// intact frame, or to the end of the file.
func (s *Scanner) skip(off int64, ferr error) {
	next, err := s.resync(off + 1)
	if err != nil {
		s.err = err
		return
	}
	if next >= 0 {
		s.damage(Span{Off: off, Len: next - off})
		s.off = next
		return
	}
	torn, err := s.tornTail(off, ferr)
	if err != nil {
		s.err = err
		return
	}
	s.report.End = off
	s.damage(Span{Off: off, Len: s.size - off, Tail: true, Torn: torn})
	s.off = s.size
}

func (s *Scanner) damage(sp Span) {
	if sp.Torn {
		s.report.TornBytes += sp.Len
	} else {
		s.report.Damaged++
		s.report.DamagedBytes += sp.Len
	}
	if s.OnDamage != nil {
		s.OnDamage(sp)
	}
}

// at returns the bytes [off, off+n), fewer at the end of the file.
func (s *Scanner) at(off int64, n int) ([]byte, error) {
	n = int(min(int64(n), max(s.size-off, 0)))
	if off >= s.base && off+int64(n) <= s.base+int64(len(s.buf)) {
		return s.buf[off-s.base : off-s.base+int64(n)], nil
	}
	want := min(int64(max(n, s.chunk)), s.size-off)
	if int64(cap(s.buf)) < want {
		s.buf = make([]byte, want)
	}
	s.buf = s.buf[:want]
	got, err := s.r.ReadAt(s.buf, off)
	if err != nil && err != io.EOF {
		return nil, err
	}
	s.buf = s.buf[:got] // a file shorter than size: the scan ends there
	s.base = off
	return s.buf[:min(n, got)], nil
}

// read reads and checks the frame at off.
func (s *Scanner) read(off int64) (typ byte, payload []byte, n int, err error) {
	b, err := s.at(off, HeaderSize)
	if err != nil {
		return 0, nil, 0, err
	}
	length, err := header(b, s.max)
	if err != nil {
		return 0, nil, 0, err
	}
	if b, err = s.at(off, HeaderSize+length); err != nil {
		return 0, nil, 0, err
	}
	return ReadFrame(b, s.max)
}

// plausible reads the header at off and the first peek bytes of its
// payload, and reports whether it is a frame's that ends in the file.
func (s *Scanner) plausible(off int64) (n int, typ byte, head []byte, ok bool) {
	b, err := s.at(off, HeaderSize+s.peek)
	if err != nil {
		return 0, 0, nil, false
	}
	length, err := header(b, s.max)
	if err != nil || off+int64(HeaderSize+length) > s.size {
		return 0, 0, nil, false
	}
	return HeaderSize + length, b[2], b[HeaderSize:min(len(b), HeaderSize+length)], true
}

// resync returns the offset of the first intact frame at or after from,
// or -1 if there is none. Each candidate costs at most a read of max bytes.
func (s *Scanner) resync(from int64) (int64, error) {
	for off := from; off < s.size; {
		b, err := s.at(off, s.chunk)
		if err != nil {
			return 0, err
		}
		if len(b) == 0 {
			return -1, nil // the file is shorter than size
		}
		i := bytes.IndexByte(b, magic0)
		if i < 0 {
			off += int64(len(b))
			continue
		}
		off += int64(i)
		if _, _, _, err := s.read(off); err == nil {
			return off, nil
		} else if !isFrameErr(err) {
			return 0, err
		}
		off++
	}
	return -1, nil
}

// tornTail reports whether the bad tail from off looks like a write a
// crash left unfinished: a frame cut short, or zeros.
func (s *Scanner) tornTail(off int64, ferr error) (bool, error) {
	if ferr == ErrShortFrame {
		return true, nil
	}
	for o := off; o < s.size; {
		b, err := s.at(o, s.chunk)
		if err != nil {
			return false, err
		}
		if len(b) == 0 {
			break
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

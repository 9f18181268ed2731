package spool

import (
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"net/http"

	"github.com/misaki-io/misaki/internal/framelog"
)

// A segment file is a sequence of framelog frames (the format this
// package wrote before framelog was split out of it, so segments on disk
// read as they are), of these types:
const (
	typeRequest = 1
	typeDone    = 2
	typeAttempt = 3
	typeStart   = 4 // first frame of a segment: the next sequence number then

	// maxPayload bounds a frame's length field: bodies larger than
	// Options.InlineMax (at most maxPayload/2) are in body files, so a
	// larger frame is damage.
	maxPayload = 4 << 20
)

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// errBadPayload means a frame whose checksum is good holds a payload that
// does not decode.
var errBadPayload = errors.New("spool: malformed record payload")

// readFrame decodes the segment frame at the start of b.
func readFrame(b []byte) (typ byte, payload []byte, n int, err error) {
	return framelog.ReadFrame(b, maxPayload)
}

// Record is one spooled request as stored.
type Record struct {
	Seq            uint64
	Enqueued       int64 // Unix nanoseconds, wall clock
	Expires        int64 // Unix nanoseconds; 0: never
	Priority       int
	Route          string
	Method         string
	URL            string
	IdempotencyKey string
	Callback       string
	Header         http.Header
	// Body is the body when it is stored inline (at most Options.InlineMax
	// bytes).
	Body []byte
	// BodyFile names the body's file in the spool's bodies directory when
	// it is stored apart; BodySize and BodyCRC describe it.
	BodyFile string
	BodySize int64
	BodyCRC  uint32
}

const (
	bodyInline = 0
	bodyFile   = 1
)

// appendRecord appends the request payload encoding of r to b.
func appendRecord(b []byte, r *Record) []byte {
	b = binary.AppendUvarint(b, r.Seq)
	b = binary.AppendVarint(b, r.Enqueued)
	b = binary.AppendVarint(b, r.Expires)
	b = binary.AppendVarint(b, int64(r.Priority))
	for _, s := range [...]string{r.Route, r.Method, r.URL, r.IdempotencyKey, r.Callback} {
		b = appendString(b, s)
	}
	b = binary.AppendUvarint(b, uint64(len(r.Header)))
	for k, vs := range r.Header {
		b = appendString(b, k)
		b = binary.AppendUvarint(b, uint64(len(vs)))
		for _, v := range vs {
			b = appendString(b, v)
		}
	}
	if r.BodyFile != "" {
		b = append(b, bodyFile)
		b = appendString(b, r.BodyFile)
		b = binary.AppendUvarint(b, uint64(r.BodySize))
		b = binary.LittleEndian.AppendUint32(b, r.BodyCRC)
		return b
	}
	b = append(b, bodyInline)
	return appendString(b, string(r.Body))
}

func appendString(b []byte, s string) []byte {
	b = binary.AppendUvarint(b, uint64(len(s)))
	return append(b, s...)
}

// decoder reads a payload; the first error sticks.
type decoder struct {
	b   []byte
	err error
}

func (d *decoder) uvarint() uint64 {
	if d.err != nil {
		return 0
	}
	v, n := binary.Uvarint(d.b)
	if n <= 0 {
		d.err = errBadPayload
		return 0
	}
	d.b = d.b[n:]
	return v
}

func (d *decoder) varint() int64 {
	if d.err != nil {
		return 0
	}
	v, n := binary.Varint(d.b)
	if n <= 0 {
		d.err = errBadPayload
		return 0
	}
	d.b = d.b[n:]
	return v
}

func (d *decoder) bytes() []byte {
	n := d.uvarint()
	if d.err != nil {
		return nil
	}
	if n > uint64(len(d.b)) {
		d.err = errBadPayload
		return nil
	}
	s := d.b[:n:n]
	d.b = d.b[n:]
	return s
}

func (d *decoder) string() string { return string(d.bytes()) }

func (d *decoder) byte() byte {
	if d.err != nil {
		return 0
	}
	if len(d.b) == 0 {
		d.err = errBadPayload
		return 0
	}
	c := d.b[0]
	d.b = d.b[1:]
	return c
}

// decodeRecord decodes a request payload. It copies what it keeps, so
// the payload's buffer may be reused.
func decodeRecord(p []byte) (*Record, error) {
	d := &decoder{b: p}
	r := &Record{
		Seq:      d.uvarint(),
		Enqueued: d.varint(),
		Expires:  d.varint(),
		Priority: int(d.varint()),
	}
	r.Route, r.Method, r.URL, r.IdempotencyKey, r.Callback = d.string(), d.string(), d.string(), d.string(), d.string()
	nh := d.uvarint()
	if nh > uint64(len(d.b)) { // every header takes at least one byte
		return nil, errBadPayload
	}
	r.Header = make(http.Header, nh)
	for range nh {
		k := d.string()
		nv := d.uvarint()
		if nv > uint64(len(d.b)) {
			return nil, errBadPayload
		}
		vs := make([]string, 0, nv)
		for range nv {
			vs = append(vs, d.string())
		}
		if d.err != nil {
			return nil, d.err
		}
		r.Header[k] = append(r.Header[k], vs...)
	}
	switch d.byte() {
	case bodyInline:
		if b := d.bytes(); len(b) > 0 {
			r.Body = append([]byte(nil), b...)
		}
	case bodyFile:
		r.BodyFile = d.string()
		r.BodySize = int64(d.uvarint())
		if len(d.b) < 4 {
			return nil, errBadPayload
		}
		r.BodyCRC = binary.LittleEndian.Uint32(d.b)
		d.b = d.b[4:]
		if d.err == nil && !validBodyName(r.BodyFile) {
			return nil, fmt.Errorf("%w: body file name %q", errBadPayload, r.BodyFile)
		}
	default:
		d.err = errBadPayload
	}
	if d.err != nil {
		return nil, d.err
	}
	if len(d.b) != 0 {
		return nil, errBadPayload
	}
	return r, nil
}

// Outcome ends a record's life in the queue.
type Outcome byte

// Outcomes, as stored in done frames.
const (
	Delivered Outcome = 1 // the upstream answered (any final status)
	Failed    Outcome = 2 // a final error (4xx other than 408/429)
	Expired   Outcome = 3 // the TTL passed first
	Cancelled Outcome = 4 // DELETE /v1/requests/{id}
	Evicted   Outcome = 5 // dropped by drop-oldest to make room
)

func (o Outcome) String() string {
	switch o {
	case Delivered:
		return "delivered"
	case Failed:
		return "failed"
	case Expired:
		return "expired"
	case Cancelled:
		return "cancelled"
	case Evicted:
		return "evicted"
	}
	return fmt.Sprintf("outcome(%d)", byte(o))
}

func appendDone(b []byte, seq uint64, o Outcome) []byte {
	b = binary.AppendUvarint(b, seq)
	return append(b, byte(o))
}

func decodeDone(p []byte) (uint64, Outcome, error) {
	d := &decoder{b: p}
	seq := d.uvarint()
	o := Outcome(d.byte())
	if d.err != nil || len(d.b) != 0 || o < Delivered || o > Evicted {
		return 0, 0, errBadPayload
	}
	return seq, o, nil
}

func appendAttempt(b []byte, seq uint64) []byte { return binary.AppendUvarint(b, seq) }

func decodeAttempt(p []byte) (uint64, error) {
	d := &decoder{b: p}
	seq := d.uvarint()
	if d.err != nil || len(d.b) != 0 {
		return 0, errBadPayload
	}
	return seq, nil
}

// validBodyName reports whether name is one the spool gives body files:
// no path separators, so a damaged record cannot point outside.
func validBodyName(name string) bool {
	if name == "" || len(name) > 64 {
		return false
	}
	for i := 0; i < len(name); i++ {
		c := name[i]
		if !('0' <= c && c <= '9' || 'a' <= c && c <= 'f' || c == '.') {
			return false
		}
	}
	return name[0] != '.'
}

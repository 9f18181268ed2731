package h2guard

import (
	"bytes"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"
	"golang.org/x/net/http2"
)

// frameStream is a client's side of a connection: the preface and one of
// each frame the guard looks at, written by x/net's Framer.
func frameStream(t testing.TB) []byte {
	var b bytes.Buffer
	b.WriteString(clientPreface)
	fr := http2.NewFramer(&b, nil)
	fr.WriteSettings(http2.Setting{ID: http2.SettingInitialWindowSize, Val: 1 << 20})
	fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 1, BlockFragment: []byte("abc"), EndStream: true})
	fr.WriteContinuation(1, false, nil)
	fr.WriteContinuation(1, true, []byte("defg"))
	fr.WriteData(3, true, bytes.Repeat([]byte("x"), 300))
	fr.WriteRSTStream(1, http2.ErrCodeCancel)
	fr.WritePing(false, [8]byte{1})
	fr.WriteRSTStream(5, http2.ErrCodeFlowControl)
	fr.WriteSettingsAck()
	return b.Bytes()
}

var wantFrames = []frame{
	{length: 6, typ: frameSettings},
	{length: 3, typ: frameHeaders, flags: flagEndStream, stream: 1},
	{typ: frameContinuation, stream: 1},
	{length: 4, typ: frameContinuation, flags: 0x4 /* END_HEADERS */, stream: 1},
	{length: 300, typ: frameData, flags: flagEndStream, stream: 3},
	{length: 4, typ: frameRSTStream, stream: 1, code: uint32(http2.ErrCodeCancel)},
	{length: 8, typ: framePing},
	{length: 4, typ: frameRSTStream, stream: 5, code: uint32(http2.ErrCodeFlowControl)},
	{typ: frameSettings, flags: flagAck},
}

// scanAll scans b in pieces of at most size bytes and returns the frames.
func scanAll(b []byte, size int) []frame {
	s := scanner{preface: len(clientPreface)}
	var got []frame
	for len(b) > 0 {
		n := min(size, len(b))
		s.scan(b[:n], func(f frame) bool { got = append(got, f); return true })
		b = b[n:]
	}
	return got
}

// TestScanPieces: the frames are the same however the stream is cut.
func TestScanPieces(t *testing.T) {
	b := frameStream(t)
	for size := 1; size <= len(b); size++ {
		if diff := cmp.Diff(wantFrames, scanAll(b, size), cmp.AllowUnexported(frame{})); diff != "" {
			t.Fatalf("pieces of %d bytes (-want +got):\n%s", size, diff)
		}
	}
}

// TestScanStop: a stopped scan says where the refused frame began in the
// piece, or -1 if it began in an earlier one.
func TestScanStop(t *testing.T) {
	b := frameStream(t)
	ping := bytes.Index(b, []byte{0, 0, 8, framePing})
	for _, tc := range []struct {
		name  string
		cut   int // the first piece
		start int // where scan says the PING began in the second
	}{
		{"PING whole in the second piece", ping, 0},
		{"PING header cut", ping + 4, -1},
		{"PING further on", ping - 20, 20},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := scanner{preface: len(clientPreface)}
			stop := func(f frame) bool { return f.typ != framePing }
			if ok, _, _ := s.scan(b[:tc.cut], stop); !ok {
				t.Fatal("stopped in the first piece")
			}
			ok, start, end := s.scan(b[tc.cut:], stop)
			if ok || start != tc.start || end != ping+9-tc.cut {
				t.Errorf("scan = %v, %d, %d; want false, %d, %d", ok, start, end, tc.start, ping+9-tc.cut)
			}
		})
	}
}

// FuzzScan: any bytes, cut anywhere, give the frames they give whole, and
// never a panic.
func FuzzScan(f *testing.F) {
	f.Add(frameStream(f), 7)
	f.Add([]byte(clientPreface+"\x00\x00\x04\x03\x00\x00\x00\x00\x01\x00\x00"), 30)
	f.Add([]byte("\xff\xff\xff\x00\x00"), 1)
	f.Fuzz(func(t *testing.T, b []byte, size int) {
		if size <= 0 || size > len(b) {
			size = len(b) + 1
		}
		whole, cut := scanAll(b, len(b)+1), scanAll(b, size)
		if diff := cmp.Diff(whole, cut, cmp.AllowUnexported(frame{})); diff != "" {
			t.Fatalf("pieces of %d bytes (-whole +pieces):\n%s", size, diff)
		}
	})
}

// TestFinish: cut anywhere, finish reads to the end of the frame the cut
// is in (a cut between frames is finished at once), and the scanner
// then reads the frames after it as they are.
func TestFinish(t *testing.T) {
	b := frameStream(t)
	// The offsets where frames end, the preface counting as one.
	ends := []int{len(clientPreface)}
	for _, f := range wantFrames {
		ends = append(ends, ends[len(ends)-1]+9+int(f.length))
	}
	for cut := len(clientPreface); cut <= len(b); cut++ {
		next := 0 // the frames after the one cut
		for ends[next] < cut {
			next++
		}
		for _, size := range []int{1, 5, len(b)} { // finish's input in pieces of size
			s := scanner{preface: len(clientPreface)}
			s.scan(b[:cut], func(frame) bool { return true })
			at := cut
			var done bool
			for {
				var n int
				n, done = s.finish(b[at:min(at+size, len(b))])
				at += n
				if done || at == len(b) {
					break
				}
			}
			if !done || at != ends[next] {
				t.Fatalf("cut at %d, pieces of %d: finished at %d (done %v), want %d", cut, size, at, done, ends[next])
			}
			var got []frame
			s.scan(b[at:], func(f frame) bool { got = append(got, f); return true })
			if diff := cmp.Diff(wantFrames[next:], got, cmp.AllowUnexported(frame{}), cmpopts.EquateEmpty()); diff != "" {
				t.Fatalf("cut at %d, pieces of %d: frames after (-want +got):\n%s", cut, size, diff)
			}
		}
	}
}

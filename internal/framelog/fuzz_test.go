package framelog

import (
	"bytes"
	"math/bits"
	"testing"
)

// FuzzScan scans arbitrary bytes, and a log built from the input with one
// bit flipped. Every frame found must be the bytes at its offset, the
// frames and the spans skipped must cover the file exactly, and in the
// built log every frame but the flipped one must be found.
//
//	go test -run '^$' -fuzz FuzzScan ./internal/framelog/
func FuzzScan(f *testing.F) {
	var log []byte
	for i := range 8 {
		log = AppendFrame(log, byte(1+i%3), payload(i))
	}
	f.Add(log, uint32(0))
	f.Add(log, uint32(8*40+3))
	f.Add(log[:len(log)-5], uint32(1))
	f.Add(append(bytes.Clone(log), make([]byte, 30)...), uint32(77))
	f.Add([]byte("MS\x01\x00\xff\xff\xff\x00garbage"), uint32(5))
	f.Add([]byte{}, uint32(0))
	f.Fuzz(func(t *testing.T, data []byte, flip uint32) {
		checkScan(t, data)

		// A log of frames whose payloads are the input cut at each
		// newline, with no byte that is the magic's first or one bit from
		// it (so that no frame hides inside another, even after the flip),
		// and one bit flipped.
		clean := bytes.Clone(data)
		for i, c := range clean {
			if bits.OnesCount8(c^magic0) <= 1 {
				clean[i] = 0
			}
		}
		var built []byte
		var starts []int
		for _, p := range bytes.Split(clean, []byte{'\n'}) {
			starts = append(starts, len(built))
			built = AppendFrame(built, 1, p)
		}
		starts = append(starts, len(built))
		bit := int(flip % uint32(8*len(built)))
		built[bit/8] ^= 1 << (bit % 8)
		hit := 0
		for starts[hit+1] <= bit/8 {
			hit++
		}
		var found []int64
		for _, fr := range checkScan(t, built) {
			found = append(found, fr.Off)
		}
		var want []int64
		for i := range len(starts) - 1 {
			if i != hit {
				want = append(want, int64(starts[i]))
			}
		}
		if len(found) != len(want) {
			t.Fatalf("bit %d flipped in frame %d: frames at %v, want %v", bit, hit, found, want)
		}
		for i := range want {
			if found[i] != want[i] {
				t.Fatalf("bit %d flipped in frame %d: frames at %v, want %v", bit, hit, found, want)
			}
		}
	})
}

// checkScan scans b and checks what every scan must give.
func checkScan(t *testing.T, b []byte) []Frame {
	t.Helper()
	sc := NewScanner(bytes.NewReader(b), int64(len(b)), 1<<16)
	var spans []Span
	sc.OnDamage = func(s Span) { spans = append(spans, s) }
	var frames []Frame
	next := int64(0) // where the frames and spans covered so far end
	for sc.Next() {
		fr := sc.Frame()
		for len(spans) > 0 && spans[0].Off == next {
			next += spans[0].Len
			spans = spans[1:]
		}
		if fr.Off != next {
			t.Fatalf("frame at %d, but the scan had covered up to %d", fr.Off, next)
		}
		if !bytes.Equal(AppendFrame(nil, fr.Type, fr.Payload), b[fr.Off:fr.Off+fr.Len()]) {
			t.Fatalf("frame at %d does not re-encode to its bytes", fr.Off)
		}
		next += fr.Len()
		fr.Payload = bytes.Clone(fr.Payload)
		frames = append(frames, fr)
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	for _, s := range spans {
		if s.Off != next || s.Len <= 0 {
			t.Fatalf("span %+v, but the scan had covered up to %d", s, next)
		}
		next += s.Len
	}
	rep := sc.Report()
	if next != int64(len(b)) || rep.Frames != len(frames) {
		t.Fatalf("covered %d of %d bytes; %d frames, report %+v", next, len(b), len(frames), rep)
	}
	if rep.End > int64(len(b)) || len(frames) > 0 && rep.End < frames[len(frames)-1].Off+frames[len(frames)-1].Len() {
		t.Fatalf("end %d", rep.End)
	}
	return frames
}

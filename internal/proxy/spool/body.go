package spool

import (
	"bytes"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"hash"
	"hash/crc32"
	"io"
	"os"
	"path/filepath"

	"github.com/misaki-io/misaki/internal/durable"
)

// stageBody reads the body: into r.Body when it fits InlineMax, else into
// a file of its own (fsynced under SyncAlways), whose path it returns.
func (s *Spool) stageBody(r *Record, body io.Reader) (string, error) {
	buf := make([]byte, s.opts.InlineMax+1)
	n, err := io.ReadFull(body, buf)
	switch {
	case err == io.EOF || err == io.ErrUnexpectedEOF:
		r.Body = buf[:n:n]
		r.BodySize = 0
		return "", nil
	case err != nil:
		return "", fmt.Errorf("spool: read body: %w", err)
	}
	var name [16]byte
	rand.Read(name[:])
	r.BodyFile = hex.EncodeToString(name[:])
	p := s.path("bodies", r.BodyFile)
	f, err := os.OpenFile(p, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o640)
	if err != nil {
		return "", fmt.Errorf("spool: body file: %w", err)
	}
	h := crc32.New(castagnoli)
	w := io.MultiWriter(f, h)
	written, err := w.Write(buf)
	if err == nil {
		var more int64
		more, err = io.Copy(w, body)
		written += int(more)
	}
	if err == nil && s.opts.Sync == SyncAlways {
		err = durable.Fdatasync(f)
		if err == nil {
			err = durable.SyncDir(s.path("bodies"))
		}
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		os.Remove(p)
		return "", fmt.Errorf("spool: body file: %w", err)
	}
	if int64(written) > 1<<32-1-maxPayload {
		os.Remove(p)
		return "", fmt.Errorf("%w: body of %d bytes", ErrFull, written)
	}
	r.Body = nil
	r.BodySize = int64(written)
	r.BodyCRC = h.Sum32()
	return p, nil
}

// OpenBody opens r's body: its bytes, or its file, checked against its
// length and checksum as it is read (a mismatch is an error at the end).
func (s *Spool) OpenBody(r *Record) (io.ReadCloser, error) {
	if r.BodyFile == "" {
		return io.NopCloser(bytes.NewReader(r.Body)), nil
	}
	f, err := os.Open(s.path("bodies", r.BodyFile))
	if err != nil {
		s.mu.Lock()
		s.stats.MissingBodies++
		s.mu.Unlock()
		return nil, fmt.Errorf("spool: body of request %d: %w", r.Seq, err)
	}
	return &checkedBody{f: f, want: r.BodyCRC, size: r.BodySize, h: crc32.New(castagnoli)}, nil
}

// checkedBody reads a body file and, at its end, fails unless its length
// and CRC-32C are the ones its record holds.
type checkedBody struct {
	f    *os.File
	h    hash.Hash32
	want uint32
	size int64
	n    int64
}

func (b *checkedBody) Read(p []byte) (int, error) {
	n, err := b.f.Read(p)
	b.n += int64(n)
	b.h.Write(p[:n])
	if err == io.EOF && (b.n != b.size || b.h.Sum32() != b.want) {
		return n, fmt.Errorf("spool: body file %s is damaged (%d bytes, checksum mismatch)", filepath.Base(b.f.Name()), b.n)
	}
	return n, err
}

func (b *checkedBody) Close() error { return b.f.Close() }

// pendingUnlink is a body file to remove once the done frame of its
// record, appended to segment seg up to position pos, is durable.
type pendingUnlink struct {
	seg  uint32
	pos  uint64
	name string
}

// unlinkDurableLocked removes body files whose done frames are durable: in
// a sealed segment (fsynced when it was sealed), or in the active one up
// to what it has synced.
func (s *Spool) unlinkDurableLocked() {
	synced := s.active.Synced()
	n := 0
	for _, u := range s.pendingUnlinks {
		if u.seg == s.activeOrd && u.pos > synced {
			break
		}
		os.Remove(s.path("bodies", u.name))
		n++
	}
	s.pendingUnlinks = s.pendingUnlinks[n:]
}

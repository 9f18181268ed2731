package framelog

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"os"
	"path/filepath"
)

// WriteFile replaces path, crash-safely, with what write writes (frames
// from AppendFrame, after any header the user puts first): a temporary
// file in the same directory, fdatasynced, renamed over path, and the
// directory fsynced. A crash leaves the old file or the new one whole;
// a failure leaves the old one and no temporary file. The directory is
// made if it is missing. fp, if set, fails calls on purpose (tests).
func WriteFile(path string, fp Failpoint, write func(io.Writer) error) error {
	dir := filepath.Dir(path)
	if err := os.MkdirAll(dir, 0o750); err != nil {
		return err
	}
	tmp, err := os.CreateTemp(dir, filepath.Base(path)+".tmp-*")
	if err != nil {
		return err
	}
	defer os.Remove(tmp.Name()) // after the rename, there is nothing to remove
	l := newLog(tmp.Name(), Options{Failpoint: fp}, tmp)
	err = write(&fileWriter{l: l})
	if err == nil {
		err = l.fdatasync()
	}
	if cerr := tmp.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		if err = l.fail(OpRename, path); err != nil {
			err = &os.LinkError{Op: "rename", Old: tmp.Name(), New: path, Err: err}
		} else {
			err = os.Rename(tmp.Name(), path)
		}
	}
	if err == nil {
		err = syncDir(dir, fp)
	}
	return err
}

// fileWriter appends to a new file through the failpoint.
type fileWriter struct {
	l *Log
}

func (w *fileWriter) Write(b []byte) (int, error) {
	if err := w.l.writeAt(b, w.l.size); err != nil {
		return 0, err
	}
	w.l.size += int64(len(b))
	return len(b), nil
}

// ScanLegacy reads frames of the shape the results log, the gateway's
// key log and the DNS cache file had before this package: a payload
// length and a CRC-32C (4 bytes each, little endian), prefix bytes, then
// the payload, the checksum covering prefix and payload. It calls fn with
// each frame's prefix and payload in order, and stops at the first frame
// that is cut short or damaged: that format has no magic to find the next
// frame by, so the rule these files were written under is the one they
// are read under. Users read such a file once, when upgrading, and write
// what they keep as frames of this package.
func ScanLegacy(r io.Reader, prefix, max int, fn func(prefix, payload []byte) error) (frames int, err error) {
	br := bufio.NewReaderSize(r, 256<<10)
	hdr := make([]byte, 8+prefix)
	var buf []byte
	for {
		if _, err := io.ReadFull(br, hdr); err != nil {
			return frames, readEnd(err)
		}
		n := binary.LittleEndian.Uint32(hdr)
		if uint64(n) > uint64(maxPayload(max)) {
			return frames, nil
		}
		if cap(buf) < int(n) {
			buf = make([]byte, n)
		}
		buf = buf[:n]
		if _, err := io.ReadFull(br, buf); err != nil {
			return frames, readEnd(err)
		}
		crc := crc32.Update(crc32.Checksum(hdr[8:], castagnoli), castagnoli, buf)
		if crc != binary.LittleEndian.Uint32(hdr[4:]) {
			return frames, nil
		}
		if err := fn(hdr[8:], buf); err != nil {
			return frames, err
		}
		frames++
	}
}

// readEnd turns the end of a legacy file, whole or cut short, into nil.
func readEnd(err error) error {
	if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
		return nil
	}
	return fmt.Errorf("framelog: %w", err)
}

// ErrDamaged is ReadRecord's error for a file that is not one whole frame
// of the type asked for.
var ErrDamaged = errors.New("damaged")

// WriteRecord replaces path, as WriteFile does, with one frame of type typ
// holding payload: the shape of a small state file (the agent's trust
// state and ledger) that must be the old one or the new one after a crash.
func WriteRecord(path string, fp Failpoint, typ byte, payload []byte) error {
	return WriteFile(path, fp, func(w io.Writer) error {
		_, err := w.Write(AppendFrame(nil, typ, payload))
		return err
	})
}

// ReadRecord returns the payload of a file WriteRecord wrote. A missing
// file is an error wrapping os.ErrNotExist; a file that is not one whole
// frame of type typ with a payload of at most max bytes, one wrapping
// ErrDamaged.
func ReadRecord(path string, typ byte, max int) ([]byte, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	got, payload, _, err := ReadFrame(b, max)
	switch {
	case err != nil:
		return nil, fmt.Errorf("%s: %w (%v)", path, ErrDamaged, err)
	case got != typ:
		return nil, fmt.Errorf("%s: %w (frame type %d, want %d)", path, ErrDamaged, got, typ)
	}
	return payload, nil
}

package localdns

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"math"
	"os"
	"time"

	"github.com/misaki-io/misaki/internal/framelog"
)

// The cache file: cacheMagic, then one framelog frame per entry (type
// typeEntry), most recently used first. An entry's payload: the key's
// length (uvarint), the key, when it was stored (Unix nanoseconds, 8
// bytes), its TTL (4 bytes), and the message.
//
// The previous release's file began with cacheMagicV1, and its frames were
// the payload's length and CRC-32C (4 bytes each, little endian), then the
// same payload; Load reads it as that release did, up to the first damaged
// frame, and the next Save writes the new format.
const (
	cacheMagic   = "misaki-dns-cache-2\n"
	cacheMagicV1 = "misaki-dns-cache-1\n"
	typeEntry    = 1
	maxEntry     = 1 << 20
)

// Generation changes whenever an answer is cached or dropped: a Save at
// the same generation would write what the last one did. Loading the
// file does not change it: the file holds what was loaded.
func (s *Server) Generation() uint64 { return s.cache.generation() }

// Save writes the cache to path, crash-safe (framelog.WriteFile): a
// temporary file, fsynced, renamed over path, and the directory fsynced.
// A crash leaves the old file or the new one whole; a failure (a full
// disk) leaves the old one, and an error that names the file.
//
// The directory is made if it is missing: by default the file is in the
// spool's, which nothing else may have made yet.
func (s *Server) Save(path string) (int, error) {
	n := 0
	err := framelog.WriteFile(path, s.failpoint, func(f io.Writer) error {
		w := bufio.NewWriterSize(f, 256<<10)
		w.WriteString(cacheMagic)
		var payload, frame []byte
		// Written under the cache's lock, which the entries need (their
		// slots are reused once dropped) and which keeps the file one state
		// of the cache: about 10 ms for 100,000 answers, every
		// dns.saveInterval at most, into the page cache. The fsync comes
		// after.
		err := s.cache.each(func(key, msg []byte, stored int64, ttl uint32) error {
			payload = binary.AppendUvarint(payload[:0], uint64(len(key)))
			payload = append(payload, key...)
			payload = binary.LittleEndian.AppendUint64(payload, uint64(stored))
			payload = binary.LittleEndian.AppendUint32(payload, ttl)
			payload = append(payload, msg...)
			frame = framelog.AppendFrame(frame[:0], typeEntry, payload)
			_, err := w.Write(frame)
			n++
			return err
		})
		if err != nil {
			return err
		}
		return w.Flush()
	})
	if err != nil {
		return 0, fmt.Errorf("dns cache: %w", err)
	}
	return n, nil
}

// StartLoad loads the cache file at path into the cache, as Load does, in
// a goroutine of its own, and returns at once; wait returns Load's result
// when the load is over. Call it before Serve, so that the first query
// finds the load on. While it runs, every query is answered, none held
// until the end of the load:
//
//   - mesh names, and the names loaded so far, at once;
//   - another name by whichever comes first: the upstream's answer, or the
//     end of the load and the file's answer (a fresh one; a stale one is
//     served as usual, if the upstream has not answered within
//     StaleAfter);
//   - if the upstream fails first, by the file's answer at the end of the
//     load, or SERVFAIL when the file has none.
//
// An answer got from upstream during the load is kept over the file's.
// Loading 100,000 answers from the page cache takes about 110 ms on one
// core of a server (BenchmarkLoad); from a vehicle's flash after a
// reboot, longer.
func (s *Server) StartLoad(path string) (wait func() (int, error)) {
	end := s.beginLoad()
	var (
		n    int
		err  error
		done = make(chan struct{})
	)
	go func() {
		defer close(done)
		defer end()
		n, err = s.load(path)
	}()
	return func() (int, error) {
		<-done
		return n, err
	}
}

// beginLoad tells queries that a load is on, until end is called.
func (s *Server) beginLoad() (end func()) {
	ch := make(chan struct{})
	s.loading.Store(&ch)
	return func() {
		s.loading.CompareAndSwap(&ch, nil)
		close(ch)
	}
}

// loadingDone is closed when the load on ends, or nil when none is on.
func (s *Server) loadingDone() <-chan struct{} {
	if p := s.loading.Load(); p != nil {
		return *p
	}
	return nil
}

// Load reads the cache file at path into the cache, and returns how many
// entries it took. A missing file is no error. A damaged entry is skipped
// and logged, and every intact one after it loaded (framelog's rule).
// Entries past their maximum stale age are left out, and so are those for
// a question the cache has an answer to already. It may run while Serve
// serves (see StartLoad).
func (s *Server) Load(path string) (int, error) {
	end := s.beginLoad()
	defer end()
	return s.load(path)
}

func (s *Server) load(path string) (int, error) {
	f, err := os.Open(path)
	if errors.Is(err, os.ErrNotExist) {
		return 0, nil
	}
	if err != nil {
		return 0, fmt.Errorf("dns cache: %w", err)
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return 0, fmt.Errorf("dns cache: %w", err)
	}
	magic := make([]byte, len(cacheMagic))
	if _, err := io.ReadFull(f, magic); err != nil || string(magic) != cacheMagic && string(magic) != cacheMagicV1 {
		return 0, fmt.Errorf("dns cache: %s is not a cache file", path)
	}
	now := s.cfg.Clock.Now()
	loaded, bad := 0, 0
	load := func(payload []byte) {
		klen, w := binary.Uvarint(payload)
		if w <= 0 || klen > math.MaxUint16 || klen > uint64(len(payload)-w) || len(payload)-w-int(klen) < 12 {
			bad++
			return
		}
		p := payload[w:]
		key, p := p[:klen], p[klen:]
		stored := time.Unix(0, int64(binary.LittleEndian.Uint64(p)))
		ttl := binary.LittleEndian.Uint32(p[8:])
		// The file is most recently used first: each goes behind the last.
		if now.Sub(stored) <= time.Duration(ttl)*time.Second+s.cfg.MaxStale &&
			s.cache.load(string(key), p[12:], stored, ttl) {
			loaded++
		}
		if s.onLoad != nil {
			s.onLoad()
		}
	}
	if string(magic) == cacheMagicV1 {
		_, err := framelog.ScanLegacy(f, 0, maxEntry, func(_, payload []byte) error {
			load(payload)
			return nil
		})
		if err != nil {
			return loaded, fmt.Errorf("dns cache: %s: %w", path, err)
		}
		return loaded, nil
	}
	size := st.Size() - int64(len(cacheMagic))
	sc := framelog.NewScanner(io.NewSectionReader(f, int64(len(cacheMagic)), size), size, maxEntry)
	sc.OnDamage = func(sp framelog.Span) {
		s.cfg.Log.Warn("dns: damaged bytes in the cache file skipped", "file", path,
			"offset", int64(len(cacheMagic))+sp.Off, "bytes", sp.Len, "torn", sp.Torn)
	}
	for sc.Next() {
		if fr := sc.Frame(); fr.Type == typeEntry {
			load(fr.Payload)
		}
	}
	if bad > 0 {
		s.cfg.Log.Warn("dns: undecodable entries in the cache file skipped", "file", path, "entries", bad)
	}
	if err := sc.Err(); err != nil {
		return loaded, fmt.Errorf("dns cache: %s: %w", path, err)
	}
	return loaded, nil
}

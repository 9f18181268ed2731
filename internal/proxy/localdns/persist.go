package localdns

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"math"
	"os"
	"slices"
	"time"

	"github.com/misaki-io/misaki/internal/durable"
)

// The cache file: cacheMagic, then one frame per entry, most recently used
// first: the payload's length and CRC-32C (4 bytes each, little endian),
// then the payload: the key's length (uvarint), the key, when it was
// stored (Unix nanoseconds, 8 bytes), its TTL (4 bytes), and the message.
const cacheMagic = "misaki-dns-cache-1\n"

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// Generation changes whenever an answer is cached or dropped: a Save at
// the same generation would write what the last one did.
func (s *Server) Generation() uint64 { return s.cache.generation() }

// Save writes the cache to path, crash-safe: a temporary file, fsynced,
// renamed over path, and the directory fsynced. A crash leaves the old
// file or the new one whole.
//
// The directory is made if it is missing: by default the file is in the
// spool's, which nothing else may have made yet.
func (s *Server) Save(path string) (int, error) {
	n := 0
	err := durable.WriteFile(path, func(f io.Writer) error {
		w := bufio.NewWriterSize(f, 256<<10)
		w.WriteString(cacheMagic)
		var payload []byte
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
			var hdr [8]byte
			binary.LittleEndian.PutUint32(hdr[0:], uint32(len(payload)))
			binary.LittleEndian.PutUint32(hdr[4:], crc32.Checksum(payload, castagnoli))
			w.Write(hdr[:])
			_, err := w.Write(payload)
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

// Load reads the cache file at path into the cache, and returns how many
// entries it took. A missing file is no error; a damaged frame ends the
// load with what came before it. Entries past their maximum stale age are
// left out.
func (s *Server) Load(path string) (int, error) {
	f, err := os.Open(path)
	if errors.Is(err, os.ErrNotExist) {
		return 0, nil
	}
	if err != nil {
		return 0, fmt.Errorf("dns cache: %w", err)
	}
	defer f.Close()
	r := bufio.NewReaderSize(f, 256<<10)
	magic := make([]byte, len(cacheMagic))
	if _, err := io.ReadFull(r, magic); err != nil || string(magic) != cacheMagic {
		return 0, fmt.Errorf("dns cache: %s is not a cache file", path)
	}
	now := s.cfg.Clock.Now()
	loaded := 0
	var hdr [8]byte
	var payload []byte
	for {
		if _, err := io.ReadFull(r, hdr[:]); err != nil {
			break
		}
		n := binary.LittleEndian.Uint32(hdr[0:])
		if n > 1<<20 {
			break
		}
		payload = slices.Grow(payload[:0], int(n))[:n]
		if _, err := io.ReadFull(r, payload); err != nil || crc32.Checksum(payload, castagnoli) != binary.LittleEndian.Uint32(hdr[4:]) {
			break
		}
		klen, w := binary.Uvarint(payload)
		if w <= 0 || klen > math.MaxUint16 || klen > uint64(len(payload)-w) || len(payload)-w-int(klen) < 12 {
			break
		}
		p := payload[w:]
		key, p := p[:klen], p[klen:]
		stored := time.Unix(0, int64(binary.LittleEndian.Uint64(p)))
		ttl := binary.LittleEndian.Uint32(p[8:])
		if now.Sub(stored) <= time.Duration(ttl)*time.Second+s.cfg.MaxStale {
			// The file is most recently used first: each goes behind the last.
			s.cache.store(string(key), p[12:], stored, ttl, false)
			loaded++
		}
	}
	return loaded, nil
}

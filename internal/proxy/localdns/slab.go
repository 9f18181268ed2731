package localdns

import (
	"encoding/binary"
	"math/bits"
	"unsafe"

	"golang.org/x/sys/unix"
)

// slab is memory off the Go heap for the cache's entries, in size
// classes, in chunks mapped from the operating system.
//
// On the Go heap, 100,000 cached answers were about 18 MB that the
// garbage collector scanned, and let the heap grow to twice that before it
// collected: the proxy's resident memory went from 13 MB to 57 MB. Off
// the heap they are about 11 MB, not scanned, and the heap the collector
// paces is only the index (docs/benchmarks.md).
//
// A slot is addressed by a ref: its class in the top 6 bits, its number in
// the class in the other 26. Ref 0 is never handed out and means none.
// Freed slots are reused by their class; chunks are kept until the slab is
// released, so the cache's memory is at most its peak, which its byte
// bound (dns.maxBytes) caps, plus the rounding within the classes and one
// partly used chunk per class.
type slab struct {
	classes [nClasses]slabClass
}

type slabClass struct {
	size     int      // bytes a slot
	perChunk int      // slots a chunk
	chunks   [][]byte // mapped
	used     int      // slots handed out, freed ones included
	free     []uint32 // freed slot numbers
}

const (
	slabChunk    = 1 << 20
	refClassBits = 26
	nClasses     = 32 + 8 // 16 to 512 bytes by 16; 1 KiB to 64 KiB by doubling; maxSlot
	maxSlot      = 72 << 10
)

// classOf returns the class for n bytes, or -1 when n is too large.
func classOf(n int) int {
	switch {
	case n <= 512:
		return max(n-1, 0) / 16
	case n <= 64<<10:
		return 32 + bits.Len(uint(n-1)) - 10
	case n <= maxSlot:
		return nClasses - 1
	}
	return -1
}

func classSize(c int) int {
	switch {
	case c < 32:
		return (c + 1) * 16
	case c < nClasses-1:
		return 1 << (c - 32 + 10)
	}
	return maxSlot
}

func newSlab() *slab {
	s := new(slab)
	for c := range s.classes {
		cl := &s.classes[c]
		cl.size = classSize(c)
		cl.perChunk = max(slabChunk/cl.size, 1)
	}
	s.classes[0].used = 1 // ref 0 means none
	return s
}

// alloc returns a slot of at least n bytes, or 0 when n is too large or
// the system has no memory to map.
func (s *slab) alloc(n int) uint32 {
	c := classOf(n)
	if c < 0 {
		return 0
	}
	cl := &s.classes[c]
	if k := len(cl.free); k > 0 {
		slot := cl.free[k-1]
		cl.free = cl.free[:k-1]
		return uint32(c)<<refClassBits | slot
	}
	if cl.used == len(cl.chunks)*cl.perChunk {
		if cl.used+cl.perChunk >= 1<<refClassBits {
			return 0
		}
		m, err := unix.Mmap(-1, 0, cl.perChunk*cl.size, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_ANON|unix.MAP_PRIVATE)
		if err != nil {
			return 0
		}
		cl.chunks = append(cl.chunks, m)
	}
	slot := uint32(cl.used)
	cl.used++
	return uint32(c)<<refClassBits | slot
}

// free gives ref's slot back to its class.
func (s *slab) free(ref uint32) {
	cl := &s.classes[ref>>refClassBits]
	cl.free = append(cl.free, ref&(1<<refClassBits-1))
}

// bytes returns ref's slot. Its memory is valid until the slot is freed.
func (s *slab) bytes(ref uint32) []byte {
	cl := &s.classes[ref>>refClassBits]
	slot := int(ref & (1<<refClassBits - 1))
	off := slot % cl.perChunk * cl.size
	return cl.chunks[slot/cl.perChunk][off : off+cl.size : off+cl.size]
}

// slotSize is the size of ref's slot.
func (s *slab) slotSize(ref uint32) int { return s.classes[ref>>refClassBits].size }

// usage returns the bytes of the slots in use and of the chunks mapped.
func (s *slab) usage() (inUse, mapped int64) {
	for c := range s.classes {
		cl := &s.classes[c]
		inUse += int64(cl.used-len(cl.free)) * int64(cl.size)
		mapped += int64(len(cl.chunks)) * int64(cl.perChunk*cl.size)
	}
	return inUse, mapped
}

// release unmaps every chunk. Nothing may use the slab after.
func (s *slab) release() {
	for c := range s.classes {
		for _, m := range s.classes[c].chunks {
			unix.Munmap(m)
		}
		s.classes[c] = slabClass{}
	}
}

// An entry in its slot: the LRU links, when it was stored, its TTL, the
// key's and the message's lengths, then the key and the message. The
// message is the upstream's answer as packed (ID 0), with every record's
// TTL set to the entry's.
const (
	ePrev    = 0  // uint32 ref
	eNext    = 4  // uint32 ref
	eStored  = 8  // int64, wall clock, Unix ns: an entry loaded after a reboot ages by the time off
	eTTL     = 16 // uint32 seconds
	eKeyLen  = 20 // uint16
	eMsgLen  = 22 // uint32
	eHdrSize = 26
)

// entryView reads and writes an entry in its slot.
type entryView []byte

func (e entryView) prev() uint32     { return binary.LittleEndian.Uint32(e[ePrev:]) }
func (e entryView) next() uint32     { return binary.LittleEndian.Uint32(e[eNext:]) }
func (e entryView) setPrev(r uint32) { binary.LittleEndian.PutUint32(e[ePrev:], r) }
func (e entryView) setNext(r uint32) { binary.LittleEndian.PutUint32(e[eNext:], r) }
func (e entryView) stored() int64    { return int64(binary.LittleEndian.Uint64(e[eStored:])) }
func (e entryView) ttl() uint32      { return binary.LittleEndian.Uint32(e[eTTL:]) }
func (e entryView) keyBytes() []byte {
	return e[eHdrSize : eHdrSize+int(binary.LittleEndian.Uint16(e[eKeyLen:]))]
}
func (e entryView) msg() []byte {
	k := eHdrSize + int(binary.LittleEndian.Uint16(e[eKeyLen:]))
	return e[k : k+int(binary.LittleEndian.Uint32(e[eMsgLen:]))]
}

// key is the entry's key as a string over its slot, without a copy: the
// map's keys cost no memory of their own. It is valid while the entry is
// in the cache; the slot is not written until the key is out of the map.
func (e entryView) key() string {
	k := e.keyBytes()
	return unsafe.String(unsafe.SliceData(k), len(k))
}

// fill writes an entry into its slot, unlinked.
func (e entryView) fill(key string, msg []byte, stored int64, ttl uint32) {
	clear(e[:eHdrSize])
	binary.LittleEndian.PutUint64(e[eStored:], uint64(stored))
	binary.LittleEndian.PutUint32(e[eTTL:], ttl)
	binary.LittleEndian.PutUint16(e[eKeyLen:], uint16(len(key)))
	binary.LittleEndian.PutUint32(e[eMsgLen:], uint32(len(msg)))
	copy(e[eHdrSize+copy(e[eHdrSize:], key):], msg)
}

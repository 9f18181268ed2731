package localdns

import (
	"runtime"
	"strings"
	"sync"
	"time"

	"github.com/miekg/dns"
)

// cache holds upstream answers, positive and negative, by question, bounded
// in entries and bytes (least recently used first out). An entry outlives
// its TTL by the maximum stale age, to be served stale (RFC 8767) when the
// upstream cannot be reached.
//
// The entries live in a slab off the Go heap (slab.go); the map from key
// to slot is the cache's only memory on the heap, and its keys are strings
// over the slots. Readers get a copy of an entry, made under the lock: a
// slot is reused once its entry is dropped.
type cache struct {
	mu         sync.Mutex
	slab       *slab
	entries    map[string]uint32 // key → ref
	head, tail uint32            // most and least recently used
	bytes      int64
	gen        uint64 // counts changes of the entries
	maxEntries int
	maxBytes   int64
	maxStale   time.Duration
}

// hit is a copy of a cached answer.
type hit struct {
	msg []byte
	ttl uint32
	age time.Duration // since it was stored; never negative
}

// fresh reports whether the answer is within its TTL.
func (h *hit) fresh() bool { return h.age < time.Duration(h.ttl)*time.Second }

// ttlLeft is what is left of its TTL, in whole seconds.
func (h *hit) ttlLeft() uint32 { return h.ttl - uint32(h.age/time.Second) }

// entryOverhead approximates an entry's bookkeeping beyond its slot: its
// map slot, for the byte bound.
const entryOverhead = 40

func newCache(maxEntries int, maxBytes int64, maxStale time.Duration) *cache {
	c := &cache{slab: newSlab(), entries: map[string]uint32{}, maxEntries: maxEntries, maxBytes: maxBytes, maxStale: maxStale}
	// The chunks are unmapped once the cache is garbage (a test's server).
	runtime.AddCleanup(c, func(s *slab) { s.release() }, c.slab)
	return c
}

// cacheKey is a question's key: name (lower case), type, class, and
// whether DNSSEC records were asked for (the answers differ).
func cacheKey(q dns.Question, do bool) string {
	var b strings.Builder
	b.Grow(len(q.Name) + 12)
	b.WriteString(strings.ToLower(q.Name))
	b.WriteByte('/')
	b.WriteString(dns.Type(q.Qtype).String())
	b.WriteByte('/')
	b.WriteString(dns.Class(q.Qclass).String())
	if do {
		b.WriteString("/do")
	}
	return b.String()
}

// get looks key up, and on a hit appends its message to buf. A hit past
// its TTL and the maximum stale age is dropped and missed. The key is
// bytes, so the fast path makes no string of it.
func (c *cache) get(key []byte, now time.Time, buf []byte) (hit, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	ref := c.entries[string(key)]
	if ref == 0 {
		return hit{}, false
	}
	e := c.view(ref)
	h := hit{ttl: e.ttl(), age: max(time.Duration(now.UnixNano()-e.stored()), 0)}
	if h.age > time.Duration(h.ttl)*time.Second+c.maxStale {
		c.removeLocked(ref)
		return hit{}, false
	}
	c.unlink(ref)
	c.pushFront(ref)
	h.msg = append(buf, e.msg()...)
	return h, true
}

// put stores msg for key, replacing the key's entry, as the most recently
// used, and evicts from the cold end past the bounds.
func (c *cache) put(key string, msg []byte, stored time.Time, ttl uint32) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if old := c.entries[key]; old != 0 {
		c.removeLocked(old)
	}
	if c.insertLocked(key, msg, stored, ttl, true) == 0 {
		return
	}
	c.gen++
	for len(c.entries) > c.maxEntries || c.bytes > c.maxBytes {
		c.removeLocked(c.tail)
	}
}

// load stores an entry read from the cache file, as the least recently
// used, if there is room for it and the key has no entry yet: one there
// was put while the file was loading, and is newer. It leaves the
// generation as it is, since the file holds the entry.
func (c *cache) load(key string, msg []byte, stored time.Time, ttl uint32) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.entries[key] != 0 || len(c.entries) >= c.maxEntries {
		return false
	}
	ref := c.insertLocked(key, msg, stored, ttl, false)
	if ref != 0 && c.bytes > c.maxBytes {
		c.dropLocked(ref)
		return false
	}
	return ref != 0
}

// insertLocked adds an entry for key, which has none, at the front or the
// back, and returns its ref, or 0 when it cannot be stored.
func (c *cache) insertLocked(key string, msg []byte, stored time.Time, ttl uint32, front bool) uint32 {
	if len(key) > 0xFFFF || int64(eHdrSize+len(key)+len(msg)+entryOverhead) > c.maxBytes {
		return 0
	}
	ref := c.slab.alloc(eHdrSize + len(key) + len(msg))
	if ref == 0 {
		return 0
	}
	e := c.view(ref)
	e.fill(key, msg, stored.UnixNano(), ttl)
	c.entries[e.key()] = ref
	if front {
		c.pushFront(ref)
	} else {
		c.pushBack(ref)
	}
	c.bytes += c.size(ref)
	return ref
}

func (c *cache) view(ref uint32) entryView { return entryView(c.slab.bytes(ref)) }

func (c *cache) size(ref uint32) int64 { return int64(c.slab.slotSize(ref)) + entryOverhead }

func (c *cache) pushFront(ref uint32) { c.linkBetween(ref, 0, c.head) }

func (c *cache) pushBack(ref uint32) { c.linkBetween(ref, c.tail, 0) }

// linkBetween puts ref between p and n; 0 is the list's end on that side.
func (c *cache) linkBetween(ref, p, n uint32) {
	e := c.view(ref)
	e.setPrev(p)
	e.setNext(n)
	if p != 0 {
		c.view(p).setNext(ref)
	} else {
		c.head = ref
	}
	if n != 0 {
		c.view(n).setPrev(ref)
	} else {
		c.tail = ref
	}
}

func (c *cache) unlink(ref uint32) {
	e := c.view(ref)
	p, n := e.prev(), e.next()
	if p != 0 {
		c.view(p).setNext(n)
	} else {
		c.head = n
	}
	if n != 0 {
		c.view(n).setPrev(p)
	} else {
		c.tail = p
	}
}

// removeLocked drops an entry, a change of the entries.
func (c *cache) removeLocked(ref uint32) {
	c.dropLocked(ref)
	c.gen++
}

// dropLocked drops an entry and frees its slot.
func (c *cache) dropLocked(ref uint32) {
	c.unlink(ref)
	delete(c.entries, c.view(ref).key())
	c.bytes -= c.size(ref)
	c.slab.free(ref)
}

// generation counts the changes to the entries (not to their order).
func (c *cache) generation() uint64 {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.gen
}

// stats returns the entry count and bytes.
func (c *cache) stats() (int, int64) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.entries), c.bytes
}

// each calls f with every entry, most recently used first, under the lock:
// f must not keep key or msg, nor call the cache. It stops at f's first
// error.
func (c *cache) each(f func(key, msg []byte, stored int64, ttl uint32) error) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	for ref := c.head; ref != 0; {
		e := c.view(ref)
		if err := f(e.keyBytes(), e.msg(), e.stored(), e.ttl()); err != nil {
			return err
		}
		ref = e.next()
	}
	return nil
}

// answerTTL is the TTL to cache msg for: the smallest of its answer
// records' TTLs, or for a negative answer (NXDOMAIN, or NOERROR without
// answers) the smaller of its SOA's TTL and minimum (RFC 2308 §5), within
// floor and ceiling. ok is false for what is not cached: other rcodes, or
// a negative answer without an SOA.
func answerTTL(msg *dns.Msg, floor, ceiling, negCeiling time.Duration) (ttl uint32, ok bool) {
	clamp := func(t uint32, hi time.Duration) uint32 {
		return uint32(min(max(time.Duration(t)*time.Second, floor), hi) / time.Second)
	}
	switch {
	case msg.Rcode == dns.RcodeSuccess && len(msg.Answer) > 0:
		m := ^uint32(0)
		for _, rr := range msg.Answer {
			m = min(m, rr.Header().Ttl)
		}
		return clamp(m, ceiling), true
	case msg.Rcode == dns.RcodeNameError || msg.Rcode == dns.RcodeSuccess:
		for _, rr := range msg.Ns {
			if soa, isSOA := rr.(*dns.SOA); isSOA {
				return clamp(min(soa.Hdr.Ttl, soa.Minttl), negCeiling), true
			}
		}
	}
	return 0, false
}

// setTTLs sets every record's TTL in msg (not the OPT pseudo-record's).
func setTTLs(msg *dns.Msg, ttl uint32) {
	for _, rrs := range [][]dns.RR{msg.Answer, msg.Ns, msg.Extra} {
		for _, rr := range rrs {
			if rr.Header().Rrtype != dns.TypeOPT {
				rr.Header().Ttl = ttl
			}
		}
	}
}

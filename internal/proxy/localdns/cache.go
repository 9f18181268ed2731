package localdns

import (
	"container/list"
	"strings"
	"sync"
	"time"

	"github.com/miekg/dns"
)

// cache holds upstream answers, positive and negative, by question, bounded
// in entries and bytes (least recently used first out). An entry outlives
// its TTL by the maximum stale age, to be served stale (RFC 8767) when the
// upstream cannot be reached.
type cache struct {
	mu         sync.Mutex
	entries    map[string]*list.Element // key → *entry
	lru        *list.List               // front: most recently used
	bytes      int64
	gen        uint64 // counts changes of the entries
	maxEntries int
	maxBytes   int64
	maxStale   time.Duration
}

// entry is one cached answer: the upstream's message as packed (ID 0),
// with every record's TTL set to the entry's.
type entry struct {
	key    string
	msg    []byte
	stored time.Time // wall clock: an entry loaded after a reboot ages by the time off
	ttl    uint32
}

// entryOverhead approximates an entry's bookkeeping beyond its key and
// message, for the byte bound.
const entryOverhead = 160

func (e *entry) size() int64 { return int64(len(e.key)+len(e.msg)) + entryOverhead }

func newCache(maxEntries int, maxBytes int64, maxStale time.Duration) *cache {
	return &cache{entries: map[string]*list.Element{}, lru: list.New(), maxEntries: maxEntries, maxBytes: maxBytes, maxStale: maxStale}
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

// get returns the entry for key and its age, or nil when there is none
// or it is past its TTL and the maximum stale age.
func (c *cache) get(key string, now time.Time) (*entry, time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	el := c.entries[key]
	if el == nil {
		return nil, 0
	}
	e := el.Value.(*entry)
	age := max(now.Sub(e.stored), 0)
	if age > time.Duration(e.ttl)*time.Second+c.maxStale {
		c.removeLocked(el)
		return nil, 0
	}
	c.lru.MoveToFront(el)
	return e, age
}

// put stores e, replacing the key's entry, and evicts from the cold end
// past the bounds.
func (c *cache) put(e *entry) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if el := c.entries[e.key]; el != nil {
		c.removeLocked(el)
	}
	if e.size() > c.maxBytes {
		return
	}
	c.entries[e.key] = c.lru.PushFront(e)
	c.bytes += e.size()
	c.gen++
	for len(c.entries) > c.maxEntries || c.bytes > c.maxBytes {
		c.removeLocked(c.lru.Back())
	}
}

func (c *cache) removeLocked(el *list.Element) {
	e := c.lru.Remove(el).(*entry)
	delete(c.entries, e.key)
	c.bytes -= e.size()
	c.gen++
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

// snapshot returns the entries, most recently used first.
func (c *cache) snapshot() []*entry {
	c.mu.Lock()
	defer c.mu.Unlock()
	out := make([]*entry, 0, len(c.entries))
	for el := c.lru.Front(); el != nil; el = el.Next() {
		out = append(out, el.Value.(*entry))
	}
	return out
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

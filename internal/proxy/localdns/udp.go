package localdns

import (
	"encoding/binary"
	"errors"
	"net"
	"sync"
	"time"

	"github.com/miekg/dns"
	"golang.org/x/net/ipv4"
	"golang.org/x/net/ipv6"
	"golang.org/x/sys/unix"
)

// The UDP side is served here rather than by miekg/dns's Server, whose
// path unpacks every query into a dns.Msg and packs every answer in a
// goroutine of its own: at about 60,000 cached answers a second on one
// core, about half of what unbound does. Here one goroutine reads queries
// in batches (recvmmsg), answers the common ones (mesh names and fresh
// cache hits) from bytes without unpacking anything, and writes the
// answers in batches (sendmmsg). Every other query (a miss, a stale
// entry, anything unusual) takes the full path, in a goroutine of its own,
// at most maxSlow at a time. The fast path gives the same answer the full
// path would; TestFastPathAsFullPath checks that.

const (
	udpBatch = 32   // queries read, and answers written, per system call
	maxQuery = 4096 // a longer query is dropped
	maxSlow  = 4096 // queries on the full path at once; past that, dropped
)

// batchConn is ipv4.PacketConn or ipv6.PacketConn.
type batchConn interface {
	ReadBatch(ms []ipv4.Message, flags int) (int, error)
	WriteBatch(ms []ipv4.Message, flags int) (int, error)
}

// setReadBuffer makes room for a burst while the process is not reading
// (starting, a collection, a busy neighbour): up to net.core.rmem_max, 4
// MiB as unbound's so-rcvbuf is often set; the kernel takes memory as
// datagrams wait. With the default (208 KiB) a couple of hundred small
// queries fit (about 250 in TestDNSThroughKill9AndRestart), and the rest
// are dropped without a word, each costing its client a timeout.
func setReadBuffer(conn *net.UDPConn) { conn.SetReadBuffer(4 << 20) }

// serveUDP answers queries on conn until it is closed.
func (s *Server) serveUDP(conn *net.UDPConn) error {
	setReadBuffer(conn) // Listen did, but conn may come from elsewhere
	var bc batchConn = ipv6.NewPacketConn(conn)
	if la, ok := conn.LocalAddr().(*net.UDPAddr); ok && la.IP.To4() != nil {
		bc = ipv4.NewPacketConn(conn)
	}
	in := make([]ipv4.Message, udpBatch)
	out := make([]ipv4.Message, udpBatch)
	bufs := make([][]byte, udpBatch)
	for i := range in {
		in[i].Buffers = [][]byte{make([]byte, maxQuery)}
		bufs[i] = make([]byte, 0, 512)
		out[i].Buffers = make([][]byte, 1)
	}
	var f fastPath
	slow := make(chan struct{}, maxSlow)
	var wg sync.WaitGroup
	defer wg.Wait()
	for {
		n, err := bc.ReadBatch(in, 0)
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return nil
			}
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				continue
			}
			s.cfg.Log.Debug("reading UDP queries", "err", err)
			time.Sleep(10 * time.Millisecond) // not a busy loop on a lasting error
			continue
		}
		k := 0
		for i := range n {
			m := &in[i]
			pkt := m.Buffers[0][:m.N]
			if m.Flags&unix.MSG_TRUNC != 0 { // longer than maxQuery
				continue
			}
			if resp, ok := s.fast(&f, pkt, bufs[k][:0]); ok {
				bufs[k] = resp[:0] // keep a grown buffer
				out[k].Buffers[0] = resp
				out[k].Addr = m.Addr
				k++
				continue
			}
			if len(pkt) < 12 || pkt[2]&0x80 != 0 {
				continue // not a query: never answered, so no loops
			}
			select {
			case slow <- struct{}{}:
			default:
				continue // the client will ask again
			}
			wg.Add(1)
			go func(pkt []byte, addr net.Addr) {
				defer func() { <-slow; wg.Done() }()
				s.serveSlowUDP(conn, pkt, addr)
			}(append([]byte(nil), pkt...), m.Addr)
		}
		for done := 0; done < k; {
			w, err := bc.WriteBatch(out[done:k], 0)
			if err != nil && w <= 0 {
				if errors.Is(err, net.ErrClosed) {
					return nil
				}
				w = 1 // skip the answer that failed
			}
			done += w
		}
	}
}

// serveSlowUDP answers one query on the full path.
func (s *Server) serveSlowUDP(conn *net.UDPConn, pkt []byte, addr net.Addr) {
	req := new(dns.Msg)
	if err := req.Unpack(pkt); err != nil {
		resp := new(dns.Msg)
		resp.Id = binary.BigEndian.Uint16(pkt)
		resp.Response = true
		resp.Rcode = dns.RcodeFormatError
		if b, err := resp.Pack(); err == nil {
			conn.WriteTo(b, addr)
		}
		return
	}
	resp := s.respond(req, true)
	if b, err := resp.Pack(); err == nil {
		conn.WriteTo(b, addr)
	}
}

// fastPath is the fast path's scratch space and counters, owned by the
// reading goroutine.
type fastPath struct {
	name [256]byte // the query's name, lower case, dotted
	key  [280]byte // its cache key
}

// DNS header flag bits.
const (
	flagQR = 0x80 // byte 2
	flagAA = 0x04
	flagTC = 0x02
	flagRD = 0x01
	flagRA = 0x80 // byte 3
	flagZ  = 0x40
	flagAD = 0x20
	flagCD = 0x10
)

// fast answers a mesh name or a fresh cache hit into out, from bytes, and
// reports whether it did. Anything else (including any query it does not
// fully understand) is left to the full path.
func (s *Server) fast(f *fastPath, q []byte, out []byte) ([]byte, bool) {
	if len(q) < 17 || q[2]&0xF8 != 0 || // a response, or not a standard query
		binary.BigEndian.Uint16(q[4:]) != 1 || binary.BigEndian.Uint16(q[6:]) != 0 ||
		binary.BigEndian.Uint16(q[8:]) != 0 || binary.BigEndian.Uint16(q[10:]) > 1 {
		return nil, false
	}
	// The name: plain labels of letters, digits, '-' and '_' only, so that
	// its dotted form is the one miekg/dns would give.
	nl, off := 0, 12
	for {
		if off >= len(q) {
			return nil, false
		}
		l := int(q[off])
		off++
		if l == 0 {
			break
		}
		if l > 63 || off+l > len(q) || nl+l+1 > 255 {
			return nil, false
		}
		for _, c := range q[off : off+l] {
			switch {
			case 'a' <= c && c <= 'z', '0' <= c && c <= '9', c == '-', c == '_':
			case 'A' <= c && c <= 'Z':
				c += 'a' - 'A'
			default:
				return nil, false
			}
			f.name[nl] = c
			nl++
		}
		f.name[nl] = '.'
		nl++
		off += l
	}
	if nl == 0 {
		f.name[0] = '.'
		nl = 1
	}
	name, qnameEnd := f.name[:nl], off
	if off+4 > len(q) {
		return nil, false
	}
	qtype, qclass := binary.BigEndian.Uint16(q[off:]), binary.BigEndian.Uint16(q[off+2:])
	off += 4
	edns, do, size := false, false, dns.MinMsgSize
	if binary.BigEndian.Uint16(q[10:]) == 1 {
		// OPT: root name, type 41, class = UDP size, TTL = extended rcode,
		// version, flags; then the options, which are not read.
		if off+11 > len(q) || q[off] != 0 || binary.BigEndian.Uint16(q[off+1:]) != dns.TypeOPT || q[off+6] != 0 {
			return nil, false
		}
		edns, do = true, q[off+7]&0x80 != 0
		size = int(min(max(binary.BigEndian.Uint16(q[off+3:]), dns.MinMsgSize), s.cfg.UDPSize))
		off += 11 + int(binary.BigEndian.Uint16(q[off+9:]))
	}
	if off != len(q) {
		return nil, false
	}

	var source string
	if ms := s.mesh.Load(); qclass == dns.ClassINET && ms.has(name) {
		out = s.meshWire(out, q[:qnameEnd+4], ms, qtype)
		source = SourceMesh
	} else {
		ts, cs := dns.TypeToString[qtype], dns.ClassToString[qclass]
		if ts == "" || cs == "" {
			return nil, false
		}
		key := append(f.key[:0], name...)
		key = append(append(append(append(key, '/'), ts...), '/'), cs...)
		if do {
			key = append(key, "/do"...)
		}
		h, ok := s.cache.get(key, s.cfg.Clock.Now(), out)
		if !ok || !h.fresh() {
			return nil, false
		}
		if out, ok = cachedWire(h.msg, q, qnameEnd, h.ttlLeft()); !ok {
			return nil, false
		}
		source = SourceCache
	}
	if edns {
		out = append(out, 0, 0, byte(dns.TypeOPT), 0, 0, 0, 0, 0, 0, 0, 0)
		binary.BigEndian.PutUint16(out[len(out)-8:], s.cfg.UDPSize)
		if do {
			out[len(out)-4] = 0x80
		}
		binary.BigEndian.PutUint16(out[10:], binary.BigEndian.Uint16(out[10:])+1)
	}
	if len(out) > size {
		return nil, false // the full path truncates
	}
	if s.m != nil {
		s.m.observe(qtype, int(out[3]&0x0F), source)
	}
	return out, true
}

// meshWire appends the answer to a mesh name: q's header and question (q
// ends with the question), then the proxy's addresses of the type asked.
func (s *Server) meshWire(out, q []byte, ms *meshSet, qtype uint16) []byte {
	out = append(out, q...)
	out[2] = flagQR | flagAA | q[2]&flagRD
	out[3] = flagRA | q[3]&flagCD
	clear(out[6:12])
	ttl := uint32(s.cfg.MeshTTL / time.Second)
	var n uint16
	rr := func(t uint16, a []byte) {
		out = append(out, 0xC0, 12, byte(t>>8), byte(t), 0, 1, byte(ttl>>24), byte(ttl>>16), byte(ttl>>8), byte(ttl), 0, byte(len(a)))
		out = append(out, a...)
		n++
	}
	if qtype == dns.TypeA || qtype == dns.TypeANY {
		for _, a := range ms.v4 {
			b := a.As4()
			rr(dns.TypeA, b[:])
		}
	}
	if qtype == dns.TypeAAAA || qtype == dns.TypeANY {
		for _, a := range ms.v6 {
			b := a.As16()
			rr(dns.TypeAAAA, b[:])
		}
	}
	binary.BigEndian.PutUint16(out[6:], n)
	return out
}

// cachedWire turns out, a copy of a cached message, into the answer to q:
// q's ID, flags and question (the client's case), and every TTL set to
// ttl. ok is false when the message is not one it can read.
func cachedWire(out, q []byte, qnameEnd int, ttl uint32) ([]byte, bool) {
	m := out
	if len(m) < qnameEnd+4 || binary.BigEndian.Uint16(m[4:]) != 1 ||
		!equalFold(m[12:qnameEnd], q[12:qnameEnd]) || string(m[qnameEnd:qnameEnd+4]) != string(q[qnameEnd:qnameEnd+4]) {
		return out, false
	}
	copy(out, q[:2])
	copy(out[12:qnameEnd], q[12:qnameEnd])
	out[2] = flagQR | out[2]&flagTC | q[2]&flagRD
	out[3] = flagRA | out[3]&(flagZ|flagAD|0x0F) | q[3]&flagCD
	rrs := int(binary.BigEndian.Uint16(m[6:])) + int(binary.BigEndian.Uint16(m[8:])) + int(binary.BigEndian.Uint16(m[10:]))
	off := qnameEnd + 4
	for range rrs {
		for { // the owner name: labels, maybe ending in a pointer
			if off >= len(out) {
				return out, false
			}
			l := int(out[off])
			if l == 0 {
				off++
				break
			}
			if l&0xC0 == 0xC0 {
				off += 2
				break
			}
			if l&0xC0 != 0 {
				return out, false
			}
			off += 1 + l
		}
		if off+10 > len(out) || binary.BigEndian.Uint16(out[off:]) == dns.TypeOPT {
			return out, false
		}
		binary.BigEndian.PutUint32(out[off+4:], ttl)
		off += 10 + int(binary.BigEndian.Uint16(out[off+8:]))
	}
	return out, off == len(out)
}

// equalFold reports whether a and b are equal with ASCII letters folded.
func equalFold(a, b []byte) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		x, y := a[i], b[i]
		if 'A' <= x && x <= 'Z' {
			x += 'a' - 'A'
		}
		if 'A' <= y && y <= 'Z' {
			y += 'a' - 'A'
		}
		if x != y {
			return false
		}
	}
	return true
}

// has reports whether name (lower case, fully qualified) is a mesh name.
// It takes bytes, so the fast path makes no string of the name.
func (ms *meshSet) has(name []byte) bool {
	if ms.names[string(name)] {
		return true
	}
	for _, w := range ms.wildcards {
		if len(name) > len(w) && string(name[len(name)-len(w):]) == w {
			return true
		}
	}
	return false
}

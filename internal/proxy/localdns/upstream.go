package localdns

import (
	"context"
	"errors"
	"fmt"
	"net"
	"strings"
	"time"

	"github.com/miekg/dns"
)

// errNoReply means an upstream gave no reply that could be accepted.
var errNoReply = errors.New("localdns: no acceptable reply")

// exchange asks server q over UDP, and over TCP when the reply is
// truncated. Over UDP it uses a socket of its own, connected to the server:
// a fresh random source port (the kernel picks it from its ephemeral
// range), and the kernel drops datagrams from any other address or port.
// A reply is accepted only if its ID, and its question, match (RFC 5452
// §9.1); others are counted in spoofed and waited past, until the
// deadline. udpSize is the EDNS0 size q offers: a longer datagram breaks
// the protocol and may have been cut, so the question is asked again over
// TCP, as for a truncated reply.
func exchange(ctx context.Context, server string, q *dns.Msg, udpSize int, spoofed func()) (*dns.Msg, error) {
	q.Id = dns.Id()
	r, err := exchangeUDP(ctx, server, q, udpSize, spoofed)
	if errors.Is(err, errTooLong) || err == nil && r.Truncated {
		return exchangeTCP(ctx, server, q)
	}
	return r, err
}

// errTooLong is a UDP reply longer than the size offered.
var errTooLong = errors.New("localdns: a UDP reply longer than offered")

func exchangeUDP(ctx context.Context, server string, q *dns.Msg, udpSize int, spoofed func()) (*dns.Msg, error) {
	var d net.Dialer
	conn, err := d.DialContext(ctx, "udp", server)
	if err != nil {
		return nil, err
	}
	defer conn.Close()
	if dl, ok := ctx.Deadline(); ok {
		conn.SetDeadline(dl)
	}
	out, err := q.Pack()
	if err != nil {
		return nil, err
	}
	if _, err := conn.Write(out); err != nil {
		return nil, err
	}
	// Not dns.MaxMsgSize: with thousands of misses a second, 64 KiB each
	// was most of the proxy's memory.
	buf := make([]byte, udpSize+1)
	for {
		n, err := conn.Read(buf)
		if err != nil {
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				return nil, fmt.Errorf("%w from %s: timed out", errNoReply, server)
			}
			// ICMP port unreachable and the like: the server is not there.
			return nil, fmt.Errorf("%w from %s: %w", errNoReply, server, err)
		}
		if n > udpSize {
			return nil, errTooLong
		}
		r := new(dns.Msg)
		if r.Unpack(buf[:n]) != nil || !matches(q, r) {
			spoofed()
			continue
		}
		return r, nil
	}
}

func exchangeTCP(ctx context.Context, server string, q *dns.Msg) (*dns.Msg, error) {
	c := &dns.Client{Net: "tcp"}
	if dl, ok := ctx.Deadline(); ok {
		c.Timeout = time.Until(dl) // else the client's 2 s defaults
	}
	r, _, err := c.ExchangeContext(ctx, q, server)
	if err != nil {
		return nil, fmt.Errorf("%w from %s over TCP: %w", errNoReply, server, err)
	}
	if !matches(q, r) {
		return nil, fmt.Errorf("%w from %s over TCP: the reply does not match the query", errNoReply, server)
	}
	return r, nil
}

// matches reports whether r answers q: a response with q's ID and q's
// question (the name compared without regard to case).
func matches(q, r *dns.Msg) bool {
	if !r.Response || r.Id != q.Id || len(r.Question) != len(q.Question) {
		return false
	}
	for i := range q.Question {
		a, b := q.Question[i], r.Question[i]
		if a.Qtype != b.Qtype || a.Qclass != b.Qclass || !strings.EqualFold(a.Name, b.Name) {
			return false
		}
	}
	return true
}

// Package uuidv7 makes UUIDs of version 7 (RFC 9562 §5.7): 48 bits of Unix
// time in milliseconds, then random bits, so that they sort by time.
//
// Written here rather than taken from github.com/google/uuid, which links
// database/sql/driver into the sidecar (test/binary_test.go keeps SQL out
// of it); the format is 20 lines.
//
// Within a process the UUIDs increase strictly: the 12 bits after the
// version are a counter within the millisecond (RFC 9562 §6.2, method 1),
// started at a random value below 2,048 each millisecond so that it has
// room to count; a millisecond that runs out of counter borrows the next,
// and so does a clock that steps back by up to a second. A clock that
// steps back further (a vehicle's clock corrected after boot) is followed,
// so that the time in the UUIDs stays the clock's; they are still unique,
// by their 62 random bits.
package uuidv7

import (
	"crypto/rand"
	"encoding/binary"
	"encoding/hex"
	"sync"
	"time"
)

type generator struct {
	mu      sync.Mutex
	lastMS  int64
	counter uint16
}

var std generator

// New returns a new UUID version 7 in its text form (36 characters,
// lower-case hex).
func New() string { return std.next(time.Now()) }

func (g *generator) next(now time.Time) string {
	var b [16]byte
	rand.Read(b[:]) // never fails (crypto/rand aborts the program instead)
	ms := now.UnixMilli()
	g.mu.Lock()
	switch {
	case ms > g.lastMS, ms < g.lastMS-1000:
		g.lastMS, g.counter = ms, binary.BigEndian.Uint16(b[6:])&0x7ff
	case g.counter < 0xfff:
		g.counter++
	default: // 4,096 in one millisecond: go on in the next
		g.lastMS++
		g.counter = binary.BigEndian.Uint16(b[6:]) & 0x7ff
	}
	ms, c := g.lastMS, g.counter
	g.mu.Unlock()
	b[0], b[1], b[2], b[3], b[4], b[5] = byte(ms>>40), byte(ms>>32), byte(ms>>24), byte(ms>>16), byte(ms>>8), byte(ms)
	binary.BigEndian.PutUint16(b[6:], 0x7000|c) // version 7, counter
	b[8] = b[8]&0x3f | 0x80                     // variant 10
	var s [36]byte
	hex.Encode(s[0:8], b[0:4])
	s[8] = '-'
	hex.Encode(s[9:13], b[4:6])
	s[13] = '-'
	hex.Encode(s[14:18], b[6:8])
	s[18] = '-'
	hex.Encode(s[19:23], b[8:10])
	s[23] = '-'
	hex.Encode(s[24:], b[10:])
	return string(s[:])
}

// Time returns the millisecond a UUID version 7 in text form was made in,
// and false if s is not one.
func Time(s string) (time.Time, bool) {
	if len(s) != 36 || s[8] != '-' || s[13] != '-' || s[18] != '-' || s[23] != '-' || s[14] != '7' {
		return time.Time{}, false
	}
	var b [16]byte
	if _, err := hex.Decode(b[:], []byte(s[0:8]+s[9:13]+s[14:18]+s[19:23]+s[24:])); err != nil || b[8]&0xc0 != 0x80 {
		return time.Time{}, false
	}
	ms := int64(b[0])<<40 | int64(b[1])<<32 | int64(b[2])<<24 | int64(b[3])<<16 | int64(b[4])<<8 | int64(b[5])
	return time.UnixMilli(ms), true
}

// Package httphead parses HTTP/1.1 request and response heads of the strict,
// common form, from bytes already buffered, in one pass.
//
// The sidecar's lean server and its upstream fast path parse one request
// head and one response head per proxied request. net/http's parsers
// (http.ReadRequest and http.ReadResponse, over net/textproto) read line by
// line through a bufio.Reader and allocate per line and per header: 18 of the
// 22 allocations a proxied request made, and most of the user-space CPU that
// was not the runtime's. These parsers make one string of the whole head and
// slice every name and value out of it.
//
// They are deliberately narrow. They accept only what they can interpret
// exactly as net/http does, and refuse the rest: the caller then uses
// net/http, which stays the authority on every unusual message (obsolete
// line folding, bare LF line ends, absolute-form targets, HTTP/1.0, repeated
// Content-Length or Host, Transfer-Encoding). A refusal is never an error to
// the peer. The differential fuzz tests check that whatever these parsers
// accept, net/http parses to the same fields.
package httphead

import (
	"net/http"
	"net/textproto"
	"net/url"

	"golang.org/x/net/http/httpguts"
)

// HeadEnd returns the length of the head at the start of b: through the
// empty line that ends it, whether lines end in CRLF or a bare LF. ok is
// false when b does not hold the whole head yet.
func HeadEnd(b []byte) (n int, ok bool) {
	for i := 0; i < len(b); i++ {
		if b[i] != '\n' {
			continue
		}
		switch {
		case i+1 < len(b) && b[i+1] == '\n':
			return i + 2, true
		case i+2 < len(b) && b[i+1] == '\r' && b[i+2] == '\n':
			return i + 3, true
		}
	}
	return 0, false
}

// requestBox holds a request and its URL in one allocation.
type requestBox struct {
	req http.Request
	url url.URL
}

// ParseRequest parses the request head that is the whole of b (as HeadEnd
// measured it). It returns nil if the head is not of the strict form: the
// request line "METHOD origin-form HTTP/1.1", CRLF line ends, token header
// names followed at once by a colon, values without control characters, one
// Host header with a valid value, at most one Content-Length of digits only,
// and no Transfer-Encoding. The request is what http.ReadRequest returns,
// but Body is left nil for the caller to set; ContentLength is the declared
// length.
func ParseRequest(b []byte) *http.Request {
	s := string(b)
	box := new(requestBox)
	r := &box.req

	i := 0
	for i < len(s) && isTokenChar(s[i]) {
		i++
	}
	if i == 0 || i >= len(s) || s[i] != ' ' {
		return nil
	}
	r.Method = s[:i]
	i++
	start := i
	for i < len(s) && s[i] > ' ' && s[i] < 0x7f {
		i++
	}
	target := s[start:i]
	if len(target) == 0 || target[0] != '/' || !hasPrefixAt(s, i, " HTTP/1.1\r\n") {
		return nil
	}
	i += len(" HTTP/1.1\r\n")
	if !parseTarget(target, &box.url) {
		return nil
	}
	r.URL = &box.url
	r.RequestURI = target
	r.Proto, r.ProtoMajor, r.ProtoMinor = "HTTP/1.1", 1, 1

	h, ok := parseFields(s, i)
	if !ok {
		return nil
	}
	hosts := h["Host"]
	if len(hosts) != 1 || hosts[0] == "" || !httpguts.ValidHostHeader(hosts[0]) {
		return nil
	}
	r.Host = hosts[0]
	delete(h, "Host")
	n, ok := framing(h, false)
	if !ok {
		return nil
	}
	r.ContentLength = n
	r.Header = h
	r.Close = httpguts.HeaderValuesContainsToken(h["Connection"], "close")
	return r
}

// ParseResponse parses the response head that is the whole of b, the answer
// to req. It returns nil unless the head is of the strict form: status line
// "HTTP/1.1 NNN reason" with a final status (200–599, not 204 or 304), the
// field rules of ParseRequest, and exactly one Content-Length; and req is
// not HEAD. Body is left nil for the caller to set.
func ParseResponse(b []byte, req *http.Request) *http.Response {
	if req.Method == http.MethodHead || len(b) < len("HTTP/1.1 200 \r\n\r\n") {
		return nil
	}
	s := string(b)
	if s[:9] != "HTTP/1.1 " || s[12] != ' ' {
		return nil
	}
	code := 0
	for _, c := range []byte(s[9:12]) {
		if c < '0' || c > '9' {
			return nil
		}
		code = code*10 + int(c-'0')
	}
	if code < 200 || code == http.StatusNoContent || code == http.StatusNotModified {
		return nil
	}
	i := 13
	for i < len(s) && s[i] != '\r' {
		if !isValueChar(s[i]) {
			return nil
		}
		i++
	}
	if !hasPrefixAt(s, i, "\r\n") {
		return nil
	}
	resp := &http.Response{
		Status:     s[9:i],
		StatusCode: code,
		Proto:      "HTTP/1.1",
		ProtoMajor: 1,
		ProtoMinor: 1,
		Request:    req,
	}
	h, ok := parseFields(s, i+2)
	if !ok {
		return nil
	}
	n, ok := framing(h, true)
	if !ok {
		return nil
	}
	resp.ContentLength = n
	if httpguts.HeaderValuesContainsToken(h["Connection"], "close") {
		resp.Close = true
		delete(h, "Connection") // as net/http does for a response
	}
	resp.Header = h
	return resp
}

// parseFields parses header fields from s[i:] through the empty line that
// must end s.
func parseFields(s string, i int) (http.Header, bool) {
	lines := 0
	for j := i; j < len(s); j++ {
		if s[j] == '\n' {
			lines++
		}
	}
	if lines == 0 {
		return nil, false
	}
	h := make(http.Header, lines-1)
	vals := make([]string, lines-1) // one backing array for every first value
	for {
		if hasPrefixAt(s, i, "\r\n") {
			return h, i+2 == len(s)
		}
		start := i
		for i < len(s) && isTokenChar(s[i]) {
			i++
		}
		if i == start || i >= len(s) || s[i] != ':' {
			return nil, false
		}
		key := s[start:i]
		i++
		for i < len(s) && (s[i] == ' ' || s[i] == '\t') {
			i++
		}
		vstart := i
		for i < len(s) && s[i] != '\r' {
			if !isValueChar(s[i]) {
				return nil, false
			}
			i++
		}
		if !hasPrefixAt(s, i, "\r\n") {
			return nil, false
		}
		vend := i
		for vend > vstart && (s[vend-1] == ' ' || s[vend-1] == '\t') {
			vend--
		}
		i += 2
		if !isCanonical(key) {
			key = textproto.CanonicalMIMEHeaderKey(key)
		}
		v := s[vstart:vend]
		if old, ok := h[key]; ok {
			h[key] = append(old, v)
			continue
		}
		vals[0] = v
		h[key] = vals[:1:1]
		vals = vals[1:]
	}
}

// framing checks the fields that frame the body and applies net/http's
// Pragma rule: no Transfer-Encoding, and Content-Length as contentLength
// takes it (required for a response, whose length would otherwise run to
// the connection's end). It returns the body length.
func framing(h http.Header, needLength bool) (int64, bool) {
	if _, ok := h["Transfer-Encoding"]; ok {
		return 0, false
	}
	if _, ok := h["Content-Length"]; needLength && !ok {
		return 0, false
	}
	n, ok := contentLength(h)
	if ok {
		fixPragmaCacheControl(h)
	}
	return n, ok
}

// contentLength returns the declared body length: 0 without the header,
// and refuses anything but one value of at most 18 digits.
func contentLength(h http.Header) (int64, bool) {
	vs, ok := h["Content-Length"]
	if !ok {
		return 0, true
	}
	if len(vs) != 1 || len(vs[0]) == 0 || len(vs[0]) > 18 {
		return 0, false
	}
	var n int64
	for _, c := range []byte(vs[0]) {
		if c < '0' || c > '9' {
			return 0, false
		}
		n = n*10 + int64(c-'0')
	}
	return n, true
}

// parseTarget fills u from an origin-form request target the way
// url.ParseRequestURI does, by hand for the common characters and through
// url.ParseRequestURI for anything else (percent-escapes, a fragment
// mark, sub-delimiters a path would be re-escaped for).
func parseTarget(target string, u *url.URL) bool {
	path, query := target, ""
	q := -1
	for i := 0; i < len(target); i++ {
		c := target[i]
		if c == '?' {
			q = i
			break
		}
		if !isPlainPathChar(c) {
			return slowTarget(target, u)
		}
	}
	if q >= 0 {
		path, query = target[:q], target[q+1:]
		for i := 0; i < len(query); i++ {
			if query[i] == '#' {
				return slowTarget(target, u)
			}
		}
		if query == "" {
			u.ForceQuery = true
		}
	}
	u.Path, u.RawQuery = path, query
	return true
}

func slowTarget(target string, u *url.URL) bool {
	p, err := url.ParseRequestURI(target)
	if err != nil {
		return false
	}
	*u = *p
	return true
}

// fixPragmaCacheControl is net/http's: "Pragma: no-cache" without
// Cache-Control means "Cache-Control: no-cache" (RFC 7234, 5.4).
func fixPragmaCacheControl(h http.Header) {
	if hp, ok := h["Pragma"]; ok && len(hp) > 0 && hp[0] == "no-cache" {
		if _, presentcc := h["Cache-Control"]; !presentcc {
			h["Cache-Control"] = []string{"no-cache"}
		}
	}
}

func hasPrefixAt(s string, i int, prefix string) bool {
	return len(s)-i >= len(prefix) && s[i:i+len(prefix)] == prefix
}

// isCanonical reports whether key is already in the form
// textproto.CanonicalMIMEHeaderKey gives it.
func isCanonical(key string) bool {
	upper := true
	for i := 0; i < len(key); i++ {
		c := key[i]
		if upper && 'a' <= c && c <= 'z' || !upper && 'A' <= c && c <= 'Z' {
			return false
		}
		upper = c == '-'
	}
	return true
}

// isTokenChar reports whether c may appear in a token (RFC 9110, 5.6.2).
func isTokenChar(c byte) bool { return c < 0x80 && tokenChars[c] }

// isValueChar reports whether c may appear in a field value here: visible
// characters, space, tab and obs-text; no other control characters.
func isValueChar(c byte) bool { return c == '\t' || (c >= ' ' && c != 0x7f) }

// isPlainPathChar reports whether url.ParseRequestURI keeps c in a path
// as it is, with no RawPath: unreserved characters and the delimiters a
// path may hold unescaped.
func isPlainPathChar(c byte) bool {
	switch {
	case 'a' <= c && c <= 'z', 'A' <= c && c <= 'Z', '0' <= c && c <= '9':
		return true
	}
	switch c {
	case '-', '_', '.', '~', '/', '$', '&', '+', ',', ':', ';', '=', '@':
		return true
	}
	return false
}

var tokenChars = func() (t [128]bool) {
	for c := '0'; c <= '9'; c++ {
		t[c] = true
	}
	for c := 'a'; c <= 'z'; c++ {
		t[c] = true
		t[c-'a'+'A'] = true
	}
	for _, c := range "!#$%&'*+-.^_`|~" {
		t[c] = true
	}
	return t
}()

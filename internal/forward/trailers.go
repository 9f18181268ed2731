package forward

import (
	"io"
	"net/http"

	"golang.org/x/net/http/httpguts"
)

// TrailerAllowed reports whether a trailer field may be passed on. Fields a
// sender must not put in trailers (RFC 9110 §6.5.1: framing, routing,
// request modifiers, authentication, content metadata — the list net/http's
// servers apply to the trailers a handler declares, which includes every
// If-* field) and hop-by-hop fields are dropped in both directions: a
// recipient that merges trailers into the header section would otherwise
// take a Content-Length or Host from them.
func TrailerAllowed(name string) bool {
	name = http.CanonicalHeaderKey(name)
	return httpguts.ValidTrailerHeader(name) && !hopHeaders[name]
}

// dropForbiddenTrailers deletes the fields TrailerAllowed refuses.
func dropForbiddenTrailers(h http.Header) {
	for k := range h {
		if !TrailerAllowed(k) {
			delete(h, k)
		}
	}
}

// trailerFilter drops a response's forbidden trailer fields at the end of
// its body, after the transport has filled them in and before ReverseProxy
// copies them. It holds the response, not its map: the HTTP/2 transport
// replaces resp.Trailer when the trailers arrive.
type trailerFilter struct {
	io.ReadCloser
	resp *http.Response
}

func (f *trailerFilter) Read(p []byte) (int, error) {
	n, err := f.ReadCloser.Read(p)
	if err == io.EOF {
		dropForbiddenTrailers(f.resp.Trailer)
	}
	return n, err
}

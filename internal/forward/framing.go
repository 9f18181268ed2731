package forward

import (
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
)

// ErrBadBody wraps an error reading the app's request body other than its
// end or its size limit: chunked framing that does not parse, or a body
// cut short. Forward returns it after answering 400 with RefuseBody; the
// request reached the upstream, if at all, with its body cut off, which
// the upstream sees as a broken request.
var ErrBadBody = errors.New("forward: request body unreadable")

// RefuseBody answers a request whose body could not be read (err): 413
// past its size limit, 400 otherwise. On HTTP/1 the connection is closed
// after the answer: once a body's framing broke, where the next request
// would start is unknown, and the bytes after the break must never be
// read as one. (net/http would keep the connection when the handler has
// asked for full duplex, as the edge does; an HTTP/2 stream's body cannot
// run into another stream, so its connection stays.)
func RefuseBody(w http.ResponseWriter, r *http.Request, err error) {
	if r.ProtoMajor == 1 {
		w.Header().Set("Connection", "close")
	}
	var mbe *http.MaxBytesError
	if errors.As(err, &mbe) {
		http.Error(w, fmt.Sprintf("misaki: request body larger than %d bytes", mbe.Limit), http.StatusRequestEntityTooLarge)
		return
	}
	http.Error(w, "misaki: malformed request body: "+err.Error(), http.StatusBadRequest)
}

// BodyCutShort reports whether err, from reading a request body, means
// the app went away mid-body rather than sent a malformed one.
func BodyCutShort(err error) bool {
	var ne net.Error
	return errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, net.ErrClosed) || errors.As(err, &ne)
}

// CloseAmbiguous asks for the connection to close after the response to
// an HTTP/1 request whose framing another hop may have read differently:
// a chunked body, or HTTP/1.0. RFC 9112 §6.1 and §6.3 require the close
// after a request with both Transfer-Encoding and Content-Length, and
// after an HTTP/1.0 request with Transfer-Encoding, since a proxy in
// front may have framed it by the other header and sent the rest as a
// body; net/http takes Transfer-Encoding (or, on HTTP/1.0, Content-Length),
// deletes the other header, and keeps the connection. The handler cannot
// tell which requests had both, so every such request closes its
// connection; a new one costs little on the loopback apps use. Simple
// requests (the lean server's) are never of this kind.
func CloseAmbiguous(w http.ResponseWriter, r *http.Request) {
	if r.ProtoMajor == 1 && (r.ProtoMinor == 0 || len(r.TransferEncoding) > 0) {
		w.Header().Set("Connection", "close")
	}
}

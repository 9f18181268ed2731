package h1

import (
	"bufio"
	"context"
	"errors"
	"net"
	"net/http"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/net/http/httpguts"
)

// responseWriter writes one HTTP/1.1 response: Content-Length framing when
// the handler sets it, chunked otherwise (with trailers), none for HEAD,
// 204 and 304.
type responseWriter struct {
	conn   net.Conn
	bw     *bufio.Writer
	br     *bufio.Reader
	cr     *connReader
	dl     *deadline
	req    *http.Request
	header http.Header

	wroteHeader   bool
	status        int
	chunked       bool
	noBody        bool
	contentLength int64 // -1: unknown
	written       int64
	closeAfter    bool
	err           error

	watch *watcher
}

var _ http.Flusher = (*responseWriter)(nil)

func (w *responseWriter) Header() http.Header { return w.header }

// reset readies w for the connection's next request.
func (w *responseWriter) reset(req *http.Request) {
	clear(w.header)
	*w = responseWriter{conn: w.conn, bw: w.bw, br: w.br, cr: w.cr, dl: w.dl, req: req, header: w.header}
}

func (w *responseWriter) WriteHeader(code int) {
	if w.wroteHeader || code < 200 {
		// Informational answers are not relayed on this path (simple
		// requests carry no Expect); the final one follows.
		return
	}
	w.wroteHeader, w.status = true, code
	h := w.header
	w.noBody = w.req.Method == http.MethodHead || code == http.StatusNoContent || code == http.StatusNotModified
	w.contentLength = -1
	if v := h.Get("Content-Length"); v != "" {
		if n, err := strconv.ParseInt(v, 10, 64); err == nil && n >= 0 {
			w.contentLength = n
		} else {
			delete(h, "Content-Length")
		}
	}
	if !w.noBody && w.contentLength < 0 {
		w.chunked = true
	}
	// A handler that asks to close (as after a request it could not read
	// to its end) is obeyed, as net/http does.
	w.closeAfter = w.req.Close || httpguts.HeaderValuesContainsToken(h["Connection"], "close")
	bw := w.bw
	bw.WriteString("HTTP/1.1 ")
	bw.WriteString(strconv.Itoa(code))
	bw.WriteByte(' ')
	bw.WriteString(http.StatusText(code))
	bw.WriteString("\r\n")
	if _, ok := h["Date"]; !ok {
		bw.WriteString("Date: ")
		bw.WriteString(httpDate())
		bw.WriteString("\r\n")
	}
	for k, vs := range h {
		if strings.HasPrefix(k, http.TrailerPrefix) || k == "Transfer-Encoding" || k == "Connection" {
			continue
		}
		if k == "Trailer" && !w.chunked {
			continue
		}
		for _, v := range vs {
			bw.WriteString(k)
			bw.WriteString(": ")
			bw.WriteString(v)
			bw.WriteString("\r\n")
		}
	}
	if w.chunked {
		bw.WriteString("Transfer-Encoding: chunked\r\n")
	}
	if w.closeAfter {
		bw.WriteString("Connection: close\r\n")
	}
	bw.WriteString("\r\n")
}

func (w *responseWriter) Write(p []byte) (int, error) {
	if !w.wroteHeader {
		w.WriteHeader(http.StatusOK)
	}
	if w.err != nil {
		return 0, w.err
	}
	if w.noBody {
		if w.req.Method == http.MethodHead {
			return len(p), nil
		}
		return 0, http.ErrBodyNotAllowed
	}
	if w.contentLength >= 0 && w.written+int64(len(p)) > w.contentLength {
		return 0, http.ErrContentLength
	}
	if w.chunked {
		if len(p) == 0 {
			return 0, nil
		}
		w.bw.WriteString(strconv.FormatInt(int64(len(p)), 16))
		w.bw.WriteString("\r\n")
	}
	n, err := w.bw.Write(p)
	if w.chunked {
		w.bw.WriteString("\r\n")
	}
	w.written += int64(n)
	if err != nil {
		w.err = err
	}
	return n, err
}

func (w *responseWriter) Flush() {
	if !w.wroteHeader {
		w.WriteHeader(http.StatusOK)
	}
	if err := w.bw.Flush(); err != nil && w.err == nil {
		w.err = err
	}
}

// finish completes the response and reports whether the connection is
// still in a clean state.
func (w *responseWriter) finish() bool {
	if !w.wroteHeader {
		w.WriteHeader(http.StatusOK)
	}
	if w.chunked {
		w.bw.WriteString("0\r\n")
		h := w.header
		for _, decl := range h["Trailer"] {
			for k := range strings.SplitSeq(decl, ",") {
				k = http.CanonicalHeaderKey(strings.TrimSpace(k))
				if !httpguts.ValidTrailerHeader(k) {
					continue // as net/http's servers do: framing, routing and the like never go in trailers
				}
				for _, v := range h[k] {
					w.bw.WriteString(k + ": " + v + "\r\n")
				}
			}
		}
		for k, vs := range h {
			if name, ok := strings.CutPrefix(k, http.TrailerPrefix); ok && httpguts.ValidTrailerHeader(http.CanonicalHeaderKey(name)) {
				for _, v := range vs {
					w.bw.WriteString(name + ": " + v + "\r\n")
				}
			}
		}
		w.bw.WriteString("\r\n")
	}
	if err := w.bw.Flush(); err != nil {
		return false
	}
	if w.err != nil || (w.contentLength >= 0 && !w.noBody && w.written != w.contentLength) {
		return false
	}
	return true
}

// WatchClient returns a context that also ends when the client closes its
// connection, and a stop function to call before the handler returns. The
// request body must have been read: the watch reads the connection itself,
// below the bufio.Reader, and hands back any byte it gets. The hold path uses
// it so that a request whose app has gone is never forwarded.
func (w *responseWriter) WatchClient(ctx context.Context) (context.Context, func()) {
	if w.watch != nil || w.br.Buffered() > 0 || w.cr.hasPending {
		// Already watching, or the client has sent more (pipelining):
		// it is there.
		return ctx, func() {}
	}
	// The watch waits as long as the handler runs: no deadline.
	if !w.dl.at.IsZero() {
		w.dl.set(time.Time{}, false)
	}
	ctx, cancel := context.WithCancel(ctx)
	wt := &watcher{done: make(chan struct{}), cancel: cancel}
	w.watch = wt
	go func() {
		defer close(wt.done)
		var b [1]byte
		n, err := w.conn.Read(b[:])
		if n == 1 {
			wt.got, wt.gotByte = b[0], true // a pipelined request: still there
			return
		}
		// EOF or reset: the app has gone. A deadline (stopWatch, or the
		// server's Shutdown waking idle connections) is not a hang-up.
		if err != nil && !wt.stopping.Load() && !errors.Is(err, os.ErrDeadlineExceeded) {
			cancel()
		}
	}()
	return ctx, w.stopWatch
}

// stopWatch ends the watch, if any, and leaves the connection as it was.
func (w *responseWriter) stopWatch() {
	wt := w.watch
	if wt == nil {
		return
	}
	w.watch = nil
	wt.stopping.Store(true)
	w.conn.SetReadDeadline(time.Unix(1, 0))
	<-wt.done
	w.dl.set(time.Time{}, false)
	if wt.gotByte {
		w.cr.pending, w.cr.hasPending = wt.got, true
	}
	wt.cancel()
}

type watcher struct {
	done     chan struct{}
	cancel   context.CancelFunc
	got      byte
	gotByte  bool
	stopping atomic.Bool
}

var (
	dateMu   sync.Mutex
	dateSec  int64
	dateText string
)

// httpDate returns the Date header value, formatted once a second.
func httpDate() string {
	now := time.Now()
	dateMu.Lock()
	defer dateMu.Unlock()
	if s := now.Unix(); s != dateSec {
		dateSec, dateText = s, now.UTC().Format(http.TimeFormat)
	}
	return dateText
}

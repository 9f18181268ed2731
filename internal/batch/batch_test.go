package batch

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"mime"
	"mime/multipart"
	"net/http"
	"net/textproto"
	"slices"
	"strconv"
	"strings"
	"testing"
)

func TestRoundTrip(t *testing.T) {
	reqs := []Item{
		{Method: "POST", Target: "/v1/t?a=1", Host: "telemetry.cloud.misaki", Header: http.Header{"Idempotency-Key": {"k1"}, "X-A": {"1", "2"}}, Body: []byte("body\r\n--not a boundary\r\n")},
		{Method: "GET", Target: "/", Host: "h", Header: nil},
	}
	var buf bytes.Buffer
	ct := Write(&buf, reqs)
	got, err := Read(&buf, ct, true, 1<<20)
	if err != nil || len(got) != 2 {
		t.Fatalf("Read: %d items, %v", len(got), err)
	}
	if g := got[0]; g.Method != "POST" || g.Target != "/v1/t?a=1" || g.Host != "telemetry.cloud.misaki" ||
		g.Header.Get("Idempotency-Key") != "k1" || len(g.Header["X-A"]) != 2 || string(g.Body) != string(reqs[0].Body) {
		t.Fatalf("item 0: %+v", g)
	}
	if r := got[0].Request(); r.URL.RequestURI() != "/v1/t?a=1" || r.Host != "telemetry.cloud.misaki" || r.ContentLength != int64(len(reqs[0].Body)) {
		t.Fatalf("Request: %v %q %d", r.URL, r.Host, r.ContentLength)
	}
	if got[1].Method != "GET" || len(got[1].Body) != 0 {
		t.Fatalf("item 1: %+v", got[1])
	}

	resps := []Item{{Status: 201, Header: http.Header{"Misaki-Replayed": {"true"}}, Body: []byte("ok")}, {Status: 422}}
	buf.Reset()
	ct = Write(&buf, resps)
	got, err = Read(&buf, ct, false, 1<<20)
	if err != nil || len(got) != 2 || got[0].Status != 201 || string(got[0].Body) != "ok" || got[0].Header.Get("Misaki-Replayed") != "true" || got[1].Status != 422 {
		t.Fatalf("responses: %+v %v", got, err)
	}
}

func TestRefusals(t *testing.T) {
	var buf bytes.Buffer
	ct := Write(&buf, []Item{{Method: "POST", Target: "/", Host: "h", Body: bytes.Repeat([]byte("x"), 1000)}})
	body := buf.String()
	if _, err := Read(strings.NewReader(body), "application/json", true, 1<<20); !errors.Is(err, ErrFormat) {
		t.Errorf("not multipart: %v", err)
	}
	if _, err := Read(strings.NewReader(body), ct, false, 1<<20); !errors.Is(err, ErrFormat) {
		t.Errorf("requests read as responses: %v", err)
	}
	if _, err := Read(strings.NewReader(body), ct, true, 500); err == nil || !strings.Contains(err.Error(), "larger than 500 bytes") {
		t.Errorf("too large: %v", err)
	}
	many := make([]Item, MaxItems+1)
	for i := range many {
		many[i] = Item{Method: "GET", Target: "/", Host: "h"}
	}
	buf.Reset()
	ct = Write(&buf, many)
	if _, err := Read(&buf, ct, true, 1<<20); err == nil || !strings.Contains(err.Error(), "more than 256 items") {
		t.Errorf("too many items: %v", err)
	}
}

func FuzzRead(f *testing.F) {
	var buf bytes.Buffer
	ct := Write(&buf, []Item{{Method: "POST", Target: "/a", Host: "h", Body: []byte("b")}})
	f.Add(buf.Bytes(), strings.TrimPrefix(ct, "multipart/mixed; boundary="))
	f.Fuzz(func(t *testing.T, body []byte, boundary string) {
		ct := "multipart/mixed; boundary=" + boundary
		Read(bytes.NewReader(body), ct, false, 1<<16) // must not panic
		items, err := Read(bytes.NewReader(body), ct, true, 1<<16)
		if err != nil {
			return
		}
		// What is read, written again, reads the same.
		var buf bytes.Buffer
		ct2 := Write(&buf, items)
		again, err := Parse(buf.Bytes(), ct2, true)
		if err != nil {
			t.Fatalf("reading what Write made of %d items: %v", len(items), err)
		}
		for i := range items {
			for _, k := range []string{"Host", "Content-Length", "Transfer-Encoding", "Connection"} {
				delete(items[i].Header, k)
				delete(again[i].Header, k)
			}
		}
		sameItems(t, "read, written and read again", again, items)
	})
}

// multipartWrite and multipartRead are the format written and read with
// mime/multipart and a bufio.Reader per part: the peer Write and Read must
// interoperate with, and BenchmarkRead's comparison.
func multipartWrite(w io.Writer, items []Item) (string, error) {
	mw := multipart.NewWriter(w)
	for _, it := range items {
		ct := typeResponse
		if it.Method != "" {
			ct = typeRequest
		}
		pw, err := mw.CreatePart(textproto.MIMEHeader{"Content-Type": {ct}})
		if err != nil {
			return "", err
		}
		bw := bufio.NewWriter(pw)
		if it.Method != "" {
			fmt.Fprintf(bw, "%s %s HTTP/1.1\r\nHost: %s\r\n", it.Method, it.Target, it.Host)
		} else {
			fmt.Fprintf(bw, "HTTP/1.1 %03d %s\r\n", it.Status, http.StatusText(it.Status))
		}
		h := it.Header.Clone()
		if h == nil {
			h = http.Header{}
		}
		h.Set("Content-Length", strconv.Itoa(len(it.Body)))
		if err := h.Write(bw); err != nil {
			return "", err
		}
		bw.WriteString("\r\n")
		bw.Write(it.Body)
		if err := bw.Flush(); err != nil {
			return "", err
		}
	}
	if err := mw.Close(); err != nil {
		return "", err
	}
	return mw.FormDataContentType(), nil
}

func multipartRead(body io.Reader, contentType string, requests bool) ([]Item, error) {
	_, params, err := mime.ParseMediaType(contentType)
	if err != nil {
		return nil, err
	}
	mr := multipart.NewReader(body, params["boundary"])
	var items []Item
	for {
		p, err := mr.NextPart()
		if errors.Is(err, io.EOF) {
			return items, nil
		}
		if err != nil {
			return nil, err
		}
		br := bufio.NewReader(p)
		var it Item
		if requests {
			req, err := http.ReadRequest(br)
			if err != nil {
				return nil, err
			}
			it = Item{Method: req.Method, Target: req.RequestURI, Host: req.Host, Header: req.Header}
			if it.Body, err = io.ReadAll(req.Body); err != nil {
				return nil, err
			}
		} else {
			resp, err := http.ReadResponse(br, nil)
			if err != nil {
				return nil, err
			}
			it = Item{Status: resp.StatusCode, Header: resp.Header}
			if it.Body, err = io.ReadAll(resp.Body); err != nil {
				return nil, err
			}
		}
		items = append(items, it)
	}
}

func sameItems(t *testing.T, what string, got, want []Item) {
	t.Helper()
	if len(got) != len(want) {
		t.Fatalf("%s: %d items, want %d", what, len(got), len(want))
	}
	for i := range want {
		g, w := got[i], want[i]
		if g.Method != w.Method || g.Target != w.Target || g.Host != w.Host || g.Status != w.Status || !bytes.Equal(g.Body, w.Body) {
			t.Fatalf("%s: item %d: %+v, want %+v", what, i, g, w)
		}
		for k, vs := range w.Header {
			if !slices.Equal(g.Header[k], vs) {
				t.Fatalf("%s: item %d: header %s = %q, want %q", what, i, k, g.Header[k], vs)
			}
		}
	}
}

func TestMultipartInterop(t *testing.T) {
	reqs := []Item{
		{Method: "POST", Target: "/v1/t?a=1", Host: "telemetry.cloud.misaki", Header: http.Header{"Idempotency-Key": {"k1"}, "X-A": {"1", "2"}}, Body: []byte("body\r\n--not a boundary\r\n")},
		{Method: "DELETE", Target: "/x", Host: "h", Header: http.Header{}},
		{Method: "PUT", Target: "/big", Host: "h", Header: http.Header{"Content-Type": {"application/octet-stream"}}, Body: bytes.Repeat([]byte("\r\n-"), 40_000)},
	}
	resps := []Item{
		{Status: 201, Header: http.Header{"Misaki-Replayed": {"true"}}, Body: []byte("ok")},
		{Status: 204, Header: http.Header{}},
		{Status: 422, Header: http.Header{"Content-Type": {"text/plain"}}, Body: []byte("different body\n")},
	}
	for _, c := range []struct {
		name     string
		items    []Item
		requests bool
	}{{"requests", reqs, true}, {"responses", resps, false}} {
		var buf bytes.Buffer
		ct := Write(&buf, c.items)
		got, err := multipartRead(bytes.NewReader(buf.Bytes()), ct, c.requests)
		if err != nil {
			t.Fatalf("%s: mime/multipart reading Write's output: %v", c.name, err)
		}
		sameItems(t, c.name+", Write then mime/multipart", got, c.items)

		buf.Reset()
		ct, err = multipartWrite(&buf, c.items)
		if err != nil {
			t.Fatal(err)
		}
		ct = strings.Replace(ct, "multipart/form-data", "multipart/mixed", 1)
		got, err = Parse(append([]byte("a preamble\r\n"), buf.Bytes()...), ct, c.requests)
		if err != nil {
			t.Fatalf("%s: Parse of mime/multipart's output: %v", c.name, err)
		}
		sameItems(t, c.name+", mime/multipart then Parse", got, c.items)
	}
}

func TestHeaderValuesCannotAddLines(t *testing.T) {
	var buf bytes.Buffer
	ct := Write(&buf, []Item{{Method: "POST", Target: "/", Host: "h", Header: http.Header{
		"X-A":            {"one\r\nX-Injected: yes"},
		"Bad Name":       {"dropped"},
		"content-length": {"999"},
	}, Body: []byte("b")}})
	got, err := Read(&buf, ct, true, 1<<20)
	if err != nil || len(got) != 1 {
		t.Fatalf("Read: %v", err)
	}
	if h := got[0].Header; h.Get("X-Injected") != "" || h.Get("X-A") != "one  X-Injected: yes" || len(h) != 2 || h.Get("Content-Length") != "1" {
		t.Fatalf("header: %q", h)
	}
}

func TestMessageFraming(t *testing.T) {
	part := func(msg string) []byte {
		return []byte("--b\r\nContent-Type: application/http; msgtype=request\r\n\r\n" + msg + "\r\n--b--\r\n")
	}
	ct := "multipart/mixed; boundary=b"
	for _, c := range []struct{ msg, err string }{
		{"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 5\r\n\r\nabc", "Content-Length 5, but 3 bytes"},
		{"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n", "Transfer-Encoding"},
		{"POST / HTTP/1.1\r\nHost: h\r\n", "header does not end"},
		{"GET / HTTP/1.1\r\nHost: h\r\n\r\nstray", "Content-Length 0, but 5 bytes"},
	} {
		if _, err := Parse(part(c.msg), ct, true); err == nil || !strings.Contains(err.Error(), c.err) {
			t.Errorf("%q: %v, want an error naming %q", c.msg, err, c.err)
		}
	}
	for _, body := range []string{"no delimiter at all", "--b\r\nContent-Type: application/http; msgtype=request\r\n\r\nGET / HTTP/1.1\r\nHost: h\r\n\r\n", "--bX"} {
		if _, err := Parse([]byte(body), ct, true); !errors.Is(err, ErrFormat) {
			t.Errorf("%q: %v, want ErrFormat", body, err)
		}
	}
	if got, err := Parse([]byte("--b--\r\n"), ct, true); err != nil || len(got) != 0 {
		t.Errorf("an empty batch: %v, %v", got, err)
	}
}

// BenchmarkRead reads a batch of 32 requests with 1 KiB bodies, as the
// gateway does in BenchmarkDrain, with Read and with mime/multipart.
func BenchmarkRead(b *testing.B) {
	items := make([]Item, 32)
	for i := range items {
		items[i] = Item{Method: "POST", Target: "/v1/telemetry", Host: "telemetry.cloud.misaki", Body: bytes.Repeat([]byte("t"), 1024),
			Header: http.Header{"Content-Type": {"application/json"}, "Idempotency-Key": {fmt.Sprintf("spool-%08d", i)}, "X-Req-Id": {strconv.Itoa(i)}}}
	}
	var buf bytes.Buffer
	ct := Write(&buf, items)
	body := buf.Bytes()
	b.Run("Read", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			if _, err := Read(bytes.NewReader(body), ct, true, 1<<20); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("mime-multipart", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			if _, err := multipartRead(bytes.NewReader(body), ct, true); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("Write", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			var out bytes.Buffer
			Write(&out, items)
		}
	})
	b.Run("mime-multipart-write", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			var out bytes.Buffer
			multipartWrite(&out, items)
		}
	})
}

package httphead

import (
	"bufio"
	"bytes"
	"net/http"
	"reflect"
	"strings"
	"testing"
)

var requestSeeds = []string{
	"GET / HTTP/1.1\r\nHost: a\r\n\r\n",
	"GET /x/y?z=1&w HTTP/1.1\r\nHost: telemetry.cloud.misaki:8080\r\nUser-Agent: fortio.org/fortio-1.63\r\nAccept: */*\r\n\r\n",
	"POST /p HTTP/1.1\r\nHost: a\r\nContent-Length: 11\r\nContent-Type: text/plain\r\n\r\n",
	"PUT /a%20b HTTP/1.1\r\nhost: a\r\ncontent-length:0\r\nx-two: 1\r\nX-Two: 2\r\n\r\n",
	"GET /q? HTTP/1.1\r\nHost: a\r\nConnection: keep-alive, close\r\nPragma: no-cache\r\n\r\n",
	"GET /(x)!*' HTTP/1.1\r\nHost: [::1]:80\r\nX-Sp:  v \t\r\nX-Obs: caf\xc3\xa9\r\n\r\n",
	"GET /a#f?b HTTP/1.1\r\nHost: a\r\n\r\n",
	"OPTIONS * HTTP/1.1\r\nHost: a\r\n\r\n",
	"GET //x HTTP/1.1\r\nHost: a\r\nWWW-authenticate: x\r\nx_y: z\r\n\r\n",
}

// The requests ParseRequest must refuse, leaving them to net/http.
var refusedRequests = map[string]string{
	"HTTP/1.0":           "GET / HTTP/1.0\r\nHost: a\r\n\r\n",
	"bare LF":            "GET / HTTP/1.1\nHost: a\n\n",
	"obs-fold":           "GET / HTTP/1.1\r\nHost: a\r\nX: 1\r\n 2\r\n\r\n",
	"two hosts":          "GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n",
	"no host":            "GET / HTTP/1.1\r\nX: a\r\n\r\n",
	"empty host":         "GET / HTTP/1.1\r\nHost:\r\n\r\n",
	"bad host":           "GET / HTTP/1.1\r\nHost: a b\r\n\r\n",
	"transfer-encoding":  "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n",
	"two lengths":        "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 1\r\nContent-Length: 1\r\n\r\n",
	"signed length":      "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: +1\r\n\r\n",
	"absolute-form":      "GET http://a/ HTTP/1.1\r\nHost: a\r\n\r\n",
	"asterisk":           "OPTIONS * HTTP/1.1\r\nHost: a\r\n\r\n",
	"space before colon": "GET / HTTP/1.1\r\nHost : a\r\n\r\n",
	"control in value":   "GET / HTTP/1.1\r\nHost: a\r\nX: a\x01b\r\n\r\n",
	"bad method":         "G(T / HTTP/1.1\r\nHost: a\r\n\r\n",
	"bad percent":        "GET /%zz HTTP/1.1\r\nHost: a\r\n\r\n",
	"leading empty line": "\r\nGET / HTTP/1.1\r\nHost: a\r\n\r\n",
	// Smuggling shapes (internal/smuggletest runs them end to end).
	"length and TE":         "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n",
	"TE in capitals":        "POST / HTTP/1.1\r\nHost: a\r\nTRANSFER-ENCODING: CHUNKED\r\n\r\n",
	"TE after a tab":        "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding:\tchunked\r\n\r\n",
	"TE on HTTP/1.0":        "POST / HTTP/1.0\r\nHost: a\r\nTransfer-Encoding: chunked\r\nContent-Length: 5\r\n\r\n",
	"differing lengths":     "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 0\r\nContent-Length: 5\r\n\r\n",
	"length list":           "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5, 5\r\n\r\n",
	"hex length":            "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 0x5\r\n\r\n",
	"split length":          "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 1 0\r\n\r\n",
	"folded length":         "POST / HTTP/1.1\r\nHost: a\r\nX: a\r\n Content-Length: 40\r\nContent-Length: 5\r\n\r\n",
	"fold before headers":   "POST / HTTP/1.1\r\n Content-Length: 40\r\nHost: a\r\n\r\n",
	"NUL in value":          "GET / HTTP/1.1\r\nHost: a\r\nX: a\x00b\r\n\r\n",
	"NUL in name":           "GET / HTTP/1.1\r\nHost: a\r\nX-\x00A: b\r\n\r\n",
	"bare CR in value":      "GET / HTTP/1.1\r\nHost: a\r\nX: a\rContent-Length: 5\r\n\r\n",
	"vertical tab in value": "GET / HTTP/1.1\r\nHost: a\r\nX: \x0bb\r\n\r\n",
	"space in name":         "POST / HTTP/1.1\r\nHost: a\r\nContent Length: 5\r\n\r\n",
}

func TestParseRequestMatchesNetHTTP(t *testing.T) {
	for _, in := range requestSeeds {
		if strings.HasPrefix(in, "OPTIONS *") {
			continue
		}
		got := ParseRequest([]byte(in))
		if got == nil {
			t.Errorf("refused %q", in)
			continue
		}
		compareRequest(t, []byte(in), got)
	}
	for name, in := range refusedRequests {
		n, ok := HeadEnd([]byte(in))
		if !ok || n != len(in) {
			t.Errorf("%s: HeadEnd = %d, %v; want the whole head", name, n, ok)
		}
		if r := ParseRequest([]byte(in)); r != nil {
			t.Errorf("%s: accepted %q", name, in)
		}
	}
}

func TestParseRequestFields(t *testing.T) {
	r := ParseRequest([]byte("GET /q? HTTP/1.1\r\nHost: a\r\nConnection: keep-alive, close\r\nPragma: no-cache\r\nX-Sp:  v \t\r\n\r\n"))
	if r == nil {
		t.Fatal("refused")
	}
	if !r.Close || !r.URL.ForceQuery || r.Header.Get("Cache-Control") != "no-cache" || r.Header.Get("X-Sp") != "v" || r.Host != "a" || r.Header["Host"] != nil {
		t.Errorf("close %v forceQuery %v cache-control %q x-sp %q host %q header host %q",
			r.Close, r.URL.ForceQuery, r.Header.Get("Cache-Control"), r.Header.Get("X-Sp"), r.Host, r.Header["Host"])
	}
}

func TestHeadEnd(t *testing.T) {
	for in, want := range map[string]int{
		"GET / HTTP/1.1\r\nHost: a\r\n\r\nbody": 27,
		"GET / HTTP/1.1\nHost: a\n\nbody":       24,
		"GET / HTTP/1.1\r\nHost: a\r\n\r":       -1,
		"GET / HTTP/1.1\r\nHost: a\r\n":         -1,
		"":                                      -1,
	} {
		n, ok := HeadEnd([]byte(in))
		if !ok {
			n = -1
		}
		if n != want {
			t.Errorf("HeadEnd(%q) = %d, want %d", in, n, want)
		}
	}
}

var responseSeeds = []string{
	"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Type: text/plain\r\n\r\n",
	"HTTP/1.1 503 Service Unavailable\r\nServer: nginx\r\nDate: Tue, 24 Nov 2026 10:00:00 GMT\r\nContent-Length: 0\r\nConnection: close\r\nRetry-After: 5\r\n\r\n",
	"HTTP/1.1 201 \r\ncontent-length: 2\r\nset-cookie: a=1\r\nSet-Cookie: b=2\r\nPragma: no-cache\r\n\r\n",
	"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n",
	"HTTP/1.1 204 No Content\r\n\r\n",
	"HTTP/1.1 100 Continue\r\n\r\n",
	"HTTP/1.1 200 OK\r\n\r\n",
}

func TestParseResponseMatchesNetHTTP(t *testing.T) {
	req := &http.Request{Method: http.MethodGet}
	for i, in := range responseSeeds {
		got := ParseResponse([]byte(in), req)
		if (got != nil) != (i < 3) {
			t.Errorf("%q: accepted %v, want %v", in, got != nil, i < 3)
		}
		if got != nil {
			compareResponse(t, []byte(in), req, got)
		}
	}
	if ParseResponse([]byte(responseSeeds[0]), &http.Request{Method: http.MethodHead}) != nil {
		t.Error("accepted the answer to a HEAD request")
	}
	r := ParseResponse([]byte(responseSeeds[1]), req)
	if !r.Close || r.Header["Connection"] != nil || r.Status != "503 Service Unavailable" {
		t.Errorf("close %v connection %q status %q", r.Close, r.Header["Connection"], r.Status)
	}
}

func FuzzParseRequest(f *testing.F) {
	for _, s := range requestSeeds {
		f.Add([]byte(s))
	}
	for _, s := range refusedRequests {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		n, ok := HeadEnd(b)
		if !ok {
			return
		}
		if got := ParseRequest(b[:n]); got != nil {
			compareRequest(t, b[:n], got)
		}
	})
}

func FuzzParseResponse(f *testing.F) {
	for _, s := range responseSeeds {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		n, ok := HeadEnd(b)
		if !ok {
			return
		}
		req := &http.Request{Method: http.MethodGet}
		if got := ParseResponse(b[:n], req); got != nil {
			compareResponse(t, b[:n], req, got)
		}
	})
}

// compareRequest checks that net/http reads head to the same request.
func compareRequest(t *testing.T, head []byte, got *http.Request) {
	t.Helper()
	want, err := http.ReadRequest(bufio.NewReader(bytes.NewReader(head)))
	if err != nil {
		t.Fatalf("accepted %q, which net/http refuses: %v", head, err)
	}
	type fields struct {
		Method, RequestURI, Proto, Host string
		Major, Minor                    int
		URL                             any
		Header                          http.Header
		ContentLength                   int64
		Close                           bool
	}
	g := fields{got.Method, got.RequestURI, got.Proto, got.Host, got.ProtoMajor, got.ProtoMinor, *got.URL, got.Header, got.ContentLength, got.Close}
	w := fields{want.Method, want.RequestURI, want.Proto, want.Host, want.ProtoMajor, want.ProtoMinor, *want.URL, want.Header, want.ContentLength, want.Close}
	if !reflect.DeepEqual(g, w) {
		t.Fatalf("%q:\n got  %+v\n want %+v", head, g, w)
	}
}

// compareResponse checks that net/http reads head to the same response.
func compareResponse(t *testing.T, head []byte, req *http.Request, got *http.Response) {
	t.Helper()
	want, err := http.ReadResponse(bufio.NewReader(bytes.NewReader(head)), req)
	if err != nil {
		t.Fatalf("accepted %q, which net/http refuses: %v", head, err)
	}
	type fields struct {
		Status, Proto      string
		Code, Major, Minor int
		Header             http.Header
		ContentLength      int64
		Close              bool
	}
	g := fields{got.Status, got.Proto, got.StatusCode, got.ProtoMajor, got.ProtoMinor, got.Header, got.ContentLength, got.Close}
	w := fields{want.Status, want.Proto, want.StatusCode, want.ProtoMajor, want.ProtoMinor, want.Header, want.ContentLength, want.Close}
	if !reflect.DeepEqual(g, w) {
		t.Fatalf("%q:\n got  %+v\n want %+v", head, g, w)
	}
}

var benchRequest = []byte("GET /v1/telemetry?vin=WVW123 HTTP/1.1\r\nHost: telemetry.cloud.misaki\r\nUser-Agent: vehicle-app/1.0\r\nAccept: */*\r\nContent-Type: application/json\r\n\r\n")

func BenchmarkParseRequest(b *testing.B) {
	b.ReportAllocs()
	for b.Loop() {
		if ParseRequest(benchRequest) == nil {
			b.Fatal("refused")
		}
	}
}

func BenchmarkNetHTTPReadRequest(b *testing.B) {
	b.ReportAllocs()
	rd := bytes.NewReader(benchRequest)
	br := bufio.NewReader(rd)
	for b.Loop() {
		rd.Reset(benchRequest)
		br.Reset(rd)
		if _, err := http.ReadRequest(br); err != nil {
			b.Fatal(err)
		}
	}
}

var benchResponse = []byte("HTTP/1.1 200 OK\r\nServer: nginx/1.26.3\r\nDate: Tue, 24 Nov 2026 10:00:00 GMT\r\nContent-Type: text/plain\r\nContent-Length: 1024\r\nConnection: keep-alive\r\n\r\n")

func BenchmarkParseResponse(b *testing.B) {
	b.ReportAllocs()
	req := &http.Request{Method: http.MethodGet}
	for b.Loop() {
		if ParseResponse(benchResponse, req) == nil {
			b.Fatal("refused")
		}
	}
}

func BenchmarkNetHTTPReadResponse(b *testing.B) {
	b.ReportAllocs()
	req := &http.Request{Method: http.MethodGet}
	rd := bytes.NewReader(benchResponse)
	br := bufio.NewReader(rd)
	for b.Loop() {
		rd.Reset(benchResponse)
		br.Reset(rd)
		if _, err := http.ReadResponse(br, req); err != nil {
			b.Fatal(err)
		}
	}
}

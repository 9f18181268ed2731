package forward

import (
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
)

// BenchmarkForward measures one proxied request end to end on loopback
// (client → forwarder → upstream → back) for the fast path and for
// ReverseProxy, with allocations per request.
func BenchmarkForward(b *testing.B) {
	body := strings.Repeat("x", 1024)
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, body)
	}))
	defer up.Close()
	for _, path := range []string{"fast", "reverseproxy"} {
		b.Run(path, func(b *testing.B) {
			f, err := New(benchRoute(up.URL), Options{Log: quiet, NoFastPath: path == "reverseproxy"})
			if err != nil {
				b.Fatal(err)
			}
			defer f.Close()
			front := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				f.Forward(w, r, "direct")
			}))
			defer front.Close()
			client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 64}}
			req, _ := http.NewRequest(http.MethodGet, front.URL+"/", nil)
			req.Host = "svc.mesh"
			b.ReportAllocs()
			b.ResetTimer()
			for b.Loop() {
				resp, err := client.Do(req)
				if err != nil {
					b.Fatal(err)
				}
				io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
			}
		})
	}
}

package h2guard_test

import (
	"io"
	"net"
	"net/http"
	"testing"

	"github.com/misaki-io/misaki/internal/h2guard"
)

// BenchmarkH2C is small h2c requests on one connection, through net/http's
// own HTTP/2 server and through a guarded one: the guard's cost per
// request.
func BenchmarkH2C(b *testing.B) {
	for _, guarded := range []bool{false, true} {
		name := "net/http"
		if guarded {
			name = "guarded"
		}
		b.Run(name, func(b *testing.B) {
			var protos http.Protocols
			protos.SetHTTP1(true)
			protos.SetUnencryptedHTTP2(true)
			hs := &http.Server{Protocols: &protos, Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				w.Write([]byte("ok"))
			})}
			if guarded {
				if err := h2guard.New(h2guard.Limits{Resets: h2guard.Rate{Burst: 500, PerSecond: 100}}, h2guard.Options{}).ConfigureServer(hs); err != nil {
					b.Fatal(err)
				}
			}
			ln, err := net.Listen("tcp", "127.0.0.1:0")
			if err != nil {
				b.Fatal(err)
			}
			go hs.Serve(ln)
			defer hs.Close()
			var cp http.Protocols
			cp.SetUnencryptedHTTP2(true)
			client := &http.Client{Transport: &http.Transport{Protocols: &cp}}
			url := "http://" + ln.Addr().String() + "/"
			b.ReportAllocs()
			b.ResetTimer()
			b.RunParallel(func(pb *testing.PB) {
				for pb.Next() {
					resp, err := client.Get(url)
					if err != nil {
						b.Error(err)
						return
					}
					io.Copy(io.Discard, resp.Body)
					resp.Body.Close()
				}
			})
		})
	}
}

//go:build pprof

package cli

import (
	"net/http"
	_ "net/http/pprof" // registers /debug/pprof on http.DefaultServeMux
	"os"
)

// Profiling builds (go build -tags pprof) serve net/http/pprof on
// $MISAKI_PPROF (for example 127.0.0.1:6060). Release builds leave it out.
func init() {
	if addr := os.Getenv("MISAKI_PPROF"); addr != "" {
		go http.ListenAndServe(addr, nil)
	}
}

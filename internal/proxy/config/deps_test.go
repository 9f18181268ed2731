package config

import (
	"strings"
	"testing"

	"github.com/misaki-io/misaki/internal/depstest"
)

// TestNoServerImports: the configuration model is shared by the proxy and
// the controller; it imports none of the proxy's servers (the DNS
// server's defaults are stated in dns.go instead).
func TestNoServerImports(t *testing.T) {
	for _, p := range depstest.Of(t) {
		if strings.HasPrefix(p, "github.com/misaki-io/misaki/internal/proxy/") && p != "github.com/misaki-io/misaki/internal/proxy/config" {
			t.Errorf("imports %s", p)
		}
	}
}

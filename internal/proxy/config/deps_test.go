package config

import (
	"os/exec"
	"strings"
	"testing"
)

// TestNoServerImports: the configuration model is shared by the proxy and
// the controller; it imports none of the proxy's servers (the DNS
// server's defaults are stated in dns.go instead).
func TestNoServerImports(t *testing.T) {
	out, err := exec.Command("go", "list", "-deps", ".").Output()
	if err != nil {
		t.Skipf("go list: %v", err)
	}
	for _, p := range strings.Fields(string(out)) {
		if strings.HasPrefix(p, "github.com/misaki-io/misaki/internal/proxy/") && p != "github.com/misaki-io/misaki/internal/proxy/config" {
			t.Errorf("imports %s", p)
		}
	}
}

package trust

import (
	"os/exec"
	"strings"
	"testing"
)

// TestNoHubImports: the vehicle agent links this package, so it must not
// pull in the hub.
func TestNoHubImports(t *testing.T) {
	out, err := exec.Command("go", "list", "-deps", ".").Output()
	if err != nil {
		t.Skipf("go list: %v", err)
	}
	for _, p := range strings.Fields(string(out)) {
		if strings.HasPrefix(p, "github.com/misaki-io/misaki/internal/hub") {
			t.Errorf("imports %s", p)
		}
	}
}

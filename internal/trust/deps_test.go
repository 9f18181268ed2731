package trust

import (
	"strings"
	"testing"

	"github.com/misaki-io/misaki/internal/depstest"
)

// TestNoHubImports: the vehicle agent links this package, so it must not
// pull in the hub.
func TestNoHubImports(t *testing.T) {
	for _, p := range depstest.Of(t) {
		if strings.HasPrefix(p, "github.com/misaki-io/misaki/internal/hub") {
			t.Errorf("imports %s", p)
		}
	}
}

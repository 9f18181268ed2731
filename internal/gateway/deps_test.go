package gateway

import (
	"strings"
	"testing"

	"github.com/misaki-io/misaki/internal/depstest"
)

// TestImportsNoEdgePackage: the gateway and the edge share what both use
// through neutral packages (internal/forward, internal/routematch,
// internal/httphead); of the edge's own packages it reads only the
// configuration model (docs/decisions/0007-shared-config-model.md). The
// neutral packages it links hold to the same rule, so a change to the
// edge's servers, links or spool cannot reach the gateway unseen.
func TestImportsNoEdgePackage(t *testing.T) {
	for _, p := range depstest.Of(t) {
		if strings.HasPrefix(p, "github.com/misaki-io/misaki/internal/proxy/") && p != "github.com/misaki-io/misaki/internal/proxy/config" {
			t.Errorf("the gateway links the edge's %s", p)
		}
	}
}

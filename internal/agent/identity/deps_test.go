package identity

import (
	"strings"
	"testing"

	"github.com/misaki-io/misaki/internal/depstest"
)

// TestNoHubServerImports: the vehicle agent links this package, so of the
// hub's tree it may pull in internal/hub/enrol alone (the definition of a
// vehicle's identity, VehicleID; standard library and internal/durable),
// never the hub's server, store or renderer.
func TestNoHubServerImports(t *testing.T) {
	for _, p := range depstest.Of(t) {
		if (p == "github.com/misaki-io/misaki/internal/hub" || strings.HasPrefix(p, "github.com/misaki-io/misaki/internal/hub/")) &&
			p != "github.com/misaki-io/misaki/internal/hub/enrol" {
			t.Errorf("imports %s", p)
		}
		for _, banned := range []string{"k8s.io/", "sigs.k8s.io/", "database/sql", "modernc.org/sqlite", "github.com/jackc/"} {
			if strings.HasPrefix(p, banned) {
				t.Errorf("imports %s", p)
			}
		}
	}
}

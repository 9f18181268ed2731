package depstest

import (
	"slices"
	"testing"
)

func TestOf(t *testing.T) {
	deps := Of(t)
	for _, want := range []string{"github.com/misaki-io/misaki/internal/depstest", "os/exec", "testing"} {
		if !slices.Contains(deps, want) {
			t.Errorf("go list -deps of this package lacks %s: %v", want, deps)
		}
	}
	if deps := Of(t, "github.com/misaki-io/misaki/internal/uuidv7"); slices.Contains(deps, "os/exec") {
		t.Errorf("uuidv7 listed with this package's deps: %v", deps)
	}
}

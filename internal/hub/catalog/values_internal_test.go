package catalog

import (
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

func TestSortProblems(t *testing.T) {
	for _, tc := range []struct {
		name     string
		in, want string
	}{
		{
			name: "siblings sorted, children kept under their parent",
			in: `- at '/replicas': got string, want integer
- at '/planner': validation failed
  - at '/planner/port': maximum: got 70,000, want 65,535
  - at '/planner/placement': value must be one of 'vehicle', 'cloud', 'auto'`,
			want: `- at '/planner': validation failed
  - at '/planner/placement': value must be one of 'vehicle', 'cloud', 'auto'
  - at '/planner/port': maximum: got 70,000, want 65,535
- at '/replicas': got string, want integer`,
		},
		{
			name: "subchart headings keep their findings",
			in: `- at '/b': x

redis:
- at '/port': y
- at '/auth': z
`,
			want: `- at '/b': x
redis:
- at '/auth': z
- at '/port': y`,
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := strings.Join(sortProblems(strings.Split(tc.in, "\n")), "\n")
			if diff := cmp.Diff(tc.want, got); diff != "" {
				t.Errorf("(-want +got):\n%s", diff)
			}
		})
	}
}

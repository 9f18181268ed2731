package codec

import (
	"fmt"
	"math"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	hubv1 "github.com/misaki-io/misaki/api/hub/v1"
	"github.com/misaki-io/misaki/internal/hub/store"
)

func TestPage(t *testing.T) {
	ds := func(names ...string) []hubv1.Deployment {
		var out []hubv1.Deployment
		for _, n := range names {
			out = append(out, hubv1.Deployment{Name: n})
		}
		return out
	}
	for _, tc := range []struct {
		name string
		read []hubv1.Deployment
		lim  int
		want []hubv1.Deployment
		next string
	}{
		{"none", nil, 2, []hubv1.Deployment{}, ""},
		{"short", ds("a"), 2, ds("a"), ""},
		{"exactly a page", ds("a", "b"), 2, ds("a", "b"), ""},
		{"one more", ds("a", "b", "c"), 2, ds("a", "b"), "b"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, next := PageDeployments(tc.read, tc.lim)
			if diff := cmp.Diff(tc.want, got); diff != "" || next != tc.next {
				t.Errorf("next %q, want %q; page (-want +got):\n%s", next, tc.next, diff)
			}
			if got == nil {
				t.Error("nil page, want an empty list")
			}
		})
	}
	if _, next := PageAudit([]hubv1.AuditEntry{{ID: 9}, {ID: 7}, {ID: 4}}, 2); next != "7" {
		t.Errorf("audit cursor %q, want 7", next)
	}
	if Limit(0) != 100 || Limit(-1) != 100 || Limit(5) != 5 {
		t.Errorf("Limit(0), Limit(-1), Limit(5) = %d, %d, %d; want 100, 100, 5", Limit(0), Limit(-1), Limit(5))
	}
}

func TestAuditRange(t *testing.T) {
	for _, tc := range []struct {
		p      store.Page
		before int64
		lim    int
		ok     bool
	}{
		{store.Page{}, math.MaxInt64, 100, true},
		{store.Page{After: "42", Limit: 5}, 42, 5, true},
		{store.Page{After: "x"}, 0, 0, false},
	} {
		before, lim, err := AuditRange(tc.p)
		if (err == nil) != tc.ok || before != tc.before || lim != tc.lim {
			t.Errorf("AuditRange(%+v) = %d, %d, %v; want %d, %d, ok %v", tc.p, before, lim, err, tc.before, tc.lim, tc.ok)
		}
	}
}

// fleet is a vehicles table: n vehicles v000…, every third labelled odd.
func fleet(n int) (fetch func(after string, n int) ([]hubv1.Vehicle, error), fetches *int) {
	var all []hubv1.Vehicle
	for i := range n {
		l := map[string]string{}
		if i%3 == 0 {
			l["odd"] = "yes"
		}
		all = append(all, hubv1.Vehicle{ID: fmt.Sprintf("v%03d", i), Labels: l})
	}
	fetches = new(int)
	return func(after string, n int) ([]hubv1.Vehicle, error) {
		*fetches++
		var out []hubv1.Vehicle
		for _, v := range all {
			if v.ID > after && len(out) < n {
				out = append(out, v)
			}
		}
		return out, nil
	}, fetches
}

func ids(vs []hubv1.Vehicle) string {
	var s []string
	for _, v := range vs {
		s = append(s, v.ID)
	}
	return strings.Join(s, ",")
}

func TestListVehicles(t *testing.T) {
	odd := func(l map[string]string) bool { return l["odd"] == "yes" }
	for _, tc := range []struct {
		name    string
		n       int
		p       store.Page
		match   func(map[string]string) bool
		want    string
		next    string
		fetches int
	}{
		{"all, one page", 3, store.Page{}, nil, "v000,v001,v002", "", 1},
		{"all, paged", 5, store.Page{Limit: 2}, nil, "v000,v001", "v001", 1},
		{"all, after", 5, store.Page{After: "v001", Limit: 2}, nil, "v002,v003", "v003", 1},
		{"matching, within a chunk", 30, store.Page{Limit: 3}, odd, "v000,v003,v006", "v006", 1},
		{"matching, last page", 30, store.Page{After: "v020", Limit: 5}, odd, "v021,v024,v027", "", 1},
		{"matching, over chunks", 1000, store.Page{Limit: 100}, odd, "", "v297", 2},
		{"none match", 600, store.Page{}, func(map[string]string) bool { return false }, "", "", 3},
	} {
		t.Run(tc.name, func(t *testing.T) {
			fetch, fetches := fleet(tc.n)
			got, next, err := ListVehicles(tc.p, tc.match, fetch)
			if err != nil {
				t.Fatal(err)
			}
			if tc.want != "" && ids(got) != tc.want {
				t.Errorf("page %s, want %s", ids(got), tc.want)
			}
			if next != tc.next || *fetches != tc.fetches {
				t.Errorf("next %q after %d fetches, want %q after %d", next, *fetches, tc.next, tc.fetches)
			}
			if got == nil {
				t.Error("nil page, want an empty list")
			}
		})
	}
}

package storetest

import (
	"fmt"
	"testing"
	"time"

	hubv1 "github.com/misaki-io/misaki/api/hub/v1"
	"github.com/misaki-io/misaki/internal/hub/store"
)

func fullDeployment(name string) hubv1.Deployment {
	return hubv1.Deployment{
		Name:      name,
		Namespace: "apps",
		Chart:     hubv1.ChartRef{Source: "repo", Name: "shuttle", Version: "1.2.3", Digest: "sha256:" + fmt.Sprintf("%064d", 1)},
		// Values as encoding/json decodes them: float64 numbers, []any,
		// map[string]any.
		Values: map[string]any{
			"replicas": float64(3),
			"ratio":    0.25,
			"image":    map[string]any{"repository": "registry/api", "tag": "v2", "pull": nil},
			"args":     []any{"--a", float64(1), true, map[string]any{"k": "v"}},
			"empty":    map[string]any{},
			"none":     []any{},
			"unicode":  "ßü ✓ \u0000 \"quoted\"",
		},
		Selector: "fleet=eu,tier in (a,b)",
		Customizations: []hubv1.Customization{
			{Name: "small", Selector: "size=small", Values: map[string]any{"replicas": float64(1)}},
			{Name: "gpu", Selector: "gpu=true"},
		},
		Placement:        map[string]string{"api": hubv1.PlaceVehicle, "ml": hubv1.PlaceCloud, "db": hubv1.PlaceAuto},
		DefaultPlacement: hubv1.PlaceAuto,
		Health:           &hubv1.HealthPolicy{Deadline: "10m", Rollback: true},
		Generation:       1,
		Created:          at(0),
		Updated:          at(time.Second),
		CreatedBy:        "ops",
	}
}

func storedDeployment(d hubv1.Deployment) hubv1.Deployment {
	d.Created, d.Updated = stored(d.Created), stored(d.Updated)
	return d
}

func testDeploymentRoundTrip(t *testing.T, s store.Store) {
	ctx := t.Context()
	for _, tc := range []struct {
		name string
		d    hubv1.Deployment
		want func(*hubv1.Deployment)
	}{
		{"full", fullDeployment("full"), nil},
		{"bare", hubv1.Deployment{Name: "bare", Created: at(0)}, func(d *hubv1.Deployment) {
			d.Generation = 1              // a new deployment is generation 1
			d.Updated = stored(d.Created) // and updated when created
		}},
		{"empty collections", hubv1.Deployment{Name: "empty", Values: map[string]any{}, Customizations: []hubv1.Customization{},
			Placement: map[string]string{}, Generation: 1, Created: at(0), Updated: at(0)}, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			must(t, "create", s.CreateDeployment(ctx, tc.d))
			got, err := s.GetDeployment(ctx, tc.d.Name)
			must(t, "get", err)
			want := storedDeployment(tc.d)
			if tc.want != nil {
				tc.want(&want)
			}
			if d := diff(want, got); d != "" {
				t.Errorf("round trip (-want +got):\n%s", d)
			}
		})
	}
	wantErr(t, "create taken name", s.CreateDeployment(ctx, fullDeployment("bare")), store.ErrExists)
	_, err := s.GetDeployment(ctx, "missing")
	wantErr(t, "get missing", err, store.ErrNotFound)
	wantErr(t, "delete missing", s.DeleteDeployment(ctx, "missing"), store.ErrNotFound)
	must(t, "delete", s.DeleteDeployment(ctx, "full"))
	_, err = s.GetDeployment(ctx, "full")
	wantErr(t, "get deleted", err, store.ErrNotFound)
	wantErr(t, "delete again", s.DeleteDeployment(ctx, "full"), store.ErrNotFound)
}

func testUpdateDeployment(t *testing.T, s store.Store) {
	ctx := t.Context()
	orig := fullDeployment("shuttle")
	must(t, "create", s.CreateDeployment(ctx, orig))
	want := storedDeployment(orig)

	change := func(gen int64, f func(*hubv1.Deployment)) hubv1.Deployment {
		d := fullDeployment("shuttle")
		d.Generation = gen
		d.Created, d.CreatedBy = at(time.Hour), "someone else" // not changeable
		f(&d)
		return d
	}
	for _, st := range []struct {
		name   string
		update hubv1.Deployment
		err    error
		want   func(*hubv1.Deployment)
	}{
		{
			name: "new values",
			update: change(1, func(d *hubv1.Deployment) {
				d.Values = map[string]any{"replicas": float64(5)}
				d.Updated = at(time.Minute)
			}),
			want: func(d *hubv1.Deployment) {
				d.Values, d.Generation, d.Updated = map[string]any{"replicas": float64(5)}, 2, stored(at(time.Minute))
			},
		},
		{
			name: "no health policy",
			update: change(2, func(d *hubv1.Deployment) {
				d.Values, d.Health, d.Updated = map[string]any{"replicas": float64(5)}, nil, at(time.Minute)
			}),
			want: func(d *hubv1.Deployment) { d.Health, d.Generation = nil, 3 },
		},
		{
			name: "another health policy",
			update: change(3, func(d *hubv1.Deployment) {
				d.Values, d.Health, d.Updated = map[string]any{"replicas": float64(5)}, &hubv1.HealthPolicy{Deadline: "90s"}, at(time.Minute)
			}),
			want: func(d *hubv1.Deployment) { d.Health, d.Generation = &hubv1.HealthPolicy{Deadline: "90s"}, 4 },
		},
		{
			name:   "stale generation",
			update: change(1, func(d *hubv1.Deployment) { d.Selector = "fleet=us" }),
			err:    store.ErrConflict,
		},
		{
			name:   "future generation",
			update: change(5, func(d *hubv1.Deployment) { d.Selector = "fleet=us" }),
			err:    store.ErrConflict,
		},
		{
			name: "new chart, placement and no customizations",
			update: change(4, func(d *hubv1.Deployment) {
				d.Chart.Version, d.Placement, d.Customizations, d.Updated = "1.3.0", nil, nil, at(2*time.Minute)
				d.Values, d.Health = map[string]any{"replicas": float64(5)}, &hubv1.HealthPolicy{Deadline: "90s"}
			}),
			want: func(d *hubv1.Deployment) {
				d.Chart.Version, d.Placement, d.Customizations, d.Generation, d.Updated = "1.3.0", nil, nil, 5, stored(at(2*time.Minute))
			},
		},
	} {
		t.Run(st.name, func(t *testing.T) {
			got, err := s.UpdateDeployment(ctx, st.update)
			wantErr(t, "update", err, st.err)
			if st.err == nil {
				st.want(&want)
				if d := diff(want, got); d != "" {
					t.Errorf("returned (-want +got):\n%s", d)
				}
			}
			read, err := s.GetDeployment(ctx, "shuttle")
			must(t, "get", err)
			if d := diff(want, read); d != "" {
				t.Errorf("stored (-want +got):\n%s", d)
			}
		})
	}
	_, err := s.UpdateDeployment(ctx, hubv1.Deployment{Name: "missing", Generation: 1})
	wantErr(t, "update missing", err, store.ErrNotFound)
}

func testListDeployments(t *testing.T, s store.Store) {
	ctx := t.Context()
	names := ids("dep-%02d", 0, 11, 1)
	for i := len(names) - 1; i >= 0; i-- {
		must(t, "create", s.CreateDeployment(ctx, hubv1.Deployment{Name: names[i], Selector: "x=y", Created: at(0)}))
	}
	for _, tc := range []struct {
		name string
		page store.Page
		want [][]string
	}{
		{"by 4", store.Page{Limit: 4}, chunks(names, 4)},
		{"by 11", store.Page{Limit: 11}, [][]string{names}},
		{"default", store.Page{}, [][]string{names}},
		{"after a key", store.Page{After: "dep-05", Limit: 2}, chunks(names[6:], 2)},
		{"after the last", store.Page{After: "dep-10"}, [][]string{{}}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var pages [][]string
			p := tc.page
			for i := 0; ; i++ {
				if i > 20 {
					t.Fatal("the cursor does not advance")
				}
				ds, next, err := s.ListDeployments(ctx, p)
				must(t, "list", err)
				page := []string{}
				for _, d := range ds {
					page = append(page, d.Name)
				}
				pages = append(pages, page)
				if next == "" {
					break
				}
				if next != page[len(page)-1] {
					t.Fatalf("next %q is not the last name of %v", next, page)
				}
				p.After = next
			}
			if d := diff(tc.want, pages); d != "" {
				t.Errorf("pages (-want +got):\n%s", d)
			}
		})
	}
}

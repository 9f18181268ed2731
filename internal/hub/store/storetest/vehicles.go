package storetest

import (
	"fmt"
	"github.com/google/go-cmp/cmp"
	"slices"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp/cmpopts"
	hubv1 "github.com/misaki-io/misaki/api/hub/v1"
	"github.com/misaki-io/misaki/internal/hub/store"
)

// fullVehicle has every stored field set, with empty and nil maps side by
// side, so a round trip that loses the difference shows.
func fullVehicle(id string) hubv1.Vehicle {
	return hubv1.Vehicle{
		ID:          id,
		Labels:      map[string]string{"fleet": "eu", "tier": "a", "unicode": "ßü-✓", "empty": ""},
		Capacity:    hubv1.ResourceList{"cpu": "4", "memory": "7Gi", "nvidia.com/gpu": "1"},
		Allocatable: hubv1.ResourceList{},
		Facts: hubv1.Facts{
			KubernetesVersion: "v1.37.2",
			APIVersions:       []string{"apps/v1", "v1", "mesh.misaki.io/v1alpha1/Route"},
			CRDs:              []string{"routes.mesh.misaki.io"},
			Arch:              "arm64",
		},
		Enrolled:           ptr(at(time.Hour)),
		CertificateExpires: ptr(at(90 * 24 * time.Hour)),
		LastSeen:           ptr(at(2 * time.Hour)),
		Online:             true, // not stored
		Created:            at(0),
		ResourceVersion:    42, // the store sets 1
	}
}

func storedVehicle(v hubv1.Vehicle, rv int64) hubv1.Vehicle {
	v.Enrolled, v.CertificateExpires, v.LastSeen = storedPtr(v.Enrolled), storedPtr(v.CertificateExpires), storedPtr(v.LastSeen)
	v.Created = stored(v.Created)
	v.Online = false
	v.ResourceVersion = rv
	return v
}

func testVehicleRoundTrip(t *testing.T, s store.Store) {
	ctx := t.Context()
	for _, tc := range []struct {
		name string
		v    hubv1.Vehicle
	}{
		{"full", fullVehicle("car-full")},
		{"bare", hubv1.Vehicle{ID: "car-bare", Created: at(0)}},
		{"zero-time", hubv1.Vehicle{ID: "car-zero"}},
		{"empty-maps", hubv1.Vehicle{ID: "car-empty", Labels: map[string]string{}, Capacity: hubv1.ResourceList{}, Created: at(0)}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			must(t, "create", s.CreateVehicle(ctx, tc.v))
			got, err := s.GetVehicle(ctx, tc.v.ID)
			must(t, "get", err)
			if d := diff(storedVehicle(tc.v, 1), got); d != "" {
				t.Errorf("round trip (-want +got):\n%s", d)
			}
		})
	}
}

func testVehicleErrors(t *testing.T, s store.Store) {
	ctx := t.Context()
	createVehicles(t, s, "car-1")
	wantErr(t, "create taken ID", s.CreateVehicle(ctx, fullVehicle("car-1")), store.ErrExists)
	got, err := s.GetVehicle(ctx, "car-1")
	must(t, "get", err)
	if got.Facts.Arch != "" {
		t.Error("a refused create changed the vehicle")
	}
	_, err = s.GetVehicle(ctx, "car-2")
	wantErr(t, "get missing", err, store.ErrNotFound)
	wantErr(t, "delete missing", s.DeleteVehicle(ctx, "car-2"), store.ErrNotFound)
	wantErr(t, "set enrolled missing", s.SetEnrolled(ctx, "car-2", at(0), at(time.Hour)), store.ErrNotFound)
	wantErr(t, "seen missing", s.Seen(ctx, "car-2", at(0)), store.ErrNotFound)
	_, err = s.PutReported(ctx, "car-2", hubv1.Reported{Half: hubv1.HalfVehicle})
	wantErr(t, "put reported missing", err, store.ErrNotFound)
	_, err = s.GetReported(ctx, "car-2")
	wantErr(t, "get reported missing", err, store.ErrNotFound)
	_, err = s.UpdateVehicle(ctx, hubv1.Vehicle{ID: "car-2", ResourceVersion: 1})
	wantErr(t, "update missing", err, store.ErrNotFound)
}

func testUpdateVehicle(t *testing.T, s store.Store) {
	ctx := t.Context()
	v := fullVehicle("car-1")
	must(t, "create", s.CreateVehicle(ctx, v))
	want := storedVehicle(v, 1)

	steps := []struct {
		name    string
		update  hubv1.Vehicle
		err     error
		applied func(*hubv1.Vehicle)
	}{
		{
			name:   "labels only; nil capacity and allocatable keep theirs",
			update: hubv1.Vehicle{ID: "car-1", ResourceVersion: 1, Labels: map[string]string{"fleet": "us"}},
			applied: func(w *hubv1.Vehicle) {
				w.Labels = map[string]string{"fleet": "us"}
			},
		},
		{
			name:   "stale resource version",
			update: hubv1.Vehicle{ID: "car-1", ResourceVersion: 1, Labels: map[string]string{"fleet": "jp"}},
			err:    store.ErrConflict,
		},
		{
			name:   "future resource version",
			update: hubv1.Vehicle{ID: "car-1", ResourceVersion: 9, Labels: map[string]string{"fleet": "jp"}},
			err:    store.ErrConflict,
		},
		{
			name: "capacity and allocatable set; facts and times are not operator-owned",
			update: hubv1.Vehicle{ID: "car-1", ResourceVersion: 2, Labels: nil,
				Capacity: hubv1.ResourceList{"cpu": "8"}, Allocatable: hubv1.ResourceList{"cpu": "7"},
				Facts: hubv1.Facts{Arch: "amd64"}, LastSeen: ptr(at(time.Hour * 100)), Created: at(time.Hour)},
			applied: func(w *hubv1.Vehicle) {
				w.Labels = nil
				w.Capacity = hubv1.ResourceList{"cpu": "8"}
				w.Allocatable = hubv1.ResourceList{"cpu": "7"}
			},
		},
	}
	for _, st := range steps {
		t.Run(st.name, func(t *testing.T) {
			got, err := s.UpdateVehicle(ctx, st.update)
			wantErr(t, "update", err, st.err)
			if st.err == nil {
				st.applied(&want)
				want.ResourceVersion++
				if d := diff(want, got); d != "" {
					t.Errorf("returned (-want +got):\n%s", d)
				}
			}
			read, err := s.GetVehicle(ctx, "car-1")
			must(t, "get", err)
			if d := diff(want, read); d != "" {
				t.Errorf("stored (-want +got):\n%s", d)
			}
		})
	}
}

func testEnrolledAndSeen(t *testing.T, s store.Store) {
	ctx := t.Context()
	createVehicles(t, s, "car-1")
	check := func(what string, enrolled, expires, seen *time.Time, rv int64) {
		t.Helper()
		v, err := s.GetVehicle(ctx, "car-1")
		must(t, what, err)
		got := []any{v.Enrolled, v.CertificateExpires, v.LastSeen, v.ResourceVersion}
		want := []any{storedPtr(enrolled), storedPtr(expires), storedPtr(seen), rv}
		if d := diff(want, got); d != "" {
			t.Errorf("%s: [enrolled, cert expires, last seen, resource version] (-want +got):\n%s", what, d)
		}
	}
	check("new", nil, nil, nil, 1)
	must(t, "enrol", s.SetEnrolled(ctx, "car-1", at(time.Hour), at(30*24*time.Hour)))
	check("enrolled", ptr(at(time.Hour)), ptr(at(30*24*time.Hour)), nil, 2)
	must(t, "renew", s.SetEnrolled(ctx, "car-1", at(2*time.Hour), at(60*24*time.Hour)))
	check("renewed: first enrolment kept, newest expiry", ptr(at(time.Hour)), ptr(at(60*24*time.Hour)), nil, 3)
	must(t, "seen", s.Seen(ctx, "car-1", at(3*time.Hour)))
	check("seen", ptr(at(time.Hour)), ptr(at(60*24*time.Hour)), ptr(at(3*time.Hour)), 4)
	must(t, "seen earlier", s.Seen(ctx, "car-1", at(2*time.Hour)))
	check("seen earlier does not move it back", ptr(at(time.Hour)), ptr(at(60*24*time.Hour)), ptr(at(3*time.Hour)), 4)
	must(t, "seen later", s.Seen(ctx, "car-1", at(4*time.Hour+time.Nanosecond*1500)))
	check("seen later", ptr(at(time.Hour)), ptr(at(60*24*time.Hour)), ptr(at(4*time.Hour+time.Nanosecond*1500)), 5)
}

func testDeleteVehicleCascades(t *testing.T, s store.Store) {
	ctx := t.Context()
	createVehicles(t, s, "car-1", "car-2")
	for _, id := range []string{"car-1", "car-2"} {
		must(t, "token", s.CreateToken(ctx, hubv1.BootstrapToken{ID: "tok-" + id, VehicleID: id, Expires: at(time.Hour), Created: at(0)}, []byte("h-"+id)))
		_, err := s.PutReported(ctx, id, hubv1.Reported{Half: hubv1.HalfVehicle, AppliedRevision: 1})
		must(t, "report", err)
		must(t, "desired", s.PutDesired(ctx, desired(id, hubv1.HalfVehicle, 1)))
	}
	must(t, "delete", s.DeleteVehicle(ctx, "car-1"))
	_, err := s.GetVehicle(ctx, "car-1")
	wantErr(t, "get deleted", err, store.ErrNotFound)
	_, err = s.GetDesired(ctx, "car-1", hubv1.HalfVehicle)
	wantErr(t, "desired of deleted", err, store.ErrNotFound)
	_, err = s.GetReported(ctx, "car-1")
	wantErr(t, "reported of deleted", err, store.ErrNotFound)
	toks, err := s.ListTokens(ctx, "car-1")
	must(t, "list tokens", err)
	if len(toks) != 0 {
		t.Errorf("deleted vehicle still has %d tokens", len(toks))
	}
	_, err = s.UseToken(ctx, "tok-car-1", []byte("h-car-1"), at(0))
	wantErr(t, "use deleted vehicle's token", err, store.ErrTokenInvalid)
	// The other vehicle keeps everything.
	if _, err := s.GetDesired(ctx, "car-2", hubv1.HalfVehicle); err != nil {
		t.Errorf("other vehicle's desired: %v", err)
	}
	if r, err := s.GetReported(ctx, "car-2"); err != nil || len(r) != 1 {
		t.Errorf("other vehicle's reports: %d, %v", len(r), err)
	}
	changes, err := s.DesiredSince(ctx, 0, 0)
	must(t, "desired since", err)
	if len(changes) != 1 || changes[0].Vehicle != "car-2" {
		t.Errorf("changes after delete = %+v, want car-2's only", changes)
	}
}

// listAll pages through ListVehicles and returns the IDs of each page.
func listAll(t *testing.T, s store.Store, p store.Page, match func(map[string]string) bool) [][]string {
	t.Helper()
	var pages [][]string
	for i := 0; ; i++ {
		if i > 100 {
			t.Fatal("more than 100 pages: the cursor does not advance")
		}
		vs, next, err := s.ListVehicles(t.Context(), p, match)
		must(t, "list", err)
		page := []string{}
		for _, v := range vs {
			page = append(page, v.ID)
		}
		pages = append(pages, page)
		if next == "" {
			return pages
		}
		if len(vs) == 0 || next != vs[len(vs)-1].ID {
			t.Fatalf("page %d: next %q is not the last ID of %v", i, next, page)
		}
		p.After = next
	}
}

func ids(format string, from, to, step int) []string {
	var out []string
	for i := from; i < to; i += step {
		out = append(out, fmt.Sprintf(format, i))
	}
	return out
}

func chunks(s []string, n int) [][]string {
	out := [][]string{}
	for len(s) > n {
		out = append(out, s[:n])
		s = s[n:]
	}
	return append(out, s)
}

func testListVehicles(t *testing.T, s store.Store) {
	ctx := t.Context()
	// Created out of order; the list is by ID.
	for i := 22; i >= 0; i-- {
		parity := map[bool]string{true: "even", false: "odd"}[i%2 == 0]
		must(t, "create", s.CreateVehicle(ctx, newVehicle(fmt.Sprintf("car-%02d", i), map[string]string{"parity": parity})))
	}
	even := func(l map[string]string) bool { return l["parity"] == "even" }
	none := func(map[string]string) bool { return false }
	all := ids("car-%02d", 0, 23, 1)
	evens := ids("car-%02d", 0, 23, 2)
	for _, tc := range []struct {
		name  string
		page  store.Page
		match func(map[string]string) bool
		want  [][]string
	}{
		{"all by 5", store.Page{Limit: 5}, nil, chunks(all, 5)},
		{"all by 23 (exactly one page)", store.Page{Limit: 23}, nil, [][]string{all}},
		{"all by 22", store.Page{Limit: 22}, nil, chunks(all, 22)},
		{"default limit", store.Page{}, nil, [][]string{all}},
		{"after a key", store.Page{After: "car-10", Limit: 5}, nil, chunks(all[11:], 5)},
		{"after a key that is not stored", store.Page{After: "car-10a", Limit: 100}, nil, [][]string{all[11:]}},
		{"after the last", store.Page{After: "car-22"}, nil, [][]string{{}}},
		{"even by 4", store.Page{Limit: 4}, even, chunks(evens, 4)},
		{"even by 6 (the last page is full)", store.Page{Limit: 6}, even, chunks(evens, 6)},
		{"even by 1", store.Page{Limit: 1}, even, chunks(evens, 1)},
		{"even after a key", store.Page{After: "car-13", Limit: 2}, even, chunks(evens[7:], 2)},
		{"no match", store.Page{Limit: 3}, none, [][]string{{}}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if d := diff(tc.want, listAll(t, s, tc.page, tc.match)); d != "" {
				t.Errorf("pages (-want +got):\n%s", d)
			}
		})
	}
	vs, _, err := s.ListVehicles(ctx, store.Page{Limit: 1}, nil)
	must(t, "list", err)
	want := storedVehicle(newVehicle("car-00", map[string]string{"parity": "even"}), 1)
	if d := diff([]hubv1.Vehicle{want}, vs); d != "" {
		t.Errorf("listed vehicle (-want +got):\n%s", d)
	}
}

func testListVehiclesDefaultLimit(t *testing.T, s store.Store) {
	all := ids("car-%03d", 0, 130, 1)
	createVehicles(t, s, all...)
	if d := diff(chunks(all, 100), listAll(t, s, store.Page{}, nil)); d != "" {
		t.Errorf("pages (-want +got):\n%s", d)
	}
	everything := func(map[string]string) bool { return true }
	if d := diff(chunks(all, 100), listAll(t, s, store.Page{}, everything)); d != "" {
		t.Errorf("pages with a match func (-want +got):\n%s", d)
	}
}

func testPutReported(t *testing.T, s store.Store) {
	ctx := t.Context()
	createVehicles(t, s, "car-1")
	reports, err := s.GetReported(ctx, "car-1")
	must(t, "get reported before any", err)
	if len(reports) != 0 {
		t.Fatalf("reports before any: %v", reports)
	}
	facts1 := &hubv1.Facts{KubernetesVersion: "v1.37.2", APIVersions: []string{"apps/v1", "v1"}, Arch: "arm64"}
	facts2 := &hubv1.Facts{KubernetesVersion: "v1.37.3", APIVersions: []string{"apps/v1", "v1"}, Arch: "arm64"}
	full := hubv1.Reported{
		Half: hubv1.HalfVehicle, AppliedRevision: 3, Phase: hubv1.PhaseFailed,
		Failure: &hubv1.Failure{Revision: 3, Reason: "not ready within 10m", Deployments: []string{"radar", "shuttle"}, RolledBackTo: 2},
		Objects: []hubv1.ObjectStatus{
			{APIVersion: "apps/v1", Kind: "Deployment", Namespace: "default", Name: "api", State: hubv1.StateHealthy},
			{APIVersion: "v1", Kind: "Service", Namespace: "default", Name: "api", State: hubv1.StateError, Reason: "port taken"},
		},
		Facts: facts1, Capacity: hubv1.ResourceList{"cpu": "4", "memory": "8Gi"}, Allocatable: hubv1.ResourceList{"cpu": "3"},
		Gates:        []hubv1.GateState{{Name: "parked", Holds: true}, {Name: "battery", Holds: false, Reason: "12%"}},
		AgentVersion: "0.9.0", Refused: &hubv1.Refusal{Revision: 4, Reason: "expired"}, Message: "ok",
		Time: at(time.Minute),
	}
	with := func(f func(*hubv1.Reported)) hubv1.Reported {
		r := full
		f(&r)
		return r
	}
	cloud := hubv1.Reported{Half: hubv1.HalfCloud, AppliedRevision: 1, AgentVersion: "0.9.0", Time: at(2 * time.Minute)}

	wantVehicle := storedVehicle(newVehicle("car-1", map[string]string{"fleet": "eu"}), 1)
	steps := []struct {
		name    string
		report  hubv1.Reported
		changed bool
		vehicle func(*hubv1.Vehicle) // what the report changes in the vehicle
	}{
		{"first report with facts", full, true, func(v *hubv1.Vehicle) {
			v.Facts, v.Capacity, v.Allocatable = *facts1, full.Capacity, full.Allocatable
		}},
		{"the same again", full, false, nil},
		{"the same at a later time", with(func(r *hubv1.Reported) { r.Time = at(time.Hour) }), false, nil},
		{"other object states only", with(func(r *hubv1.Reported) { r.Objects = nil; r.AppliedRevision = 4 }), false, nil},
		{"cloud half without facts", cloud, false, nil},
		{"nil facts and resources keep the stored", with(func(r *hubv1.Reported) {
			r.Facts, r.Capacity, r.Allocatable = nil, nil, nil
		}), false, nil},
		{"new facts", with(func(r *hubv1.Reported) { r.Facts = facts2 }), true, func(v *hubv1.Vehicle) { v.Facts = *facts2 }},
		{"new capacity", with(func(r *hubv1.Reported) {
			r.Facts, r.Capacity = facts2, hubv1.ResourceList{"cpu": "4", "memory": "16Gi"}
		}), true, func(v *hubv1.Vehicle) { v.Capacity = hubv1.ResourceList{"cpu": "4", "memory": "16Gi"} }},
		{"new allocatable", with(func(r *hubv1.Reported) {
			r.Facts, r.Capacity, r.Allocatable = facts2, hubv1.ResourceList{"cpu": "4", "memory": "16Gi"}, hubv1.ResourceList{"cpu": "2"}
		}), true, func(v *hubv1.Vehicle) { v.Allocatable = hubv1.ResourceList{"cpu": "2"} }},
		{"equal resources in another map", with(func(r *hubv1.Reported) {
			r.Facts, r.Capacity, r.Allocatable = facts2, hubv1.ResourceList{"memory": "16Gi", "cpu": "4"}, hubv1.ResourceList{"cpu": "2"}
		}), false, nil},
		{"healthy, the failure gone", with(func(r *hubv1.Reported) {
			r.Facts, r.Capacity, r.Allocatable = facts2, hubv1.ResourceList{"memory": "16Gi", "cpu": "4"}, hubv1.ResourceList{"cpu": "2"}
			r.Phase, r.Failure, r.AppliedRevision = hubv1.PhaseHealthy, nil, 5
		}), false, nil},
	}
	latest := map[string]hubv1.Reported{}
	for _, st := range steps {
		t.Run(st.name, func(t *testing.T) {
			changed, err := s.PutReported(ctx, "car-1", st.report)
			must(t, "put reported", err)
			if changed != st.changed {
				t.Errorf("factsChanged = %v, want %v", changed, st.changed)
			}
			if st.vehicle != nil {
				st.vehicle(&wantVehicle)
				wantVehicle.ResourceVersion++
			}
			r := st.report
			r.Time = stored(r.Time)
			latest[r.Half] = r
			got, err := s.GetVehicle(ctx, "car-1")
			must(t, "get vehicle", err)
			if d := diff(wantVehicle, got); d != "" {
				t.Errorf("vehicle (-want +got):\n%s", d)
			}
			reports, err := s.GetReported(ctx, "car-1")
			must(t, "get reported", err)
			var want []hubv1.Reported
			for _, h := range []string{hubv1.HalfCloud, hubv1.HalfVehicle} {
				if r, ok := latest[h]; ok {
					want = append(want, r)
				}
			}
			if d := diff(want, reports, cmpopts.EquateEmpty()); d != "" {
				t.Errorf("reports (-want +got):\n%s", d)
			}
		})
	}
}

func testListReported(t *testing.T, s store.Store) {
	ctx := t.Context()
	var ids []string
	for i := range 1201 { // more than one SQLite chunk
		ids = append(ids, fmt.Sprintf("car-%04d", i))
	}
	createVehicles(t, s, ids...)
	rep := func(half string, rev int64) hubv1.Reported {
		return hubv1.Reported{Half: half, AppliedRevision: rev, Phase: hubv1.PhaseHealthy, Time: at(time.Minute),
			Deployments: []hubv1.DeploymentRevision{{Name: "uploader", Generation: rev}}}
	}
	for i, id := range ids {
		if i%3 == 2 {
			continue // no report
		}
		_, err := s.PutReported(ctx, id, rep(hubv1.HalfVehicle, int64(i)))
		must(t, "put "+id, err)
		if i%3 == 1 {
			_, err := s.PutReported(ctx, id, rep(hubv1.HalfCloud, int64(i)+1))
			must(t, "put cloud "+id, err)
		}
	}
	got, err := s.ListReported(ctx, append(slices.Clone(ids), "no-such-car"))
	must(t, "list reported", err)
	if len(got) != 801 {
		t.Fatalf("%d vehicles with reports, want 801", len(got))
	}
	for i, id := range ids {
		rs := got[id]
		switch i % 3 {
		case 0:
			if len(rs) != 1 || rs[0].AppliedRevision != int64(i) || rs[0].Deployments[0].Generation != int64(i) {
				t.Fatalf("%s: %+v", id, rs)
			}
		case 1:
			if len(rs) != 2 || rs[0].Half != hubv1.HalfCloud || rs[1].Half != hubv1.HalfVehicle || rs[0].AppliedRevision != int64(i)+1 {
				t.Fatalf("%s: %+v (want cloud then vehicle)", id, rs)
			}
		case 2:
			if rs != nil {
				t.Fatalf("%s has no report, got %+v", id, rs)
			}
		}
	}
	if d, err := s.ListReported(ctx, nil); err != nil || len(d) != 0 {
		t.Fatalf("no IDs: %v, %v", d, err)
	}
	want, err := s.GetReported(ctx, "car-0001")
	must(t, "get reported", err)
	if diff := cmp.Diff(want, got["car-0001"]); diff != "" {
		t.Errorf("ListReported and GetReported differ (-get +list):\n%s", diff)
	}
}

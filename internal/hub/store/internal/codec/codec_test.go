package codec

import (
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	hubv1 "github.com/misaki-io/misaki/api/hub/v1"
	"github.com/misaki-io/misaki/internal/hub/store"
)

func TestSpecsRoundTrip(t *testing.T) {
	for _, tc := range []struct {
		name string
		src  hubv1.ChartSource
		dep  hubv1.Deployment
	}{
		{name: "nil lists and maps"},
		{
			name: "empty lists and maps",
			src:  hubv1.ChartSource{Charts: []string{}},
			dep:  hubv1.Deployment{Values: map[string]any{}, Customizations: []hubv1.Customization{}, Placement: map[string]string{}},
		},
		{
			name: "full",
			src:  hubv1.ChartSource{Charts: []string{"a", "b"}, CAFile: "/ca.pem", InsecureSkipTLSVerify: true, PlainHTTP: true},
			dep: hubv1.Deployment{Namespace: "ns", Chart: hubv1.ChartRef{Source: "s", Name: "c", Version: "1.0.0"},
				Values: map[string]any{"replicas": float64(2)}, Selector: "a=b", Placement: map[string]string{"x": "y"},
				DefaultPlacement: "linux", Health: &hubv1.HealthPolicy{Deadline: "10m", Rollback: true}},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			roundTrip(t, tc.src, SourceSpec, DecodeSourceSpec)
			roundTrip(t, tc.dep, DeploymentSpec, DecodeDeploymentSpec)
		})
	}
}

// roundTrip checks that dec(enc(want)) is want, nil and empty lists and
// maps included (cmp tells them apart).
func roundTrip[T any](t *testing.T, want T, enc func(T) (string, error), dec func(string, *T) error) {
	t.Helper()
	spec, err := enc(want)
	if err != nil {
		t.Fatal(err)
	}
	var got T
	if err := dec(spec, &got); err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("%T (-want +got):\n%s", want, diff)
	}
}

func TestEncodeUpdate(t *testing.T) {
	u, err := EncodeUpdate(hubv1.Vehicle{Labels: map[string]string{"a": "b"}, Allocatable: hubv1.ResourceList{}})
	if err != nil {
		t.Fatal(err)
	}
	if u.Labels != `{"a":"b"}` || u.Capacity != nil || u.Allocatable == nil || *u.Allocatable != `{}` {
		t.Errorf("got labels %s, capacity %v, allocatable %v; want {\"a\":\"b\"}, nil (keep), {}", u.Labels, u.Capacity, u.Allocatable)
	}
}

func TestMergeReported(t *testing.T) {
	stored := ReportedJSON{Facts: `{"arch":"arm64"}`, Capacity: `{"cpu":"4"}`, Allocatable: `{"cpu":"3"}`}
	for _, tc := range []struct {
		name    string
		r       hubv1.Reported
		want    ReportedJSON
		changed bool
	}{
		{"carries nothing", hubv1.Reported{}, stored, false},
		{"same facts", hubv1.Reported{Facts: &hubv1.Facts{Arch: "arm64"}}, stored, false},
		{"other facts", hubv1.Reported{Facts: &hubv1.Facts{Arch: "amd64"}},
			ReportedJSON{`{"arch":"amd64"}`, stored.Capacity, stored.Allocatable}, true},
		{"same capacity", hubv1.Reported{Capacity: hubv1.ResourceList{"cpu": "4"}}, stored, false},
		{"other allocatable", hubv1.Reported{Allocatable: hubv1.ResourceList{"cpu": "2"}},
			ReportedJSON{stored.Facts, stored.Capacity, `{"cpu":"2"}`}, true},
		{"empty capacity", hubv1.Reported{Capacity: hubv1.ResourceList{}},
			ReportedJSON{stored.Facts, `{}`, stored.Allocatable}, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, changed, err := stored.Merge(tc.r)
			if err != nil {
				t.Fatal(err)
			}
			if changed != tc.changed {
				t.Errorf("changed %v, want %v", changed, tc.changed)
			}
			if diff := cmp.Diff(tc.want, got); diff != "" {
				t.Errorf("columns (-want +got):\n%s", diff)
			}
		})
	}
	if _, _, err := (ReportedJSON{Capacity: "not json"}).Merge(hubv1.Reported{Capacity: hubv1.ResourceList{}}); err == nil {
		t.Error("merging into a stored column that is not JSON: no error")
	}
}

// A spec written before deployments had a health policy decodes with
// none.
func TestDeploymentSpecWithoutHealth(t *testing.T) {
	d := hubv1.Deployment{Name: "old", Health: &hubv1.HealthPolicy{Deadline: "1m"}}
	if err := DecodeDeploymentSpec(`{"namespace":"","chart":{"source":"s","name":"c","version":"1"},"values":null,"selector":"a=b","customizations":null,"placement":null,"defaultPlacement":""}`, &d); err != nil {
		t.Fatal(err)
	}
	if d.Health != nil || d.Selector != "a=b" {
		t.Errorf("health %+v, selector %q; want nil and a=b", d.Health, d.Selector)
	}
}

func TestReportBody(t *testing.T) {
	at := time.Date(2025, 3, 1, 12, 0, 0, 123456789, time.FixedZone("x", 3600))
	body, err := ReportBody(hubv1.Reported{Half: "linux", Time: at})
	if err != nil {
		t.Fatal(err)
	}
	r, err := DecodeReport(body)
	if err != nil {
		t.Fatal(err)
	}
	if want := at.UTC().Truncate(time.Microsecond); !r.Time.Equal(want) || r.Time.Location() != time.UTC {
		t.Errorf("time %v, want %v", r.Time, want)
	}
}

func TestDesiredErrors(t *testing.T) {
	d := store.Desired{Desired: hubv1.Desired{Vehicle: "v1", Half: "linux", Revision: 3}}
	err := EntryError(d, store.ErrNotFound)
	if want := "v1/linux revision 3: vehicle not found"; err.Error() != want || !errors.Is(err, store.ErrNotFound) {
		t.Errorf("EntryError: %v, want %s wrapping store.ErrNotFound", err, want)
	}
	err = Stale(d, 5)
	if !errors.Is(err, store.ErrStale) || !strings.Contains(err.Error(), "stored 5") {
		t.Errorf("Stale: %v, want store.ErrStale naming the stored revision", err)
	}
}

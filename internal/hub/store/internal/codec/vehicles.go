package codec

import (
	"fmt"
	"maps"

	hubv1 "github.com/misaki-io/misaki/api/hub/v1"
)

// VehicleJSON is a vehicles row's JSON columns.
type VehicleJSON struct {
	Labels, Capacity, Allocatable, Facts string
}

// EncodeVehicle is v's JSON columns.
func EncodeVehicle(v hubv1.Vehicle) (VehicleJSON, error) {
	var j VehicleJSON
	for _, f := range []struct {
		v any
		s *string
	}{{v.Labels, &j.Labels}, {v.Capacity, &j.Capacity}, {v.Allocatable, &j.Allocatable}, {v.Facts, &j.Facts}} {
		var err error
		if *f.s, err = Encode(f.v); err != nil {
			return VehicleJSON{}, err
		}
	}
	return j, nil
}

// Decode sets v's labels, capacity, allocatable and facts from the
// columns; v.ID names it in an error.
func (j VehicleJSON) Decode(v *hubv1.Vehicle) error {
	for _, f := range []struct {
		s string
		v any
	}{{j.Labels, &v.Labels}, {j.Capacity, &v.Capacity}, {j.Allocatable, &v.Allocatable}, {j.Facts, &v.Facts}} {
		if err := Decode(f.s, f.v); err != nil {
			return fmt.Errorf("vehicle %s: %w", v.ID, err)
		}
	}
	return nil
}

// VehicleUpdate is what UpdateVehicle writes: the labels, and capacity
// and allocatable where the update sets them (nil: keep the stored
// column, as the SQL's coalesce does with NULL).
type VehicleUpdate struct {
	Labels                string
	Capacity, Allocatable *string
}

// EncodeUpdate is the columns UpdateVehicle writes for v.
func EncodeUpdate(v hubv1.Vehicle) (VehicleUpdate, error) {
	var u VehicleUpdate
	var err error
	if u.Labels, err = Encode(v.Labels); err != nil {
		return VehicleUpdate{}, err
	}
	for _, f := range []struct {
		l hubv1.ResourceList
		s **string
	}{{v.Capacity, &u.Capacity}, {v.Allocatable, &u.Allocatable}} {
		if f.l == nil {
			continue
		}
		js, err := Encode(f.l)
		if err != nil {
			return VehicleUpdate{}, err
		}
		*f.s = &js
	}
	return u, nil
}

// ReportBody is a reports row's body: r with its time as the store gives
// it back.
func ReportBody(r hubv1.Reported) (string, error) {
	r.Time = Norm(r.Time)
	return Encode(r)
}

// DecodeReport reads a reports row's body.
func DecodeReport(body string) (hubv1.Reported, error) {
	var r hubv1.Reported
	err := Decode(body, &r)
	return r, err
}

// ReportedJSON is the vehicle columns a report can change.
type ReportedJSON struct {
	Facts, Capacity, Allocatable string
}

// Merge is PutReported's change detection: the columns with the facts,
// capacity and allocatable r carries (each when not nil) in place of the
// stored, and whether any of them changed. Facts compare as their JSON
// text; a resource list compares with the stored one decoded, as a map.
func (j ReportedJSON) Merge(r hubv1.Reported) (ReportedJSON, bool, error) {
	changed := false
	if r.Facts != nil {
		f, err := Encode(*r.Facts)
		if err != nil {
			return j, false, err
		}
		if f != j.Facts {
			j.Facts, changed = f, true
		}
	}
	for _, f := range []struct {
		l      hubv1.ResourceList
		stored *string
	}{{r.Capacity, &j.Capacity}, {r.Allocatable, &j.Allocatable}} {
		if f.l == nil {
			continue
		}
		var old hubv1.ResourceList
		if err := Decode(*f.stored, &old); err != nil {
			return j, false, err
		}
		if maps.Equal(old, f.l) {
			continue
		}
		var err error
		if *f.stored, err = Encode(f.l); err != nil {
			return j, false, err
		}
		changed = true
	}
	return j, changed, nil
}

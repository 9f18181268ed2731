package rollout

import (
	"crypto/sha256"
	"encoding/binary"
	"slices"
	"strings"

	"k8s.io/apimachinery/pkg/labels"

	hubv1 "github.com/misaki-io/misaki/api/hub/v1"
)

// Target is a vehicle a rollout reaches: its deployment's selector (old or
// new) matches it.
type Target struct {
	ID     string
	Labels map[string]string
}

// RestWave names the last wave, of the vehicles no wave of the policy took.
const RestWave = "rest"

// Split assigns the targets to the policy's waves. Selector waves take
// the targets they match that no earlier wave took; size waves take
// targets, in an order fixed per deployment, until the waves so far hold
// the size; a last wave ("rest") takes the remainder, unless the last
// wave of the policy already took every target. Every vehicle starts
// pending.
//
// The order is a hash of the deployment and vehicle names: the same
// vehicles are the canaries of every rollout of a deployment, and which
// they are does not depend on the order vehicles were registered in.
func Split(deployment string, pol Policy, targets []Target) ([]hubv1.WaveStatus, []hubv1.RolloutVehicle) {
	order := slices.Clone(targets)
	slices.SortFunc(order, func(a, b Target) int {
		ha, hb := rank(deployment, a.ID), rank(deployment, b.ID)
		switch {
		case ha < hb:
			return -1
		case ha > hb:
			return 1
		}
		return strings.Compare(a.ID, b.ID)
	})
	taken := make([]bool, len(order))
	assigned := 0
	var (
		waves []hubv1.WaveStatus
		vs    []hubv1.RolloutVehicle
	)
	add := func(name string, pick func(i int, t Target) bool) {
		w := len(waves)
		waves = append(waves, hubv1.WaveStatus{Name: name})
		for i, t := range order {
			if taken[i] || !pick(i, t) {
				continue
			}
			taken[i] = true
			assigned++
			waves[w].Vehicles++
			vs = append(vs, hubv1.RolloutVehicle{Vehicle: t.ID, Wave: w, State: hubv1.VehiclePending})
		}
	}
	for _, ws := range pol.Waves {
		if ws.Selector != nil {
			add(ws.Name, func(_ int, t Target) bool { return ws.Selector.Matches(labels.Set(t.Labels)) })
			continue
		}
		want := min(ws.Size.Of(len(order)), len(order))
		add(ws.Name, func(int, Target) bool {
			return assigned < want
		})
	}
	if assigned < len(order) || len(waves) == 0 {
		add(RestWave, func(int, Target) bool { return true })
	}
	return waves, vs
}

// Join puts a vehicle that the deployment's selector started to match
// after the split into the last wave.
func Join(r *hubv1.Rollout, id string) hubv1.RolloutVehicle {
	last := len(r.Waves) - 1
	r.Waves[last].Vehicles++
	return hubv1.RolloutVehicle{Vehicle: id, Wave: last, State: hubv1.VehiclePending}
}

func rank(deployment, id string) uint64 {
	sum := sha256.Sum256([]byte(deployment + "/" + id))
	return binary.BigEndian.Uint64(sum[:8])
}

package codec

import (
	"fmt"
	"math"
	"strconv"
	"time"

	hubv1 "github.com/misaki-io/misaki/api/hub/v1"
	"github.com/misaki-io/misaki/internal/hub/store"
)

// deploymentSpec is the part of a deployment kept as JSON. Numbers in
// Values come back as float64, as encoding/json decodes them.
type deploymentSpec struct {
	Namespace        string                `json:"namespace"`
	Chart            hubv1.ChartRef        `json:"chart"`
	Values           map[string]any        `json:"values"`
	Selector         string                `json:"selector"`
	Customizations   []hubv1.Customization `json:"customizations"`
	Placement        map[string]string     `json:"placement"`
	DefaultPlacement string                `json:"defaultPlacement"`
	// Health is null for no policy; a row written before it existed has
	// no key and decodes the same.
	Health *hubv1.HealthPolicy `json:"health"`
	// Rollout: like Health, absent in rows written before it.
	Rollout *hubv1.RolloutPolicy `json:"rollout,omitempty"`
}

// DeploymentSpec is d's spec column: everything but its name, generation,
// creator and times.
func DeploymentSpec(d hubv1.Deployment) (string, error) {
	return Encode(deploymentSpec{d.Namespace, d.Chart, d.Values, d.Selector, d.Customizations, d.Placement, d.DefaultPlacement, d.Health, d.Rollout})
}

// DecodeDeploymentSpec sets the fields of d that DeploymentSpec keeps in
// spec; d.Name names it in an error.
func DecodeDeploymentSpec(spec string, d *hubv1.Deployment) error {
	var sp deploymentSpec
	if err := Decode(spec, &sp); err != nil {
		return fmt.Errorf("deployment %s: %w", d.Name, err)
	}
	d.Namespace, d.Chart, d.Values, d.Selector = sp.Namespace, sp.Chart, sp.Values, sp.Selector
	d.Customizations, d.Placement, d.DefaultPlacement = sp.Customizations, sp.Placement, sp.DefaultPlacement
	d.Health, d.Rollout = sp.Health, sp.Rollout
	return nil
}

// NewDeployment is d as CreateDeployment stores it: a zero Generation is
// 1, a zero Updated is Created.
func NewDeployment(d hubv1.Deployment) hubv1.Deployment {
	d.Generation = max(d.Generation, 1)
	if d.Updated.IsZero() {
		d.Updated = d.Created
	}
	return d
}

// rolloutDoc is the part of a rollout kept as JSON.
type rolloutDoc struct {
	From      int64               `json:"from"`
	Policy    hubv1.RolloutPolicy `json:"policy"`
	Reason    string              `json:"reason,omitempty"`
	Waves     []hubv1.WaveStatus  `json:"waves"`
	Counts    map[string]int      `json:"counts,omitempty"`
	Tolerated int                 `json:"tolerated,omitempty"`
}

// RolloutDoc is r's doc column: everything but its deployment,
// generation, phase, creator, times and version.
func RolloutDoc(r hubv1.Rollout) (string, error) {
	return Encode(rolloutDoc{r.From, r.Policy, r.Reason, NonNil(r.Waves), r.Counts, r.Tolerated})
}

// DecodeRolloutDoc sets the fields of r that RolloutDoc keeps; times in
// the waves come back in UTC, truncated to the microsecond like every
// time the stores keep.
func DecodeRolloutDoc(doc string, r *hubv1.Rollout) error {
	var d rolloutDoc
	if err := Decode(doc, &d); err != nil {
		return fmt.Errorf("rollout %s/%d: %w", r.Deployment, r.Generation, err)
	}
	r.From, r.Policy, r.Reason, r.Waves, r.Counts, r.Tolerated = d.From, d.Policy, d.Reason, NonNil(d.Waves), d.Counts, d.Tolerated
	for i := range r.Waves {
		w := &r.Waves[i]
		w.Started, w.Done, w.BakeUntil = utcPtr(w.Started), utcPtr(w.Done), utcPtr(w.BakeUntil)
	}
	return nil
}

func utcPtr(t *time.Time) *time.Time {
	if t == nil {
		return nil
	}
	u := t.UTC().Truncate(time.Microsecond)
	return &u
}

// NewRollout is the rollout a deployment write starts for generation
// d.Generation (d as stored): Progressing, no waves until the hub splits
// the vehicles, from the generation before.
func NewRollout(d hubv1.Deployment, from int64) hubv1.Rollout {
	r := hubv1.Rollout{
		Deployment: d.Name, Generation: d.Generation, From: from,
		Phase: hubv1.RolloutProgressing, Waves: []hubv1.WaveStatus{},
		Created: d.Updated, Updated: d.Updated, CreatedBy: d.CreatedBy, ResourceVersion: 1,
	}
	if d.Rollout != nil {
		r.Policy = *d.Rollout
	}
	return r
}

// SupersededReason is the reason a rollout gets when a newer generation's
// starts.
func SupersededReason(gen int64) string {
	return fmt.Sprintf("generation %d started its own rollout", gen)
}

// PageRollouts is a page of rollouts read newest first, up to lim+1; the
// cursor is the row ID of the last (ids[i] is rs[i]'s).
func PageRollouts(rs []hubv1.Rollout, ids []int64, lim int) ([]hubv1.Rollout, string) {
	if len(rs) > lim {
		return rs[:lim], strconv.FormatInt(ids[lim-1], 10)
	}
	return NonNil(rs), ""
}

// RolloutCursor is the row ID below which a ListRollouts page reads.
func RolloutCursor(p store.Page) (int64, error) {
	if p.After == "" {
		return math.MaxInt64, nil
	}
	id, err := strconv.ParseInt(p.After, 10, 64)
	if err != nil {
		return 0, fmt.Errorf("cursor %q: %w", p.After, store.ErrBadCursor)
	}
	return id, nil
}

// PageRolloutVehicles is a page of rollout vehicles read by vehicle ID,
// up to lim+1.
func PageRolloutVehicles(vs []hubv1.RolloutVehicle, lim int) ([]hubv1.RolloutVehicle, string) {
	return page(vs, lim, func(v hubv1.RolloutVehicle) string { return v.Vehicle })
}

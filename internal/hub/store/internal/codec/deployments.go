package codec

import (
	"fmt"

	hubv1 "github.com/misaki-io/misaki/api/hub/v1"
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
}

// DeploymentSpec is d's spec column: everything but its name, generation,
// creator and times.
func DeploymentSpec(d hubv1.Deployment) (string, error) {
	return Encode(deploymentSpec{d.Namespace, d.Chart, d.Values, d.Selector, d.Customizations, d.Placement, d.DefaultPlacement, d.Health})
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
	d.Health = sp.Health
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

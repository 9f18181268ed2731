package desired

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"testing"

	hubv1 "github.com/misaki-io/misaki/api/hub/v1"
)

// The content hash covers each deployment's health policy on its own (a
// generation alike, the policy differs: another hash), and a deployment
// without one hashes as it did before policies existed.
func TestContentHashCoversHealth(t *testing.T) {
	rev := hubv1.DeploymentRevision{Name: "shuttle", Generation: 3, Chart: hubv1.ChartRef{Source: "apps", Name: "shuttle", Version: "1.0.0"}}
	hash := func(h *hubv1.HealthPolicy) string {
		t.Helper()
		r := rev
		r.Health = h
		s, err := contentHash("", []hubv1.DeploymentRevision{r}, nil, nil)
		if err != nil {
			t.Fatal(err)
		}
		return s
	}
	none := hash(nil)
	deadline := hash(&hubv1.HealthPolicy{Deadline: "10m"})
	rollback := hash(&hubv1.HealthPolicy{Deadline: "10m", Rollback: true})
	if none == deadline || deadline == rollback || none == rollback {
		t.Errorf("hashes do not tell the policies apart: none %s, deadline %s, rollback %s", none, deadline, rollback)
	}
	// A revision issued before DeploymentRevision had Health: the same
	// hash, so upgrading the hub re-issues nothing.
	type oldRevision struct {
		Name       string         `json:"name"`
		Generation int64          `json:"generation"`
		Chart      hubv1.ChartRef `json:"chart"`
	}
	b, err := json.Marshal(struct {
		Namespace   string                     `json:"namespace"`
		Deployments []oldRevision              `json:"deployments"`
		Placement   []hubv1.ComponentPlacement `json:"placement"`
		Objects     []json.RawMessage          `json:"objects"`
	}{"", []oldRevision{{rev.Name, rev.Generation, rev.Chart}}, nil, nil})
	if err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256(b)
	if old := "sha256:" + hex.EncodeToString(sum[:]); none != old {
		t.Errorf("without a policy the hash is %s, before policies it was %s", none, old)
	}
}

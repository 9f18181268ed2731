// Package storetest is the one test suite every store.Store implementation
// passes (internal/hub/store/sqlite on a temporary file,
// internal/hub/store/postgres on a real PostgreSQL server). It covers every
// method and the edge cases the interface documents: sentinel errors,
// optimistic concurrency, paging, single use of tokens under concurrency,
// monotonic desired revisions, the change sequence and its notifications,
// leases, and exact round trips of maps, lists and times (UTC, to the
// microsecond). Bench is the matching benchmark of the write path the
// hub's fleet benchmark leans on.
package storetest

import (
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	hubv1 "github.com/misaki-io/misaki/api/hub/v1"
	"github.com/misaki-io/misaki/internal/hub/store"
)

// Run runs the suite. open returns a new, empty store for one subtest and
// closes it when that test ends (t.Cleanup).
func Run(t *testing.T, open func(t *testing.T) store.Store) {
	for _, tc := range []struct {
		name string
		run  func(t *testing.T, s store.Store)
	}{
		{"Ping", testPing},
		{"Sources", testSources},
		{"Pins", testPins},
		{"Blobs", testBlobs},
		{"VehicleRoundTrip", testVehicleRoundTrip},
		{"VehicleErrors", testVehicleErrors},
		{"UpdateVehicle", testUpdateVehicle},
		{"EnrolledAndSeen", testEnrolledAndSeen},
		{"DeleteVehicleCascades", testDeleteVehicleCascades},
		{"ListVehicles", testListVehicles},
		{"ListVehiclesDefaultLimit", testListVehiclesDefaultLimit},
		{"PutReported", testPutReported},
		{"ListReported", testListReported},
		{"BootstrapTokens", testBootstrapTokens},
		{"UseTokenOnce", testUseTokenOnce},
		{"OperatorTokens", testOperatorTokens},
		{"DeploymentRoundTrip", testDeploymentRoundTrip},
		{"UpdateDeployment", testUpdateDeployment},
		{"ListDeployments", testListDeployments},
		{"DeploymentVersions", testDeploymentVersions},
		{"UpdateRollout", testUpdateRollout},
		{"ListRollouts", testListRollouts},
		{"PutDesired", testPutDesired},
		{"DesiredSince", testDesiredSince},
		{"PutDesiredBatch", testPutDesiredBatch},
		{"ConcurrentPutDesired", testConcurrentPutDesired},
		{"Changes", testChanges},
		{"ChangesCoalesce", testChangesCoalesce},
		{"ChangesBatch", testChangesBatch},
		{"ChangesClose", testChangesClose},
		{"Audit", testAudit},
		{"Leases", testLeases},
		{"Dirty", testDirty},
		{"DirtyConcurrentTake", testDirtyConcurrentTake},
		{"Counts", testCounts},
	} {
		t.Run(tc.name, func(t *testing.T) { tc.run(t, open(t)) })
	}
}

// base is a time with nanoseconds in a zone other than UTC: the store must
// give it back in UTC, truncated to the microsecond.
var base = time.Date(2031, 5, 6, 7, 8, 9, 123456789, time.FixedZone("UTC+3", 3*3600))

// at returns base plus d.
func at(d time.Duration) time.Time { return base.Add(d) }

// stored is how the store gives t back.
func stored(t time.Time) time.Time { return t.UTC().Truncate(time.Microsecond) }

func storedPtr(t *time.Time) *time.Time {
	if t == nil {
		return nil
	}
	s := stored(*t)
	return &s
}

func ptr[T any](v T) *T { return &v }

// exactTime compares times by instant and location, so a time that comes
// back in another zone, or with its nanoseconds, is a difference.
var exactTime = cmp.Comparer(func(a, b time.Time) bool {
	return a.Equal(b) && a.Location().String() == b.Location().String()
})

// diff is cmp.Diff with exactTime.
func diff(want, got any, opts ...cmp.Option) string {
	return cmp.Diff(want, got, append([]cmp.Option{exactTime}, opts...)...)
}

// wantErr fails t unless err wraps target (nil: no error).
func wantErr(t *testing.T, what string, err, target error) {
	t.Helper()
	switch {
	case target == nil && err != nil:
		t.Fatalf("%s: %v", what, err)
	case target != nil && !errors.Is(err, target):
		t.Fatalf("%s: error %v, want one wrapping %q", what, err, target)
	}
}

func must(t *testing.T, what string, err error) {
	t.Helper()
	if err != nil {
		t.Fatalf("%s: %v", what, err)
	}
}

func newVehicle(id string, labels map[string]string) hubv1.Vehicle {
	return hubv1.Vehicle{ID: id, Labels: labels, Created: at(0), Facts: hubv1.Facts{KubernetesVersion: "v1.37.2"}}
}

func createVehicles(t *testing.T, s store.Store, ids ...string) {
	t.Helper()
	for _, id := range ids {
		must(t, "create vehicle "+id, s.CreateVehicle(t.Context(), newVehicle(id, map[string]string{"fleet": "eu"})))
	}
}

// desired builds a revision of one vehicle half.
func desired(vehicle, half string, rev int64) store.Desired {
	payload := fmt.Appendf(nil, `{"vehicle":%q,"half":%q,"revision":%d}`, vehicle, half, rev)
	return store.Desired{
		Desired: hubv1.Desired{
			Vehicle: vehicle, Half: half, Revision: rev,
			Digest:      fmt.Sprintf("sha256:%064x", rev),
			IssuedAt:    at(time.Duration(rev) * time.Minute),
			Expires:     at(time.Duration(rev)*time.Minute + 24*time.Hour),
			RootVersion: 2,
			Envelope: hubv1.Envelope{
				PayloadType: hubv1.PayloadTypeDesired,
				Payload:     payload,
				Signatures:  []hubv1.Signature{{KeyID: "k1", Sig: []byte{0, 1, 2, 255}}},
			},
		},
		ContentHash: fmt.Sprintf("content-%s-%s-%d", vehicle, half, rev),
		Placement: []hubv1.ComponentPlacement{{
			Deployment: "shuttle", Component: "api", Policy: hubv1.PlaceAuto, Place: hubv1.PlaceCloud,
			Reason: "needs 2 cpu, 1 free", Requests: hubv1.ResourceList{"cpu": "2"}, Objects: []string{"Deployment/default/api"},
		}},
		Objects: []string{"Deployment/default/api", "Service/default/api"},
	}
}

// recv waits for a value on c; the timeout only bounds a failing test.
func recv(t *testing.T, c <-chan int64, what string) int64 {
	t.Helper()
	select {
	case v, ok := <-c:
		if !ok {
			t.Fatalf("%s: channel closed", what)
		}
		return v
	case <-time.After(10 * time.Second):
		t.Fatalf("%s: nothing delivered in 10s", what)
	}
	return 0
}

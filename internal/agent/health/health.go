// Package health reads whether what the agent applied is ready (issue 18,
// item 7), with kstatus (sigs.k8s.io/cli-utils/pkg/kstatus/status): the
// same rules kubectl, Flux and Config Sync use, so "ready" means here what
// it means there (a Deployment is Current when its new ReplicaSet is
// available and no old Pods remain, a Job when it completed, a CRD when
// established, an object with a Ready condition when it is True; an object
// kstatus knows nothing about is Current once it exists).
//
// Check is one pass: one GET per object, no watches or caches, which keeps
// the agent small (a vehicle cluster holds hundreds of objects, not tens
// of thousands). The caller polls it on its clock and judges deadlines.
package health

import (
	"context"
	"fmt"
	"sync"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"sigs.k8s.io/cli-utils/pkg/kstatus/status"
	"sigs.k8s.io/controller-runtime/pkg/client"

	hubv1 "github.com/misaki-io/misaki/api/hub/v1"
	"github.com/misaki-io/misaki/internal/agent/apply"
)

// LabelDeployment names the hub deployment an object came from (the hub's
// renderer sets it on every object).
const LabelDeployment = "misaki.io/deployment"

// Status is one object's readiness.
type Status struct {
	Ref        apply.Ref
	Deployment string
	// State is a report state: healthy, progressing or error.
	State  string
	Reason string
}

// Ready reports whether every status is healthy.
func Ready(ss []Status) bool {
	for _, s := range ss {
		if s.State != hubv1.StateHealthy {
			return false
		}
	}
	return true
}

// Check reads each object's live state and computes its status. An object
// that is missing is an error ("not found"); an API error is reported as
// progressing with the error as the reason (the next pass may succeed).
func Check(ctx context.Context, c client.Reader, objs []*unstructured.Unstructured) []Status {
	out := make([]Status, len(objs))
	sem := make(chan struct{}, 4)
	var wg sync.WaitGroup
	for i, o := range objs {
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			out[i] = check(ctx, c, o)
		}()
	}
	wg.Wait()
	return out
}

func check(ctx context.Context, c client.Reader, o *unstructured.Unstructured) Status {
	s := Status{Ref: apply.RefOf(o), Deployment: o.GetLabels()[LabelDeployment]}
	live := &unstructured.Unstructured{}
	live.SetGroupVersionKind(o.GroupVersionKind())
	err := c.Get(ctx, client.ObjectKeyFromObject(o), live)
	switch {
	case apierrors.IsNotFound(err) || meta.IsNoMatchError(err):
		s.State, s.Reason = hubv1.StateError, "not found"
		return s
	case err != nil:
		s.State, s.Reason = hubv1.StateProgressing, fmt.Sprintf("read: %v", err)
		return s
	}
	res, err := status.Compute(live)
	if err != nil {
		s.State, s.Reason = hubv1.StateError, fmt.Sprintf("status: %v", err)
		return s
	}
	s.Reason = res.Message
	switch res.Status {
	case status.CurrentStatus:
		s.State = hubv1.StateHealthy
	case status.FailedStatus:
		s.State = hubv1.StateError
	case status.NotFoundStatus:
		s.State, s.Reason = hubv1.StateError, "not found"
	default: // InProgress, Terminating, Unknown
		s.State = hubv1.StateProgressing
		if s.Reason == "" {
			s.Reason = string(res.Status)
		}
	}
	return s
}

// Package agent is the vehicle agent (issue 18): it keeps one vehicle's
// cluster at the newest desired state the hub signed for it, through
// reboots and weeks without a network, and reports what it did.
//
// One Half does the work for one half of one vehicle:
//
//	fetch:   long-poll GET /v1/vehicles/{id}/desired?after=<accepted>
//	         (or, in the cloud, fetch when the change feed names the vehicle)
//	verify:  truststate.Gate.Check: signature chain to the pinned root (walking
//	         root rotations), vehicle ID, half, expiry, revision above the last
//	         accepted, the digest of the exact bytes; a refusal is reported
//	accept:  the document goes to the ledger (Pending), then the trust state
//	         records it with fsync; only then does the apply start
//	apply:   server-side apply in stages (internal/agent/apply); the inventory
//	         grows by the new set first, and shrinks to it after the prune
//	health:  kstatus readiness per deployment against its deadline; Healthy,
//	         or Failed with the objects and reasons, and a rollback of the
//	         deployments whose policy asks for one
//	drift:   every drift interval, re-apply what was applied (no prune)
//	report:  PUT /v1/vehicles/{id}/reported, latest state wins, retried
//
// Nothing is ever deleted because of a network error, an empty answer, an
// expired document or a restart: objects are pruned only when a newer
// verified revision no longer lists them. docs/agent.md is the user's
// account of these rules.
package agent

import (
	"errors"
	"net/http"

	"github.com/misaki-io/misaki/internal/hubclient"
)

// isClientError reports whether err is the hub refusing a request for
// good (a 4xx other than 408 and 429).
func isClientError(err error) bool {
	var e *hubclient.Error
	if !errors.As(err, &e) {
		return false
	}
	return e.Status >= 400 && e.Status < 500 && e.Status != http.StatusRequestTimeout && e.Status != http.StatusTooManyRequests
}

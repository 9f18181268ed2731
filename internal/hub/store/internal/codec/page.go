package codec

import (
	"fmt"
	"math"
	"strconv"

	hubv1 "github.com/misaki-io/misaki/api/hub/v1"
	"github.com/misaki-io/misaki/internal/hub/store"
)

// Paging, as store.Store has it: a list is read one item past its limit;
// if that item is there, the page ends at the limit and the cursor for
// the next page (Page.After) is the key of its last item, else the list
// is done and the cursor is "".

// Limit is a page's item cap: n, or 100 when n is not positive.
func Limit(n int) int {
	if n <= 0 {
		return 100
	}
	return n
}

// NonNil is s, or an empty list for nil, so that every list the stores
// return is [] in JSON.
func NonNil[T any](s []T) []T {
	if s == nil {
		return []T{}
	}
	return s
}

// page cuts items, read up to lim+1, to a page of lim and its cursor.
func page[T any](items []T, lim int, key func(T) string) ([]T, string) {
	if len(items) > lim {
		items = items[:lim]
		return items, key(items[lim-1])
	}
	return NonNil(items), ""
}

// PageDeployments is a page of deployments read by name, up to lim+1.
func PageDeployments(ds []hubv1.Deployment, lim int) ([]hubv1.Deployment, string) {
	return page(ds, lim, func(d hubv1.Deployment) string { return d.Name })
}

// AuditRange is what a ListAudit page reads: up to lim+1 entries with
// IDs below before, which is p's cursor, or above every ID for the first
// page.
func AuditRange(p store.Page) (before int64, lim int, err error) {
	if p.After == "" {
		return math.MaxInt64, Limit(p.Limit), nil
	}
	if before, err = strconv.ParseInt(p.After, 10, 64); err != nil {
		return 0, 0, fmt.Errorf("cursor %q: %w", p.After, store.ErrBadCursor)
	}
	return before, Limit(p.Limit), nil
}

// PageAudit is a page of audit entries read newest first, up to lim+1.
func PageAudit(es []hubv1.AuditEntry, lim int) ([]hubv1.AuditEntry, string) {
	return page(es, lim, func(e hubv1.AuditEntry) string { return strconv.FormatInt(e.ID, 10) })
}

// matchChunk is the fewest vehicles ListVehicles fetches at a time when
// it filters: a selective match then takes few round trips.
const matchChunk = 256

// ListVehicles pages vehicles by ID over fetch, which returns up to n
// vehicles with IDs above after, by ID; see store.Store. With a match
// func it fetches in chunks until it has a page of matches and knows
// whether another match follows.
func ListVehicles(p store.Page, match func(labels map[string]string) bool, fetch func(after string, n int) ([]hubv1.Vehicle, error)) ([]hubv1.Vehicle, string, error) {
	lim := Limit(p.Limit)
	chunk := lim + 1
	if match != nil {
		chunk = max(chunk, matchChunk)
	}
	out := []hubv1.Vehicle{}
	after := p.After
	for {
		vs, err := fetch(after, chunk)
		if err != nil {
			return nil, "", fmt.Errorf("after %q: %w", after, err)
		}
		for _, v := range vs {
			if match == nil || match(v.Labels) {
				out = append(out, v)
			}
			if len(out) > lim {
				break
			}
		}
		if len(out) > lim || len(vs) < chunk {
			break
		}
		after = vs[len(vs)-1].ID
	}
	out, next := page(out, lim, func(v hubv1.Vehicle) string { return v.ID })
	return out, next, nil
}

package codec

import (
	"cmp"
	"slices"

	"github.com/misaki-io/misaki/internal/hub/store"
)

// MergeDirty is a MarkDirty batch as the queue keeps it: each ID once, at
// its first place, with Force if any of its marks asked for it (the rule
// the queue's upsert applies to an ID already queued). It returns the IDs
// and their Force flags as parallel lists, as an array parameter wants
// them.
func MergeDirty(ds []store.Dirty) (ids []string, force []bool) {
	at := make(map[string]int, len(ds))
	for _, d := range ds {
		if i, ok := at[d.ID]; ok {
			force[i] = force[i] || d.Force
			continue
		}
		at[d.ID] = len(ids)
		ids, force = append(ids, d.ID), append(force, d.Force)
	}
	return ids, force
}

// Taken is a dirty-queue row as TakeDirty deletes it: its place in the
// queue and its entry.
type Taken struct {
	Ord int64
	store.Dirty
}

// InOrder is the taken entries oldest first (the order of a DELETE's
// RETURNING is unspecified), never nil.
func InOrder(taken []Taken) []store.Dirty {
	slices.SortFunc(taken, func(a, b Taken) int { return cmp.Compare(a.Ord, b.Ord) })
	out := make([]store.Dirty, len(taken))
	for i, t := range taken {
		out[i] = t.Dirty
	}
	return out
}

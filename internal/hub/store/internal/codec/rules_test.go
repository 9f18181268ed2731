package codec

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	hubv1 "github.com/misaki-io/misaki/api/hub/v1"
	"github.com/misaki-io/misaki/internal/hub/store"
)

func TestMergeDirty(t *testing.T) {
	for _, tc := range []struct {
		name  string
		ds    []store.Dirty
		ids   []string
		force []bool
	}{
		{"none", nil, nil, nil},
		{"distinct", []store.Dirty{{ID: "b"}, {ID: "a", Force: true}}, []string{"b", "a"}, []bool{false, true}},
		{"repeat keeps first place, force from either",
			[]store.Dirty{{ID: "a"}, {ID: "b"}, {ID: "a", Force: true}, {ID: "b"}},
			[]string{"a", "b"}, []bool{true, false}},
		{"force is not undone", []store.Dirty{{ID: "a", Force: true}, {ID: "a"}}, []string{"a"}, []bool{true}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ids, force := MergeDirty(tc.ds)
			if diff := cmp.Diff(tc.ids, ids); diff != "" {
				t.Errorf("ids (-want +got):\n%s", diff)
			}
			if diff := cmp.Diff(tc.force, force); diff != "" {
				t.Errorf("force (-want +got):\n%s", diff)
			}
		})
	}
}

func TestInOrder(t *testing.T) {
	got := InOrder([]Taken{{7, store.Dirty{ID: "c"}}, {2, store.Dirty{ID: "a", Force: true}}, {5, store.Dirty{ID: "b"}}})
	want := []store.Dirty{{ID: "a", Force: true}, {ID: "b"}, {ID: "c"}}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("(-want +got):\n%s", diff)
	}
	if got := InOrder(nil); got == nil || len(got) != 0 {
		t.Errorf("InOrder(nil) = %#v, want an empty list", got)
	}
}

func TestBlob(t *testing.T) {
	data := []byte("chart")
	sum := sha256.Sum256(data)
	good := "sha256:" + hex.EncodeToString(sum[:])
	other := sha256.Sum256([]byte("other"))
	for _, tc := range []struct {
		name     string
		digest   string
		ok       bool
		mismatch bool
	}{
		{"its digest", good, true, false},
		{"another's digest", "sha256:" + hex.EncodeToString(other[:]), false, true},
		{"no prefix", hex.EncodeToString(sum[:]), false, false},
		{"short", good[:20], false, false},
		{"empty", "", false, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := Blob(tc.digest, data)
			if (err == nil) != tc.ok || errors.Is(err, store.ErrDigestMismatch) != tc.mismatch {
				t.Errorf("Blob: %v; want ok %v, mismatch %v", err, tc.ok, tc.mismatch)
			}
			if tc.ok && string(got) != string(data) {
				t.Errorf("Blob = %q, want %q", got, data)
			}
		})
	}
}

func TestBlobEmpty(t *testing.T) {
	sum := sha256.Sum256(nil)
	got, err := Blob("sha256:"+hex.EncodeToString(sum[:]), nil)
	if err != nil || got == nil {
		t.Errorf("Blob of no bytes = %#v, %v; want an empty, non-nil slice", got, err)
	}
}

func TestMissed(t *testing.T) {
	if err := Missed(false, "generation", 3); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("missing row: %v, want store.ErrNotFound", err)
	}
	err := Missed(true, "generation", 3)
	if want := "generation 3: " + store.ErrConflict.Error(); !errors.Is(err, store.ErrConflict) || err.Error() != want {
		t.Errorf("stored row: %v, want %q wrapping store.ErrConflict", err, want)
	}
}

func TestChecks(t *testing.T) {
	ref := hubv1.ChartRef{Source: "s", Name: "c", Version: "1.0.0", Digest: "sha256:aa"}
	if got, want := PinName(ref), "s/c@1.0.0"; got != want {
		t.Errorf("PinName = %q, want %q", got, want)
	}
	for _, tc := range []struct {
		name string
		err  error
		ok   bool
	}{
		{"pin with digest", CheckPin(ref), true},
		{"pin without digest", CheckPin(hubv1.ChartRef{Source: "s"}), false},
		{"token hash", CheckToken([]byte{1}), true},
		{"no token hash", CheckToken(nil), false},
		{"operator token hash", CheckOperatorToken(store.OperatorToken{Hash: []byte{1}}), true},
		{"no operator token hash", CheckOperatorToken(store.OperatorToken{Name: "n"}), false},
		{"lease", CheckLease("h", time.Second), true},
		{"lease without holder", CheckLease("", time.Second), false},
		{"lease without ttl", CheckLease("h", 0), false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if (tc.err == nil) != tc.ok {
				t.Errorf("error %v, want ok %v", tc.err, tc.ok)
			}
		})
	}
	if err := Pinned(ref, ref.Digest); err != nil {
		t.Errorf("Pinned to its own digest: %v", err)
	}
	if err := Pinned(ref, "sha256:bb"); !errors.Is(err, store.ErrDigestMismatch) {
		t.Errorf("Pinned to another digest: %v, want store.ErrDigestMismatch", err)
	}
}

func TestNewDeployment(t *testing.T) {
	created := time.Date(2025, 1, 2, 3, 4, 5, 0, time.UTC)
	d := NewDeployment(hubv1.Deployment{Name: "d", Created: created})
	if d.Generation != 1 || !d.Updated.Equal(created) {
		t.Errorf("zero generation and updated: got %d, %v; want 1, %v", d.Generation, d.Updated, created)
	}
	later := created.Add(time.Hour)
	d = NewDeployment(hubv1.Deployment{Name: "d", Generation: 4, Created: created, Updated: later})
	if d.Generation != 4 || !d.Updated.Equal(later) {
		t.Errorf("set generation and updated: got %d, %v; want 4, %v", d.Generation, d.Updated, later)
	}
}

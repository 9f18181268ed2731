package render_test

import (
	"fmt"
	"sync"
	"testing"

	"github.com/google/go-cmp/cmp"

	hubv1 "github.com/misaki-io/misaki/api/hub/v1"
	"github.com/misaki-io/misaki/internal/hub/render"
)

func stats(t *testing.T, c *render.Cache, wantHits, wantMisses uint64) {
	t.Helper()
	if hits, misses := c.Stats(); hits != wantHits || misses != wantMisses {
		t.Errorf("Stats() = %d hits, %d misses; want %d, %d", hits, misses, wantHits, wantMisses)
	}
}

func TestCacheConcurrentSameInput(t *testing.T) {
	in := shuttle(t)
	c := render.NewCache(0)
	const goroutines, calls = 8, 1000
	outs := make([]*render.Output, calls)
	var wg sync.WaitGroup
	start := make(chan struct{})
	for g := range goroutines {
		wg.Go(func() {
			<-start
			for i := g; i < calls; i += goroutines {
				out, err := c.Render(in)
				if err != nil {
					t.Error(err)
					return
				}
				outs[i] = out
			}
		})
	}
	close(start)
	wg.Wait()
	stats(t, c, calls-1, 1)
	for i, o := range outs {
		if o != outs[0] {
			t.Fatalf("call %d got another *Output than call 0", i)
		}
	}
	want, err := render.Render(in)
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(want, outs[0]); diff != "" {
		t.Errorf("cached output differs from Render (-render +cache):\n%s", diff)
	}
}

// TestCacheConcurrentKeys renders distinct keys at once (Render itself
// must be safe for concurrent use; -race checks it).
func TestCacheConcurrentKeys(t *testing.T) {
	base := shuttle(t)
	c := render.NewCache(16)
	var wg sync.WaitGroup
	for i := range 8 {
		wg.Go(func() {
			in := base
			in.Release = fmt.Sprintf("shuttle-%d", i)
			out, err := c.Render(in)
			if err != nil {
				t.Error(err)
				return
			}
			if got := out.Objects[1].GetLabels()[render.LabelDeployment]; got != in.Release {
				t.Errorf("%s: %s label %q", in.Release, render.LabelDeployment, got)
			}
		})
	}
	wg.Wait()
	stats(t, c, 0, 8)
	if c.Len() != 8 {
		t.Errorf("%d entries, want 8", c.Len())
	}
}

func TestCacheKey(t *testing.T) {
	base := shuttle(t)
	base.Facts = hubv1.Facts{KubernetesVersion: "v1.37.2", APIVersions: []string{"b.example/v1", "a.example/v1"}}
	tests := []struct {
		name   string
		change func(*render.Input)
		shared bool // answered by base's entry
	}{
		{name: "same input", change: func(*render.Input) {}, shared: true},
		{name: "API versions in another order, repeated", shared: true, change: func(in *render.Input) {
			in.Facts.APIVersions = []string{"a.example/v1", "b.example/v1", "a.example/v1"}
		}},
		{name: "kube version without v", shared: true, change: func(in *render.Input) { in.Facts.KubernetesVersion = "1.37.2" }},
		{name: "facts rendering ignores", shared: true, change: func(in *render.Input) {
			in.Facts.CRDs = []string{"routes.mesh.misaki.io"}
			in.Facts.Arch = "arm64"
		}},
		{name: "digest left empty", shared: true, change: func(in *render.Input) { in.Digest = "" }},
		{name: "empty layers", shared: true, change: func(in *render.Input) {
			in.Layers = []map[string]any{{}, nil}
		}},
		{name: "another kube version", change: func(in *render.Input) { in.Facts.KubernetesVersion = "v1.26.15" }},
		{name: "another API version", change: func(in *render.Input) {
			in.Facts.APIVersions = append(in.Facts.APIVersions, "monitoring.coreos.com/v1")
		}},
		{name: "another layer", change: func(in *render.Input) {
			in.Layers = []map[string]any{{"api": map[string]any{"replicas": 5}}}
		}},
		{name: "a null layer value", change: func(in *render.Input) {
			in.Layers = []map[string]any{{"reports": map[string]any{"timeZone": nil}}}
		}},
		{name: "another release", change: func(in *render.Input) { in.Release = "shuttle-b" }},
		{name: "another namespace", change: func(in *render.Input) { in.Namespace = "fleet-b" }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := render.NewCache(8)
			first, err := c.Render(base)
			if err != nil {
				t.Fatal(err)
			}
			in := base
			in.Facts.APIVersions = append([]string(nil), base.Facts.APIVersions...)
			tt.change(&in)
			second, err := c.Render(in)
			if err != nil {
				t.Fatal(err)
			}
			if tt.shared {
				stats(t, c, 1, 1)
				if second != first || c.Len() != 1 {
					t.Errorf("not answered from the first entry (%d entries)", c.Len())
				}
			} else {
				stats(t, c, 0, 2)
				if second == first || c.Len() != 2 {
					t.Errorf("answered from the first entry (%d entries)", c.Len())
				}
			}
		})
	}
}

func TestCacheEviction(t *testing.T) {
	base := shuttle(t)
	c := render.NewCache(2)
	release := func(name string) render.Input {
		in := base
		in.Release = name
		return in
	}
	steps := []struct {
		release string
		hit     bool
	}{
		{"r1", false},
		{"r2", false},
		{"r1", true},  // r1 is now the most recently used
		{"r3", false}, // evicts r2, the least recently used
		{"r1", true},
		{"r3", true},
		{"r2", false}, // rendered again; evicts r1
		{"r1", false},
	}
	var hits, misses uint64
	for i, s := range steps {
		if _, err := c.Render(release(s.release)); err != nil {
			t.Fatal(err)
		}
		if s.hit {
			hits++
		} else {
			misses++
		}
		if h, m := c.Stats(); h != hits || m != misses {
			t.Fatalf("step %d (%s): Stats() = %d hits, %d misses; want %d, %d", i, s.release, h, m, hits, misses)
		}
		if c.Len() > 2 {
			t.Fatalf("step %d: %d entries, bound is 2", i, c.Len())
		}
	}
}

func TestCacheErrorsNotCached(t *testing.T) {
	in := shuttle(t)
	in.Layers = []map[string]any{{"api": map[string]any{"replicas": "three"}}}
	c := render.NewCache(4)
	for range 2 {
		if _, err := c.Render(in); err == nil {
			t.Fatal("Render succeeded, want a schema error")
		}
	}
	stats(t, c, 0, 2)
	if c.Len() != 0 {
		t.Errorf("%d entries after errors", c.Len())
	}
}

func TestDeepCopyObjects(t *testing.T) {
	c := render.NewCache(4)
	in := shuttle(t)
	out, err := c.Render(in)
	if err != nil {
		t.Fatal(err)
	}
	want, err := render.Render(in)
	if err != nil {
		t.Fatal(err)
	}
	copies := out.DeepCopyObjects()
	if diff := cmp.Diff(want.Objects, copies); diff != "" {
		t.Fatalf("copies differ (-want +got):\n%s", diff)
	}
	for _, o := range copies {
		o.SetNamespace("changed")
		o.Object["metadata"].(map[string]any)["labels"].(map[string]any)["x"] = "y"
	}
	again, err := c.Render(in)
	if err != nil {
		t.Fatal(err)
	}
	if again != out {
		t.Fatal("second call was not answered from the cache")
	}
	if diff := cmp.Diff(want.Objects, again.Objects); diff != "" {
		t.Errorf("changing the copies changed the cached output (-want +got):\n%s", diff)
	}
}

func BenchmarkCacheHit(b *testing.B) {
	in := shuttle(b)
	in.Layers = []map[string]any{{"api": map[string]any{"replicas": 3}}}
	in.Facts.APIVersions = []string{"monitoring.coreos.com/v1"}
	c := render.NewCache(0)
	if _, err := c.Render(in); err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			if _, err := c.Render(in); err != nil {
				b.Fatal(err)
			}
		}
	})
}

package testbin

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// module writes a module with a command, cmd/hello, that prints what its
// package lib says, and returns its directory.
func module(t *testing.T, says string) string {
	t.Helper()
	dir := t.TempDir()
	write(t, filepath.Join(dir, "go.mod"), "module example.com/hello\n\ngo 1.22\n")
	write(t, filepath.Join(dir, "cmd", "hello", "main.go"),
		"package main\n\nimport \"example.com/hello/lib\"\n\nfunc main() { println(lib.Says()) }\n")
	setSays(t, dir, says)
	return dir
}

// setSays changes the body of lib's function only: the command's own
// package compiles the same, and only the link sees the difference.
func setSays(t *testing.T, dir, says string) {
	t.Helper()
	write(t, filepath.Join(dir, "lib", "lib.go"),
		"package lib\n\n//go:noinline\nfunc Says() string { return \""+says+"\" }\n")
}

func write(t *testing.T, path, s string) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, []byte(s), 0o644); err != nil {
		t.Fatal(err)
	}
}

// run builds cmd/hello into a new directory with b and flags, and returns
// what it prints.
func run(t *testing.T, b *builder, flags ...string) string {
	t.Helper()
	dst := t.TempDir()
	if err := b.build(dst, flags, []string{"example.com/hello/cmd/hello"}); err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command(filepath.Join(dst, "hello")).CombinedOutput()
	if err != nil {
		t.Fatalf("hello: %v\n%s", err, out)
	}
	return strings.TrimSpace(string(out))
}

func TestBuildReusesOnlyWhatItWasBuiltFrom(t *testing.T) {
	if _, err := exec.LookPath("go"); err != nil {
		t.Skip("no go command")
	}
	root := t.TempDir()
	mod := module(t, "one")
	steps := []struct {
		name      string
		change    func()
		flags     []string
		says      string
		goBuilds  int
		cacheDirs int
	}{
		{"first build", func() {}, nil, "one", 1, 1},
		{"nothing changed", func() {}, nil, "one", 0, 1},
		{"a dependency's function body changed", func() { setSays(t, mod, "two") }, nil, "two", 1, 2},
		{"changed back", func() { setSays(t, mod, "one") }, nil, "one", 0, 2},
		{"other flags", func() {}, []string{"-trimpath"}, "one", 1, 3},
		{"other flags again", func() {}, []string{"-trimpath"}, "one", 0, 3},
	}
	for _, st := range steps {
		st.change()
		b := &builder{root: root, workdir: mod}
		if got := run(t, b, st.flags...); got != st.says {
			t.Errorf("%s: the binary says %q, want %q", st.name, got, st.says)
		}
		if b.goBuilds != st.goBuilds {
			t.Errorf("%s: %d go builds, want %d", st.name, b.goBuilds, st.goBuilds)
		}
		if n := len(entries(t, root)); n != st.cacheDirs {
			t.Errorf("%s: %d binaries in the cache, want %d", st.name, n, st.cacheDirs)
		}
	}
}

func TestBuildWithoutCache(t *testing.T) {
	if _, err := exec.LookPath("go"); err != nil {
		t.Skip("no go command")
	}
	mod := module(t, "one")
	b := &builder{workdir: mod}
	for range 2 {
		if got := run(t, b); got != "one" {
			t.Errorf("the binary says %q, want one", got)
		}
	}
	if b.goBuilds != 2 {
		t.Errorf("%d go builds, want 2 (no cache)", b.goBuilds)
	}
}

func TestPruneKeepsTheNewest(t *testing.T) {
	root := t.TempDir()
	old := time.Now().Add(-48 * time.Hour)
	for i := range keep + 5 {
		d := filepath.Join(root, strings.Repeat("a", 31)+string(rune('a'+i)))
		write(t, filepath.Join(d, "hello"), "")
		used := old.Add(time.Duration(i) * time.Minute)
		if err := os.Chtimes(d, used, used); err != nil {
			t.Fatal(err)
		}
	}
	leftover := filepath.Join(root, "build-123")
	write(t, filepath.Join(leftover, "hello"), "")
	os.Chtimes(leftover, old, old)

	(&builder{root: root}).prune()
	got := entries(t, root)
	if len(got) != keep {
		t.Fatalf("%d binaries kept, want %d", len(got), keep)
	}
	for i := range 5 { // the oldest five
		if name := strings.Repeat("a", 31) + string(rune('a'+i)); got[name] {
			t.Errorf("%s, among the oldest, was kept", name)
		}
	}
	if _, err := os.Stat(leftover); !os.IsNotExist(err) {
		t.Errorf("a killed build's directory, two days old, was kept: %v", err)
	}
}

// entries returns the names of the cache's binary directories.
func entries(t *testing.T, root string) map[string]bool {
	t.Helper()
	des, err := os.ReadDir(root)
	if err != nil {
		t.Fatal(err)
	}
	names := map[string]bool{}
	for _, de := range des {
		if de.IsDir() && !strings.HasPrefix(de.Name(), "build-") {
			names[de.Name()] = true
		}
	}
	return names
}

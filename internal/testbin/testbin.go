// Package testbin builds the repository's commands for tests that run
// them as processes, and keeps each binary in a cache keyed by what it is
// built from, so that a test package whose commands have not changed
// since the last run links nothing.
//
// go build caches compiled packages but not linked binaries: a TestMain
// that runs `go build -o` relinks every time, and linking misaki-proxy and
// misaki-linkd took 17–18 s on the shared 2-CPU test VM even with every
// package compiled. Build asks `go list -deps -export` for the compiled
// archive of every package a command links (1 s there), and uses the
// binary built from exactly those archives, with the same flags and Go
// version, if one is in the cache. Otherwise it runs `go build` with the
// same flags and keeps what it built.
//
// The cache is $MISAKI_TESTBIN_CACHE, else misaki/testbin under the user's
// cache directory ($XDG_CACHE_HOME or $HOME/.cache), one directory per
// binary, named by the key. The newest 24 are kept. MISAKI_TESTBIN_CACHE=off
// builds every time, as `go build -o` alone does.
//
// A cached binary is the one go build made from the same compiled
// packages; only its version-control stamp (go version -m: vcs.revision,
// vcs.modified, and the version derived from them) is that of the commit
// it was first built at. No test reads it.
package testbin

import (
	"bufio"
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"time"
)

// keep is how many binaries the cache keeps, newest first (by last use).
const keep = 24

// Build writes the commands of the main packages pkgs (import paths), as
// `go build flags -o dir/ pkgs...` would build them, into dir: hard links
// to the cached binaries, or copies where dir is on another file system.
// It runs go in the current directory, which must be inside the module.
func Build(dir string, flags []string, pkgs ...string) error {
	root, err := cacheRoot()
	if err != nil {
		return err
	}
	b := builder{root: root}
	return b.build(dir, flags, pkgs)
}

// cacheRoot returns the cache directory, or "" when caching is off.
func cacheRoot() (string, error) {
	switch v := os.Getenv("MISAKI_TESTBIN_CACHE"); v {
	case "off":
		return "", nil
	case "":
		d, err := os.UserCacheDir()
		if err != nil {
			return "", fmt.Errorf("testbin: no cache directory (set MISAKI_TESTBIN_CACHE, or off): %w", err)
		}
		return filepath.Join(d, "misaki", "testbin"), nil
	default:
		return v, nil
	}
}

// builder is one Build: the cache root, and go's working directory (""
// for the current one).
type builder struct {
	root, workdir string
	goBuilds      int // go build runs, for tests
}

func (b *builder) build(dir string, flags []string, pkgs []string) error {
	if b.root == "" {
		return b.goBuild(dir, flags, pkgs)
	}
	if err := os.MkdirAll(b.root, 0o755); err != nil {
		return b.goBuild(dir, flags, pkgs) // a read-only home: no cache
	}
	keys, err := b.keys(flags, pkgs)
	if err != nil {
		return err
	}
	var missing []string
	for _, p := range pkgs {
		if _, err := os.Stat(b.entry(keys[p], p)); err != nil {
			missing = append(missing, p)
		}
	}
	if len(missing) > 0 {
		if err := b.fill(keys, flags, missing); err != nil {
			return err
		}
	}
	now := time.Now()
	for _, p := range pkgs {
		os.Chtimes(filepath.Dir(b.entry(keys[p], p)), now, now) // last use, for prune
		err := linkOrCopy(b.entry(keys[p], p), filepath.Join(dir, path.Base(p)))
		if errors.Is(err, os.ErrNotExist) {
			// Pruned by another test process meanwhile: build it here.
			err = b.goBuild(dir, flags, []string{p})
		}
		if err != nil {
			return err
		}
	}
	b.prune()
	return nil
}

// keys returns each package's cache key: a hash of the flags, GOFLAGS,
// the Go version, the package and the compiled archive of every package
// it links (go list's Export: a file in go's build cache named by its
// contents).
func (b *builder) keys(flags []string, pkgs []string) (map[string]string, error) {
	args := append([]string{"list", "-deps", "-export"}, flags...)
	args = append(args, "-f", `{{.ImportPath}}{{"\t"}}{{.Export}}{{"\t"}}{{if not .DepOnly}}{{join .Deps " "}}{{end}}`)
	args = append(args, pkgs...)
	cmd := exec.Command("go", args...)
	cmd.Dir = b.workdir
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return nil, fmt.Errorf("testbin: go list %s: %v\n%s", strings.Join(pkgs, " "), err, stderr.Bytes())
	}
	export := map[string]string{}
	deps := map[string][]string{}
	sc := bufio.NewScanner(bytes.NewReader(out))
	for sc.Scan() {
		f := strings.Split(sc.Text(), "\t")
		if len(f) != 3 {
			return nil, fmt.Errorf("testbin: go list printed %q", sc.Text())
		}
		export[f[0]] = f[1]
		if f[2] != "" {
			deps[f[0]] = strings.Fields(f[2])
		}
	}
	keys := map[string]string{}
	for _, p := range pkgs {
		d, ok := deps[p]
		if !ok && export[p] == "" {
			return nil, fmt.Errorf("testbin: go list did not list %s", p)
		}
		h := sha256.New()
		fmt.Fprintf(h, "flags %q\nGOFLAGS %q\ngo %s\n", flags, os.Getenv("GOFLAGS"), runtime.Version())
		for _, q := range append(slices.Sorted(slices.Values(d)), p) {
			fmt.Fprintf(h, "%s %s\n", q, export[q])
		}
		keys[p] = hex.EncodeToString(h.Sum(nil))[:32]
	}
	return keys, nil
}

// entry is where the cache keeps package p's binary under key.
func (b *builder) entry(key, p string) string {
	return filepath.Join(b.root, key, path.Base(p))
}

// fill builds pkgs into the cache. A test process building the same key
// at the same time builds the same binary; the last rename wins.
func (b *builder) fill(keys map[string]string, flags []string, pkgs []string) error {
	tmp, err := os.MkdirTemp(b.root, "build-")
	if err != nil {
		return fmt.Errorf("testbin: %w", err)
	}
	defer os.RemoveAll(tmp)
	if err := b.goBuild(tmp, flags, pkgs); err != nil {
		return err
	}
	for _, p := range pkgs {
		to := b.entry(keys[p], p)
		if err := os.MkdirAll(filepath.Dir(to), 0o755); err != nil {
			return fmt.Errorf("testbin: %w", err)
		}
		if err := os.Rename(filepath.Join(tmp, path.Base(p)), to); err != nil {
			return fmt.Errorf("testbin: %w", err)
		}
	}
	return nil
}

// goBuild runs go build flags -o dir/ pkgs.
func (b *builder) goBuild(dir string, flags []string, pkgs []string) error {
	b.goBuilds++
	args := append(append([]string{"build"}, flags...), "-o", dir+string(filepath.Separator))
	cmd := exec.Command("go", append(args, pkgs...)...)
	cmd.Dir = b.workdir
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("testbin: go build %s: %v\n%s", strings.Join(pkgs, " "), err, out)
	}
	return nil
}

// prune removes all but the newest keep binaries, by last use, and
// builds a killed test process left behind. Callers hold hard links or
// copies, so a binary removed here stays theirs.
func (b *builder) prune() {
	des, err := os.ReadDir(b.root)
	if err != nil {
		return
	}
	type dirAge struct {
		name string
		used time.Time
	}
	var dirs []dirAge
	for _, de := range des {
		fi, err := de.Info()
		if err != nil || !de.IsDir() {
			continue
		}
		if strings.HasPrefix(de.Name(), "build-") {
			if time.Since(fi.ModTime()) > time.Hour {
				os.RemoveAll(filepath.Join(b.root, de.Name()))
			}
			continue
		}
		dirs = append(dirs, dirAge{de.Name(), fi.ModTime()})
	}
	if len(dirs) <= keep {
		return
	}
	slices.SortFunc(dirs, func(a, b dirAge) int { return b.used.Compare(a.used) })
	for _, d := range dirs[keep:] {
		os.RemoveAll(filepath.Join(b.root, d.name))
	}
}

// linkOrCopy makes to the file from, by a hard link, or a copy across file
// systems, replacing what is at to.
func linkOrCopy(from, to string) error {
	os.Remove(to)
	err := os.Link(from, to)
	if err == nil || errors.Is(err, os.ErrNotExist) {
		return err
	}
	in, err := os.Open(from)
	if err != nil {
		return err
	}
	defer in.Close()
	out, err := os.OpenFile(to, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o755)
	if err != nil {
		return err
	}
	_, err = io.Copy(out, in)
	return errors.Join(err, out.Close())
}

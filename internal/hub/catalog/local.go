package catalog

import (
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"

	repo "helm.sh/helm/v4/pkg/repo/v1"

	hubv1 "github.com/misaki-io/misaki/api/hub/v1"
)

// A local source is one .tgz, one unpacked chart directory (it has a
// Chart.yaml), or a directory whose entries are .tgz files and unpacked
// chart directories (other entries are ignored).

// localEntry is one chart version found in a local source.
type localEntry struct {
	path string // the .tgz or the chart directory
	arch *Archive
}

// localRoot resolves the source's path and applies Options.LocalRoots.
func (c *Catalog) localRoot(src hubv1.ChartSource) (string, os.FileInfo, error) {
	p, err := localPath(src.URL)
	if err != nil {
		return "", nil, err
	}
	real, err := filepath.EvalSymlinks(p)
	if err != nil {
		return "", nil, fmt.Errorf("chart source %s: %s: %w", src.Name, p, err)
	}
	if len(c.opts.LocalRoots) > 0 && !c.underLocalRoot(real) {
		return "", nil, &FieldError{"url", fmt.Sprintf("%s is outside the directories this hub serves local charts from (%s)", p, strings.Join(c.opts.LocalRoots, ", "))}
	}
	fi, err := os.Stat(real)
	if err != nil {
		return "", nil, fmt.Errorf("chart source %s: %w", src.Name, err)
	}
	return real, fi, nil
}

func (c *Catalog) underLocalRoot(p string) bool {
	for _, root := range c.opts.LocalRoots {
		r, err := filepath.EvalSymlinks(root)
		if err != nil {
			continue
		}
		rel, err := filepath.Rel(r, p)
		if err == nil && rel != ".." && !strings.HasPrefix(rel, ".."+string(filepath.Separator)) {
			return true
		}
	}
	return false
}

func (c *Catalog) localCheck(src hubv1.ChartSource) error {
	p, fi, err := c.localRoot(src)
	if err != nil {
		return err
	}
	if !fi.IsDir() {
		_, err := c.loadLocal(src, p, false)
		return err
	}
	if isChartDir(p) {
		_, err := c.loadLocal(src, p, true)
		return err
	}
	if _, err := os.ReadDir(p); err != nil {
		return fmt.Errorf("chart source %s: %w", src.Name, err)
	}
	return nil
}

// localEntries loads every chart version in the source. Two entries with
// the same name and version are an error: which one a deployment meant
// would be a guess.
func (c *Catalog) localEntries(src hubv1.ChartSource) ([]localEntry, error) {
	p, fi, err := c.localRoot(src)
	if err != nil {
		return nil, err
	}
	var paths []string
	switch {
	case !fi.IsDir():
		paths = []string{p}
	case isChartDir(p):
		paths = []string{p}
	default:
		des, err := os.ReadDir(p)
		if err != nil {
			return nil, fmt.Errorf("chart source %s: %w", src.Name, err)
		}
		for _, de := range des {
			e := filepath.Join(p, de.Name())
			if strings.HasPrefix(de.Name(), ".") {
				continue
			}
			fi, err := os.Stat(e)
			if err != nil {
				return nil, fmt.Errorf("chart source %s: %w", src.Name, err)
			}
			if (fi.IsDir() && isChartDir(e)) || (fi.Mode().IsRegular() && strings.HasSuffix(de.Name(), ".tgz")) {
				paths = append(paths, e)
			}
		}
	}
	var out []localEntry
	seen := map[string]string{}
	for _, e := range paths {
		fi, err := os.Stat(e)
		if err != nil {
			return nil, fmt.Errorf("chart source %s: %w", src.Name, err)
		}
		a, err := c.loadLocal(src, e, fi.IsDir())
		if err != nil {
			return nil, err
		}
		key := a.Name + " " + a.Version
		if other, dup := seen[key]; dup {
			return nil, fmt.Errorf("chart source %s: chart %s %s is both %s and %s; keep one", src.Name, a.Name, a.Version, other, e)
		}
		seen[key] = e
		out = append(out, localEntry{path: e, arch: a})
	}
	return out, nil
}

// loadLocal reads a .tgz as it is, or packages a chart directory.
func (c *Catalog) loadLocal(src hubv1.ChartSource, p string, dir bool) (*Archive, error) {
	var data []byte
	var err error
	if dir {
		data, err = c.packageDir(p)
	} else {
		if !strings.HasSuffix(p, ".tgz") {
			return nil, fmt.Errorf("chart source %s: %s is neither a chart directory nor a .tgz", src.Name, p)
		}
		data, err = os.ReadFile(p)
	}
	if err != nil {
		return nil, fmt.Errorf("chart source %s: %w", src.Name, err)
	}
	a, err := newArchive(src.Name, data)
	if err != nil {
		return nil, fmt.Errorf("chart source %s: %s: %w", src.Name, p, err)
	}
	return a, nil
}

func isChartDir(p string) bool {
	fi, err := os.Stat(filepath.Join(p, "Chart.yaml"))
	return err == nil && fi.Mode().IsRegular()
}

func (c *Catalog) localList(src hubv1.ChartSource) ([]hubv1.Chart, error) {
	entries, err := c.localEntries(src)
	if err != nil {
		return nil, err
	}
	byName := map[string]repo.ChartVersions{}
	digests := map[*repo.ChartVersion]string{}
	for _, e := range entries {
		cv := &repo.ChartVersion{Metadata: e.arch.Chart.Metadata}
		digests[cv] = e.arch.Digest
		byName[e.arch.Name] = append(byName[e.arch.Name], cv)
	}
	out := make([]hubv1.Chart, 0, len(byName))
	for name, cvs := range byName {
		ch := hubv1.Chart{Source: src.Name, Name: name}
		for _, cv := range sortVersions(cvs) {
			ch.Versions = append(ch.Versions, hubv1.ChartVersion{
				Source:      src.Name,
				Name:        name,
				Version:     cv.Version,
				AppVersion:  cv.AppVersion,
				Description: cv.Description,
				Digest:      digests[cv],
			})
		}
		out = append(out, ch)
	}
	slices.SortFunc(out, func(a, b hubv1.Chart) int { return strings.Compare(a.Name, b.Name) })
	return out, nil
}

func (c *Catalog) localFetch(src hubv1.ChartSource, name, version string) (*Archive, error) {
	entries, err := c.localEntries(src)
	if err != nil {
		return nil, err
	}
	found := false
	for _, e := range entries {
		if e.arch.Name != name {
			continue
		}
		found = true
		if e.arch.Version == version {
			return e.arch, nil
		}
	}
	if !found {
		return nil, fmt.Errorf("chart source %s: no chart %s: %w", src.Name, name, ErrNotFound)
	}
	return nil, fmt.Errorf("chart source %s: chart %s has no version %s: %w", src.Name, name, version, ErrNotFound)
}

package catalog

import (
	"bytes"
	"context"
	"fmt"
	"net/url"
	"os"
	"slices"
	"sort"
	"strings"

	"helm.sh/helm/v4/pkg/getter"
	repo "helm.sh/helm/v4/pkg/repo/v1"

	hubv1 "github.com/misaki-io/misaki/api/hub/v1"
)

// httpIndex downloads and parses the repository's index.yaml with the SDK's
// ChartRepository, into a scratch directory removed before it returns.
func (c *Catalog) httpIndex(ctx context.Context, src hubv1.ChartSource) (*repo.IndexFile, error) {
	dir, err := c.scratch("index-")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(dir)
	r, err := repo.NewChartRepository(&repo.Entry{
		Name:                  src.Name,
		URL:                   src.URL,
		CAFile:                src.CAFile,
		InsecureSkipTLSVerify: src.InsecureSkipTLSVerify,
	}, c.getters)
	if err != nil {
		return nil, fmt.Errorf("chart source %s: %w", src.Name, err)
	}
	r.CachePath = dir
	c.log.Debug("fetching index", "source", src.Name, "url", src.URL)
	path, err := call(ctx, r.DownloadIndexFile)
	if err != nil {
		return nil, fmt.Errorf("chart source %s: fetch index of %s: %w", src.Name, src.URL, err)
	}
	idx, err := repo.LoadIndexFile(path)
	if err != nil {
		return nil, fmt.Errorf("chart source %s: index of %s: %w", src.Name, src.URL, err)
	}
	return idx, nil
}

func (c *Catalog) httpList(ctx context.Context, src hubv1.ChartSource) ([]hubv1.Chart, error) {
	idx, err := c.httpIndex(ctx, src)
	if err != nil {
		return nil, err
	}
	var out []hubv1.Chart
	for name, cvs := range idx.Entries {
		ch := hubv1.Chart{Source: src.Name, Name: name}
		for _, cv := range sortVersions(cvs) {
			if cv.Removed {
				continue
			}
			ch.Versions = append(ch.Versions, hubv1.ChartVersion{
				Source:      src.Name,
				Name:        name,
				Version:     cv.Version,
				AppVersion:  cv.AppVersion,
				Description: cv.Description,
				Digest:      indexDigest(cv.Digest),
			})
		}
		if len(ch.Versions) > 0 {
			out = append(out, ch)
		}
	}
	slices.SortFunc(out, func(a, b hubv1.Chart) int { return strings.Compare(a.Name, b.Name) })
	return out, nil
}

// sortVersions sorts a copy newest first with the SDK's semver order.
func sortVersions(cvs repo.ChartVersions) repo.ChartVersions {
	s := slices.Clone(cvs)
	sort.Stable(sort.Reverse(s))
	return s
}

// indexDigest turns an index entry's digest (hex, as helm writes it, or
// already "sha256:<hex>") into the API's form; "" stays "".
func indexDigest(d string) string {
	if d == "" || strings.HasPrefix(d, "sha256:") {
		return d
	}
	return "sha256:" + strings.ToLower(d)
}

func (c *Catalog) httpFetch(ctx context.Context, src hubv1.ChartSource, name, version string) ([]byte, error) {
	idx, err := c.httpIndex(ctx, src)
	if err != nil {
		return nil, err
	}
	var cv *repo.ChartVersion
	for _, v := range idx.Entries[name] {
		if v.Version == version && !v.Removed {
			cv = v
			break
		}
	}
	if cv == nil {
		if _, ok := idx.Entries[name]; !ok {
			return nil, fmt.Errorf("chart source %s: no chart %s: %w", src.Name, name, ErrNotFound)
		}
		return nil, fmt.Errorf("chart source %s: chart %s has no version %s: %w", src.Name, name, version, ErrNotFound)
	}
	if len(cv.URLs) == 0 {
		return nil, fmt.Errorf("chart source %s: index entry %s %s has no URL", src.Name, name, version)
	}
	href, err := repo.ResolveReferenceURL(src.URL, cv.URLs[0])
	if err != nil {
		return nil, fmt.Errorf("chart source %s: %s %s: archive URL %q: %w", src.Name, name, version, cv.URLs[0], err)
	}
	u, err := url.Parse(href)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") {
		return nil, fmt.Errorf("chart source %s: %s %s: archive URL %q is not http(s)", src.Name, name, version, href)
	}
	g, err := c.getters.ByScheme(u.Scheme)
	if err != nil {
		return nil, fmt.Errorf("chart source %s: %w", src.Name, err)
	}
	c.log.Debug("fetching chart", "source", src.Name, "chart", name, "version", version, "url", href)
	buf, err := call(ctx, func() (*bytes.Buffer, error) {
		return g.Get(href,
			getter.WithURL(src.URL),
			getter.WithTLSClientConfig("", "", src.CAFile),
			getter.WithInsecureSkipVerifyTLS(src.InsecureSkipTLSVerify),
		)
	})
	if err != nil {
		return nil, fmt.Errorf("chart source %s: fetch %s %s: %w", src.Name, name, version, err)
	}
	data := buf.Bytes()
	if want := indexDigest(cv.Digest); want != "" {
		if got := Digest(data); got != want {
			return nil, fmt.Errorf("chart %s %s from source %s: %s serves %s, its index lists %s: %w",
				name, version, src.Name, href, got, want, ErrDigestMismatch)
		}
	}
	return data, nil
}

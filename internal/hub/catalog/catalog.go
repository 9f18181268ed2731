// Package catalog is the hub's chart catalog: it checks chart sources, lists
// the charts and versions they publish, and fetches one chart version as the
// exact archive bytes, their digest and the loaded chart. Three kinds of
// source are served, all through the Helm v4 SDK: a Helm HTTP repository
// (index.yaml, helm.sh/helm/v4/pkg/repo/v1 and pkg/getter), an OCI registry
// (pkg/registry; a registry has no index, so the source names its charts and
// their versions are the registry's semver tags), and a directory of charts
// or one .tgz on the hub's disk (pkg/chart/v2/loader, packaged with
// pkg/chart/v2/util).
//
// The catalog keeps no state of its own: pinning a version to a digest is
// the store's job (store.PinChart); VerifyPinned and Fetch's check against
// an index's digest are the two places the catalog refuses bytes that are
// not the ones expected.
package catalog

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"sync"
	"time"

	chart "helm.sh/helm/v4/pkg/chart/v2"
	"helm.sh/helm/v4/pkg/getter"

	hubv1 "github.com/misaki-io/misaki/api/hub/v1"
	"github.com/misaki-io/misaki/internal/hub/store"
)

// ErrNotFound: the source does not publish the named chart or version.
var ErrNotFound = errors.New("chart not found")

// ErrDigestMismatch is store.ErrDigestMismatch: the bytes a source serves
// are not the ones an index lists or a deployment pinned. One sentinel for
// the idea, so the API maps both the catalog's and the store's refusal to
// the same answer.
var ErrDigestMismatch = store.ErrDigestMismatch

// DefaultTimeout bounds one request to a source when Options.Timeout is 0.
const DefaultTimeout = 60 * time.Second

// Options configure a Catalog. The zero value is usable.
type Options struct {
	// Logger receives debug lines for each request to a source; nil
	// discards them.
	Logger *slog.Logger
	// CacheDir holds index files and packaging scratch space while a call
	// runs. Empty: a temporary directory made on first use and removed by
	// Close.
	CacheDir string
	// Timeout bounds one HTTP request to a source (an index, an archive, a
	// registry call). Default DefaultTimeout.
	Timeout time.Duration
	// UserAgent is sent to HTTP repositories. Default "misaki-hub".
	UserAgent string
	// RegistryConfig is a Docker-style config.json with credentials for OCI
	// registries. Empty: none of the hub's own (the SDK still falls back to
	// the hub user's ~/.docker/config.json, as helm does).
	RegistryConfig string
	// LocalRoots, when not empty, confines local sources to these
	// directories (after resolving symlinks): a local source elsewhere on
	// the hub's disk is refused. Empty allows any path.
	LocalRoots []string
}

func (o Options) withDefaults() Options {
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	if o.Timeout <= 0 {
		o.Timeout = DefaultTimeout
	}
	if o.UserAgent == "" {
		o.UserAgent = "misaki-hub"
	}
	return o
}

// Catalog reads chart sources. It is safe for concurrent use.
//
// The Helm SDK's getters and registry client take no context: a call whose
// ctx ends returns ctx's error at once, and the request it started runs on
// in the background until it ends or Options.Timeout passes.
type Catalog struct {
	opts    Options
	log     *slog.Logger
	getters getter.Providers

	mu       sync.Mutex // guards the fields below
	cacheDir string     // made on first use
	tempDir  bool       // cacheDir is ours to remove
}

// New returns a Catalog. It does no I/O.
func New(opts Options) *Catalog {
	opts = opts.withDefaults()
	return &Catalog{
		opts: opts,
		log:  opts.Logger.With("component", "catalog"),
		getters: getter.Getters(
			getter.WithTimeout(opts.Timeout),
			getter.WithUserAgent(opts.UserAgent),
		),
	}
}

// Close removes the temporary cache directory, if New made one.
func (c *Catalog) Close() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if !c.tempDir || c.cacheDir == "" {
		return nil
	}
	err := os.RemoveAll(c.cacheDir)
	c.cacheDir, c.tempDir = "", false
	if err != nil {
		return fmt.Errorf("catalog: remove cache dir: %w", err)
	}
	return nil
}

// scratch returns a new directory under the cache dir for one call; the
// caller removes it.
func (c *Catalog) scratch(pattern string) (string, error) {
	c.mu.Lock()
	if c.cacheDir == "" {
		if c.opts.CacheDir != "" {
			if err := os.MkdirAll(c.opts.CacheDir, 0o700); err != nil {
				c.mu.Unlock()
				return "", fmt.Errorf("catalog: cache dir: %w", err)
			}
			c.cacheDir = c.opts.CacheDir
		} else {
			d, err := os.MkdirTemp("", "misaki-catalog-")
			if err != nil {
				c.mu.Unlock()
				return "", fmt.Errorf("catalog: cache dir: %w", err)
			}
			c.cacheDir, c.tempDir = d, true
		}
	}
	base := c.cacheDir
	c.mu.Unlock()
	d, err := os.MkdirTemp(base, pattern)
	if err != nil {
		return "", fmt.Errorf("catalog: scratch dir: %w", err)
	}
	return d, nil
}

// Archive is one fetched chart version.
type Archive struct {
	Source  string
	Name    string
	Version string
	// Data are the exact .tgz bytes the source served (for a local
	// unpacked directory, the bytes PackageDir made).
	Data []byte
	// Digest is "sha256:<hex>" of Data.
	Digest string
	// Chart is Data loaded.
	Chart *chart.Chart
	// ValuesSchema is the chart's values.schema.json, nil when it has none.
	ValuesSchema json.RawMessage
}

// ChartVersion describes the archive as the API lists a version.
func (a *Archive) ChartVersion() hubv1.ChartVersion {
	v := hubv1.ChartVersion{
		Source:       a.Source,
		Name:         a.Name,
		Version:      a.Version,
		Digest:       a.Digest,
		ValuesSchema: a.ValuesSchema,
	}
	if a.Chart != nil && a.Chart.Metadata != nil {
		v.AppVersion = a.Chart.Metadata.AppVersion
		v.Description = a.Chart.Metadata.Description
	}
	return v
}

// Check validates src's fields (ValidateSource) and reaches it: it fetches
// an HTTP repository's index, lists the tags of each chart an OCI source
// names, or reads a local path.
func (c *Catalog) Check(ctx context.Context, src hubv1.ChartSource) error {
	if err := ValidateSource(src); err != nil {
		return err
	}
	var err error
	switch src.Type {
	case hubv1.SourceHTTP:
		_, err = c.httpIndex(ctx, src)
	case hubv1.SourceOCI:
		_, err = c.ociList(ctx, src, false)
	case hubv1.SourceLocal:
		err = c.localCheck(src)
	}
	return err
}

// List returns the charts src publishes, by name, each with its versions
// newest first (semver order). Versions carry the archive digest when the
// source says it without a download: an HTTP index's digest, the chart
// layer's digest in an OCI manifest, a local archive's hash.
func (c *Catalog) List(ctx context.Context, src hubv1.ChartSource) ([]hubv1.Chart, error) {
	if err := ValidateSource(src); err != nil {
		return nil, err
	}
	switch src.Type {
	case hubv1.SourceHTTP:
		return c.httpList(ctx, src)
	case hubv1.SourceOCI:
		return c.ociList(ctx, src, true)
	default:
		return c.localList(src)
	}
}

// Fetch downloads (or packages) one chart version and loads it. It refuses
// bytes whose digest differs from the one an HTTP index lists for the
// version (the error wraps ErrDigestMismatch and names both), and a chart
// whose Chart.yaml names another chart or version. A chart or version the
// source does not publish is ErrNotFound.
func (c *Catalog) Fetch(ctx context.Context, src hubv1.ChartSource, name, version string) (*Archive, error) {
	if err := ValidateSource(src); err != nil {
		return nil, err
	}
	if name == "" || version == "" {
		return nil, fmt.Errorf("chart source %s: fetch needs a chart name and version (got %q %q)", src.Name, name, version)
	}
	var (
		a    *Archive
		data []byte
		err  error
	)
	switch src.Type {
	case hubv1.SourceHTTP:
		data, err = c.httpFetch(ctx, src, name, version)
	case hubv1.SourceOCI:
		data, err = c.ociFetch(ctx, src, name, version)
	default:
		a, err = c.localFetch(src, name, version)
	}
	if err != nil {
		return nil, err
	}
	if a == nil {
		if a, err = newArchive(src.Name, data); err != nil {
			return nil, fmt.Errorf("chart %s %s from source %s: %w", name, version, src.Name, err)
		}
	}
	if a.Name != name || a.Version != version {
		return nil, fmt.Errorf("chart %s %s from source %s: the archive served is %s %s", name, version, src.Name, a.Name, a.Version)
	}
	return a, nil
}

// newArchive loads data and fills an Archive.
func newArchive(source string, data []byte) (*Archive, error) {
	ch, err := Load(data)
	if err != nil {
		return nil, err
	}
	a := &Archive{
		Source:  source,
		Name:    ch.Metadata.Name,
		Version: ch.Metadata.Version,
		Data:    data,
		Digest:  Digest(data),
		Chart:   ch,
	}
	if len(ch.Schema) > 0 {
		a.ValuesSchema = json.RawMessage(ch.Schema)
	}
	return a, nil
}

// Digest returns "sha256:<hex>" of data, the form digests take in the API
// and the store.
func Digest(data []byte) string {
	sum := sha256.Sum256(data)
	return "sha256:" + hex.EncodeToString(sum[:])
}

// call runs f, which cannot be cancelled, and returns when it does or when
// ctx ends, whichever is first. f must end by itself (the SDK's requests are
// bounded by Options.Timeout).
func call[T any](ctx context.Context, f func() (T, error)) (T, error) {
	var zero T
	if err := ctx.Err(); err != nil {
		return zero, err
	}
	type result struct {
		v   T
		err error
	}
	done := make(chan result, 1)
	go func() {
		v, err := f()
		done <- result{v, err}
	}()
	select {
	case r := <-done:
		return r.v, r.err
	case <-ctx.Done():
		return zero, ctx.Err()
	}
}

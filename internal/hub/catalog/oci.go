package catalog

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"

	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	"golang.org/x/sync/errgroup"
	chart "helm.sh/helm/v4/pkg/chart/v2"
	"helm.sh/helm/v4/pkg/registry"
	"oras.land/oras-go/v2/errdef"

	hubv1 "github.com/misaki-io/misaki/api/hub/v1"
)

// ociDetailWorkers bounds the concurrent manifest reads of one List.
const ociDetailWorkers = 4

// registryClient returns an SDK registry client configured for src (TLS,
// plain HTTP) and a func that releases its idle connections.
func (c *Catalog) registryClient(src hubv1.ChartSource) (*registry.Client, func(), error) {
	tr := http.DefaultTransport.(*http.Transport).Clone()
	tr.TLSClientConfig = &tls.Config{
		MinVersion:         tls.VersionTLS12,
		InsecureSkipVerify: src.InsecureSkipTLSVerify, //nolint:gosec // the operator asked for it on this source
	}
	if src.CAFile != "" {
		pem, err := os.ReadFile(src.CAFile)
		if err != nil {
			return nil, nil, fmt.Errorf("chart source %s: caFile: %w", src.Name, err)
		}
		pool, err := x509.SystemCertPool()
		if err != nil {
			pool = x509.NewCertPool()
		}
		if !pool.AppendCertsFromPEM(pem) {
			return nil, nil, fmt.Errorf("chart source %s: caFile %s holds no PEM certificate", src.Name, src.CAFile)
		}
		tr.TLSClientConfig.RootCAs = pool
	}
	opts := []registry.ClientOption{
		registry.ClientOptHTTPClient(&http.Client{Transport: tr, Timeout: c.opts.Timeout}),
		registry.ClientOptEnableCache(true),
	}
	creds := c.opts.RegistryConfig
	if creds == "" {
		// A file that does not exist: no credentials of the hub's own
		// (the SDK's default is the helm CLI user's file).
		d, err := c.scratch("registry-")
		if err != nil {
			return nil, nil, err
		}
		defer os.RemoveAll(d)
		creds = filepath.Join(d, "config.json")
	}
	opts = append(opts, registry.ClientOptCredentialsFile(creds))
	if src.PlainHTTP {
		opts = append(opts, registry.ClientOptPlainHTTP())
	}
	rc, err := registry.NewClient(opts...)
	if err != nil {
		return nil, nil, fmt.Errorf("chart source %s: registry client: %w", src.Name, err)
	}
	return rc, tr.CloseIdleConnections, nil
}

// ociRepo is the registry repository of one chart of src.
func ociRepo(src hubv1.ChartSource, name string) string {
	return strings.TrimSuffix(strings.TrimPrefix(src.URL, "oci://"), "/") + "/" + name
}

// ociList lists the semver tags of each chart src names; with details it
// also reads each version's manifest and chart config (not the archive) for
// the digest, app version and description.
func (c *Catalog) ociList(ctx context.Context, src hubv1.ChartSource, details bool) ([]hubv1.Chart, error) {
	rc, release, err := c.registryClient(src)
	if err != nil {
		return nil, err
	}
	defer release()
	out := make([]hubv1.Chart, 0, len(src.Charts))
	for _, name := range src.Charts {
		ref := ociRepo(src, name)
		c.log.Debug("listing tags", "source", src.Name, "chart", name, "ref", ref)
		tags, err := call(ctx, func() ([]string, error) { return rc.Tags(ref) })
		if err != nil {
			return nil, fmt.Errorf("chart source %s: chart %s: list tags of %s: %w", src.Name, name, ref, err)
		}
		// Tags are semver-sorted newest first by the SDK.
		ch := hubv1.Chart{Source: src.Name, Name: name, Versions: make([]hubv1.ChartVersion, len(tags))}
		for i, tag := range tags {
			ch.Versions[i] = hubv1.ChartVersion{Source: src.Name, Name: name, Version: tag}
		}
		if details {
			if err := c.ociDetails(ctx, rc, ref, ch.Versions); err != nil {
				return nil, fmt.Errorf("chart source %s: chart %s: %w", src.Name, name, err)
			}
		}
		out = append(out, ch)
	}
	return out, nil
}

// ociDetails fills in the versions' digest, app version and description
// from their manifests and chart configs, a few at a time.
func (c *Catalog) ociDetails(ctx context.Context, rc *registry.Client, ref string, versions []hubv1.ChartVersion) error {
	g, ctx := errgroup.WithContext(ctx)
	g.SetLimit(ociDetailWorkers)
	for i := range versions {
		g.Go(func() error {
			if err := ociDetail(ctx, rc, ref, &versions[i]); err != nil {
				return fmt.Errorf("version %s: %w", versions[i].Version, err)
			}
			return nil
		})
	}
	return g.Wait()
}

func ociDetail(ctx context.Context, rc *registry.Client, ref string, v *hubv1.ChartVersion) error {
	type detail struct {
		digest string
		meta   chart.Metadata
	}
	d, err := call(ctx, func() (detail, error) {
		g := rc.Generic()
		res, err := g.PullGeneric(ref+":"+v.Version, registry.GenericPullOptions{
			AllowedMediaTypes: []string{ocispec.MediaTypeImageManifest, registry.ConfigMediaType},
		})
		if err != nil {
			return detail{}, err
		}
		raw, err := g.GetDescriptorData(res.MemoryStore, res.Manifest)
		if err != nil {
			return detail{}, fmt.Errorf("read manifest: %w", err)
		}
		var m ocispec.Manifest
		if err := json.Unmarshal(raw, &m); err != nil {
			return detail{}, fmt.Errorf("parse manifest: %w", err)
		}
		var out detail
		for _, l := range m.Layers {
			if l.MediaType == registry.ChartLayerMediaType || l.MediaType == registry.LegacyChartLayerMediaType {
				out.digest = l.Digest.String()
			}
		}
		if m.Config.MediaType != registry.ConfigMediaType {
			return detail{}, fmt.Errorf("not a Helm chart: config media type %q", m.Config.MediaType)
		}
		cfg, err := g.GetDescriptorData(res.MemoryStore, m.Config)
		if err != nil {
			return detail{}, fmt.Errorf("read chart config: %w", err)
		}
		if err := json.Unmarshal(cfg, &out.meta); err != nil {
			return detail{}, fmt.Errorf("parse chart config: %w", err)
		}
		return out, nil
	})
	if err != nil {
		return err
	}
	v.Digest = d.digest
	v.AppVersion = d.meta.AppVersion
	v.Description = d.meta.Description
	return nil
}

func (c *Catalog) ociFetch(ctx context.Context, src hubv1.ChartSource, name, version string) ([]byte, error) {
	if !slices.Contains(src.Charts, name) {
		return nil, fmt.Errorf("chart source %s: no chart %s (the source lists %s): %w", src.Name, name, strings.Join(src.Charts, ", "), ErrNotFound)
	}
	rc, release, err := c.registryClient(src)
	if err != nil {
		return nil, err
	}
	defer release()
	ref := ociRepo(src, name) + ":" + version
	c.log.Debug("pulling chart", "source", src.Name, "chart", name, "version", version, "ref", ref)
	res, err := call(ctx, func() (*registry.PullResult, error) { return rc.Pull(ref) })
	if err != nil {
		if errors.Is(err, errdef.ErrNotFound) {
			return nil, fmt.Errorf("chart source %s: pull %s: %w (%w)", src.Name, ref, ErrNotFound, err)
		}
		return nil, fmt.Errorf("chart source %s: pull %s: %w", src.Name, ref, err)
	}
	data := res.Chart.Data
	// oras checked the layer against its descriptor; the check here keeps
	// the Archive's digest and the manifest's in one place.
	if got := Digest(data); res.Chart.Digest != "" && got != res.Chart.Digest {
		return nil, fmt.Errorf("chart %s %s from source %s: layer is %s, manifest lists %s: %w", name, version, src.Name, got, res.Chart.Digest, ErrDigestMismatch)
	}
	return data, nil
}

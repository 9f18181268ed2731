package catalog

import (
	"errors"
	"fmt"
	"net/url"
	"path/filepath"
	"regexp"
	"strings"

	"k8s.io/apimachinery/pkg/util/validation"

	hubv1 "github.com/misaki-io/misaki/api/hub/v1"
)

// FieldError is a chart source field that does not hold what its type
// needs. Field is the field's JSON name ("url", "charts[1]"), for the API's
// hubv1.Error.Field.
type FieldError struct {
	Field  string
	Reason string
}

func (e *FieldError) Error() string {
	return fmt.Sprintf("chart source: %s: %s", e.Field, e.Reason)
}

// chartName is an OCI repository path component, the spelling a chart name
// needs to be pulled from a registry (lower-case letters and digits,
// separated by '.', '_' or '-').
var chartName = regexp.MustCompile(`^[a-z0-9]+(?:[._-][a-z0-9]+)*$`)

// ValidateSource checks src's fields without I/O: the name is a DNS label,
// the type is known, and the URL has the shape the type needs (http(s)://
// for a repository, oci://host/path for a registry, an absolute path or
// file:// URL for a local source); an OCI source names at least one chart.
// The error is a *FieldError.
func ValidateSource(src hubv1.ChartSource) error {
	if src.Name == "" {
		return &FieldError{"name", "required"}
	}
	if errs := validation.IsDNS1123Label(src.Name); len(errs) > 0 {
		return &FieldError{"name", fmt.Sprintf("%q is not a DNS label: %s", src.Name, strings.Join(errs, "; "))}
	}
	if src.URL == "" {
		return &FieldError{"url", "required"}
	}
	switch src.Type {
	case hubv1.SourceHTTP:
		return validateHTTP(src.URL)
	case hubv1.SourceOCI:
		if err := validateOCI(src.URL); err != nil {
			return err
		}
		if len(src.Charts) == 0 {
			return &FieldError{"charts", "an oci source must list the chart names to look for (a registry has no index)"}
		}
		seen := map[string]bool{}
		for i, n := range src.Charts {
			f := fmt.Sprintf("charts[%d]", i)
			if !chartName.MatchString(n) {
				return &FieldError{f, fmt.Sprintf("%q is not a chart name (lower-case letters and digits, separated by '.', '_' or '-')", n)}
			}
			if seen[n] {
				return &FieldError{f, fmt.Sprintf("%q is listed twice", n)}
			}
			seen[n] = true
		}
		return nil
	case hubv1.SourceLocal:
		_, err := localPath(src.URL)
		return err
	case "":
		return &FieldError{"type", fmt.Sprintf("required: one of %s, %s, %s", hubv1.SourceHTTP, hubv1.SourceOCI, hubv1.SourceLocal)}
	default:
		return &FieldError{"type", fmt.Sprintf("unknown type %q: use %s, %s or %s", src.Type, hubv1.SourceHTTP, hubv1.SourceOCI, hubv1.SourceLocal)}
	}
}

func validateHTTP(raw string) error {
	u, err := url.Parse(raw)
	if err != nil {
		return &FieldError{"url", fmt.Sprintf("does not parse: %v", errors.Unwrap(err))}
	}
	if u.Scheme != "http" && u.Scheme != "https" {
		return &FieldError{"url", fmt.Sprintf("%q: an http source needs an http:// or https:// URL (the repository's base, where index.yaml is)", raw)}
	}
	if u.Host == "" {
		return &FieldError{"url", fmt.Sprintf("%q has no host", raw)}
	}
	if u.RawQuery != "" || u.Fragment != "" {
		return &FieldError{"url", fmt.Sprintf("%q: a repository URL takes no query or fragment", raw)}
	}
	if strings.HasSuffix(u.Path, "/index.yaml") {
		return &FieldError{"url", fmt.Sprintf("%q: give the repository's base URL, without index.yaml", raw)}
	}
	return nil
}

func validateOCI(raw string) error {
	rest, ok := strings.CutPrefix(raw, "oci://")
	if !ok {
		return &FieldError{"url", fmt.Sprintf("%q: an oci source needs an oci://host/path URL", raw)}
	}
	host, path, _ := strings.Cut(rest, "/")
	if host == "" {
		return &FieldError{"url", fmt.Sprintf("%q has no registry host", raw)}
	}
	if strings.ContainsAny(host, "@?#") {
		return &FieldError{"url", fmt.Sprintf("%q: bad registry host %q", raw, host)}
	}
	if path == "" {
		return nil
	}
	for _, seg := range strings.Split(strings.TrimSuffix(path, "/"), "/") {
		if !chartName.MatchString(seg) {
			return &FieldError{"url", fmt.Sprintf("%q: path segment %q is not a repository name (no tag or digest here; the charts and their tags are found under this path)", raw, seg)}
		}
	}
	return nil
}

// localPath returns the clean absolute path a local source's URL names.
func localPath(raw string) (string, error) {
	p := raw
	if strings.Contains(raw, "://") {
		u, err := url.Parse(raw)
		if err != nil {
			return "", &FieldError{"url", fmt.Sprintf("does not parse: %v", errors.Unwrap(err))}
		}
		if u.Scheme != "file" {
			return "", &FieldError{"url", fmt.Sprintf("%q: a local source needs an absolute path or a file:///path URL", raw)}
		}
		if u.Host != "" && u.Host != "localhost" {
			return "", &FieldError{"url", fmt.Sprintf("%q: a file URL names a path on the hub, not host %q", raw, u.Host)}
		}
		p = u.Path
	}
	if !filepath.IsAbs(p) {
		return "", &FieldError{"url", fmt.Sprintf("%q: a local source needs an absolute path (a directory of charts or one .tgz)", raw)}
	}
	return filepath.Clean(p), nil
}

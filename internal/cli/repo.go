package cli

import (
	"context"
	"net/http"
	"strings"

	hubv1 "github.com/misaki-io/misaki/api/hub/v1"
)

var repoCommands = []*command{
	{
		group: "repo", name: "add", args: "<name> <url>",
		summary: "Add a chart source (a Helm repository, an OCI registry or a directory on the hub)",
		help: `The hub reaches the source before it stores it, so a wrong URL fails now.
The type follows from the URL: oci:// is an OCI registry, http:// and
https:// a Helm chart repository (its index.yaml), anything else a local
directory or .tgz on the hub's disk. An OCI registry has no index: name its
charts with --chart.

Examples:
  misaki repo add charts https://charts.example.com
  misaki repo add registry oci://registry.example.com/charts --chart shuttle --chart planner
  misaki repo add local /srv/charts`,
		run: repoAdd,
	},
	{
		group: "repo", name: "list", aliases: []string{"ls"},
		summary: "List chart sources",
		run:     repoList,
	},
	{
		group: "repo", name: "remove", aliases: []string{"rm", "delete"}, args: "<name>",
		summary: "Remove a chart source no deployment uses",
		run:     deleteNamed("/v1/sources/", "source", "removed"),
	},
}

// sourceType guesses a source's type from its URL.
func sourceType(url string) string {
	switch {
	case strings.HasPrefix(url, "oci://"):
		return hubv1.SourceOCI
	case strings.HasPrefix(url, "http://"), strings.HasPrefix(url, "https://"):
		return hubv1.SourceHTTP
	default:
		return hubv1.SourceLocal
	}
}

func repoAdd(ctx context.Context, e *env, args []string) error {
	fs := e.flags()
	typ := fs.String("type", "", "source `type`: http, oci or local (default: from the URL)")
	var charts multiString
	fs.Var(&charts, "chart", "a chart `name` to look for (OCI sources, which have no index); may be repeated")
	plain := fs.Bool("plain-http", false, "reach an OCI registry over http://")
	insecure := fs.Bool("insecure-skip-tls-verify", false, "do not verify the source's TLS certificate")
	caFile := fs.String("ca-file-for-source", "", "PEM `file` on the hub's disk with the CA of the source's certificate")
	pos, err := e.parse(fs, args, 2, 2)
	if err != nil {
		return err
	}
	src := hubv1.ChartSource{
		Name: pos[0], URL: pos[1], Type: *typ, Charts: charts,
		PlainHTTP: *plain, InsecureSkipTLSVerify: *insecure, CAFile: *caFile,
	}
	if src.Type == "" {
		src.Type = sourceType(src.URL)
	}
	switch src.Type {
	case hubv1.SourceHTTP, hubv1.SourceOCI, hubv1.SourceLocal:
	default:
		return usagef("--type %s: want http, oci or local", src.Type)
	}
	c, err := e.hub()
	if err != nil {
		return err
	}
	var got hubv1.ChartSource
	if err := c.do(ctx, http.MethodPost, "/v1/sources", nil, src, &got); err != nil {
		return err
	}
	return e.showLine(got, "source/%s added (%s %s)", got.Name, got.Type, got.URL)
}

func repoList(ctx context.Context, e *env, args []string) error {
	_, c, err := e.connect(e.flags(), args, 0, 0)
	if err != nil {
		return err
	}
	var l hubv1.List[hubv1.ChartSource]
	if err := c.get(ctx, "/v1/sources", nil, &l); err != nil {
		return err
	}
	return showList(e, l, "chart sources",
		[]string{"NAME", "TYPE", "URL", "CHARTS", "TLS", "AGE"},
		func(s hubv1.ChartSource) []string {
			return []string{s.Name, s.Type, s.URL, orDash(strings.Join(s.Charts, ",")), sourceTLS(s), e.since(s.Created)}
		})
}

func sourceTLS(s hubv1.ChartSource) string {
	var out []string
	if s.PlainHTTP {
		out = append(out, "plain-http")
	}
	if s.InsecureSkipTLSVerify {
		out = append(out, "insecure")
	}
	if s.CAFile != "" {
		out = append(out, "ca="+s.CAFile)
	}
	return orDash(strings.Join(out, ","))
}

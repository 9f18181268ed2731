package translate

import (
	"errors"
	"fmt"

	meshv1 "github.com/misaki-io/misaki/api/v1alpha1"
	"github.com/misaki-io/misaki/internal/proxy/config"
)

// proxyRoute is r in the proxy's route model, config.Route, the one
// conversion from a Route object: the proxy's file and its xDS client
// read their routes into the same model. Defaults are not set (the
// proxy sets them, with its own limits). The upstream is the
// destination's URL, or for a Service its cluster DNS name on the port;
// durations and sizes are parsed as the proxy parses them, and an error
// names the spec field.
func proxyRoute(in Input, r meshv1.Route) (config.Route, error) {
	s := r.Spec
	var p specParser
	pr := config.Route{Name: r.Name, Upstream: upstream(in, s.Destination)}
	for _, h := range s.Hosts {
		pr.Hosts = append(pr.Hosts, string(h))
	}
	for _, m := range s.Matches {
		cm := config.Match{Path: m.Path, PathPrefix: m.PathPrefix}
		for _, h := range m.Headers {
			cm.Headers = append(cm.Headers, config.HeaderMatch(h))
		}
		pr.Matches = append(pr.Matches, cm)
	}
	if t := s.Destination.TLS; t != nil {
		pr.TLS = config.UpstreamTLS(*t)
	}
	if t := s.Timeouts; t != nil {
		pr.Timeouts = config.Timeouts{
			Connect:        p.duration("timeouts.connect", t.Connect),
			ResponseHeader: p.duration("timeouts.responseHeader", t.ResponseHeader),
			Request:        p.duration("timeouts.request", t.Request),
			Idle:           p.duration("timeouts.idle", t.Idle),
		}
	}
	if b := s.MaxBodyBytes; b != nil {
		pr.MaxBodyBytes = p.size("maxBodyBytes", *b)
	}
	if n := s.MaxUpstreamConnections; n != nil {
		pr.MaxUpstreamConnections = int(*n)
	}
	if pb := s.Probe; pb != nil {
		pr.Probe = config.Probe{
			Type:     pb.Type,
			Path:     pb.Path,
			Interval: p.duration("probe.interval", pb.Interval),
			Timeout:  p.duration("probe.timeout", pb.Timeout),
		}
		if b := pb.Backoff; b != nil {
			pr.Probe.Backoff = config.Backoff{Initial: p.duration("probe.backoff.initial", b.Initial), Max: p.duration("probe.backoff.max", b.Max)}
		}
	}
	if o := s.Offline; o != nil {
		pr.Offline = p.offline(o)
	}
	return pr, errors.Join(p.errs...)
}

// offline is a Route's offline policy in the proxy's model.
func (p *specParser) offline(o *meshv1.Offline) config.Offline {
	po := config.Offline{
		Hold:       p.duration("offline.hold", o.Hold),
		Metered:    o.Metered,
		Roaming:    o.Roaming,
		RetryAfter: p.duration("offline.retryAfter", o.RetryAfter),
		Spool:      o.Spool,
		TTL:        p.duration("offline.ttl", o.TTL),
		Priority:   int(o.Priority),
		Eviction:   o.Eviction,
		Batch:      int(o.Batch),
		GRPC:       o.GRPC,
	}
	for _, l := range o.Links {
		po.Links = append(po.Links, string(l))
	}
	for _, m := range o.UnsafeMethods {
		po.UnsafeMethods = append(po.UnsafeMethods, string(m))
	}
	if l := o.HoldLimit; l != nil {
		po.HoldLimit = config.HoldLimit{Requests: int(l.Requests), Bytes: p.size("offline.holdLimit.bytes", l.Bytes)}
	}
	if q := o.Quota; q != nil {
		po.Quota = config.SpoolQuota{Requests: int(q.Requests), Bytes: p.size("offline.quota.bytes", q.Bytes)}
	}
	if b := o.Budget; b != nil {
		po.Budget = config.Budget{Daily: p.size("offline.budget.daily", b.Daily), Monthly: p.size("offline.budget.monthly", b.Monthly)}
	}
	return po
}

// specParser parses a Route's durations and sizes with the proxy's
// parsers, collecting the errors, each naming its spec field. An empty
// value is zero: the proxy's default.
type specParser struct{ errs []error }

func (p *specParser) duration(field string, s meshv1.Duration) config.Duration {
	if s == "" {
		return 0
	}
	d, err := config.ParseDuration(string(s))
	if err != nil {
		p.errs = append(p.errs, fmt.Errorf("spec.%s: %w", field, err))
	}
	return d
}

func (p *specParser) size(field string, s meshv1.ByteSize) config.ByteSize {
	if s == "" {
		return 0
	}
	b, err := config.ParseByteSize(string(s))
	if err != nil {
		p.errs = append(p.errs, fmt.Errorf("spec.%s: %w", field, err))
	}
	return b
}

// upstream is the URL the proxy dials for a destination: its URL, or the
// Service's cluster DNS name on its port, with the destination's
// protocol, else h2c when the Service port's appProtocol is
// kubernetes.io/h2c or grpc, else http.
func upstream(in Input, d meshv1.Destination) string {
	s := d.Service
	if s == nil {
		return d.URL
	}
	scheme := s.Protocol
	if scheme == "" {
		scheme = "http"
		if svc := findService(in, s.Name); svc != nil {
			for _, p := range svc.Spec.Ports {
				if p.Port == s.Port && p.AppProtocol != nil && (*p.AppProtocol == "kubernetes.io/h2c" || *p.AppProtocol == "grpc") {
					scheme = "h2c"
				}
			}
		}
	}
	return fmt.Sprintf("%s://%s.%s.svc:%d", scheme, s.Name, in.Namespace, s.Port)
}

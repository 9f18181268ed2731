// Package controller is Misaki's Kubernetes controller: it translates each
// namespace's Routes, Services and EndpointSlices into an xDS snapshot
// (package translate) and serves it to the namespace's proxies over ADS
// (go-control-plane), and writes each Route's status.
//
// With XDSAuthMTLS the controller is also the proxies' certificate
// authority (package ca): proxies get a certificate naming their pod at
// its certificate endpoint (package podcert), present it on their ADS
// stream, and get only the snapshot of the namespace it names; the CA
// bundle they trust is kept in a ConfigMap in every namespace.
//
// Every replica serves xDS, so proxies may connect to any of them; only
// the elected leader writes status. Snapshots are keyed by namespace: the
// proxies of a namespace share one (node id "namespace/pod"), which is what
// lets one controller serve thousands of proxies (docs/benchmarks.md).
// Versions are a hash of the resources, so every replica gives the same
// config the same version and a proxy that moves between replicas is not
// sent a config it already has.
package controller

import (
	"context"
	"crypto/sha256"
	"crypto/tls"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	discoverygrpc "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"github.com/envoyproxy/go-control-plane/pkg/cache/types"
	cachev3 "github.com/envoyproxy/go-control-plane/pkg/cache/v3"
	"github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	serverv3 "github.com/envoyproxy/go-control-plane/pkg/server/v3"
	"github.com/go-logr/logr"
	"google.golang.org/grpc"
	"google.golang.org/grpc/keepalive"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/apimachinery/pkg/runtime"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	"k8s.io/client-go/rest"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/cache"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/controller"
	"sigs.k8s.io/controller-runtime/pkg/event"
	"sigs.k8s.io/controller-runtime/pkg/handler"
	"sigs.k8s.io/controller-runtime/pkg/healthz"
	"sigs.k8s.io/controller-runtime/pkg/manager"
	metricsserver "sigs.k8s.io/controller-runtime/pkg/metrics/server"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"
	"sigs.k8s.io/controller-runtime/pkg/webhook"

	meshv1 "github.com/misaki-io/misaki/api/v1alpha1"
	"github.com/misaki-io/misaki/internal/controller/ca"
	"github.com/misaki-io/misaki/internal/controller/certs"
	"github.com/misaki-io/misaki/internal/controller/inject"
	"github.com/misaki-io/misaki/internal/controller/podcert"
	"github.com/misaki-io/misaki/internal/controller/translate"
)

// Options configure the controller.
type Options struct {
	// XDSAddr is where proxies connect for ADS (gRPC: h2c, or TLS with
	// XDSAuthMTLS). Default :15010.
	XDSAddr string
	// XDSListener, when set, is used instead of listening on XDSAddr.
	XDSListener net.Listener
	// XDSAuth is how proxies authenticate: XDSAuthNone (the default, as
	// before: plaintext, any client may name any node) or XDSAuthMTLS (a
	// client certificate from the controller's CA, whose pod must be the
	// node; the chart's default). See docs/control-plane.md, "Identity".
	XDSAuth string
	// CAAddr serves the certificate endpoint (HTTPS) with XDSAuthMTLS.
	// Default :15012.
	CAAddr string
	// CAListener, when set, is used instead of listening on CAAddr.
	CAListener net.Listener
	// CASecret keeps the proxies' CA in Namespace. Default misaki-ca.
	CASecret string
	// TrustDomain of the proxies' SPIFFE IDs. Default cluster.local.
	TrustDomain string
	// CertLifetime of the proxies' certificates. Default 24h; proxies
	// renew them half way.
	CertLifetime time.Duration
	// TokenAudience is the audience of the projected service-account
	// tokens proxies present for a certificate. Default misaki.
	TokenAudience string
	// XDSIPs are IP addresses the certificate of the xDS and certificate
	// endpoints carries besides the Service's names, for proxies that
	// dial an IP.
	XDSIPs []net.IP
	// MetricsAddr serves Prometheus metrics; "0" turns them off. Default :8080.
	MetricsAddr string
	// ProbeAddr serves /healthz and /readyz. Default :8081; "0" turns them off.
	ProbeAddr string
	// LeaderElection makes one replica write status; all serve xDS.
	LeaderElection bool
	// Namespace is the controller's own (for its leader lease).
	Namespace string
	// Log is bridged to controller-runtime's logr.
	Log *slog.Logger

	// WebhookAddr serves the sidecar injection webhook (HTTPS, path
	// /inject). Default :9443; "0" turns it off.
	WebhookAddr string
	// Injector configures what is injected; required with the webhook.
	// Run sets its defaults and looks up the cluster DNS if it has none.
	Injector *inject.Config
	// WebhookConfig is the MutatingWebhookConfiguration whose caBundle the
	// controller keeps. Default misaki-sidecar-injector.
	WebhookConfig string
	// WebhookSecret keeps the webhook's CA and serving certificate in
	// Namespace. Default misaki-webhook-tls.
	WebhookSecret string
	// WebhookService is the controller's Service: the webhook's
	// certificate names it in Namespace, and so does the xDS endpoints'
	// with XDSAuthMTLS. Default misaki-controller.
	WebhookService string
	// WebhookIPs are IP addresses the certificate carries too, for a
	// webhook registered by URL.
	WebhookIPs []net.IP
}

// +kubebuilder:rbac:groups=mesh.misaki.io,resources=routes,verbs=get;list;watch
// +kubebuilder:rbac:groups=mesh.misaki.io,resources=routes/status,verbs=get;update;patch
// +kubebuilder:rbac:groups="",resources=services,verbs=get;list;watch
// +kubebuilder:rbac:groups=discovery.k8s.io,resources=endpointslices,verbs=get;list;watch
// +kubebuilder:rbac:groups="",resources=events,verbs=create;patch
// +kubebuilder:rbac:groups=admissionregistration.k8s.io,resources=mutatingwebhookconfigurations,verbs=get;update
// +kubebuilder:rbac:groups=coordination.k8s.io,namespace=misaki-system,resources=leases,verbs=get;list;watch;create;update;patch;delete
// +kubebuilder:rbac:groups="",namespace=misaki-system,resources=secrets,verbs=get;create;update

// Scheme is the controller's scheme: Kubernetes' built-in kinds and Misaki's.
func Scheme() *runtime.Scheme {
	s := runtime.NewScheme()
	if err := clientgoscheme.AddToScheme(s); err != nil {
		panic(err)
	}
	if err := meshv1.AddToScheme(s); err != nil {
		panic(err)
	}
	return s
}

// nodeNamespace hashes a proxy to its namespace's snapshot: node ids are
// "namespace/pod".
type nodeNamespace struct{}

func (nodeNamespace) ID(node *corev3.Node) string {
	if node == nil {
		return ""
	}
	ns, _, _ := strings.Cut(node.GetId(), "/")
	return ns
}

// Run runs the controller against the cluster at cfg until ctx ends.
func Run(ctx context.Context, cfg *rest.Config, o Options) error {
	if o.XDSAddr == "" {
		o.XDSAddr = ":15010"
	}
	if o.MetricsAddr == "" {
		o.MetricsAddr = ":8080"
	}
	if o.ProbeAddr == "" {
		o.ProbeAddr = ":8081"
	}
	if o.ProbeAddr == "0" {
		o.ProbeAddr = ""
	}
	setDefault(&o.XDSAuth, XDSAuthNone)
	setDefault(&o.TokenAudience, podcert.DefaultAudience)
	setDefault(&o.WebhookService, "misaki-controller")
	switch o.XDSAuth {
	case XDSAuthNone:
		o.Log.Warn("xDS is served without authentication (--xds-auth none): any client that reaches it can read any namespace's routes; use --xds-auth mtls outside development")
	case XDSAuthMTLS:
		if o.Namespace == "" {
			return errors.New("controller: --xds-auth mtls needs the controller's namespace (--namespace or $POD_NAMESPACE) for its CA Secret")
		}
		if o.CertLifetime != 0 && o.CertLifetime < 10*time.Minute {
			return fmt.Errorf("controller: --cert-lifetime %v: want 10m or more (proxies renew half way), like 24h", o.CertLifetime)
		}
	default:
		return fmt.Errorf("controller: --xds-auth %q: want mtls or none", o.XDSAuth)
	}
	log := logr.FromSlogHandler(o.Log.Handler())
	ctrl.SetLogger(log)
	mgr, err := ctrl.NewManager(cfg, ctrl.Options{
		Scheme:                  Scheme(),
		Logger:                  log,
		Metrics:                 metricsserver.Options{BindAddress: o.MetricsAddr},
		HealthProbeBindAddress:  o.ProbeAddr,
		LeaderElection:          o.LeaderElection,
		LeaderElectionID:        "misaki-controller.mesh.misaki.io",
		LeaderElectionNamespace: o.Namespace,
		// A controller that loses its lease stops writing status at once.
		LeaderElectionReleaseOnCancel: true,
		// The only ConfigMaps the controller reads are the CA bundles it
		// keeps: the cache holds those, not every ConfigMap of the cluster.
		Cache: cache.Options{ByObject: map[client.Object]cache.ByObject{
			&corev1.ConfigMap{}: {Field: fields.OneTermEqualSelector("metadata.name", ca.RootCertConfigMap)},
		}},
	})
	if err != nil {
		return fmt.Errorf("controller: manager: %w", err)
	}
	if o.ProbeAddr != "" {
		if err := mgr.AddHealthzCheck("ping", healthz.Ping); err != nil {
			return err
		}
		// /readyz answers with or without the webhook (which adds its own
		// check below); without any check it would be a 404.
		if err := mgr.AddReadyzCheck("ping", healthz.Ping); err != nil {
			return err
		}
	}
	m := controllerMetrics
	snapshots := cachev3.NewSnapshotCache(true, nodeNamespace{}, nil)
	r := &Reconciler{Client: mgr.GetClient(), Cache: snapshots, Elected: mgr.Elected(), Log: o.Log, metrics: m}
	if err := r.SetupWithManager(mgr); err != nil {
		return err
	}
	xs := &xdsServer{cache: snapshots, addr: o.XDSAddr, ln: o.XDSListener, log: o.Log.With("component", "xds"), metrics: m}
	var inj *inject.Config
	if o.WebhookAddr != "0" {
		if inj, err = injectorConfig(ctx, mgr, o); err != nil {
			return err
		}
	}
	if o.XDSAuth == XDSAuthMTLS {
		if xs.auth, err = addIdentity(mgr, o, inj, m); err != nil {
			return err
		}
	}
	if err := mgr.Add(xs); err != nil {
		return err
	}
	if inj != nil {
		if err := addWebhook(mgr, o, inj, m); err != nil {
			return err
		}
	}
	return mgr.Start(ctx)
}

// addIdentity adds the proxies' CA, its certificate endpoint and the
// publisher of its bundle to mgr; inj, if not nil, is the injector's
// config (for its excluded namespaces and the cluster domain).
func addIdentity(mgr manager.Manager, o Options, inj *inject.Config, m *metrics) (*ca.Authority, error) {
	setDefault(&o.CASecret, "misaki-ca")
	setDefault(&o.CAAddr, ":15012")
	setDefault(&o.TrustDomain, ca.DefaultTrustDomain)
	domain, exclude := "cluster.local", inject.SystemNamespaces
	if inj != nil {
		domain, exclude = inj.ClusterDomain, inj.ExcludeNamespaces
	}
	svc := o.WebhookService + "." + o.Namespace + ".svc"
	log := o.Log.With("component", "ca")
	auth := &ca.Authority{
		Client: mgr.GetClient(), Reader: mgr.GetAPIReader(),
		Namespace: o.Namespace, Secret: o.CASecret, TrustDomain: o.TrustDomain, CertLifetime: o.CertLifetime,
		DNSNames: []string{svc, svc + "." + domain}, IPs: o.XDSIPs,
		Log: log,
	}
	roots := &rootCerts{
		client: mgr.GetClient(), reader: mgr.GetAPIReader(), bundle: auth.Bundle, exclude: exclude,
		log: log, changed: make(chan event.GenericEvent, 1),
	}
	auth.OnBundle = roots.notify
	if err := mgr.Add(auth); err != nil {
		return nil, err
	}
	if err := roots.setup(mgr); err != nil {
		return nil, err
	}
	endpoint := &caServer{auth: auth, addr: o.CAAddr, ln: o.CAListener, log: log, handler: &podcert.Handler{
		CA: auth, Reviewer: podcert.APIReviewer(mgr.GetClient()), Pods: mgr.GetAPIReader(),
		Audience: o.TokenAudience, Log: log,
		Outcome: func(outcome string) { m.certificates.WithLabelValues(outcome).Inc() },
	}}
	if err := mgr.Add(endpoint); err != nil {
		return nil, err
	}
	o.Log.Info("proxies authenticate with certificates", "trustDomain", auth.TrustDomain, "caSecret", o.Namespace+"/"+o.CASecret,
		"certificateEndpoint", o.CAAddr, "audience", o.TokenAudience)
	if o.ProbeAddr == "" {
		return auth, nil
	}
	return auth, mgr.AddReadyzCheck("ca", func(*http.Request) error {
		select {
		case <-auth.Ready():
			return nil
		default:
			return errors.New("no CA loaded yet")
		}
	})
}

// injectorConfig is the injector's config with its defaults, the cluster
// DNS looked up if it has none, and the proxies' identity as the
// controller's XDSAuth has it.
func injectorConfig(ctx context.Context, mgr manager.Manager, o Options) (*inject.Config, error) {
	if o.Namespace == "" {
		return nil, errors.New("controller: the webhook needs the controller's namespace (--namespace or $POD_NAMESPACE) for its certificate")
	}
	if o.Injector == nil {
		return nil, errors.New("controller: the webhook needs an injector config (--injector-config)")
	}
	inj := *o.Injector
	switch id := inj.XDSIdentity; {
	case o.XDSAuth == XDSAuthMTLS && id == nil:
		inj.XDSIdentity = &inject.XDSIdentity{Audience: o.TokenAudience}
	case o.XDSAuth == XDSAuthMTLS:
		c := *id
		if c.Audience == "" {
			c.Audience = o.TokenAudience
		} else if c.Audience != o.TokenAudience {
			return nil, fmt.Errorf("controller: the injector config's xdsIdentity.audience %q is not the controller's --token-audience %q: proxies' tokens would be refused", c.Audience, o.TokenAudience)
		}
		inj.XDSIdentity = &c
	case id != nil:
		return nil, errors.New("controller: the injector config has xdsIdentity, but the controller serves xDS without client certificates (--xds-auth none): proxies would ask for certificates nobody issues; remove xdsIdentity or run with --xds-auth mtls")
	}
	inj.SetDefaults(o.Namespace)
	if len(inj.ClusterDNS) == 0 {
		ips, err := clusterDNS(ctx, mgr.GetAPIReader())
		if err != nil {
			return nil, err
		}
		inj.ClusterDNS = ips
	}
	if err := inj.Check(); err != nil {
		return nil, err
	}
	return &inj, nil
}

// addWebhook adds the injection webhook, with the injector's config inj
// (from injectorConfig), and the rotator of its certificate to mgr.
func addWebhook(mgr manager.Manager, o Options, inj *inject.Config, m *metrics) error {
	if o.WebhookAddr == "" {
		o.WebhookAddr = ":9443"
	}
	setDefault(&o.WebhookConfig, "misaki-sidecar-injector")
	setDefault(&o.WebhookSecret, "misaki-webhook-tls")
	host, portStr, err := net.SplitHostPort(o.WebhookAddr)
	if err != nil {
		return fmt.Errorf("controller: webhook address %q: %w", o.WebhookAddr, err)
	}
	port, err := strconv.Atoi(portStr)
	if err != nil {
		return fmt.Errorf("controller: webhook address %q: %w", o.WebhookAddr, err)
	}
	svc := o.WebhookService + "." + o.Namespace + ".svc"
	rot := &certs.Rotator{
		Client: mgr.GetClient(), Reader: mgr.GetAPIReader(),
		Namespace: o.Namespace, Secret: o.WebhookSecret, Webhook: o.WebhookConfig,
		DNSNames: []string{svc, svc + "." + inj.ClusterDomain}, IPs: o.WebhookIPs,
		Log: o.Log.With("component", "webhook-certs"),
	}
	if err := mgr.Add(rot); err != nil {
		return err
	}
	srv := webhook.NewServer(webhook.Options{
		Host: host, Port: port,
		TLSOpts: []func(*tls.Config){func(c *tls.Config) { c.GetCertificate = rot.GetCertificate }},
	})
	srv.Register(inject.Path, &webhook.Admission{Handler: &inject.Handler{
		Config: inj, Log: o.Log.With("component", "inject"),
		Metrics: func(outcome string) { m.injections.WithLabelValues(outcome).Inc() },
	}})
	o.Log.Info("injector", "image", inj.Image, "xds", inj.XDSAddress, "identity", inj.XDSIdentity != nil, "clusterDNS", inj.ClusterDNS, "excluded", inj.ExcludeNamespaces)
	if err := mgr.Add(afterCert{rot, srv}); err != nil {
		return err
	}
	return mgr.AddReadyzCheck("webhook", func(*http.Request) error {
		select {
		case <-rot.Ready():
			return nil
		default:
			return errors.New("no webhook certificate yet")
		}
	})
}

// afterCert starts the webhook server once there is a certificate to serve,
// so the API server's first calls do not fail their handshake.
type afterCert struct {
	rot *certs.Rotator
	srv webhook.Server
}

func (a afterCert) NeedLeaderElection() bool { return false }

func (a afterCert) Start(ctx context.Context) error {
	select {
	case <-a.rot.Ready():
	case <-ctx.Done():
		return nil
	}
	return a.srv.Start(ctx)
}

// clusterDNS is the kube-dns Service's cluster IPs, where injected proxies
// forward the names that are not mesh names.
func clusterDNS(ctx context.Context, r client.Reader) ([]string, error) {
	var svc corev1.Service
	if err := r.Get(ctx, client.ObjectKey{Namespace: "kube-system", Name: "kube-dns"}, &svc); err != nil {
		return nil, fmt.Errorf("controller: the cluster DNS for injected proxies: %w; set clusterDNS in the injector config", err)
	}
	ips := slices.DeleteFunc(slices.Clone(svc.Spec.ClusterIPs), func(ip string) bool { return ip == "" || ip == corev1.ClusterIPNone })
	if len(ips) == 0 {
		return nil, errors.New("controller: kube-system/kube-dns has no cluster IP; set clusterDNS in the injector config")
	}
	return ips, nil
}

func setDefault(p *string, v string) {
	if *p == "" {
		*p = v
	}
}

// Reconciler publishes one namespace's snapshot per reconcile, and the
// status of its Routes when this replica leads.
type Reconciler struct {
	Client  client.Client
	Cache   cachev3.SnapshotCache
	Elected <-chan struct{}
	Log     *slog.Logger
	metrics *metrics
}

// SetupWithManager watches Routes, Services, EndpointSlices and Pods and
// reconciles their namespace. The reconciler runs on every replica.
func (r *Reconciler) SetupWithManager(mgr manager.Manager) error {
	byNamespace := handler.EnqueueRequestsFromMapFunc(func(_ context.Context, o client.Object) []reconcile.Request {
		return []reconcile.Request{{NamespacedName: client.ObjectKey{Name: o.GetNamespace()}}}
	})
	no, yes := false, true
	return ctrl.NewControllerManagedBy(mgr).
		Named("namespace-snapshot").
		// SkipNameValidation: Run may run more than once in a process (the
		// tests restart the controller); the name only labels metrics.
		WithOptions(controller.Options{NeedLeaderElection: &no, MaxConcurrentReconciles: 4, SkipNameValidation: &yes}).
		Watches(&meshv1.Route{}, byNamespace).
		Watches(&corev1.Service{}, byNamespace).
		Watches(&discoveryv1.EndpointSlice{}, byNamespace).
		Complete(r)
}

// Reconcile translates the namespace named by req.Name and publishes it.
func (r *Reconciler) Reconcile(ctx context.Context, req reconcile.Request) (reconcile.Result, error) {
	ns := req.Name
	start := time.Now()
	var routes meshv1.RouteList
	if err := r.Client.List(ctx, &routes, client.InNamespace(ns)); err != nil {
		return reconcile.Result{}, err
	}
	in := translate.Input{Namespace: ns, Routes: routes.Items}
	var svcs corev1.ServiceList
	var slices discoveryv1.EndpointSliceList
	if len(routes.Items) > 0 {
		if err := r.Client.List(ctx, &svcs, client.InNamespace(ns)); err != nil {
			return reconcile.Result{}, err
		}
		if err := r.Client.List(ctx, &slices, client.InNamespace(ns)); err != nil {
			return reconcile.Result{}, err
		}
		in.Services, in.Slices = svcs.Items, slices.Items
	}
	out := translate.Namespace(in)
	snap, err := newSnapshot(out.Resources)
	if err != nil {
		return reconcile.Result{}, err
	}
	version := snapshotVersion(snap)
	if err := snap.Consistent(); err != nil {
		// A translation bug: publishing would leave proxies waiting for
		// resources that never come. Keep the last snapshot.
		r.metrics.translateErrors.Inc()
		return reconcile.Result{}, fmt.Errorf("namespace %s: inconsistent snapshot, not published: %w", ns, err)
	}
	if old, err := r.Cache.GetSnapshot(ns); err != nil || snapshotVersion(old) != version {
		if err := r.Cache.SetSnapshot(ctx, ns, snap); err != nil {
			return reconcile.Result{}, err
		}
		r.metrics.published.Inc()
		r.Log.Debug("snapshot published", "namespace", ns, "version", version, "routes", len(routes.Items), "took", time.Since(start))
	}
	r.metrics.namespaces.Set(float64(len(r.Cache.GetStatusKeys())))
	select {
	case <-r.Elected:
		return reconcile.Result{}, r.writeStatus(ctx, routes.Items, out.Results)
	default:
		return reconcile.Result{}, nil
	}
}

// writeStatus sets each Route's conditions where they changed.
func (r *Reconciler) writeStatus(ctx context.Context, routes []meshv1.Route, results map[string]translate.Result) error {
	var errs []error
	for i := range routes {
		rt := &routes[i]
		res, ok := results[rt.Name]
		if !ok {
			continue
		}
		before := rt.Status.DeepCopy()
		meta.SetStatusCondition(&rt.Status.Conditions, metav1.Condition{
			Type: meshv1.ConditionAccepted, Status: res.Accepted, Reason: res.Reason, Message: res.Message, ObservedGeneration: rt.Generation})
		meta.SetStatusCondition(&rt.Status.Conditions, metav1.Condition{
			Type: meshv1.ConditionResolvedRefs, Status: res.ResolvedRefs, Reason: res.RefsReason, Message: res.RefsMessage, ObservedGeneration: rt.Generation})
		rt.Status.ObservedGeneration = rt.Generation
		if equalStatus(before, &rt.Status) {
			continue
		}
		if err := r.Client.Status().Update(ctx, rt); err != nil && !isConflictOrGone(err) {
			errs = append(errs, fmt.Errorf("route %s/%s status: %w", rt.Namespace, rt.Name, err))
		}
	}
	return errors.Join(errs...)
}

func equalStatus(a, b *meshv1.RouteStatus) bool {
	if a.ObservedGeneration != b.ObservedGeneration || len(a.Conditions) != len(b.Conditions) {
		return false
	}
	for _, c := range a.Conditions {
		o := meta.FindStatusCondition(b.Conditions, c.Type)
		if o == nil || o.Status != c.Status || o.Reason != c.Reason || o.Message != c.Message || o.ObservedGeneration != c.ObservedGeneration {
			return false
		}
	}
	return true
}

// newSnapshot versions each type by a hash of its resources: the same
// config has the same versions on any replica, and a change pushes only the
// types it touched (a Route's path: the RouteConfiguration; an endpoint:
// the ClusterLoadAssignments), not all four to every proxy.
func newSnapshot(res map[resource.Type][]types.Resource) (*cachev3.Snapshot, error) {
	snap := &cachev3.Snapshot{}
	opts := proto.MarshalOptions{Deterministic: true}
	for typ := range res {
		if !slices.Contains(xdsTypes, typ) {
			return nil, fmt.Errorf("unknown resource type %s", typ)
		}
	}
	// Every type, empty ones too: a proxy waits for an answer to each.
	for _, typ := range xdsTypes {
		rs := res[typ]
		i := cachev3.GetResponseType(typ)
		h := sha256.New()
		out := make([]types.Resource, 0, len(rs))
		for _, r := range rs {
			b, err := opts.Marshal(r)
			if err != nil {
				return nil, err
			}
			h.Write(b)
			if typ == resource.RouteType || typ == resource.EndpointType {
				r = premarshal(r, b)
			}
			out = append(out, r)
		}
		snap.Resources[i] = cachev3.NewResources(hex.EncodeToString(h.Sum(nil))[:16], out)
	}
	return snap, nil
}

// premarshal returns a copy of m, whose deterministic encoding is b, that
// keeps its name and carries every other field as those bytes (protobuf's
// unknown fields), so marshalling it again is a copy. go-control-plane
// marshals each response for each stream: a route change in a namespace of
// 100 proxies would encode its RouteConfiguration 100 times, and that was
// most of the controller's CPU in the benchmark. The wire bytes are the
// same: the name is field 1 of both RouteConfiguration and
// ClusterLoadAssignment, deterministic marshalling writes it first, and the
// rest of b follows it unchanged.
func premarshal(m types.Resource, b []byte) types.Resource {
	pr := m.ProtoReflect()
	fields := pr.Descriptor().Fields()
	name := fields.ByName("name")
	if name == nil {
		name = fields.ByName("cluster_name")
	}
	num, _, n := protowire.ConsumeField(b)
	if name == nil || n < 0 || num != name.Number() || num != 1 {
		return m // no name, or not first: publish as it is
	}
	out := pr.New()
	out.Set(name, pr.Get(name))
	out.SetUnknown(b[n:])
	return out.Interface().(types.Resource)
}

// xdsTypes are the types the controller publishes and proxies subscribe to.
var xdsTypes = []resource.Type{resource.ListenerType, resource.RouteType, resource.ClusterType, resource.EndpointType}

// snapshotVersion names a snapshot by its types' versions.
func snapshotVersion(s cachev3.ResourceSnapshot) string {
	var v []string
	for _, t := range xdsTypes {
		v = append(v, s.GetVersion(t))
	}
	return strings.Join(v, ".")
}

// xdsServer serves ADS on every replica.
type xdsServer struct {
	cache   cachev3.SnapshotCache
	addr    string
	ln      net.Listener
	auth    *ca.Authority // with XDSAuthMTLS; nil serves h2c to anyone
	log     *slog.Logger
	metrics *metrics
}

// NeedLeaderElection is false: every replica serves proxies.
func (x *xdsServer) NeedLeaderElection() bool { return false }

// Start serves until ctx ends.
func (x *xdsServer) Start(ctx context.Context) error {
	ln := x.ln
	if ln == nil {
		var err error
		if ln, err = net.Listen("tcp", x.addr); err != nil {
			return fmt.Errorf("xds: %w", err)
		}
	}
	opts := []grpc.ServerOption{
		grpc.MaxConcurrentStreams(1 << 20),
		grpc.KeepaliveParams(keepalive.ServerParameters{Time: 30 * time.Second, Timeout: 10 * time.Second}),
		grpc.KeepaliveEnforcementPolicy(keepalive.EnforcementPolicy{MinTime: 10 * time.Second, PermitWithoutStream: true}),
	}
	if x.auth != nil {
		// Serve once the CA has issued the serving certificate.
		select {
		case <-x.auth.Ready():
		case <-ctx.Done():
			ln.Close()
			return nil
		}
		opts = append(opts, grpc.Creds(xdsTLS(x.auth)), grpc.StreamInterceptor(x.authorize))
	}
	gs := grpc.NewServer(opts...)
	srv := serverv3.NewServer(ctx, x.cache, x.metrics.callbacks(x.log))
	discoverygrpc.RegisterAggregatedDiscoveryServiceServer(gs, srv)
	x.log.Info("serving ADS", "addr", ln.Addr().String(), "auth", map[bool]string{true: XDSAuthMTLS, false: XDSAuthNone}[x.auth != nil])
	go func() {
		<-ctx.Done()
		gs.Stop()
	}()
	if err := gs.Serve(ln); err != nil && !errors.Is(err, grpc.ErrServerStopped) {
		return err
	}
	return nil
}

// isConflictOrGone: a newer Route (requeued by its own event) or a deleted one.
func isConflictOrGone(err error) bool { return apierrors.IsConflict(err) || apierrors.IsNotFound(err) }

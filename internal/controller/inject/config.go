// Package inject is Misaki's sidecar injector: a mutating admission webhook
// that adds the proxy to pods of namespaces (or pods) labelled
// misaki.io/inject=enabled.
//
// The mutation is a pure function of the pod and the injector's Config
// (Pod, golden-tested under testdata/); Handler only decodes the admission
// request and answers with the JSON patch.
//
// What an injected pod gets:
//   - the proxy as a native sidecar (an init container with restartPolicy
//     Always), first, so it runs before init and app containers and stops
//     after them; a startup probe holds the app back until the proxy's DNS
//     and mesh listener are up; it runs under its supervisor (--supervise),
//     which restarts a proxy that crashed inside the container, the
//     listening sockets kept open, so apps' connections wait instead of
//     being refused (Config.Supervise turns that off);
//   - its config in $MISAKI_PROXY_CONFIG: the mesh listener on
//     127.0.0.1:80, DNS on 127.0.0.1:53 forwarding to the cluster's DNS,
//     xDS from the controller, the spool on the spool volume;
//   - the spool volume: an emptyDir, or the PersistentVolumeClaim named by
//     the misaki.io/spool-claim annotation;
//   - dnsPolicy None with the proxy as the pod's only nameserver, and the
//     sysctl that lets the proxy (not root) bind ports 53 and 80;
//   - with Config.XDSIdentity, its identity: a projected service-account
//     token for the controller's audience and the controller's CA bundle
//     (the ConfigMap misaki-ca-root-cert), in one read-only volume, with
//     which the proxy gets a certificate naming its pod and connects to
//     the controller over mutual TLS.
package inject

import (
	"errors"
	"fmt"
	"net"
	"os"
	"slices"
	"strconv"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	"sigs.k8s.io/yaml"

	"github.com/misaki-io/misaki/internal/controller/ca"
)

// Labels and annotations users set.
const (
	// LabelInject on a namespace or a pod: "enabled" injects, "disabled"
	// on a pod opts it out of its namespace's injection.
	LabelInject = "misaki.io/inject"
	// AnnotationSpoolClaim names a PersistentVolumeClaim to keep the spool
	// on instead of an emptyDir, so spooled requests outlive the pod.
	AnnotationSpoolClaim = "misaki.io/spool-claim"
	// AnnotationMeshPort moves the mesh listener off port 80, for pods
	// whose app listens there; apps then call http://name:port/.
	AnnotationMeshPort = "misaki.io/mesh-port"
	// AnnotationStatus records the injection: the injector's config hash.
	AnnotationStatus = "misaki.io/injected"
)

// ContainerName is the injected proxy's container name.
const ContainerName = "misaki-proxy"

// Config is the injector's configuration (the controller's
// --injector-config file; the chart writes it from its values). The zero
// value of a field means its default (SetDefaults).
type Config struct {
	// Image is the proxy image. Required.
	Image string `json:"image"`
	// ImagePullPolicy of the proxy container. Default IfNotPresent.
	ImagePullPolicy corev1.PullPolicy `json:"imagePullPolicy,omitempty"`
	// XDSAddress is the controller's ADS address the proxies dial.
	// Default misaki-controller.<controller namespace>.svc:15010.
	XDSAddress string `json:"xdsAddress,omitempty"`
	// XDSCAFile, when set, makes the proxies dial xDS over TLS trusting
	// this file (mounted by the user's own means). Not with XDSIdentity,
	// which mounts the controller's CA bundle itself.
	XDSCAFile string `json:"xdsCAFile,omitempty"`
	// XDSIdentity gives every proxy a certificate naming its pod, which it
	// presents to the controller (mutual TLS). The controller sets it when
	// it requires client certificates (--xds-auth mtls, the chart's
	// default) and refuses it otherwise; its zero fields are defaults.
	XDSIdentity *XDSIdentity `json:"xdsIdentity,omitempty"`
	// ClusterDNS is where the proxy forwards names that are not mesh
	// names. Default: the kube-dns Service's cluster IP, looked up at
	// start.
	ClusterDNS []string `json:"clusterDNS,omitempty"`
	// ClusterDomain is the cluster's DNS domain. Default cluster.local.
	ClusterDomain string `json:"clusterDomain,omitempty"`
	// MeshPort is the port apps call mesh names on. Default 80.
	MeshPort int32 `json:"meshPort,omitempty"`
	// HealthPort serves the proxy's /healthz and /readyz to the kubelet.
	// Default 15021.
	HealthPort int32 `json:"healthPort,omitempty"`
	// AdminPort is the admin API's port, on loopback. Default 15000.
	AdminPort int32 `json:"adminPort,omitempty"`
	// LinkAgentPort, when set, points every proxy at the node link agent
	// (misaki-linkd, docs/links.md) on its node's address and this port:
	// $MISAKI_LINK_AGENT is $(HOST_IP):port, the node's address from the
	// downward API. 0: no agent; the proxies read their own namespace.
	LinkAgentPort int32 `json:"linkAgentPort,omitempty"`
	// Resources of the proxy container. Default requests of 20m CPU and
	// 48Mi memory and a limit of 256Mi memory.
	Resources *corev1.ResourceRequirements `json:"resources,omitempty"`
	// SpoolSizeLimit bounds the emptyDir spool volume. Default 1Gi.
	SpoolSizeLimit *resource.Quantity `json:"spoolSizeLimit,omitempty"`
	// UID runs the proxy as this user and group. Default 65532.
	UID int64 `json:"uid,omitempty"`
	// Supervise runs the proxy under its supervisor (misaki-proxy
	// --supervise), which keeps the listening sockets open while a proxy
	// that crashed is restarted, so apps' connections wait instead of
	// being refused (docs/proxy.md, "Supervisor"). Default true.
	Supervise *bool `json:"supervise,omitempty"`
	// ExcludeNamespaces are never injected, whatever their labels: the
	// system namespaces and the controller's own are always among them.
	ExcludeNamespaces []string `json:"excludeNamespaces,omitempty"`
	// Proxy is more of the proxy's file config (docs/config.md) for every
	// injected proxy: links, limits, holdLimit, log, linkScan, spool bounds.
	// The fields the injector sets itself (listen, admin, health, dns.listen,
	// dns.upstreams, xds, spool.dir) may not be given here.
	Proxy map[string]any `json:"proxy,omitempty"`
}

// XDSIdentity configures the proxies' certificates.
type XDSIdentity struct {
	// CAAddress is the controller's certificate endpoint the proxies
	// dial. Default misaki-controller.<controller namespace>.svc:15012.
	CAAddress string `json:"caAddress,omitempty"`
	// Audience of the projected service-account token; the controller's
	// --token-audience. Default misaki.
	Audience string `json:"audience,omitempty"`
	// TokenExpirationSeconds of the projected token, which the kubelet
	// replaces at 80% of it. Default 3600; at least 600.
	TokenExpirationSeconds int64 `json:"tokenExpirationSeconds,omitempty"`
}

// SystemNamespaces are never injected.
var SystemNamespaces = []string{"kube-system", "kube-public", "kube-node-lease"}

// reserved are the proxy-config keys the injector owns.
var reserved = map[string][]string{
	"listen": nil, "admin": nil, "health": nil, "xds": nil, "routes": nil, "role": nil,
	"dns":   {"listen", "upstreams"},
	"spool": {"dir"},
}

// LoadConfig reads the injector's config file.
func LoadConfig(path string) (Config, error) {
	var c Config
	b, err := os.ReadFile(path)
	if err != nil {
		return c, fmt.Errorf("injector config: %w", err)
	}
	if err := yaml.UnmarshalStrict(b, &c); err != nil {
		return c, fmt.Errorf("injector config %s: %w", path, err)
	}
	return c, nil
}

// SetDefaults fills in the defaults; controllerNamespace is where the
// controller runs (its Service and its exclusion).
func (c *Config) SetDefaults(controllerNamespace string) {
	if c.ImagePullPolicy == "" {
		c.ImagePullPolicy = corev1.PullIfNotPresent
	}
	if c.XDSAddress == "" {
		c.XDSAddress = "misaki-controller." + controllerNamespace + ".svc:15010"
	}
	if c.ClusterDomain == "" {
		c.ClusterDomain = "cluster.local"
	}
	if c.MeshPort == 0 {
		c.MeshPort = 80
	}
	if c.HealthPort == 0 {
		c.HealthPort = 15021
	}
	if c.AdminPort == 0 {
		c.AdminPort = 15000
	}
	if c.Resources == nil {
		c.Resources = &corev1.ResourceRequirements{
			Requests: corev1.ResourceList{corev1.ResourceCPU: resource.MustParse("20m"), corev1.ResourceMemory: resource.MustParse("48Mi")},
			Limits:   corev1.ResourceList{corev1.ResourceMemory: resource.MustParse("256Mi")},
		}
	}
	if c.SpoolSizeLimit == nil {
		q := resource.MustParse("1Gi")
		c.SpoolSizeLimit = &q
	}
	if c.UID == 0 {
		c.UID = 65532
	}
	if c.Supervise == nil {
		c.Supervise = ptr(true)
	}
	if id := c.XDSIdentity; id != nil {
		if id.CAAddress == "" {
			id.CAAddress = "misaki-controller." + controllerNamespace + ".svc:15012"
		}
		if id.Audience == "" {
			id.Audience = "misaki"
		}
		if id.TokenExpirationSeconds == 0 {
			id.TokenExpirationSeconds = 3600
		}
	}
	for _, ns := range append(slices.Clone(SystemNamespaces), controllerNamespace) {
		if ns != "" && !slices.Contains(c.ExcludeNamespaces, ns) {
			c.ExcludeNamespaces = append(c.ExcludeNamespaces, ns)
		}
	}
}

// Validate checks the config after SetDefaults. It does no I/O; the proxy
// config it produces is checked by the proxy's own validation in Pod.
func (c *Config) Validate() error {
	var errs []error
	bad := func(field, format string, args ...any) {
		errs = append(errs, fmt.Errorf("injector config: %s: %s", field, fmt.Sprintf(format, args...)))
	}
	if c.Image == "" {
		bad("image", "required: the proxy image, like ghcr.io/misaki-io/misaki-proxy:v0.1.0")
	}
	if c.LinkAgentPort < 0 || c.LinkAgentPort > 65535 {
		bad("linkAgentPort", "%d is not a port (0 turns the link agent off)", c.LinkAgentPort)
	}
	if len(c.ClusterDNS) == 0 {
		bad("clusterDNS", "no resolvers: set the cluster DNS Service's IP, like [10.96.0.10]")
	}
	for i, s := range c.ClusterDNS {
		if net.ParseIP(s) == nil {
			if _, _, err := net.SplitHostPort(s); err != nil {
				bad(fmt.Sprintf("clusterDNS[%d]", i), "%q is not an IP or IP:port", s)
			}
		}
	}
	if _, _, err := net.SplitHostPort(c.XDSAddress); err != nil {
		bad("xdsAddress", "%q is not host:port", c.XDSAddress)
	}
	if id := c.XDSIdentity; id != nil {
		if _, _, err := net.SplitHostPort(id.CAAddress); err != nil {
			bad("xdsIdentity.caAddress", "%q is not host:port", id.CAAddress)
		}
		if id.TokenExpirationSeconds < 600 || id.TokenExpirationSeconds > 1<<32 {
			bad("xdsIdentity.tokenExpirationSeconds", "%d is out of range: the API server takes 600 (10 minutes) or more", id.TokenExpirationSeconds)
		}
		if c.XDSCAFile != "" {
			bad("xdsCAFile", "is not used with xdsIdentity, which mounts the controller's CA bundle (ConfigMap %s); remove it", ca.RootCertConfigMap)
		}
	}
	ports := map[string]int32{"meshPort": c.MeshPort, "healthPort": c.HealthPort, "adminPort": c.AdminPort}
	for name, p := range ports {
		if p < 1 || p > 65535 {
			bad(name, "%d is not a port", p)
		}
		if p == 53 {
			bad(name, "53 is the proxy's DNS port")
		}
	}
	if c.MeshPort == c.HealthPort || c.MeshPort == c.AdminPort || c.HealthPort == c.AdminPort {
		bad("meshPort", "meshPort, healthPort and adminPort must differ (%d, %d, %d)", c.MeshPort, c.HealthPort, c.AdminPort)
	}
	for k, v := range c.Proxy {
		sub, ok := reserved[k]
		if !ok {
			continue
		}
		if sub == nil {
			bad("proxy."+k, "set by the injector; remove it")
			continue
		}
		m, _ := v.(map[string]any)
		for _, s := range sub {
			if _, ok := m[s]; ok {
				bad("proxy."+k+"."+s, "set by the injector; remove it")
			}
		}
	}
	return errors.Join(errs...)
}

func portString(p int32) string { return strconv.Itoa(int(p)) }

package inject

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strconv"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/apimachinery/pkg/util/validation"
	"sigs.k8s.io/yaml"

	"github.com/misaki-io/misaki/internal/controller/ca"
	proxyconfig "github.com/misaki-io/misaki/internal/proxy/config"
)

const (
	spoolVolume = "misaki-spool"
	spoolDir    = "/var/lib/misaki"
	// identityVolume holds the proxy's token and the controller's CA
	// bundle (XDSIdentity), at identityDir.
	identityVolume = "misaki-identity"
	identityDir    = "/var/run/secrets/misaki.io"
	tokenPath      = identityDir + "/token"
	caPath         = identityDir + "/" + ca.RootCertKey
	// unprivilegedPorts is the sysctl that lets the proxy bind 53 and 80
	// without root or capabilities; Kubernetes counts it as a safe sysctl.
	unprivilegedPorts = "net.ipv4.ip_unprivileged_port_start"
	dnsPort           = 53
)

// ErrRefused wraps the reasons a pod is refused rather than injected: the
// API server shows them to whoever created the pod.
var ErrRefused = errors.New("misaki injector")

// Pod returns a copy of pod with the proxy added. It returns nil and the
// reason when the pod is left as it is (an excluded namespace, an opt-out,
// host networking, already injected), and an error wrapping ErrRefused when
// the pod cannot take the proxy as it is written (a port the proxy needs, a
// bad annotation). namespace is the request's: a pod being created may not
// carry its own yet.
func (c *Config) Pod(pod *corev1.Pod, namespace string) (*corev1.Pod, string, error) {
	switch {
	case slices.Contains(c.ExcludeNamespaces, namespace):
		return nil, "namespace " + namespace + " is excluded", nil
	case pod.Labels[LabelInject] == "disabled":
		return nil, "the pod has " + LabelInject + "=disabled", nil
	case pod.Spec.HostNetwork:
		return nil, "the pod uses the host's network, where the proxy's ports are the node's", nil
	case hasContainer(pod, ContainerName):
		return nil, "already injected", nil
	}
	meshPort := c.MeshPort
	if s, ok := pod.Annotations[AnnotationMeshPort]; ok {
		p, err := strconv.ParseUint(s, 10, 16)
		if err != nil || p == 0 {
			return nil, "", fmt.Errorf("%w: annotation %s: %q is not a port", ErrRefused, AnnotationMeshPort, s)
		}
		meshPort = int32(p)
	}
	if err := c.checkPorts(pod, meshPort); err != nil {
		return nil, "", err
	}
	claim := pod.Annotations[AnnotationSpoolClaim]
	if claim != "" && len(validation.IsDNS1123Subdomain(claim)) > 0 {
		return nil, "", fmt.Errorf("%w: annotation %s: %q is not a PersistentVolumeClaim name", ErrRefused, AnnotationSpoolClaim, claim)
	}
	ours := []string{spoolVolume}
	if c.XDSIdentity != nil {
		ours = append(ours, identityVolume)
	}
	for _, v := range ours {
		if hasVolume(pod, v) {
			return nil, "", fmt.Errorf("%w: the pod already has a volume named %s", ErrRefused, v)
		}
	}

	out := pod.DeepCopy()
	upstreams := c.ClusterDNS
	if pod.Spec.DNSPolicy == corev1.DNSNone && pod.Spec.DNSConfig != nil && len(pod.Spec.DNSConfig.Nameservers) > 0 {
		// The pod chose its resolvers: the proxy forwards to them.
		upstreams = pod.Spec.DNSConfig.Nameservers
	}
	proxyYAML, err := c.ProxyConfig(meshPort, upstreams)
	if err != nil {
		return nil, "", err
	}

	// DNS: the proxy is the pod's only nameserver. The search path is the
	// one ClusterFirst gives, so short Service names keep working.
	dns := &corev1.PodDNSConfig{}
	if pod.Spec.DNSConfig != nil {
		dns = pod.Spec.DNSConfig.DeepCopy()
	}
	if pod.Spec.DNSPolicy != corev1.DNSNone {
		d := c.ClusterDomain
		dns.Searches = append([]string{namespace + ".svc." + d, "svc." + d, d}, dns.Searches...)
		if !slices.ContainsFunc(dns.Options, func(o corev1.PodDNSConfigOption) bool { return o.Name == "ndots" }) {
			dns.Options = append(dns.Options, corev1.PodDNSConfigOption{Name: "ndots", Value: ptr("5")})
		}
	}
	dns.Nameservers = []string{"127.0.0.1"}
	out.Spec.DNSPolicy = corev1.DNSNone
	out.Spec.DNSConfig = dns

	// The proxy binds 53 and the mesh port as a user without capabilities.
	sc := out.Spec.SecurityContext
	if sc == nil {
		sc = &corev1.PodSecurityContext{}
		out.Spec.SecurityContext = sc
	}
	low := min(dnsPort, int(meshPort))
	if i := slices.IndexFunc(sc.Sysctls, func(s corev1.Sysctl) bool { return s.Name == unprivilegedPorts }); i >= 0 {
		if v, err := strconv.Atoi(sc.Sysctls[i].Value); err != nil || v > low {
			sc.Sysctls[i].Value = strconv.Itoa(low)
		}
	} else {
		sc.Sysctls = append(sc.Sysctls, corev1.Sysctl{Name: unprivilegedPorts, Value: strconv.Itoa(low)})
	}

	vol := corev1.Volume{Name: spoolVolume}
	if claim != "" {
		vol.PersistentVolumeClaim = &corev1.PersistentVolumeClaimVolumeSource{ClaimName: claim}
		if sc.FSGroup == nil {
			// A fresh volume is root's; the group lets the proxy write it.
			sc.FSGroup = ptr(c.UID)
		}
	} else {
		vol.EmptyDir = &corev1.EmptyDirVolumeSource{SizeLimit: c.SpoolSizeLimit}
	}
	out.Spec.Volumes = append(out.Spec.Volumes, vol)
	if id := c.XDSIdentity; id != nil {
		out.Spec.Volumes = append(out.Spec.Volumes, identityVolumeOf(id))
		if out.Spec.ServiceAccountName == "" {
			// What ServiceAccount admission sets, where it runs before the
			// webhook; the API server refuses a projected token without it.
			out.Spec.ServiceAccountName = "default"
		}
	}

	// A native sidecar, first: it runs before the pod's init containers
	// (which may call mesh names too) and stops after the app.
	out.Spec.InitContainers = append([]corev1.Container{c.container(proxyYAML)}, out.Spec.InitContainers...)

	if out.Annotations == nil {
		out.Annotations = map[string]string{}
	}
	sum := sha256.Sum256(proxyYAML)
	out.Annotations[AnnotationStatus] = hex.EncodeToString(sum[:8])
	return out, "", nil
}

func (c *Config) container(proxyYAML []byte) corev1.Container {
	always := corev1.ContainerRestartPolicyAlways
	probe := func(path string, period, failures int32) *corev1.Probe {
		return &corev1.Probe{
			ProbeHandler:     corev1.ProbeHandler{HTTPGet: &corev1.HTTPGetAction{Path: path, Port: intstr.FromString("misaki-health")}},
			PeriodSeconds:    period,
			TimeoutSeconds:   1,
			FailureThreshold: failures,
		}
	}
	var args []string
	if c.Supervise == nil || *c.Supervise {
		// The container's first process keeps the sockets and restarts
		// the proxy: a crash costs what was in flight, not a restart of
		// the container.
		args = []string{"--supervise"}
	}
	env := []corev1.EnvVar{
		{Name: "POD_NAME", ValueFrom: &corev1.EnvVarSource{FieldRef: &corev1.ObjectFieldSelector{FieldPath: "metadata.name"}}},
		{Name: "POD_NAMESPACE", ValueFrom: &corev1.EnvVarSource{FieldRef: &corev1.ObjectFieldSelector{FieldPath: "metadata.namespace"}}},
		{Name: "MISAKI_PROXY_CONFIG", Value: string(proxyYAML)},
	}
	if c.LinkAgentPort != 0 {
		// The node link agent listens on the node's address: the kubelet
		// expands $(HOST_IP), defined first.
		env = append(env,
			corev1.EnvVar{Name: "HOST_IP", ValueFrom: &corev1.EnvVarSource{FieldRef: &corev1.ObjectFieldSelector{FieldPath: "status.hostIP"}}},
			corev1.EnvVar{Name: "MISAKI_LINK_AGENT", Value: "$(HOST_IP):" + portString(c.LinkAgentPort)})
	}
	return corev1.Container{
		Name:            ContainerName,
		Image:           c.Image,
		ImagePullPolicy: c.ImagePullPolicy,
		Args:            args,
		RestartPolicy:   &always,
		Env:             env,
		Ports:           []corev1.ContainerPort{{Name: "misaki-health", ContainerPort: c.HealthPort, Protocol: corev1.ProtocolTCP}},
		// The app starts once the proxy answers (its first link scan done,
		// its DNS and mesh listener bound): up to a minute.
		StartupProbe:   probe("/readyz", 1, 60),
		ReadinessProbe: probe("/readyz", 10, 3),
		LivenessProbe:  probe("/healthz", 10, 6),
		Resources:      *c.Resources.DeepCopy(),
		SecurityContext: &corev1.SecurityContext{
			RunAsUser:                ptr(c.UID),
			RunAsGroup:               ptr(c.UID),
			RunAsNonRoot:             ptr(true),
			ReadOnlyRootFilesystem:   ptr(true),
			AllowPrivilegeEscalation: ptr(false),
			Capabilities:             &corev1.Capabilities{Drop: []corev1.Capability{"ALL"}},
			SeccompProfile:           &corev1.SeccompProfile{Type: corev1.SeccompProfileTypeRuntimeDefault},
		},
		VolumeMounts:             c.mounts(),
		TerminationMessagePolicy: corev1.TerminationMessageFallbackToLogsOnError,
	}
}

func (c *Config) mounts() []corev1.VolumeMount {
	m := []corev1.VolumeMount{{Name: spoolVolume, MountPath: spoolDir}}
	if c.XDSIdentity != nil {
		m = append(m, corev1.VolumeMount{Name: identityVolume, MountPath: identityDir, ReadOnly: true})
	}
	return m
}

// identityVolumeOf is the proxy's token, for the controller's audience and
// rotated by the kubelet, and the controller's CA bundle, which the
// controller keeps in a ConfigMap of the pod's namespace (the pod waits
// for it to exist).
func identityVolumeOf(id *XDSIdentity) corev1.Volume {
	return corev1.Volume{Name: identityVolume, VolumeSource: corev1.VolumeSource{Projected: &corev1.ProjectedVolumeSource{
		Sources: []corev1.VolumeProjection{
			{ServiceAccountToken: &corev1.ServiceAccountTokenProjection{
				Audience: id.Audience, ExpirationSeconds: ptr(id.TokenExpirationSeconds), Path: "token"}},
			{ConfigMap: &corev1.ConfigMapProjection{
				LocalObjectReference: corev1.LocalObjectReference{Name: ca.RootCertConfigMap},
				Items:                []corev1.KeyToPath{{Key: ca.RootCertKey, Path: ca.RootCertKey}},
			}},
		},
	}}}
}

// ProxyConfig is the proxy's file config for an injected pod: the
// injector's fields, then Config.Proxy's.
func (c *Config) ProxyConfig(meshPort int32, upstreams []string) ([]byte, error) {
	m := map[string]any{}
	if c.Proxy != nil {
		// A deep copy through JSON: the nested maps are the caller's.
		b, err := json.Marshal(c.Proxy)
		if err != nil {
			return nil, fmt.Errorf("injector config: proxy: %w", err)
		}
		if err := json.Unmarshal(b, &m); err != nil {
			return nil, fmt.Errorf("injector config: proxy: %w", err)
		}
	}
	m["listen"] = "127.0.0.1:" + portString(meshPort)
	m["admin"] = "127.0.0.1:" + portString(c.AdminPort)
	m["health"] = "0.0.0.0:" + portString(c.HealthPort)
	xds := map[string]any{"server": c.XDSAddress}
	if c.XDSCAFile != "" {
		xds["caFile"] = c.XDSCAFile
	}
	if id := c.XDSIdentity; id != nil {
		xds["caFile"] = caPath
		xds["identity"] = map[string]any{"tokenFile": tokenPath, "server": id.CAAddress}
	}
	m["xds"] = xds
	sub := func(k string) map[string]any {
		v, _ := m[k].(map[string]any)
		if v == nil {
			v = map[string]any{}
			m[k] = v
		}
		return v
	}
	sub("spool")["dir"] = spoolDir
	d := sub("dns")
	d["listen"] = "127.0.0.1:" + portString(dnsPort)
	d["upstreams"] = upstreams
	return yaml.Marshal(m)
}

// Check validates the config by the proxy's own rules, on the config a pod
// would get: a bad proxy: block is found at the controller's start, not in
// a crash-looping sidecar.
func (c *Config) Check() error {
	if err := c.Validate(); err != nil {
		return err
	}
	b, err := c.ProxyConfig(c.MeshPort, c.ClusterDNS)
	if err != nil {
		return err
	}
	var m map[string]any
	if err := yaml.Unmarshal(b, &m); err != nil {
		return err
	}
	m["xds"].(map[string]any)["node"] = "namespace/pod" // from the downward API in a pod
	b, _ = yaml.Marshal(m)
	if _, err := proxyconfig.Parse(b); err != nil {
		return fmt.Errorf("injector config: the proxy would refuse its config: %w", err)
	}
	return nil
}

// checkPorts refuses a pod whose containers declare a port the proxy binds
// in the pod's network namespace: one of the two would fail to start.
func (c *Config) checkPorts(pod *corev1.Pod, meshPort int32) error {
	taken := map[int32]string{meshPort: "mesh listener", dnsPort: "DNS", c.HealthPort: "health", c.AdminPort: "admin API"}
	for _, list := range [][]corev1.Container{pod.Spec.InitContainers, pod.Spec.Containers} {
		for _, ct := range list {
			for _, p := range ct.Ports {
				what, ok := taken[p.ContainerPort]
				if !ok {
					continue
				}
				hint := ""
				if p.ContainerPort == meshPort {
					hint = fmt.Sprintf("; set the pod annotation %s to another port for the mesh", AnnotationMeshPort)
				}
				return fmt.Errorf("%w: container %s declares port %d, which the proxy's %s uses%s", ErrRefused, ct.Name, p.ContainerPort, what, hint)
			}
		}
	}
	return nil
}

func hasContainer(pod *corev1.Pod, name string) bool {
	is := func(c corev1.Container) bool { return c.Name == name }
	return slices.ContainsFunc(pod.Spec.Containers, is) || slices.ContainsFunc(pod.Spec.InitContainers, is)
}

func hasVolume(pod *corev1.Pod, name string) bool {
	return slices.ContainsFunc(pod.Spec.Volumes, func(v corev1.Volume) bool { return v.Name == name })
}

func ptr[T any](v T) *T { return &v }

package v1alpha1

import (
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// Route maps mesh host names that apps in its namespace call to one
// destination, with the policy the proxy follows while no usable link exists.
//
// +kubebuilder:object:root=true
// +kubebuilder:subresource:status
// +kubebuilder:resource:categories=misaki
// +kubebuilder:printcolumn:name="Hosts",type=string,JSONPath=`.spec.hosts`
// +kubebuilder:printcolumn:name="Accepted",type=string,JSONPath=`.status.conditions[?(@.type=="Accepted")].status`
// +kubebuilder:printcolumn:name="Reason",type=string,JSONPath=`.status.conditions[?(@.type=="Accepted")].reason`
// +kubebuilder:printcolumn:name="Age",type=date,JSONPath=`.metadata.creationTimestamp`
type Route struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata,omitempty"`

	Spec   RouteSpec   `json:"spec"`
	Status RouteStatus `json:"status,omitempty"`
}

// RouteList is a list of Routes.
//
// +kubebuilder:object:root=true
type RouteList struct {
	metav1.TypeMeta `json:",inline"`
	metav1.ListMeta `json:"metadata,omitempty"`
	Items           []Route `json:"items"`
}

// Host is a mesh name: a DNS name, or *.suffix for every name under suffix.
//
// +kubebuilder:validation:MinLength=1
// +kubebuilder:validation:MaxLength=253
// +kubebuilder:validation:Pattern=`^(\*\.)?[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$`
type Host string

// RouteSpec is what a Route asks for.
//
// +kubebuilder:validation:XValidation:rule="!has(self.offline) || !has(self.offline.batch) || self.offline.batch <= 1 || has(self.destination.url)",message="offline.batch needs a destination.url that is a Misaki gateway"
type RouteSpec struct {
	// Hosts are the names apps call. Lower-case; unique across the Routes
	// of a namespace (a later Route with a taken host is not Accepted).
	//
	// +kubebuilder:validation:MinItems=1
	// +kubebuilder:validation:MaxItems=16
	// +listType=set
	Hosts []Host `json:"hosts"`

	// Matches narrow the route to some requests of its hosts; a request
	// matches when any one entry matches. Empty: every request.
	//
	// +kubebuilder:validation:MaxItems=16
	// +optional
	Matches []Match `json:"matches,omitempty"`

	// Destination is where matching requests go.
	Destination Destination `json:"destination"`

	// Timeouts for the upstream exchange.
	// +optional
	Timeouts *Timeouts `json:"timeouts,omitempty"`

	// MaxBodyBytes caps request bodies on this route, as a size such as
	// 8MiB. Default: the proxy's limits.maxBodyBytes.
	// +optional
	MaxBodyBytes *ByteSize `json:"maxBodyBytes,omitempty"`

	// MaxUpstreamConnections caps concurrent connections to the upstream.
	// Default 1024.
	//
	// +kubebuilder:validation:Minimum=1
	// +kubebuilder:validation:Maximum=65535
	// +optional
	MaxUpstreamConnections *int32 `json:"maxUpstreamConnections,omitempty"`

	// Probe checks that the upstream is reachable.
	// +optional
	Probe *Probe `json:"probe,omitempty"`

	// Offline is what the proxy does while no link the route may use is up.
	// +optional
	Offline *Offline `json:"offline,omitempty"`
}

// Match selects requests by path and headers; all of its parts must match.
//
// +kubebuilder:validation:XValidation:rule="!(has(self.path) && has(self.pathPrefix))",message="set path or pathPrefix, not both"
type Match struct {
	// Path matches the request path exactly.
	//
	// +kubebuilder:validation:MaxLength=1024
	// +kubebuilder:validation:Pattern=`^/`
	// +optional
	Path string `json:"path,omitempty"`

	// PathPrefix matches paths that start with it at a segment boundary:
	// /api matches /api and /api/x, not /apix.
	//
	// +kubebuilder:validation:MaxLength=1024
	// +kubebuilder:validation:Pattern=`^/`
	// +optional
	PathPrefix string `json:"pathPrefix,omitempty"`

	// Headers must all be present with these exact values.
	//
	// +kubebuilder:validation:MaxItems=16
	// +optional
	Headers []HeaderMatch `json:"headers,omitempty"`
}

// HeaderMatch is one header that must have one value.
type HeaderMatch struct {
	// Name of the header, case-insensitive.
	//
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=256
	// +kubebuilder:validation:Pattern=`^[!#$%&'*+\-.^_|~0-9A-Za-z]+$`
	Name string `json:"name"`
	// Value the header must have, compared exactly.
	//
	// +kubebuilder:validation:MaxLength=4096
	Value string `json:"value"`
}

// Destination is a Kubernetes Service or a URL outside the cluster (such as
// the cloud gateway); exactly one.
//
// +kubebuilder:validation:XValidation:rule="has(self.service) != has(self.url)",message="set exactly one of service and url"
type Destination struct {
	// Service is a Service in the Route's namespace; requests go to its
	// ready endpoints.
	// +optional
	Service *ServiceDestination `json:"service,omitempty"`

	// URL is http://, https:// or h2c:// with host and port, such as
	// https://gateway.example.com:8443.
	//
	// +kubebuilder:validation:MaxLength=2048
	// +kubebuilder:validation:Pattern=`^(http|https|h2c)://[^/?#@\s]+/?$`
	// +optional
	URL string `json:"url,omitempty"`

	// TLS for https:// URLs: files mounted in the proxy's pod.
	// +optional
	TLS *UpstreamTLS `json:"tls,omitempty"`
}

// ServiceDestination names a Service port.
type ServiceDestination struct {
	// Name of the Service.
	//
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=63
	// +kubebuilder:validation:Pattern=`^[a-z]([-a-z0-9]*[a-z0-9])?$`
	Name string `json:"name"`
	// Port is the Service's port number.
	//
	// +kubebuilder:validation:Minimum=1
	// +kubebuilder:validation:Maximum=65535
	Port int32 `json:"port"`
	// Protocol of the endpoints: http (HTTP/1.1) or h2c (HTTP/2 without
	// TLS, for gRPC). Default: h2c when the port's appProtocol is
	// kubernetes.io/h2c or grpc, else http.
	//
	// +kubebuilder:validation:Enum=http;h2c
	// +optional
	Protocol string `json:"protocol,omitempty"`
}

// UpstreamTLS names files in the proxy's pod for TLS to the upstream.
type UpstreamTLS struct {
	// CAFile is a PEM bundle of roots to trust instead of the system's.
	// +kubebuilder:validation:MaxLength=4096
	// +optional
	CAFile string `json:"caFile,omitempty"`
	// ServerName overrides the name checked in the upstream's certificate.
	// +kubebuilder:validation:MaxLength=253
	// +optional
	ServerName string `json:"serverName,omitempty"`
	// CertFile and KeyFile are the proxy's client certificate (mTLS).
	// +kubebuilder:validation:MaxLength=4096
	// +optional
	CertFile string `json:"certFile,omitempty"`
	// +kubebuilder:validation:MaxLength=4096
	// +optional
	KeyFile string `json:"keyFile,omitempty"`
}

// Duration is a Go duration such as 30s, 1m30s or 500ms.
//
// +kubebuilder:validation:MaxLength=32
// +kubebuilder:validation:Pattern=`^([0-9]+(\.[0-9]+)?(ns|us|µs|ms|s|m|h))+$`
type Duration string

// ByteSize is a size in bytes, plain or with a unit: 512, 64KiB, 8MiB, 1GiB, 10MB.
//
// +kubebuilder:validation:MaxLength=32
// +kubebuilder:validation:Pattern=`^[0-9]+(KiB|MiB|GiB|KB|MB|GB)?$`
type ByteSize string

// Timeouts bound one upstream exchange.
type Timeouts struct {
	// Connect bounds dialing (TCP and TLS). Default 5s.
	// +optional
	Connect Duration `json:"connect,omitempty"`
	// ResponseHeader bounds the wait for response headers. Default 60s.
	// +optional
	ResponseHeader Duration `json:"responseHeader,omitempty"`
	// Request bounds the whole exchange; time held does not count.
	// Default: no limit.
	// +optional
	Request Duration `json:"request,omitempty"`
	// Idle closes pooled upstream connections idle this long. Default 90s.
	// +optional
	Idle Duration `json:"idle,omitempty"`
}

// Probe checks an upstream's reachability.
type Probe struct {
	// Type is tcp, http or none. Default tcp.
	// +kubebuilder:validation:Enum=tcp;http;none
	// +optional
	Type string `json:"type,omitempty"`
	// Path for http probes. Default /.
	// +kubebuilder:validation:MaxLength=1024
	// +kubebuilder:validation:Pattern=`^/`
	// +optional
	Path string `json:"path,omitempty"`
	// Interval between probes while reachable. Default 10s.
	// +optional
	Interval Duration `json:"interval,omitempty"`
	// Timeout of one probe. Default 2s.
	// +optional
	Timeout Duration `json:"timeout,omitempty"`
	// Backoff between probes while unreachable. Default 500ms to 10s.
	// +optional
	Backoff *Backoff `json:"backoff,omitempty"`
}

// Backoff is exponential with full jitter.
type Backoff struct {
	// +optional
	Initial Duration `json:"initial,omitempty"`
	// +optional
	Max Duration `json:"max,omitempty"`
}

// LinkClass is ethernet, wifi, cellular, satellite or a class of the fleet's own.
//
// +kubebuilder:validation:MinLength=1
// +kubebuilder:validation:MaxLength=63
// +kubebuilder:validation:Pattern=`^[a-z][-a-z0-9]*$`
type LinkClass string

// Method is an HTTP method.
//
// +kubebuilder:validation:MinLength=1
// +kubebuilder:validation:MaxLength=32
// +kubebuilder:validation:Pattern=`^[A-Za-z]+$`
type Method string

// Offline is the route's policy while it has no usable link; the fields
// and defaults are those of offline: in the proxy's file (docs/config.md).
type Offline struct {
	// Hold is how long a request waits in memory for a usable link. Default 0.
	// +optional
	Hold Duration `json:"hold,omitempty"`
	// Links are the link classes the route may use. Empty: any.
	// +kubebuilder:validation:MaxItems=16
	// +listType=set
	// +optional
	Links []LinkClass `json:"links,omitempty"`
	// Metered is allow or deny. Default allow.
	// +kubebuilder:validation:Enum=allow;deny
	// +optional
	Metered string `json:"metered,omitempty"`
	// Roaming is allow or deny. Default allow.
	// +kubebuilder:validation:Enum=allow;deny
	// +optional
	Roaming string `json:"roaming,omitempty"`
	// HoldLimit bounds this route's held requests.
	// +optional
	HoldLimit *Limit `json:"holdLimit,omitempty"`
	// RetryAfter is sent with 503 answers. Default: the hold, at least 1s.
	// +optional
	RetryAfter Duration `json:"retryAfter,omitempty"`
	// Spool writes requests that outlive the hold to the proxy's spool and
	// answers 202; they are delivered when a usable link returns.
	// +optional
	Spool bool `json:"spool,omitempty"`
	// UnsafeMethods are never spooled.
	// +kubebuilder:validation:MaxItems=16
	// +listType=set
	// +optional
	UnsafeMethods []Method `json:"unsafeMethods,omitempty"`
	// TTL is how long a spooled request may wait, by the wall clock. Default 72h.
	// +optional
	TTL Duration `json:"ttl,omitempty"`
	// Priority orders replay across routes: higher first.
	// +kubebuilder:validation:Minimum=-1000
	// +kubebuilder:validation:Maximum=1000
	// +optional
	Priority int32 `json:"priority,omitempty"`
	// Quota bounds this route's share of the spool.
	// +optional
	Quota *Limit `json:"quota,omitempty"`
	// Eviction is reject or drop-oldest. Default reject.
	// +kubebuilder:validation:Enum=reject;drop-oldest
	// +optional
	Eviction string `json:"eviction,omitempty"`
	// Batch, over 1, delivers up to that many spooled requests per exchange
	// to a Misaki gateway.
	// +kubebuilder:validation:Minimum=0
	// +kubebuilder:validation:Maximum=256
	// +optional
	Batch int32 `json:"batch,omitempty"`
	// Budget caps the bytes the route carries over metered links per UTC
	// day and month; over it, metered links are unusable to the route
	// (its requests are held or spooled and replayed on an unmetered
	// link). The proxy keeps the counts in its spool volume.
	// +optional
	Budget *Budget `json:"budget,omitempty"`
	// GRPC is what a gRPC call gets when its hold window passes:
	// unavailable (grpc-status UNAVAILABLE, not sent, never spooled) or
	// spool (spooled where the route spools, answered DEADLINE_EXCEEDED
	// with its Misaki-Request-Id). Default unavailable.
	// +kubebuilder:validation:Enum=unavailable;spool
	// +optional
	GRPC string `json:"grpc,omitempty"`
}

// Budget is an allowance on metered links; an absent period has no limit.
type Budget struct {
	// +optional
	Daily ByteSize `json:"daily,omitempty"`
	// +optional
	Monthly ByteSize `json:"monthly,omitempty"`
}

// Limit bounds a count of requests and their bytes.
type Limit struct {
	// +kubebuilder:validation:Minimum=0
	// +optional
	Requests int32 `json:"requests,omitempty"`
	// +optional
	Bytes ByteSize `json:"bytes,omitempty"`
}

// Condition types and reasons of a Route.
const (
	// ConditionAccepted is True when the controller translated the Route
	// and published it to the namespace's proxies.
	ConditionAccepted = "Accepted"
	// ConditionResolvedRefs is True when the destination resolves: the
	// Service and port exist and have ready endpoints.
	ConditionResolvedRefs = "ResolvedRefs"

	ReasonAccepted        = "Accepted"
	ReasonHostConflict    = "HostConflict"
	ReasonServiceNotFound = "ServiceNotFound"
	ReasonInvalid         = "Invalid"
	ReasonNoEndpoints     = "NoReadyEndpoints"
)

// RouteStatus is what the controller observed.
type RouteStatus struct {
	// ObservedGeneration is the generation the conditions describe.
	// +optional
	ObservedGeneration int64 `json:"observedGeneration,omitempty"`
	// Conditions: Accepted.
	// +listType=map
	// +listMapKey=type
	// +kubebuilder:validation:MaxItems=8
	// +optional
	Conditions []metav1.Condition `json:"conditions,omitempty"`
}

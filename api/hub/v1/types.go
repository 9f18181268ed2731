// Package v1 is the hub's wire API (/v1): the JSON shapes the hub serves and
// accepts, shared by the hub, the agent and the CLI. docs/hub.md describes
// the endpoints; /v1/openapi.json (internal/hub/api/openapi.json) is the
// machine-readable form.
//
// Names follow Kubernetes where the idea is the same (labels, label
// selectors, resource quantities and resource names such as
// "ephemeral-storage"), so an operator reads them the way they read kubectl
// output.
package v1

import (
	"encoding/json"
	"time"
)

// ResourceList maps a Kubernetes resource name ("cpu", "memory",
// "ephemeral-storage", "nvidia.com/gpu") to a quantity ("4", "7Gi", "500m").
type ResourceList map[string]string

// Facts are what a vehicle's cluster reports about itself. Rendering uses
// them as Helm's capabilities.
type Facts struct {
	// KubernetesVersion is the API server's version, such as "v1.37.2".
	KubernetesVersion string `json:"kubernetesVersion,omitempty"`
	// APIVersions are the served group versions ("apps/v1") and, as Helm's
	// .Capabilities.APIVersions has them, group/version/kind entries.
	APIVersions []string `json:"apiVersions,omitempty"`
	// CRDs are the names of the installed CustomResourceDefinitions.
	CRDs []string `json:"crds,omitempty"`
	// Arch is the nodes' CPU architecture (GOARCH spelling: amd64, arm64).
	Arch string `json:"arch,omitempty"`
}

// Vehicle is one car: its identity, what it can run, and what it last said.
type Vehicle struct {
	// ID is a DNS label (lower-case letters, digits and '-', at most 54
	// characters) so the cloud namespace misaki-v-<id> is a valid name.
	ID     string            `json:"id"`
	Labels map[string]string `json:"labels,omitempty"`
	// Capacity and Allocatable are the sums over the vehicle cluster's
	// nodes, as the agent reports them (an operator may set them before the
	// first report).
	Capacity    ResourceList `json:"capacity,omitempty"`
	Allocatable ResourceList `json:"allocatable,omitempty"`
	Facts       Facts        `json:"facts"`
	// Enrolled is when the vehicle first got a certificate; nil before.
	Enrolled *time.Time `json:"enrolled,omitempty"`
	// CertificateExpires is the NotAfter of the newest certificate issued.
	CertificateExpires *time.Time `json:"certificateExpires,omitempty"`
	// LastSeen is the last authenticated request from the vehicle.
	LastSeen *time.Time `json:"lastSeen,omitempty"`
	// Online is LastSeen within the hub's online window (computed on read).
	Online  bool      `json:"online"`
	Created time.Time `json:"created"`
	// ResourceVersion changes on every write (the ETag of reads).
	ResourceVersion int64 `json:"resourceVersion"`
}

// BootstrapToken lets one agent enrol once as one vehicle.
type BootstrapToken struct {
	// ID is the token's public half.
	ID        string    `json:"id"`
	VehicleID string    `json:"vehicleId"`
	Expires   time.Time `json:"expires"`
	// Used is when the token was spent; a token works once.
	Used      *time.Time `json:"used,omitempty"`
	CreatedBy string     `json:"createdBy,omitempty"`
	Created   time.Time  `json:"created"`
	// Token is "<id>.<secret>", returned only by the call that creates it;
	// the hub keeps only a hash of the secret.
	Token string `json:"token,omitempty"`
}

// Chart source types.
const (
	SourceHTTP  = "http"  // a Helm chart repository: <url>/index.yaml
	SourceOCI   = "oci"   // an OCI registry: oci://host/path
	SourceLocal = "local" // a directory of charts (unpacked or .tgz) or one .tgz on the hub's disk
)

// ChartSource is where charts come from.
type ChartSource struct {
	Name string `json:"name"`
	Type string `json:"type"`
	URL  string `json:"url"`
	// Charts lists the chart names to look for in an OCI source (a
	// registry has no index); ignored for the other types.
	Charts []string `json:"charts,omitempty"`
	// CAFile and InsecureSkipTLSVerify configure TLS to the source.
	CAFile                string    `json:"caFile,omitempty"`
	InsecureSkipTLSVerify bool      `json:"insecureSkipTLSVerify,omitempty"`
	PlainHTTP             bool      `json:"plainHTTP,omitempty"` // OCI over http://
	Created               time.Time `json:"created"`
}

// ChartVersion is one published version of a chart in a source.
type ChartVersion struct {
	Source      string `json:"source"`
	Name        string `json:"name"`
	Version     string `json:"version"`
	AppVersion  string `json:"appVersion,omitempty"`
	Description string `json:"description,omitempty"`
	// Digest is "sha256:<hex>" of the chart archive's bytes, when known
	// (an index entry's digest, or the pinned digest).
	Digest string `json:"digest,omitempty"`
	// Pinned is true once a deployment uses this version: from then on the
	// source must serve exactly Digest's bytes for it.
	Pinned bool `json:"pinned,omitempty"`
	// ValuesSchema is the chart's values.schema.json, when it has one and
	// the version is read one at a time.
	ValuesSchema json.RawMessage `json:"valuesSchema,omitempty"`
}

// Chart is a chart name and its versions, newest first.
type Chart struct {
	Source   string         `json:"source"`
	Name     string         `json:"name"`
	Versions []ChartVersion `json:"versions"`
}

// ChartRef names one chart version. Digest is filled in by the hub when the
// deployment is created (the version is pinned to it).
type ChartRef struct {
	Source  string `json:"source"`
	Name    string `json:"name"`
	Version string `json:"version"`
	Digest  string `json:"digest,omitempty"`
}

// Placement policies and places.
const (
	PlaceVehicle = "vehicle"
	PlaceCloud   = "cloud"
	PlaceAuto    = "auto"
)

// Customization overrides values for the targeted vehicles that match its
// selector (Fleet's targetCustomizations). Customizations apply in order,
// each merged over the deployment's values and the ones before it.
type Customization struct {
	Name     string         `json:"name"`
	Selector string         `json:"selector"`
	Values   map[string]any `json:"values,omitempty"`
}

// Deployment is a chart version rolled out to the vehicles its selector
// matches.
type Deployment struct {
	// Name is a DNS label; it is the Helm release name.
	Name string `json:"name"`
	// Namespace on the vehicle for namespaced objects the chart does not
	// place itself. Default "default".
	Namespace string         `json:"namespace,omitempty"`
	Chart     ChartRef       `json:"chart"`
	Values    map[string]any `json:"values,omitempty"`
	// Selector is a Kubernetes label selector ("fleet=eu,tier in (a,b)");
	// empty selects no vehicle.
	Selector       string          `json:"selector"`
	Customizations []Customization `json:"customizations,omitempty"`
	// Placement maps a component name to vehicle, cloud or auto. A
	// component not listed takes the chart's misaki.io/placement
	// annotation, else DefaultPlacement, else auto.
	Placement        map[string]string `json:"placement,omitempty"`
	DefaultPlacement string            `json:"defaultPlacement,omitempty"`
	// Health is how the agent judges the deployment's objects after it
	// applies a revision; nil: the agent's defaults, no rollback.
	Health *HealthPolicy `json:"health,omitempty"`
	// Rollout is how a new generation reaches the vehicles: waves, bake
	// time, failure threshold and vehicle-state gates. nil: every targeted
	// vehicle at once, no gates.
	Rollout *RolloutPolicy `json:"rollout,omitempty"`
	// Generation counts changes to the spec (everything above). Each
	// generation is kept (GET /v1/deployments/{name}/versions) and starts
	// a rollout.
	Generation int64     `json:"generation"`
	Created    time.Time `json:"created"`
	Updated    time.Time `json:"updated"`
	CreatedBy  string    `json:"createdBy,omitempty"`
}

// Halves of a vehicle's desired state.
const (
	HalfVehicle = "vehicle" // applied by the agent on the vehicle's cluster
	HalfCloud   = "cloud"   // applied in misaki-v-<vehicle> in the cloud cluster
)

// ComponentPlacement says where one component of a deployment runs for one
// vehicle, and why.
type ComponentPlacement struct {
	Deployment string `json:"deployment"`
	Component  string `json:"component"`
	// Policy is what was asked (vehicle, cloud, auto) and Place what was
	// decided (vehicle, cloud).
	Policy string `json:"policy"`
	Place  string `json:"place"`
	Reason string `json:"reason"`
	// Requests are the component's summed resource requests (× replicas).
	Requests ResourceList `json:"requests,omitempty"`
	// Objects are the component's objects as kind/namespace/name.
	Objects []string `json:"objects,omitempty"`
}

// DesiredState is the signed payload: everything one half of one vehicle
// must run. The agent applies Objects as a set (a newer revision's set
// replaces this one's, and objects it no longer lists are pruned).
type DesiredState struct {
	Vehicle  string    `json:"vehicle"`
	Half     string    `json:"half"`
	Revision int64     `json:"revision"`
	IssuedAt time.Time `json:"issuedAt"`
	Expires  time.Time `json:"expires"`
	// Namespace is where the cloud half runs (misaki-v-<vehicle>); empty
	// for the vehicle half.
	Namespace   string               `json:"namespace,omitempty"`
	Deployments []DeploymentRevision `json:"deployments"`
	Placement   []ComponentPlacement `json:"placement"`
	// Objects are Kubernetes objects (JSON), in the order rendering
	// produced them.
	Objects []json.RawMessage `json:"objects"`
}

// DeploymentRevision records which deployment generation and chart bytes a
// desired state was rendered from, and the deployment's health policy.
type DeploymentRevision struct {
	Name       string        `json:"name"`
	Generation int64         `json:"generation"`
	Chart      ChartRef      `json:"chart"`
	Health     *HealthPolicy `json:"health,omitempty"`
	// Gates are the rollout's vehicle-state gates: the agent applies a
	// revision that changes this deployment only while every gate holds.
	Gates []string `json:"gates,omitempty"`
}

// HealthPolicy says how long a deployment's objects have, after the agent
// applied a revision, to become ready (kstatus: Current), and what the
// agent does when they do not.
type HealthPolicy struct {
	// Deadline is a duration such as "10m", counted from the end of the
	// apply. Empty: the agent's --health-deadline.
	Deadline string `json:"deadline,omitempty"`
	// Rollback: a deployment not ready by its deadline goes back to its
	// objects in the last revision that was healthy on the vehicle (and is
	// removed if it had none). The revision is reported Failed either way.
	Rollback bool `json:"rollback,omitempty"`
}

// Envelope is a DSSE envelope (github.com/secure-systems-lab/dsse): the
// signatures cover PAE(PayloadType, Payload).
type Envelope struct {
	PayloadType string      `json:"payloadType"`
	Payload     []byte      `json:"payload"` // base64 in JSON, as DSSE has it
	Signatures  []Signature `json:"signatures"`
}

// Signature is one DSSE signature.
type Signature struct {
	KeyID string `json:"keyid"`
	Sig   []byte `json:"sig"`
}

// PayloadTypeDesired is the DSSE payload type of a DesiredState.
const PayloadTypeDesired = "application/vnd.misaki.desired-state.v1+json"

// Desired is what GET /v1/vehicles/{id}/desired answers: a signed revision
// and the digest of its payload's exact bytes.
type Desired struct {
	Vehicle  string `json:"vehicle"`
	Half     string `json:"half"`
	Revision int64  `json:"revision"`
	// Digest is "sha256:<hex>" of Envelope.Payload.
	Digest   string    `json:"digest"`
	IssuedAt time.Time `json:"issuedAt"`
	Expires  time.Time `json:"expires"`
	// RootVersion is the newest trust root version; an agent that pins an
	// older one fetches /v1/trust/root/{n}.json up to it.
	RootVersion int64    `json:"rootVersion"`
	Envelope    Envelope `json:"envelope"`
}

// Object states in a report.
const (
	StateApplied     = "applied"
	StateProgressing = "progressing"
	StateHealthy     = "healthy"
	StateError       = "error"
)

// ObjectStatus is one object's state on the vehicle.
type ObjectStatus struct {
	APIVersion string `json:"apiVersion"`
	Kind       string `json:"kind"`
	Namespace  string `json:"namespace,omitempty"`
	Name       string `json:"name"`
	State      string `json:"state"`
	Reason     string `json:"reason,omitempty"`
}

// GateState is a vehicle-state gate as the agent last evaluated it.
type GateState struct {
	Name   string `json:"name"`
	Holds  bool   `json:"holds"`
	Reason string `json:"reason,omitempty"`
}

// Phases of the revision an agent applied, in a report.
const (
	PhaseApplying    = "Applying"    // the apply is under way
	PhaseProgressing = "Progressing" // applied; waiting for objects to be ready
	PhaseHealthy     = "Healthy"     // every object ready
	PhaseFailed      = "Failed"      // the apply failed, or not ready by the deadline
	// PhaseWaiting: a newer revision is verified and waits for a
	// vehicle-state gate (Reported.Gates says which); AppliedRevision is
	// still the one running.
	PhaseWaiting = "Waiting"
)

// Failure is why a revision is Failed, and what the agent did about it.
type Failure struct {
	Revision int64  `json:"revision"`
	Reason   string `json:"reason"`
	// Deployments are the deployments whose objects failed.
	Deployments []string `json:"deployments,omitempty"`
	// RolledBackTo is the healthy revision whose objects the failed
	// deployments went back to (0: none; those with no rollback policy
	// stay as applied).
	RolledBackTo int64 `json:"rolledBackTo,omitempty"`
}

// Refusal is a desired revision the agent would not apply, and why.
type Refusal struct {
	Revision int64  `json:"revision"`
	Reason   string `json:"reason"`
}

// Reported is what an agent says about one half of its vehicle (PUT
// /v1/vehicles/{id}/reported). Putting the same report twice changes
// nothing the second time.
type Reported struct {
	Half            string `json:"half"`
	AppliedRevision int64  `json:"appliedRevision"`
	// Phase is the applied revision's (Applying, Progressing, Healthy,
	// Failed); Failure says why when it is Failed.
	Phase   string         `json:"phase,omitempty"`
	Failure *Failure       `json:"failure,omitempty"`
	Objects []ObjectStatus `json:"objects,omitempty"`
	// Deployments are the deployment generations of the applied revision
	// (rollouts count a vehicle as having generation N from them).
	Deployments []DeploymentRevision `json:"deployments,omitempty"`
	// Waiting is the verified revision waiting for its gates (Phase
	// Waiting), 0 when none waits.
	Waiting      int64        `json:"waiting,omitempty"`
	Facts        *Facts       `json:"facts,omitempty"`
	Capacity     ResourceList `json:"capacity,omitempty"`
	Allocatable  ResourceList `json:"allocatable,omitempty"`
	Gates        []GateState  `json:"gates,omitempty"`
	AgentVersion string       `json:"agentVersion,omitempty"`
	Refused      *Refusal     `json:"refused,omitempty"`
	// Message is a free-form line from the agent (the last error, say).
	Message string `json:"message,omitempty"`
	// Time is when the hub received the report (set by the hub).
	Time time.Time `json:"time"`
}

// Twin is GET /v1/vehicles/{id}: the vehicle, both halves' desired and
// reported state, and the difference.
type Twin struct {
	Vehicle   Vehicle              `json:"vehicle"`
	Desired   []DesiredSummary     `json:"desired"`
	Reported  []Reported           `json:"reported"`
	Delta     []Delta              `json:"delta"`
	Placement []ComponentPlacement `json:"placement"`
}

// TwinSummary is one row of GET /v1/twins: a vehicle and where each of its
// halves stands, without objects (GET /v1/vehicles/{id} has the whole
// twin).
type TwinSummary struct {
	Vehicle Vehicle `json:"vehicle"`
	// Halves are the halves with a desired revision or a report, vehicle
	// first.
	Halves []HalfSummary `json:"halves"`
	// OnVehicle and InCloud count the vehicle's components by place.
	OnVehicle int `json:"onVehicle"`
	InCloud   int `json:"inCloud"`
	// Deltas is how many differences the twin lists.
	Deltas int `json:"deltas"`
}

// HalfSummary is one half of a TwinSummary.
type HalfSummary struct {
	Half string `json:"half"`
	// Desired is the newest desired revision (0: none yet).
	Desired int64 `json:"desired"`
	// Reported says whether the agent reported; Applied, Phase and Waiting
	// are from its report.
	Reported bool   `json:"reported"`
	Applied  int64  `json:"applied"`
	Phase    string `json:"phase,omitempty"`
	Waiting  int64  `json:"waiting,omitempty"`
}

// DesiredSummary is a desired revision without its objects' bodies.
type DesiredSummary struct {
	Half     string    `json:"half"`
	Revision int64     `json:"revision"`
	Digest   string    `json:"digest"`
	IssuedAt time.Time `json:"issuedAt"`
	Expires  time.Time `json:"expires"`
	Objects  []string  `json:"objects"` // kind/namespace/name
}

// Delta is one way reported differs from desired.
type Delta struct {
	Half string `json:"half"`
	// Kind of difference: revision (applied < desired), failed (the half's
	// report is Phase Failed: one delta without Object whose Detail has
	// the failed revision, the reason, the deployments and what they were
	// rolled back to; and, in place of unhealthy, one per desired object
	// reported not healthy), missing (desired object not reported),
	// unhealthy (reported, not healthy), extra (reported, not desired),
	// waiting (the agent holds a newer revision until its vehicle-state
	// gates hold: Detail names those that do not),
	// error (the hub could not compute the vehicle's desired state).
	Kind   string `json:"kind"`
	Object string `json:"object,omitempty"`
	Detail string `json:"detail"`
}

// EnrolRequest is POST /v1/enrol: a bootstrap token and a PEM CSR.
type EnrolRequest struct {
	Token string `json:"token"`
	CSR   string `json:"csr"`
}

// Certificate answers enrolment and renewal.
type Certificate struct {
	Vehicle     string    `json:"vehicle"`
	Certificate string    `json:"certificate"` // PEM
	CA          string    `json:"ca"`          // PEM bundle the vehicle trusts for the hub
	Expires     time.Time `json:"expires"`
}

// AuditEntry is one write through the API.
type AuditEntry struct {
	ID     int64     `json:"id"`
	Time   time.Time `json:"time"`
	Actor  string    `json:"actor"`  // operator token name, or vehicle/<id>
	Action string    `json:"action"` // create, update, delete, enrol, rotate, ...
	Object string    `json:"object"` // deployments/shuttle, vehicles/car-1
	Detail string    `json:"detail,omitempty"`
}

// Change is one vehicle half whose desired state got a new revision, at
// sequence Seq of the hub's change sequence.
type Change struct {
	Vehicle  string `json:"vehicle"`
	Half     string `json:"half"`
	Revision int64  `json:"revision"`
	Seq      int64  `json:"seq"`
}

// Changes answers GET /v1/changes: the changes after the sequence asked
// for, oldest first, and Seq, the sequence to ask after next time.
type Changes struct {
	Items []Change `json:"items"`
	Seq   int64    `json:"seq"`
}

// List is a page of items; Next is the cursor for the next page ("" when
// this is the last).
type List[T any] struct {
	Items []T    `json:"items"`
	Next  string `json:"next,omitempty"`
}

// Error is every 4xx and 5xx body.
type Error struct {
	Code    int    `json:"code"`
	Message string `json:"message"`
	// Field names the input field at fault, when there is one.
	Field string `json:"field,omitempty"`
}

// VehiclePatch is PATCH /v1/vehicles/{id}: the fields given replace the
// stored ones; ResourceVersion, when given, must be the stored one.
type VehiclePatch struct {
	// Labels replace the vehicle's labels when present: {} removes them
	// all; absent or null leaves them.
	Labels          map[string]string `json:"labels"`
	Capacity        ResourceList      `json:"capacity,omitempty"`
	Allocatable     ResourceList      `json:"allocatable,omitempty"`
	ResourceVersion int64             `json:"resourceVersion,omitempty"`
}

// TokenRequest is POST /v1/vehicles/{id}/tokens.
type TokenRequest struct {
	// TTL is how long the token may be used, such as "24h". Default: the
	// hub's --token-ttl.
	TTL string `json:"ttl,omitempty"`
}

// RenewRequest is POST /v1/vehicles/{id}/certificate.
type RenewRequest struct {
	CSR string `json:"csr"` // PEM
}

// RotateRequest is POST /v1/keys/rotate.
type RotateRequest struct {
	Role string `json:"role"` // targets (default) or root
}

// RotateResult answers it.
type RotateResult struct {
	Role        string `json:"role"`
	RootVersion int64  `json:"rootVersion"`
}

// OperatorToken is an operator API token. Token, the secret, is only in
// the answer that creates it.
type OperatorToken struct {
	Name    string    `json:"name"`
	Scope   string    `json:"scope"` // read, admin or cloud-agent
	Created time.Time `json:"created,omitzero"`
	Token   string    `json:"token,omitempty"`
}

// PreviewRequest is POST /v1/preview: what a deployment (new or changed)
// would give one vehicle, beside the vehicle's other deployments.
type PreviewRequest struct {
	Deployment Deployment `json:"deployment"`
	Vehicle    string     `json:"vehicle"`
}

// Preview answers it: both halves, the placement table, the merged values
// and the chart's notes. Matches says whether the deployment's selector
// selects the vehicle (the preview applies it either way).
type Preview struct {
	Vehicle        []json.RawMessage    `json:"vehicle"`
	Cloud          []json.RawMessage    `json:"cloud"`
	CloudNamespace string               `json:"cloudNamespace,omitempty"`
	Placement      []ComponentPlacement `json:"placement"`
	Values         map[string]any       `json:"values,omitempty"`
	Notes          string               `json:"notes,omitempty"`
	Matches        bool                 `json:"matches"`
}

// RolloutPolicy says how a deployment's new generation reaches its
// vehicles. The targeted vehicles are those its selector (old or new)
// matches when the rollout starts. They are split into waves: the canary
// first, then Waves in order, then every vehicle left. A wave is released
// (its vehicles get the new generation) at most MaxUnavailable vehicles
// updating at a time; it is done when each vehicle in it answered
// (healthy or failed) or WaveDeadline passed, and the next wave starts
// BakeTime after that. More failures than FailureThreshold pause the
// rollout, with the reason.
type RolloutPolicy struct {
	// Canary is the first wave; nil: none.
	Canary *Wave  `json:"canary,omitempty"`
	Waves  []Wave `json:"waves,omitempty"`
	// MaxUnavailable caps the vehicles of the current wave updating at
	// once (released, online, not yet healthy or failed): a count ("5")
	// or a percentage of the targeted vehicles ("10%"). Default: no cap.
	MaxUnavailable string `json:"maxUnavailable,omitempty"`
	// BakeTime is how long to wait after a wave is done before the next
	// starts, such as "30m". Default 0.
	BakeTime string `json:"bakeTime,omitempty"`
	// WaveDeadline is how long a wave waits for its vehicles to answer
	// before the next may start, such as "2h"; vehicles that have not
	// answered keep the new generation and take it when they return.
	// Default 24h.
	WaveDeadline string `json:"waveDeadline,omitempty"`
	// FailureThreshold is how many failed vehicles are tolerated: a count
	// ("2") or a percentage of the vehicles released so far ("5%"). One
	// more pauses the rollout. Default "0": the first failure pauses.
	FailureThreshold string `json:"failureThreshold,omitempty"`
	// Gates are vehicle-state conditions the agent checks before it
	// applies the new generation: "parked", "!moving", "ignition=off",
	// "battery>=30", "window 02:00-05:00" (docs/rollouts.md has the
	// grammar).
	Gates []string `json:"gates,omitempty"`
}

// Wave selects vehicles of a rollout: by label selector (the targeted
// vehicles it matches that no earlier wave took), or by size, cumulative
// over the waves so far: "10%" (of the targeted vehicles) or a count
// ("1"). Exactly one of Selector and Size.
type Wave struct {
	Name     string `json:"name,omitempty"`
	Selector string `json:"selector,omitempty"`
	Size     string `json:"size,omitempty"`
}

// Rollout phases.
const (
	RolloutProgressing = "Progressing" // releasing waves
	RolloutPaused      = "Paused"      // by an operator, or by the failure threshold (Reason says)
	RolloutCompleted   = "Completed"   // every wave done
	RolloutAborted     = "Aborted"     // stopped; its vehicles went back to the generation before
	RolloutSuperseded  = "Superseded"  // a newer generation's rollout took over
)

// Vehicle states in a rollout.
const (
	VehiclePending    = "pending"    // not released yet
	VehicleOffline    = "offline"    // released, not seen; gets the newest allowed revision when back
	VehicleApplying   = "applying"   // released, updating
	VehicleWaiting    = "waiting"    // the agent waits for a vehicle-state gate
	VehicleHealthy    = "healthy"    // runs the generation, ready
	VehicleFailed     = "failed"     // the generation failed (or was refused) on the vehicle
	VehicleSuperseded = "superseded" // runs a newer generation
)

// Rollout is one generation of a deployment on its way to the vehicles
// (GET /v1/deployments/{name}/rollouts/{generation}).
type Rollout struct {
	Deployment string `json:"deployment"`
	Generation int64  `json:"generation"`
	// From is the generation the vehicles ran before (0: new deployment).
	From   int64         `json:"from"`
	Policy RolloutPolicy `json:"policy"`
	Phase  string        `json:"phase"`
	// Reason says why the rollout is paused, aborted or superseded.
	Reason string `json:"reason,omitempty"`
	// Waves are empty until the hub has split the targeted vehicles.
	Waves []WaveStatus `json:"waves"`
	// Counts are the vehicles per state, over all waves.
	Counts map[string]int `json:"counts,omitempty"`
	// Tolerated is the failure count at the last resume: the threshold
	// counts failures beyond it.
	Tolerated int       `json:"tolerated,omitempty"`
	Created   time.Time `json:"created"`
	Updated   time.Time `json:"updated"`
	CreatedBy string    `json:"createdBy,omitempty"`
	// ResourceVersion changes on every write.
	ResourceVersion int64 `json:"resourceVersion"`
}

// WaveStatus is one wave of a rollout.
type WaveStatus struct {
	Name     string `json:"name"`
	Vehicles int    `json:"vehicles"`
	// Started is when its first vehicle was released, Done when every
	// vehicle answered or the deadline passed, BakeUntil when the next
	// wave may start.
	Started   *time.Time     `json:"started,omitempty"`
	Done      *time.Time     `json:"done,omitempty"`
	BakeUntil *time.Time     `json:"bakeUntil,omitempty"`
	Counts    map[string]int `json:"counts,omitempty"`
}

// RolloutVehicle is one vehicle's place and state in a rollout.
type RolloutVehicle struct {
	Vehicle  string `json:"vehicle"`
	Wave     int    `json:"wave"`
	Released bool   `json:"released"`
	State    string `json:"state"`
	Reason   string `json:"reason,omitempty"`
}

// RolloutAction is POST /v1/deployments/{name}/rollouts/{generation}/{action}
// (pause, resume or abort); Reason goes into the rollout and the audit log.
type RolloutAction struct {
	Reason string `json:"reason,omitempty"`
}

// RollbackRequest is POST /v1/deployments/{name}/rollback: a new
// generation with the spec of generation Generation (0: the one before the
// current), rolled out by that spec's policy.
type RollbackRequest struct {
	Generation int64 `json:"generation,omitempty"`
}

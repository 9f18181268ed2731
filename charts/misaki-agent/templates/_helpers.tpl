{{- define "misaki-agent.labels" -}}
app.kubernetes.io/name: misaki-agent
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ .Chart.Name }}-{{ .Chart.Version | replace "+" "_" }}
{{- end -}}

{{- define "misaki-agent.selector" -}}
app.kubernetes.io/name: misaki-agent
app.kubernetes.io/component: agent
{{- end -}}

{{- define "misaki-agent.image" -}}
{{ .Values.image.repository }}:{{ .Values.image.tag | default .Chart.AppVersion }}
{{- end -}}

{{/* The Secret mounted at /etc/misaki-agent: the user's, or the chart's. */}}
{{- define "misaki-agent.secretName" -}}
{{- .Values.existingSecret | default "misaki-agent" -}}
{{- end -}}

{{/* The claim of the state volume, when it is one. */}}
{{- define "misaki-agent.claimName" -}}
{{- .Values.state.persistence.existingClaim | default "misaki-agent-state" -}}
{{- end -}}

{{/*
What a set of values must have, checked before anything renders, so a
mistake is a message here rather than an agent that cannot enrol.
*/}}
{{- define "misaki-agent.validate" -}}
{{- $url := required "misaki-agent: hub.url is required: the hub's https:// URL as this cluster reaches it (--set hub.url=https://hub.example.com:8443)" .Values.hub.url -}}
{{- if not (hasPrefix "https://" $url) -}}
{{- fail (printf "misaki-agent: hub.url is %q; want an https:// URL (the agent talks to the hub over TLS only)" $url) -}}
{{- end -}}
{{- if .Values.existingSecret -}}
{{- range $name, $v := dict "hub.ca" .Values.hub.ca "bootstrap.token" .Values.bootstrap.token "trust.root" .Values.trust.root "cloud.operatorToken" .Values.cloud.operatorToken -}}
{{- if $v -}}
{{- fail (printf "misaki-agent: %s is set with existingSecret %s, which would ignore it: put it in the Secret instead (see existingSecret in values.yaml)" $name $.Values.existingSecret) -}}
{{- end -}}
{{- end -}}
{{- else if .Values.cloud.enabled -}}
{{- if not .Values.cloud.operatorToken -}}
{{- fail "misaki-agent: cloud.enabled needs cloud.operatorToken (an operator token of scope cloud-agent), or existingSecret with the key operator-token" -}}
{{- end -}}
{{- if not .Values.trust.root -}}
{{- fail "misaki-agent: cloud.enabled needs trust.root (the hub's root.json; the cloud agent reads it on every start), or existingSecret with the key root.json" -}}
{{- end -}}
{{- end -}}
{{- with .Values.state.hostPath -}}
{{- if not (hasPrefix "/" .) -}}
{{- fail (printf "misaki-agent: state.hostPath is %q; want an absolute path on the node" .) -}}
{{- end -}}
{{- if $.Values.state.persistence.existingClaim -}}
{{- fail "misaki-agent: state.hostPath and state.persistence.existingClaim are both set; the state is one volume: choose one" -}}
{{- end -}}
{{- end -}}
{{- with .Values.vehicleState.hostPath -}}
{{- if not (hasPrefix "/" .) -}}
{{- fail (printf "misaki-agent: vehicleState.hostPath is %q; want an absolute path on the node" .) -}}
{{- end -}}
{{- end -}}
{{- if and (not .Values.rbac.clusterAdmin) (not .Values.rbac.rules) -}}
{{- fail "misaki-agent: rbac.rules is empty: the agent could apply nothing; list the kinds your charts contain, or set rbac.clusterAdmin (labs only)" -}}
{{- end -}}
{{- end -}}

{{/*
The --vehicle-state value: vehicleState.source, else the state file in
vehicleState.hostPath's mount, else none.
*/}}
{{- define "misaki-agent.vehicleState" -}}
{{- if .Values.vehicleState.source -}}
{{- .Values.vehicleState.source -}}
{{- else if .Values.vehicleState.hostPath -}}
/run/misaki/vehicle-state/state.json
{{- end -}}
{{- end -}}

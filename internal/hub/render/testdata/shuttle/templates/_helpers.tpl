{{/* Labels every object of the release carries. */}}
{{- define "shuttle.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
app.kubernetes.io/name: {{ .Chart.Name }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end }}

{{/* Selector labels of one component: (dict "ctx" $ "component" "api"). */}}
{{- define "shuttle.selectorLabels" -}}
app.kubernetes.io/name: {{ .ctx.Chart.Name }}
app.kubernetes.io/instance: {{ .ctx.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end }}

{{/* Image reference of one component: (dict "ctx" $ "component" "api"). */}}
{{- define "shuttle.image" -}}
{{ .ctx.Values.image.registry }}/{{ .component }}:{{ .ctx.Values.image.tag | default .ctx.Chart.AppVersion }}
{{- end }}

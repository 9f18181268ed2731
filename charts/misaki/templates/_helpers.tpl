{{- define "misaki.labels" -}}
app.kubernetes.io/name: misaki
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ .Chart.Name }}-{{ .Chart.Version | replace "+" "_" }}
{{- end -}}

{{- define "misaki.selector" -}}
app.kubernetes.io/name: misaki
app.kubernetes.io/component: controller
{{- end -}}

{{- define "misaki.image" -}}
{{ .image.repository }}:{{ .image.tag | default .appVersion }}
{{- end -}}

{{/* The namespaces the webhook never sees. */}}
{{- define "misaki.excluded" -}}
{{- $ns := list "kube-system" "kube-public" "kube-node-lease" .Release.Namespace -}}
{{- concat $ns .Values.webhook.excludeNamespaces | uniq | toJson -}}
{{- end -}}

{{/* What both injection webhooks share. */}}
{{- define "misaki.webhookCommon" -}}
admissionReviewVersions: [v1]
sideEffects: None
failurePolicy: {{ .Values.webhook.failurePolicy }}
timeoutSeconds: {{ .Values.webhook.timeoutSeconds }}
reinvocationPolicy: Never
clientConfig:
  service: {name: misaki-controller, namespace: {{ .Release.Namespace }}, path: /inject, port: {{ .Values.service.webhookPort }}}
rules:
- {operations: [CREATE], apiGroups: [""], apiVersions: [v1], resources: [pods], scope: Namespaced}
{{- end -}}

{{- define "misaki-hub.labels" -}}
app.kubernetes.io/name: misaki-hub
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ .Chart.Name }}-{{ .Chart.Version | replace "+" "_" }}
{{- end -}}

{{- define "misaki-hub.selector" -}}
app.kubernetes.io/name: misaki-hub
app.kubernetes.io/component: hub
{{- end -}}

{{- define "misaki-hub.image" -}}
{{ .Values.image.repository }}:{{ .Values.image.tag | default .Chart.AppVersion }}
{{- end -}}

{{/* The names in the hub's certificate (--host), as a JSON list. */}}
{{- define "misaki-hub.hosts" -}}
{{- if .Values.hosts -}}
{{- toJson .Values.hosts -}}
{{- else -}}
{{- $ns := .Release.Namespace -}}
{{- list (printf "misaki-hub.%s.svc" $ns) (printf "misaki-hub.%s.svc.%s" $ns .Values.clusterDomain) (printf "misaki-hub.%s" $ns) "misaki-hub" "localhost" "127.0.0.1" | toJson -}}
{{- end -}}
{{- end -}}

{{/*
What a set of values must have, checked before anything renders. More
than one replica means one shared store, one set of signing keys and one
fleet CA; a replica with its own SQLite file, keys or CA would be a second
hub that vehicles and operators reach at random.
*/}}
{{- define "misaki-hub.validate" -}}
{{- $n := int .Values.replicas -}}
{{- if lt $n 0 -}}
{{- fail (printf "misaki-hub: replicas is %d; want 1 (0 stops the hub), or more with PostgreSQL" $n) -}}
{{- end -}}
{{- if gt $n 1 -}}
{{- if not .Values.database.existingSecret -}}
{{- fail (printf "misaki-hub: replicas: %d needs PostgreSQL: set database.existingSecret to a Secret with the postgres:// DSN (SQLite is a file on one pod's volume; a second replica would be a second hub)" $n) -}}
{{- end -}}
{{- if not .Values.keys.existingSecret -}}
{{- fail (printf "misaki-hub: replicas: %d needs keys.existingSecret: every replica must sign with the same keys (see keys in values.yaml)" $n) -}}
{{- end -}}
{{- if not .Values.ca.existingSecret -}}
{{- fail (printf "misaki-hub: replicas: %d needs ca.existingSecret: every replica must issue vehicle certificates from the same fleet CA" $n) -}}
{{- end -}}
{{- end -}}
{{- if and .Values.database.existingSecret (not .Values.database.existingSecretKey) -}}
{{- fail "misaki-hub: database.existingSecretKey is empty: name the key of database.existingSecret that holds the DSN" -}}
{{- end -}}
{{- end -}}

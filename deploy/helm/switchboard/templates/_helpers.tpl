{{/* The chart's name. */}}
{{- define "switchboard.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
The release's full name; node ids are <fullname>-<ordinal> and must fit
serve's --node-id ([a-z0-9-]{1,32}).
*/}}
{{- define "switchboard.fullname" -}}
{{- $name := "" }}
{{- if .Values.fullnameOverride }}
{{- $name = .Values.fullnameOverride }}
{{- else if contains (include "switchboard.name" .) .Release.Name }}
{{- $name = .Release.Name }}
{{- else }}
{{- $name = printf "%s-%s" .Release.Name (include "switchboard.name" .) }}
{{- end }}
{{- $name = $name | trunc 29 | trimSuffix "-" }}
{{- if not (regexMatch "^[a-z0-9-]+$" $name) }}
{{- fail (printf "the full name %q makes node ids outside [a-z0-9-]: set fullnameOverride" $name) }}
{{- end }}
{{- $name }}
{{- end }}

{{- define "switchboard.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
{{ include "switchboard.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end }}

{{- define "switchboard.selectorLabels" -}}
app.kubernetes.io/name: {{ include "switchboard.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: node
{{- end }}

{{- define "switchboard.haproxySelectorLabels" -}}
app.kubernetes.io/name: {{ include "switchboard.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: haproxy
{{- end }}

{{- define "switchboard.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "switchboard.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{- define "switchboard.secretName" -}}
{{- default (printf "%s-secret" (include "switchboard.fullname" .)) .Values.secret.existingSecret }}
{{- end }}

{{/* The headless Service of the nodes: stable DNS names for routes and HAProxy. */}}
{{- define "switchboard.headless" -}}
{{- printf "%s-nodes" (include "switchboard.fullname" .) }}
{{- end }}

{{/* Number of nodes. */}}
{{- define "switchboard.replicas" -}}
{{- if .Values.cluster.enabled }}{{ .Values.cluster.replicas }}{{ else }}1{{ end }}
{{- end }}

{{/* The DNS name of node $i: <fullname>-<i>.<headless>.<namespace>.svc.<domain> (HAProxy's resolver uses no search domains). */}}
{{- define "switchboard.nodeHost" -}}
{{- printf "%s-%d.%s.%s.svc.%s" (include "switchboard.fullname" .root) .i (include "switchboard.headless" .root) .root.Release.Namespace .root.Values.clusterDomain }}
{{- end }}

{{/* Where clients reach the relay: the HAProxy in cluster mode, else the node. */}}
{{- define "switchboard.frontService" -}}
{{- if and .Values.cluster.enabled .Values.cluster.haproxy.enabled }}
{{- printf "%s-haproxy" (include "switchboard.fullname" .) }}
{{- else }}
{{- include "switchboard.fullname" . }}
{{- end }}
{{- end }}

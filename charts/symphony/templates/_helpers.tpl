{{/* Name of the chart, overridable. */}}
{{- define "symphony.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* Release-qualified name; kept short because component suffixes are appended. */}}
{{- define "symphony.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 50 | trimSuffix "-" -}}
{{- else -}}
{{- $name := default .Chart.Name .Values.nameOverride -}}
{{- if contains $name .Release.Name -}}
{{- .Release.Name | trunc 50 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name $name | trunc 50 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{- define "symphony.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* Selector labels of one component: call with (dict "ctx" $ "component" "scheduler"). */}}
{{- define "symphony.selectorLabels" -}}
app.kubernetes.io/name: {{ include "symphony.name" .ctx }}
app.kubernetes.io/instance: {{ .ctx.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end -}}

{{/* Standard labels of every object of one component. */}}
{{- define "symphony.labels" -}}
helm.sh/chart: {{ include "symphony.chart" .ctx }}
{{ include "symphony.selectorLabels" . }}
app.kubernetes.io/version: {{ .ctx.Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .ctx.Release.Service }}
app.kubernetes.io/part-of: symphony
{{- end -}}

{{/* Image reference of a Symphony component: call with (dict "ctx" $ "image" .Values.scheduler.image). */}}
{{- define "symphony.image" -}}
{{- $tag := .image.tag | default .ctx.Chart.AppVersion -}}
{{- if .ctx.Values.global.imageRegistry -}}
{{- printf "%s/%s:%s" (trimSuffix "/" .ctx.Values.global.imageRegistry) .image.repository $tag -}}
{{- else -}}
{{- printf "%s:%s" .image.repository $tag -}}
{{- end -}}
{{- end -}}

{{- define "symphony.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "symphony.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- default "default" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{- define "symphony.schedulerName" -}}
{{- printf "%s-scheduler" (include "symphony.fullname" .) -}}
{{- end -}}

{{/* Service the node schedulers register through: it publishes the scheduler before it is
ready, because the scheduler only becomes ready once a node has registered. */}}
{{- define "symphony.schedulerInternalName" -}}
{{- printf "%s-scheduler-nodes" (include "symphony.fullname" .) -}}
{{- end -}}

{{/* "true" when ServiceMonitor/PodMonitor objects should be rendered for this mode. */}}
{{- define "symphony.monitorKind" -}}
{{- $mode := .Values.metrics.mode -}}
{{- if eq $mode "auto" -}}
{{- if .Capabilities.APIVersions.Has "monitoring.coreos.com/v1/ServiceMonitor" -}}serviceMonitor{{- else -}}annotations{{- end -}}
{{- else -}}
{{- $mode -}}
{{- end -}}
{{- end -}}

{{/* Pod annotations: Prometheus scrape annotations (when no operator monitor is used) plus the
user's own. Call with (dict "ctx" $ "port" 8080 "extra" .Values.x.podAnnotations). */}}
{{- define "symphony.podAnnotations" -}}
{{- $a := dict -}}
{{- if eq (include "symphony.monitorKind" .ctx) "annotations" -}}
{{- $_ := set $a "prometheus.io/scrape" "true" -}}
{{- $_ := set $a "prometheus.io/port" (toString .port) -}}
{{- $_ := set $a "prometheus.io/path" "/metrics" -}}
{{- end -}}
{{- range $k, $v := .extra -}}
{{- $_ := set $a $k $v -}}
{{- end -}}
{{- if $a -}}
{{- toYaml $a -}}
{{- end -}}
{{- end -}}

{{/* OpenTelemetry environment of a Symphony container: call with (dict "ctx" $ "service" "symphony-scheduler"). */}}
{{- define "symphony.otelEnv" -}}
- name: OTEL_SERVICE_NAME
  value: {{ .service }}
{{- with .ctx.Values.otel }}
{{- if .endpoint }}
- name: OTEL_EXPORTER_OTLP_ENDPOINT
  value: {{ .endpoint | quote }}
- name: OTEL_EXPORTER_OTLP_PROTOCOL
  value: grpc
- name: OTEL_TRACES_EXPORTER
  value: otlp
- name: OTEL_TRACES_SAMPLER
  value: parentbased_traceidratio
- name: OTEL_TRACES_SAMPLER_ARG
  value: {{ .samplingRatio | quote }}
{{- else }}
- name: OTEL_TRACES_EXPORTER
  value: none
{{- end }}
{{- $attrs := list (printf "service.namespace=%s" $.ctx.Release.Namespace) }}
{{- range $k, $v := .resourceAttributes }}
{{- $attrs = append $attrs (printf "%s=%s" $k $v) }}
{{- end }}
- name: OTEL_RESOURCE_ATTRIBUTES
  value: {{ join "," $attrs | quote }}
{{- end }}
{{- end -}}

{{/* Writable scratch space under a read-only root filesystem. */}}
{{- define "symphony.tmpVolume" -}}
- name: tmp
  emptyDir:
    sizeLimit: 1Gi
{{- end -}}

{{/* Health check of the vLLM sidecar from inside its container (it listens on localhost). */}}
{{- define "symphony.vllmHealthCommand" -}}
["python3", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:{{ . }}/health', timeout=8)"]
{{- end -}}

{{/* TLS flags of every Symphony process (mutual TLS; see symphony.security). */}}
{{- define "symphony.tlsArgs" -}}
{{- if .Values.tls.enabled }}
- --tls-cert
- /etc/symphony/tls/tls.crt
- --tls-key
- /etc/symphony/tls/tls.key
- --tls-ca
- /etc/symphony/tls/ca.crt
{{- with .Values.tls.serverName }}
- --tls-server-name
- {{ . | quote }}
{{- end }}
{{- end }}
{{- end -}}

{{- define "symphony.tlsMount" -}}
{{- if .Values.tls.enabled }}
- name: tls
  mountPath: /etc/symphony/tls
  readOnly: true
{{- end }}
{{- end -}}

{{- define "symphony.tlsVolume" -}}
{{- if .Values.tls.enabled }}
- name: tls
  secret:
    secretName: {{ required "tls.secretName is required when tls.enabled" .Values.tls.secretName }}
    defaultMode: 0440
{{- end }}
{{- end -}}

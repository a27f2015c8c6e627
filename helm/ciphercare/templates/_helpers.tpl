{{/* Names -------------------------------------------------------------------------------------------- */}}

{{- define "ciphercare.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "ciphercare.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- $name := default .Chart.Name .Values.nameOverride -}}
{{- if contains $name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{/* "ciphercare.component" (dict "ctx" $ "component" "api") -> <fullname>-api */}}
{{- define "ciphercare.component" -}}
{{- printf "%s-%s" (include "ciphercare.fullname" .ctx) .component | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "ciphercare.selectorLabels" -}}
app.kubernetes.io/name: {{ include "ciphercare.name" .ctx }}
app.kubernetes.io/instance: {{ .ctx.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end -}}

{{- define "ciphercare.labels" -}}
{{ include "ciphercare.selectorLabels" . }}
app.kubernetes.io/version: {{ .ctx.Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .ctx.Release.Service }}
app.kubernetes.io/part-of: ciphercare
helm.sh/chart: {{ printf "%s-%s" .ctx.Chart.Name .ctx.Chart.Version | replace "+" "_" }}
{{- with .ctx.Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end -}}

{{/* Selector of every pod of this release (NetworkPolicies). */}}
{{- define "ciphercare.releaseSelector" -}}
app.kubernetes.io/name: {{ include "ciphercare.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{/* "ciphercare.image" (dict "ctx" $ "component" "api") */}}
{{- define "ciphercare.image" -}}
{{- $img := .ctx.Values.image -}}
{{- $repo := printf "%s-%s" $img.repository .component -}}
{{- if $img.registry }}{{ $repo = printf "%s/%s" $img.registry $repo }}{{ end -}}
{{- if $img.digest -}}
{{- printf "%s@%s" $repo $img.digest -}}
{{- else -}}
{{- printf "%s:%s" $repo (default .ctx.Chart.AppVersion $img.tag) -}}
{{- end -}}
{{- end -}}

{{/* Secret names: the value, or <fullname>-<default suffix>. "ciphercare.secretName" (dict "ctx" $ "value" x "suffix" "kek") */}}
{{- define "ciphercare.secretName" -}}
{{- if .value -}}{{ .value }}{{- else -}}{{ include "ciphercare.component" (dict "ctx" .ctx "component" .suffix) }}{{- end -}}
{{- end -}}

{{- define "ciphercare.tlsSecretName" -}}
{{- $names := .ctx.Values.tls.secretNames -}}
{{- include "ciphercare.secretName" (dict "ctx" .ctx "value" (index $names .component) "suffix" (printf "%s-tls" .component)) -}}
{{- end -}}

{{/* The ledger gateway endpoint the API dials. */}}
{{- define "ciphercare.ledgerEndpoint" -}}
{{- if .Values.ledger.endpoint -}}
{{- .Values.ledger.endpoint -}}
{{- else -}}
{{- printf "%s:%d" (include "ciphercare.component" (dict "ctx" . "component" "ledger")) (int .Values.ledger.node.port) -}}
{{- end -}}
{{- end -}}

{{/* Security --------------------------------------------------------------------------------------------- */}}

{{- define "ciphercare.podSecurityContext" -}}
runAsNonRoot: true
runAsUser: {{ .Values.securityContext.runAsUser }}
runAsGroup: {{ .Values.securityContext.runAsGroup }}
fsGroup: {{ .Values.securityContext.fsGroup }}
fsGroupChangePolicy: OnRootMismatch
seccompProfile:
  type: RuntimeDefault
{{- end -}}

{{- define "ciphercare.containerSecurityContext" -}}
runAsNonRoot: true
runAsUser: {{ .Values.securityContext.runAsUser }}
runAsGroup: {{ .Values.securityContext.runAsGroup }}
allowPrivilegeEscalation: false
privileged: false
readOnlyRootFilesystem: true
capabilities:
  drop: ["ALL"]
seccompProfile:
  type: RuntimeDefault
{{- end -}}

{{/* Pod-level fields shared by every workload. "ciphercare.podCommon" (dict "ctx" $ "component" "api" "cfg" .Values.api) */}}
{{- define "ciphercare.podCommon" -}}
serviceAccountName: {{ include "ciphercare.component" (dict "ctx" .ctx "component" .component) }}
automountServiceAccountToken: false
enableServiceLinks: false
securityContext:
  {{- include "ciphercare.podSecurityContext" .ctx | nindent 2 }}
{{- with .ctx.Values.image.pullSecrets }}
imagePullSecrets:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .cfg.nodeSelector }}
nodeSelector:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .cfg.tolerations }}
tolerations:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .cfg.affinity }}
affinity:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- end -}}

{{/* Key files -------------------------------------------------------------------------------------------
The services refuse private keys that group or others can read (a readable KEK undoes every erasure), and
the kubelet makes Secret files group-readable for fsGroup. An init container therefore copies each key from
its read-only Secret mount into a memory-backed volume, mode 0600, owned by the service user.
"ciphercare.keysInit" (dict "ctx" $ "component" "api" "keys" (list (dict "volume" "kek" "file" "kek.key")))
*/}}
{{- define "ciphercare.keysInit" -}}
{{- $dest := .dest | default "/run/ciphercare/keys" -}}
- name: install-keys
  image: {{ include "ciphercare.image" (dict "ctx" .ctx "component" .component) }}
  imagePullPolicy: {{ .ctx.Values.image.pullPolicy }}
  command:
    - /bin/sh
    - -ec
    - |
      umask 077
      {{- range .keys }}
      {{- $dir := $dest }}
      {{- if .subdir }}
      {{- $dir = printf "%s/%s" $dest .subdir }}
      mkdir -p {{ $dir }}
      {{- end }}
      {{- $volume := .volume }}
      {{- range (.also | default list) }}
      cp /etc/ciphercare/secrets/{{ $volume }}/{{ . }} {{ $dir }}/{{ . }}
      {{- end }}
      cp /etc/ciphercare/secrets/{{ .volume }}/{{ .file }} {{ $dir }}/{{ .file }}
      chmod 0600 {{ $dir }}/{{ .file }}
      {{- end }}
      {{- range .copies }}
      mkdir -p {{ dir .to }}
      cp {{ .from }} {{ .to }}
      {{- end }}
  securityContext:
    {{- include "ciphercare.containerSecurityContext" .ctx | nindent 4 }}
  resources:
    requests: {cpu: 10m, memory: 16Mi}
    limits: {cpu: 100m, memory: 64Mi}
  volumeMounts:
    - name: {{ .destVolume | default "keys" }}
      mountPath: {{ $dest }}
    {{- range .extraMounts }}
    - name: {{ .name }}
      mountPath: {{ .mountPath }}
      {{- if .readOnly }}
      readOnly: true
      {{- end }}
    {{- end }}
    {{- range .keys }}
    - name: {{ .volume }}
      mountPath: /etc/ciphercare/secrets/{{ .volume }}
      readOnly: true
    {{- end }}
{{- end -}}

{{/* Secret volumes for "ciphercare.keysInit" keys: (dict "keys" (list (dict "volume" "kek" "secret" "x" "file" "kek.key"))) */}}
{{- define "ciphercare.keyVolumes" -}}
{{- if not .noMemoryVolume }}
- name: keys
  emptyDir:
    medium: Memory
    sizeLimit: 1Mi
{{- end }}
{{- range .keys }}
- name: {{ .volume }}
  secret:
    secretName: {{ .secret }}
    defaultMode: 0440
    items:
      {{- range (prepend (.also | default list) .file) }}
      - key: {{ . }}
        path: {{ . }}
      {{- end }}
{{- end }}
{{- end -}}

{{/* TLS of this component's own listener (settings tls_*; certificate files are reloaded when they change).
A client CA turns on mutual TLS. The pod's own certificate is always among the allowed client names, so
that its TLS probe (which presents it) is accepted. "ciphercare.tlsEnv" (dict "ctx" $ "component" "api") */}}
{{- define "ciphercare.tlsEnv" -}}
{{- $tls := .ctx.Values.tls -}}
{{- if $tls.enabled }}
{{- $own := include "ciphercare.component" (dict "ctx" .ctx "component" .component) }}
- name: CIPHERCARE_TLS_CERT_PATH
  value: /etc/ciphercare/tls/tls.crt
- name: CIPHERCARE_TLS_KEY_PATH
  value: /etc/ciphercare/tls/tls.key
- name: CIPHERCARE_TLS_CA_PATH
  value: /etc/ciphercare/tls/ca.crt
- name: CIPHERCARE_TLS_SERVER_NAME
  value: {{ $own | quote }}
{{- if $tls.requireClientCert }}
- name: CIPHERCARE_TLS_CLIENT_CA_PATH
  value: /etc/ciphercare/tls/ca.crt
{{- with $tls.allowedClientNames }}
- name: CIPHERCARE_TLS_CLIENT_ALLOWED_NAMES
  value: {{ append . $own | uniq | toJson | quote }}
{{- end }}
{{- end }}
{{- end }}
{{- end -}}

{{/* Prometheus /metrics (settings metrics_*) and, for the API only, tracing (settings tracing_*, off by default;
docs/OPERATIONS.md "Tracing"). */}}
{{- define "ciphercare.observabilityEnv" -}}
{{- if .ctx.Values.metrics.enabled }}
- name: CIPHERCARE_METRICS_ENABLED
  value: "true"
- name: CIPHERCARE_METRICS_HOST
  value: "0.0.0.0"
- name: CIPHERCARE_METRICS_PORT
  value: {{ .ctx.Values.metrics.port | quote }}
{{- else }}
- name: CIPHERCARE_METRICS_ENABLED
  value: "false"
{{- end }}
{{- $tracing := .ctx.Values.tracing }}
{{- if and $tracing.enabled (eq .component "api") }}
- name: CIPHERCARE_TRACING_ENABLED
  value: "true"
- name: CIPHERCARE_TRACING_EXPORTER
  value: {{ $tracing.exporter | quote }}
{{- if eq $tracing.exporter "otlp" }}
- name: CIPHERCARE_TRACING_ENDPOINT
  value: {{ $tracing.endpoint | quote }}
- name: CIPHERCARE_TRACING_OTLP_INSECURE
  value: {{ $tracing.otlpInsecure | quote }}
{{- else if $tracing.jsonlPath }}
- name: CIPHERCARE_TRACING_JSONL_PATH
  value: {{ $tracing.jsonlPath | quote }}
{{- end }}
- name: CIPHERCARE_TRACING_SERVICE_NAME
  value: {{ printf "%s-%s" $tracing.serviceName .component | quote }}
- name: CIPHERCARE_TRACING_SAMPLE_RATIO
  value: {{ $tracing.sampleRatio | quote }}
{{- end }}
{{- end -}}

{{/* Health probes on a gRPC port (grpc.health.v1). The kubelet's gRPC probe speaks plaintext only, so with
TLS the image's ciphercare-healthcheck runs instead, presenting the pod's own certificate.
"ciphercare.grpcProbe" (dict "ctx" $ "port" 50051 "period" 10 "failures" 3) */}}
{{- define "ciphercare.grpcProbe" -}}
{{- if .ctx.Values.tls.enabled }}
exec:
  command:
    - ciphercare-healthcheck
    - grpc
    - {{ printf "127.0.0.1:%d" (int .port) | quote }}
    - --tls-ca=/etc/ciphercare/tls/ca.crt
    - --tls-cert=/etc/ciphercare/tls/tls.crt
    - --tls-key=/etc/ciphercare/tls/tls.key
    - --server-name={{ .serverName }}
{{- else }}
grpc:
  port: {{ .port }}
{{- end }}
periodSeconds: {{ .period | default 10 }}
timeoutSeconds: 5
failureThreshold: {{ .failures | default 3 }}
{{- end -}}

{{- define "ciphercare.tlsVolume" -}}
{{- if .ctx.Values.tls.enabled }}
- name: tls
  secret:
    secretName: {{ include "ciphercare.tlsSecretName" (dict "ctx" .ctx "component" .component) }}
    defaultMode: 0440
{{- end }}
{{- end -}}

{{- define "ciphercare.tlsMount" -}}
{{- if .Values.tls.enabled }}
- name: tls
  mountPath: /etc/ciphercare/tls
  readOnly: true
{{- end }}
{{- end -}}

{{/* Checksum of the rendered ConfigMaps: pods roll when the settings, policy or profile change. */}}
{{- define "ciphercare.configChecksum" -}}
checksum/config: {{ include (print .Template.BasePath "/configmap.yaml") . | sha256sum }}
{{- end -}}

{{/* Egress to the trace collector when the API exports spans over OTLP (a NetworkPolicy egress rule). */}}
{{- define "ciphercare.tracingEgress" -}}
{{- if and .Values.tracing.enabled (eq .Values.tracing.exporter "otlp") .Values.tracing.collector }}
- to:
    {{- toYaml .Values.tracing.collector | nindent 4 }}
  ports:
    - {port: {{ .Values.tracing.collectorPort }}, protocol: TCP}
{{- end }}
{{- end -}}

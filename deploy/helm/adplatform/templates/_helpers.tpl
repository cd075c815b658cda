{{/*
Shared names, labels and pod fragments. Every service and every data-tier part is
rendered through these, so a fix here reaches all of them.
*/}}

{{- define "adplatform.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "adplatform.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 40 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 40 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 40 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{- define "adplatform.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Labels of every object; call with (dict "root" $ "component" "campaigns"). */}}
{{- define "adplatform.labels" -}}
helm.sh/chart: {{ include "adplatform.chart" .root }}
{{ include "adplatform.selectorLabels" . }}
app.kubernetes.io/version: {{ .root.Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .root.Release.Service }}
app.kubernetes.io/part-of: adplatform
{{- end }}

{{/* The labels that select one component's pods. */}}
{{- define "adplatform.selectorLabels" -}}
app.kubernetes.io/name: {{ include "adplatform.name" .root }}
app.kubernetes.io/instance: {{ .root.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end }}

{{/* A pod's labels: its selector labels, and the platform it belongs to (what the
alert scope and dashboards select on, whatever nameOverride says). */}}
{{- define "adplatform.podLabels" -}}
{{ include "adplatform.selectorLabels" . }}
app.kubernetes.io/part-of: adplatform
{{- end }}

{{/* Name of one component's objects: <fullname>-<component>. */}}
{{- define "adplatform.componentName" -}}
{{- printf "%s-%s" (include "adplatform.fullname" .root) .component | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "adplatform.image" -}}
{{- $image := .Values.image }}
{{- if $image.digest }}
{{- printf "%s@%s" $image.repository $image.digest }}
{{- else }}
{{- printf "%s:%s" $image.repository (default .Chart.AppVersion $image.tag) }}
{{- end }}
{{- end }}

{{/* Pod-level security context that satisfies Pod Security "restricted". */}}
{{- define "adplatform.podSecurityContext" -}}
runAsNonRoot: true
runAsUser: {{ .uid | default 10001 }}
runAsGroup: {{ .uid | default 10001 }}
fsGroup: {{ .uid | default 10001 }}
fsGroupChangePolicy: OnRootMismatch
seccompProfile:
  type: RuntimeDefault
{{- end }}

{{/* Container-level security context that satisfies Pod Security "restricted". */}}
{{- define "adplatform.containerSecurityContext" -}}
runAsNonRoot: true
runAsUser: {{ .uid | default 10001 }}
runAsGroup: {{ .uid | default 10001 }}
allowPrivilegeEscalation: false
privileged: false
readOnlyRootFilesystem: true
capabilities:
  drop: ["ALL"]
seccompProfile:
  type: RuntimeDefault
{{- end }}

{{/* Security context of every container Strimzi creates (Kafka, its init container, the
     topic and user operators, Kafka Exporter), set through Strimzi's container templates:
     Pod Security "restricted" plus a read-only root filesystem (Strimzi mounts /tmp as an
     emptyDir for that). No runAsUser: the Strimzi images run as their own non-root user. */}}
{{- define "adplatform.strimziContainerSecurityContext" -}}
runAsNonRoot: true
allowPrivilegeEscalation: false
privileged: false
readOnlyRootFilesystem: true
capabilities:
  drop: ["ALL"]
seccompProfile:
  type: RuntimeDefault
{{- end }}

{{/* Pod-level security context of the Strimzi pods. */}}
{{- define "adplatform.strimziPodSecurityContext" -}}
runAsNonRoot: true
seccompProfile:
  type: RuntimeDefault
{{- end }}

{{/* Spread one component's pods over nodes and zones, and keep two off one node when possible. */}}
{{- define "adplatform.spreading" -}}
affinity:
  podAntiAffinity:
    preferredDuringSchedulingIgnoredDuringExecution:
      - weight: 100
        podAffinityTerm:
          topologyKey: kubernetes.io/hostname
          labelSelector:
            matchLabels:
              {{- include "adplatform.selectorLabels" . | nindent 14 }}
      - weight: 50
        podAffinityTerm:
          topologyKey: topology.kubernetes.io/zone
          labelSelector:
            matchLabels:
              {{- include "adplatform.selectorLabels" . | nindent 14 }}
topologySpreadConstraints:
  - maxSkew: 1
    topologyKey: topology.kubernetes.io/zone
    whenUnsatisfiable: ScheduleAnyway
    labelSelector:
      matchLabels:
        {{- include "adplatform.selectorLabels" . | nindent 8 }}
    {{- if .rolling }}
    matchLabelKeys: [pod-template-hash]
    {{- end }}
  - maxSkew: 1
    topologyKey: kubernetes.io/hostname
    whenUnsatisfiable: ScheduleAnyway
    labelSelector:
      matchLabels:
        {{- include "adplatform.selectorLabels" . | nindent 8 }}
    {{- if .rolling }}
    matchLabelKeys: [pod-template-hash]
    {{- end }}
{{- end }}

{{/* The application Secret (existing or generated). */}}
{{- define "adplatform.secretName" -}}
{{- if .Values.secrets.existingSecret }}
{{- .Values.secrets.existingSecret }}
{{- else if .Values.secrets.generate }}
{{- printf "%s-secrets" (include "adplatform.fullname" .) }}
{{- else }}
{{- fail "secrets: set secrets.existingSecret to a Secret with ADMIN_API_KEY, INTERNAL_API_KEY, TRACKING_SECRET and REDIS_PASSWORD, or secrets.generate=true" }}
{{- end }}
{{- end }}

{{/* Names of the data-tier objects the chart creates. */}}
{{- define "adplatform.postgresCluster" -}}
{{- printf "%s-pg" (include "adplatform.fullname" .) }}
{{- end }}
{{- define "adplatform.kafkaCluster" -}}
{{- printf "%s-kafka" (include "adplatform.fullname" .) }}
{{- end }}
{{- define "adplatform.redisName" -}}
{{- printf "%s-redis" (include "adplatform.fullname" .) }}
{{- end }}

{{/* DATABASE_URL source: the CloudNativePG app Secret's uri (the -rw Service), or the external Secret. */}}
{{- define "adplatform.databaseUrlEnv" -}}
- name: DATABASE_URL
  valueFrom:
    secretKeyRef:
{{- if .Values.postgres.enabled }}
      name: {{ include "adplatform.postgresCluster" . }}-app
      key: uri
{{- else }}
      name: {{ required "postgres.external.existingSecret is required when postgres.enabled is false" .Values.postgres.external.existingSecret }}
      key: {{ .Values.postgres.external.uriKey }}
{{- end }}
{{- end }}

{{- define "adplatform.redisHost" -}}
{{- if .Values.redis.enabled }}
{{- include "adplatform.redisName" . }}
{{- else }}
{{- required "redis.external.host is required when redis.enabled is false" .Values.redis.external.host }}
{{- end }}
{{- end }}

{{- define "adplatform.kafkaBrokers" -}}
{{- if .Values.kafka.enabled }}
{{- printf "%s-kafka-bootstrap:9092" (include "adplatform.kafkaCluster" .) }}
{{- else }}
{{- required "kafka.external.brokers is required when kafka.enabled is false" .Values.kafka.external.brokers }}
{{- end }}
{{- end }}

{{/* Does any enabled service use a data-tier part? (dict "root" $ "part" "postgres") -> "true" or "" */}}
{{- define "adplatform.partUsed" -}}
{{- $used := "" }}
{{- range $name, $svc := .root.Values.services }}
{{- if and $svc.enabled (has $.part $svc.dependencies) }}{{ $used = "true" }}{{ end }}
{{- end }}
{{- $used }}
{{- end }}

{{/* The chart creates PostgreSQL itself: migrations then run after install (the database
     does not exist before), and before every upgrade. */}}
{{- define "adplatform.migrationHooks" -}}
{{- if .Values.postgres.enabled }}post-install,pre-upgrade{{ else }}pre-install,pre-upgrade{{ end }}
{{- end }}

{{/* Pods' /tmp: the root filesystem is read-only. */}}
{{- define "adplatform.tmpVolumeMount" -}}
- name: tmp
  mountPath: /tmp
{{- end }}
{{- define "adplatform.tmpVolume" -}}
- name: tmp
  emptyDir:
    sizeLimit: 64Mi
{{- end }}

{{/* A token-less ServiceAccount for a hook pod, created as part of the same hook (it
     must exist before a pre-install Job); (dict "root" $ "component" "migrate" "hook" "pre-install,pre-upgrade"). */}}
{{- define "adplatform.hookServiceAccount" -}}
apiVersion: v1
kind: ServiceAccount
metadata:
  name: {{ include "adplatform.componentName" . }}
  namespace: {{ .root.Release.Namespace }}
  labels:
    {{- include "adplatform.labels" . | nindent 4 }}
  annotations:
    helm.sh/hook: {{ .hook }}
    helm.sh/hook-weight: "-10"
    helm.sh/hook-delete-policy: before-hook-creation
automountServiceAccountToken: false
{{- end }}

{{/* Egress rule to one data-tier part: the chart's own pods, or the external endpoint
     (its CIDR when given, else any address) on its port; (dict "root" $ "part" "redis"). */}}
{{- define "adplatform.dataTierEgress" -}}
{{- $v := .root.Values }}
{{- if eq .part "postgres" }}
{{- if $v.postgres.enabled }}
- to:
    - podSelector:
        matchLabels:
          cnpg.io/cluster: {{ include "adplatform.postgresCluster" .root }}
  ports:
    - {protocol: TCP, port: 5432}
{{- else }}
- {{- with $v.postgres.external.cidr }}
  to:
    - ipBlock: {cidr: {{ . }}}
  {{- end }}
  ports:
    - {protocol: TCP, port: {{ $v.postgres.external.port }}}
{{- end }}
{{- else if eq .part "redis" }}
{{- if $v.redis.enabled }}
- to:
    - podSelector:
        matchLabels:
          {{- include "adplatform.selectorLabels" (dict "root" .root "component" "redis") | nindent 10 }}
  ports:
    - {protocol: TCP, port: {{ $v.redis.cluster.port }}}
{{- else }}
- {{- with $v.redis.external.cidr }}
  to:
    - ipBlock: {cidr: {{ . }}}
  {{- end }}
  ports:
    - {protocol: TCP, port: {{ $v.redis.external.port }}}
{{- end }}
{{- else if eq .part "kafka" }}
{{- if $v.kafka.enabled }}
- to:
    - podSelector:
        matchLabels:
          strimzi.io/cluster: {{ include "adplatform.kafkaCluster" .root }}
  ports:
    - {protocol: TCP, port: 9092}
{{- else }}
- {{- with $v.kafka.external.cidr }}
  to:
    - ipBlock: {cidr: {{ . }}}
  {{- end }}
  ports:
    - {protocol: TCP, port: {{ $v.kafka.external.port }}}
{{- end }}
{{- else }}
{{- fail (printf "unknown data-tier dependency %q (postgres, redis or kafka)" .part) }}
{{- end }}
{{- end }}

{{/* Egress to the Kubernetes API server, for operator-managed data-tier pods. */}}
{{- define "adplatform.apiServerEgress" -}}
{{- $api := .Values.networkPolicy.kubeApiServer }}
- {{- if $api.cidrs }}
  to:
    {{- range $api.cidrs }}
    - ipBlock: {cidr: {{ . }}}
    {{- end }}
  {{- end }}
  ports:
    {{- range $api.ports }}
    - {protocol: TCP, port: {{ . }}}
    {{- end }}
{{- end }}

{{/* The Redis StatefulSet pods' stable names, host:port, space separated. */}}
{{- define "adplatform.redisNodes" -}}
{{- $name := include "adplatform.redisName" . }}
{{- $nodes := list }}
{{- range $i := until (int .Values.redis.cluster.nodes) }}
{{- $nodes = append $nodes (printf "%s-%d.%s-headless.%s.svc:%v" $name $i $name $.Release.Namespace $.Values.redis.cluster.port) }}
{{- end }}
{{- join " " $nodes }}
{{- end }}

{{/* imagePullSecrets of the platform's pods, when any are configured. */}}
{{- define "adplatform.imagePullSecrets" -}}
{{- with .Values.imagePullSecrets }}
imagePullSecrets:
  {{- range . }}
  - name: {{ . }}
  {{- end }}
{{- end }}
{{- end }}

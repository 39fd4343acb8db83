{{/*
Names. Component names are kept to 46 characters so that a Deployment's pod names
(<name>-<hash>-<5>) stay within the 63 characters etcd names (node, gateway and coordinator ids)
allow.
*/}}
{{- define "moe.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "moe.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{/* A component's name: (dict "root" $ "component" "gateway") */}}
{{- define "moe.component" -}}
{{- $room := sub 45 (len .component) | int }}
{{- printf "%s-%s" (include "moe.fullname" .root | trunc $room | trimSuffix "-") .component }}
{{- end }}

{{- define "moe.gateway" -}}{{ include "moe.component" (dict "root" . "component" "gateway") }}{{- end }}
{{- define "moe.coordinator" -}}{{ include "moe.component" (dict "root" . "component" "coordinator") }}{{- end }}
{{- define "moe.expertNode" -}}{{ include "moe.component" (dict "root" . "component" "expert-node") }}{{- end }}
{{- define "moe.etcd" -}}{{ include "moe.component" (dict "root" . "component" "etcd") }}{{- end }}
{{- define "moe.etcdHeadless" -}}{{ include "moe.component" (dict "root" . "component" "etcd-peers") }}{{- end }}

{{- define "moe.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Labels: (dict "root" $ "component" "gateway") */}}
{{- define "moe.selectorLabels" -}}
app.kubernetes.io/name: {{ include "moe.name" .root }}
app.kubernetes.io/instance: {{ .root.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end }}

{{- define "moe.labels" -}}
helm.sh/chart: {{ include "moe.chart" .root }}
{{ include "moe.selectorLabels" . }}
app.kubernetes.io/version: {{ .root.Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .root.Release.Service }}
app.kubernetes.io/part-of: moe-cluster
{{- with .root.Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{- define "moe.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "moe.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/* The cluster's name in etcd. */}}
{{- define "moe.cluster" -}}
{{- default .Release.Name .Values.cluster }}
{{- end }}

{{/* The image of a component: (dict "root" $ "values" .Values.gateway "cuda" false) */}}
{{- define "moe.image" -}}
{{- $repository := default .root.Values.image.repository .values.image.repository }}
{{- $tag := .values.image.tag }}
{{- if not $tag }}
{{- $tag = default .root.Chart.AppVersion .root.Values.image.tag }}
{{- if .cuda }}
{{- $tag = printf "%s%s" $tag .root.Values.image.cudaTagSuffix }}
{{- end }}
{{- end }}
{{- printf "%s:%s" $repository $tag }}
{{- end }}

{{/* A listen address on every interface of the pod's IP family. */}}
{{- define "moe.listen" -}}
{{- if eq .root.Values.ipFamily "IPv6" }}
{{- printf "[::]:%d" (int .port) }}
{{- else }}
{{- printf "0.0.0.0:%d" (int .port) }}
{{- end }}
{{- end }}

{{/* The etcd client URLs, comma-separated: every bundled member, or the external list. */}}
{{- define "moe.etcdEndpoints" -}}
{{- if .Values.etcd.enabled }}
{{- $etcd := include "moe.etcd" . }}
{{- $peers := include "moe.etcdHeadless" . }}
{{- $urls := list }}
{{- range $i := until (int .Values.etcd.replicas) }}
{{- $urls = append $urls (printf "http://%s-%d.%s.%s.svc.%s:2379" $etcd $i $peers $.Release.Namespace $.Values.clusterDomain) }}
{{- end }}
{{- join "," $urls }}
{{- else }}
{{- if not .Values.etcd.externalEndpoints }}
{{- fail "etcd.enabled is false: set etcd.externalEndpoints to the external etcd's client URLs" }}
{{- end }}
{{- join "," .Values.etcd.externalEndpoints }}
{{- end }}
{{- end }}

{{/* The checkpoint's path inside the containers. */}}
{{- define "moe.modelPath" -}}
{{- if .Values.model.subPath }}
{{- printf "/model/%s" (trimPrefix "/" .Values.model.subPath) }}
{{- else }}
{{- print "/model" }}
{{- end }}
{{- end }}

{{/* The checkpoint's volume. */}}
{{- define "moe.modelVolume" -}}
- name: model
{{- if eq .Values.model.source "pvc" }}
  persistentVolumeClaim:
    claimName: {{ required "model.pvc.claimName is required with model.source pvc" .Values.model.pvc.claimName }}
    readOnly: true
{{- else }}
  hostPath:
    path: {{ required "model.hostPath.path is required with model.source hostPath" .Values.model.hostPath.path }}
    type: {{ .Values.model.hostPath.type }}
{{- end }}
{{- end }}

{{/* Configuration every server shares, as ConfigMap data. */}}
{{- define "moe.commonConfig" -}}
MOE_CLUSTER: {{ include "moe.cluster" . | quote }}
MOE_ETCD: {{ include "moe.etcdEndpoints" . | quote }}
MOE_ETCD_TIMEOUT_SECONDS: {{ .Values.etcdTimeoutSeconds | int64 | quote }}
RUST_LOG: {{ .Values.observability.logLevel | quote }}
{{- if .Values.tls.enabled }}
MOE_TLS_CERT: /etc/moe/tls/tls.crt
MOE_TLS_KEY: /etc/moe/tls/tls.key
MOE_TLS_CA: /etc/moe/tls/ca.crt
{{- end }}
{{- if .Values.tls.etcd.enabled }}
MOE_ETCD_CERT: /etc/moe/etcd-tls/tls.crt
MOE_ETCD_KEY: /etc/moe/etcd-tls/tls.key
MOE_ETCD_CA: /etc/moe/etcd-tls/ca.crt
{{- end }}
{{- with .Values.observability.otlp.endpoint }}
OTEL_EXPORTER_OTLP_ENDPOINT: {{ . | quote }}
{{- end }}
{{- end }}

{{/* Environment entries every server shares: the pod's identity and the trace resource. */}}
{{- define "moe.podEnv" -}}
- name: POD_NAME
  valueFrom:
    fieldRef:
      fieldPath: metadata.name
- name: POD_NAMESPACE
  valueFrom:
    fieldRef:
      fieldPath: metadata.namespace
{{- if .Values.observability.otlp.endpoint }}
{{- $attributes := "k8s.pod.name=$(POD_NAME),k8s.namespace.name=$(POD_NAMESPACE),service.instance.id=$(POD_NAME)" }}
{{- with .Values.observability.otlp.resourceAttributes }}
{{- $attributes = printf "%s,%s" $attributes . }}
{{- end }}
- name: OTEL_RESOURCE_ATTRIBUTES
  value: {{ $attributes | quote }}
{{- end }}
{{- end }}

{{/* Pod-level settings every pod shares. */}}
{{- define "moe.podCommon" -}}
serviceAccountName: {{ include "moe.serviceAccountName" . }}
automountServiceAccountToken: false
# No <SERVICE>_SERVICE_HOST variables: a Service named moe-* would otherwise put MOE_* variables
# the binaries do not read into every container.
enableServiceLinks: false
securityContext:
  {{- toYaml .Values.podSecurityContext | nindent 2 }}
{{- with .Values.imagePullSecrets }}
imagePullSecrets:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- end }}

{{/* Scheduling: (dict "values" .Values.gateway) */}}
{{- define "moe.scheduling" -}}
{{- with .values.priorityClassName }}
priorityClassName: {{ . }}
{{- end }}
{{- with .values.nodeSelector }}
nodeSelector:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .values.tolerations }}
tolerations:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .values.affinity }}
affinity:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- end }}

{{/* Spread a component's pods over machines unless told otherwise: (dict "root" $ "values" .Values.gateway "component" "gateway") */}}
{{- define "moe.spread" -}}
topologySpreadConstraints:
{{- if .values.topologySpreadConstraints }}
  {{- toYaml .values.topologySpreadConstraints | nindent 2 }}
{{- else }}
  - maxSkew: 1
    topologyKey: kubernetes.io/hostname
    whenUnsatisfiable: ScheduleAnyway
    labelSelector:
      matchLabels:
        {{- include "moe.selectorLabels" (dict "root" .root "component" .component) | nindent 8 }}
{{- end }}
{{- end }}

{{/* A PodDisruptionBudget: (dict "root" $ "values" .Values.gateway "component" "gateway" "name" "...") */}}
{{- define "moe.pdb" -}}
{{- if .values.pdb.enabled }}
apiVersion: policy/v1
kind: PodDisruptionBudget
metadata:
  name: {{ .name }}
  namespace: {{ .root.Release.Namespace }}
  labels:
    {{- include "moe.labels" (dict "root" .root "component" .component) | nindent 4 }}
spec:
  maxUnavailable: {{ .values.pdb.maxUnavailable }}
  # A pod that is not ready does not hold up a drain.
  unhealthyPodEvictionPolicy: AlwaysAllow
  selector:
    matchLabels:
      {{- include "moe.selectorLabels" (dict "root" .root "component" .component) | nindent 6 }}
{{- end }}
{{- end }}

{{/* Egress every component needs under networkPolicy.restrictEgress: DNS, etcd, OTLP. */}}
{{- define "moe.commonEgress" -}}
- ports:
    - protocol: UDP
      port: 53
    - protocol: TCP
      port: 53
{{- if .Values.etcd.enabled }}
- to:
    - podSelector:
        matchLabels:
          {{- include "moe.selectorLabels" (dict "root" . "component" "etcd") | nindent 10 }}
  ports:
    - protocol: TCP
      port: 2379
{{- else }}
- ports:
    - protocol: TCP
      port: {{ .Values.networkPolicy.externalEtcdPort }}
  {{- with .Values.networkPolicy.externalEtcdTo }}
  to:
    {{- toYaml . | nindent 4 }}
  {{- end }}
{{- end }}
{{- if .Values.observability.otlp.endpoint }}
- ports:
    - protocol: TCP
      port: {{ .Values.networkPolicy.otlpPort }}
  {{- with .Values.networkPolicy.otlpTo }}
  to:
    {{- toYaml . | nindent 4 }}
  {{- end }}
{{- end }}
{{- with .Values.networkPolicy.extraEgress }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{/* Volumes every server pod has: the checkpoint, a small writable /tmp and the TLS Secrets. */}}
{{- define "moe.serverVolumes" -}}
{{ include "moe.modelVolume" . }}
- name: tmp
  emptyDir:
    sizeLimit: 64Mi
{{- if .Values.tls.enabled }}
- name: tls
  secret:
    secretName: {{ required "tls.enabled needs tls.secretName" .Values.tls.secretName }}
{{- end }}
{{- if .Values.tls.etcd.enabled }}
{{- if .Values.etcd.enabled }}
{{- fail "tls.etcd is for an external etcd: set etcd.enabled false and https:// etcd.externalEndpoints" }}
{{- end }}
- name: etcd-tls
  secret:
    secretName: {{ required "tls.etcd.enabled needs tls.etcd.secretName" .Values.tls.etcd.secretName }}
{{- end }}
{{- end }}

{{- define "moe.serverVolumeMounts" -}}
- name: model
  mountPath: /model
  readOnly: true
- name: tmp
  mountPath: /tmp
{{- if .Values.tls.enabled }}
- name: tls
  mountPath: /etc/moe/tls
  readOnly: true
{{- end }}
{{- if .Values.tls.etcd.enabled }}
- name: etcd-tls
  mountPath: /etc/moe/etcd-tls
  readOnly: true
{{- end }}
{{- end }}

{{/* A gRPC probe on `port` (for `service` when given), or a TCP one with TLS, which
Kubernetes' gRPC probes do not speak. */}}
{{- define "moe.grpcProbe" -}}
{{- if .root.Values.tls.enabled }}
tcpSocket:
  port: {{ .port }}
{{- else }}
grpc:
  port: {{ .port }}
  {{- with .service }}
  service: {{ . }}
  {{- end }}
{{- end }}
{{- end }}

{{/*
Names, labels and the shared pod template of the distil chart.
*/}}

{{- define "distil.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Room is left for the "-canary" / "-engines-<version>-<hash>" suffixes. */}}
{{- define "distil.fullname" -}}
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

{{- define "distil.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
In Flagger mode the name label is the release's full name: Flagger's Services select on it alone
(suffixed -primary for the primary), so two releases in one namespace must not share it.
*/}}
{{- define "distil.selectorLabels" -}}
app.kubernetes.io/name: {{ if .Values.canary.flagger.enabled }}{{ include "distil.fullname" . }}{{ else }}{{ include "distil.name" . }}{{ end }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "distil.labels" -}}
helm.sh/chart: {{ include "distil.chart" . }}
{{ include "distil.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: distil
{{- end }}

{{/* Selector of one track's serving pods: (dict "root" $ "track" "stable"). */}}
{{- define "distil.trackSelectorLabels" -}}
{{ include "distil.selectorLabels" .root }}
app.kubernetes.io/component: server
distil/track: {{ .track }}
{{- end }}

{{/*
Percent of traffic for the canary, for the HTTPRoute and the GRPCRoute alike. A weight on a canary with
no ready pod sends that share nowhere (the gateway answers 500), and canary pods may wait up to
engineBuild.waitTimeoutSeconds for their engines. Against a cluster (lookup answers), a weight is
refused until the canary Deployment has a ready pod; `helm template` cannot look and renders it.
*/}}
{{- define "distil.canaryWeight" -}}
{{- $weight := ternary (int .Values.canary.weight) 0 .Values.canary.enabled }}
{{- if and (gt $weight 0) (lookup "v1" "Namespace" "" .Release.Namespace) }}
{{- $name := include "distil.serviceName" (dict "root" . "track" "canary") }}
{{- $deployment := lookup "apps/v1" "Deployment" .Release.Namespace $name }}
{{- $ready := 0 }}
{{- if $deployment }}{{ $ready = int (default 0 $deployment.status.readyReplicas) }}{{ end }}
{{- if lt $ready 1 }}
{{- fail (printf "canary.weight=%d but Deployment %s has no ready pod: upgrade with canary.weight=0 first, wait for `kubectl -n %s rollout status deployment/%s`, then set the weight" $weight $name .Release.Namespace $name) }}
{{- end }}
{{- end }}
{{- $weight }}
{{- end }}

{{- define "distil.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "distil.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{- define "distil.claimName" -}}
{{- default (printf "%s-models" (include "distil.fullname" .)) .Values.modelRepository.pvc.existingClaim }}
{{- end }}

{{/* Service name of a track: the stable Service carries the release name, the canary a suffix. */}}
{{- define "distil.serviceName" -}}
{{- if eq .track "stable" }}{{ include "distil.fullname" .root }}{{ else }}{{ include "distil.fullname" .root }}-{{ .track }}{{ end }}
{{- end }}

{{/*
The tracks to deploy, as a YAML list: stable always, canary when enabled.
*/}}
{{- define "distil.tracks" -}}
- name: stable
  version: {{ .Values.stable.modelVersion | quote }}
  replicas: {{ .Values.stable.replicas }}
  imageTag: {{ .Values.image.tag | quote }}
  imageDigest: {{ .Values.image.digest | quote }}
  repositorySha256: {{ .Values.stable.repositorySha256 | quote }}
{{- if .Values.canary.enabled }}
- name: canary
  version: {{ .Values.canary.modelVersion | quote }}
  replicas: {{ .Values.canary.replicas }}
  imageTag: {{ default .Values.image.tag .Values.canary.imageTag | quote }}
  imageDigest: {{ ternary .Values.canary.imageDigest .Values.image.digest (ne .Values.canary.imageTag "") | quote }}
  repositorySha256: {{ .Values.canary.repositorySha256 | quote }}
{{- end }}
{{- end }}

{{/*
The serving image of a track: (dict "root" $ "imageTag" ... "imageDigest" ...); a digest pins the exact image.
*/}}
{{- define "distil.image" -}}
{{ .root.Values.image.repository }}:{{ .imageTag }}{{ with .imageDigest }}@{{ . }}{{ end }}
{{- end }}

{{/*
The APIs Triton answers only with the admin key, on HTTP and gRPC: the one list of
distil/model_repository/access.py (RESTRICTED_APIS), which a chart test compares with this.
*/}}
{{- define "distil.restrictedApis" -}}
model-repository,model-config,shared-memory,statistics,trace,logging
{{- end }}

{{- define "distil.adminKeySecret" -}}
{{- default (printf "%s-admin-key" (include "distil.fullname" .)) .Values.triton.adminKey.existingSecret }}
{{- end }}

{{/*
The generated admin key: the one already in the cluster's Secret (kept across upgrades), else a new
random one, decided once per render so the Secret and the pods' checksum annotation agree.
*/}}
{{- define "distil.generatedAdminKey" -}}
{{- if not (hasKey .Values.triton.adminKey "_generated") }}
{{- $existing := lookup "v1" "Secret" .Release.Namespace (include "distil.adminKeySecret" .) }}
{{- $key := "" }}
{{- if and $existing $existing.data (hasKey $existing.data .Values.triton.adminKey.secretKey) }}
{{- $key = index $existing.data .Values.triton.adminKey.secretKey | b64dec }}
{{- else }}
{{- $key = randAlphaNum 48 }}
{{- end }}
{{- $_ := set .Values.triton.adminKey "_generated" $key }}
{{- end }}
{{- .Values.triton.adminKey._generated }}
{{- end }}

{{/* Where Triton reads the repository of one model version. */}}
{{- define "distil.repositoryPath" -}}
{{- if eq .root.Values.modelRepository.source "objectStore" -}}
{{ .root.Values.modelRepository.objectStore.uri }}/{{ .version }}/repository
{{- else -}}
/models/repository
{{- end }}
{{- end }}

{{/*
Identity of an engine build: image, GPU type and model version. A change to any of them names a new
Job and a new completion marker, so stale plans are never taken for fresh ones.
*/}}
{{- define "distil.engineHash" -}}
{{- printf "%s:%s|%s|%s" .root.Values.image.repository .imageTag .root.Values.gpu.product .version | sha256sum | trunc 10 }}
{{- end }}

{{- define "distil.engineJobName" -}}
{{ include "distil.fullname" .root }}-engines-{{ include "distil.engineHash" . }}
{{- end }}

{{/*
Written by the engine Job after its gated build replaced the repository, inside that repository: a
later build (another image, a rollback) swaps the whole tree and the marker with it, so a marker is
never found beside plans it does not describe.
*/}}
{{- define "distil.engineMarker" -}}
{{ include "distil.repositoryPath" . }}/.distil-engines-{{ include "distil.engineHash" . }}
{{- end }}

{{/* Written by the engine Job when its build failed, with the reason; the repository was not switched. */}}
{{- define "distil.engineFailure" -}}
/models/.distil-engines-{{ include "distil.engineHash" . }}.failed
{{- end }}


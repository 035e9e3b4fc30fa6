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

{{/* Fail early, with the value to change, on combinations that would deploy something broken. */}}
{{- define "distil.validate" -}}
{{- $v := .Values }}
{{- if and $v.canary.enabled (not $v.canary.modelVersion) }}
{{- fail "canary.enabled needs canary.modelVersion: the model version the canary serves" }}
{{- end }}
{{- if and $v.canary.enabled (eq $v.canary.modelVersion $v.stable.modelVersion) }}
{{- fail (printf "canary.modelVersion (%s) equals stable.modelVersion: a canary must serve another version" $v.canary.modelVersion) }}
{{- end }}
{{- if and (not $v.canary.enabled) (gt (int $v.canary.weight) 0) }}
{{- fail "canary.weight > 0 but canary.enabled is false: enable the canary or set canary.weight=0" }}
{{- end }}
{{- if and $v.canary.flagger.enabled $v.canary.enabled }}
{{- fail "canary.flagger.enabled: Flagger makes the canary from the stable Deployment; set canary.enabled=false and roll out a new stable.modelVersion" }}
{{- end }}
{{- if and $v.canary.flagger.enabled $v.httpRoute.enabled }}
{{- fail "canary.flagger.enabled: Flagger writes its own HTTPRoute; set httpRoute.enabled=false" }}
{{- end }}
{{- if and $v.canary.flagger.enabled $v.grpcRoute.enabled }}
{{- fail "canary.flagger.enabled: Flagger shifts HTTP traffic only; set grpcRoute.enabled=false" }}
{{- end }}
{{- if and $v.httpRoute.enabled (not $v.httpRoute.parentRefs) }}
{{- fail "httpRoute.enabled needs httpRoute.parentRefs: the gateway it attaches to (the NetworkPolicy admits that gateway's namespace)" }}
{{- end }}
{{- if and $v.grpcRoute.enabled (not (or $v.grpcRoute.parentRefs $v.httpRoute.parentRefs)) }}
{{- fail "grpcRoute.enabled needs grpcRoute.parentRefs (or httpRoute.parentRefs): the gateway it attaches to" }}
{{- end }}
{{- if and $v.canary.flagger.enabled (not $v.canary.flagger.gatewayRefs) }}
{{- fail "canary.flagger.enabled needs canary.flagger.gatewayRefs: the gateway Flagger's route attaches to" }}
{{- end }}
{{- if $v.grpcRoute.enabled }}
{{- if not $v.grpcRoute.hostnames }}
{{- fail "grpcRoute.enabled needs grpcRoute.hostnames: a GRPCRoute may not share a hostname with the HTTPRoute on one listener" }}
{{- end }}
{{- range $v.grpcRoute.hostnames }}
{{- if and $v.httpRoute.enabled (has . $v.httpRoute.hostnames) }}
{{- fail (printf "grpcRoute.hostnames and httpRoute.hostnames share %s: Gateway API rejects a GRPCRoute whose hostname an HTTPRoute on the same listener uses; give gRPC its own hostname" .) }}
{{- end }}
{{- end }}
{{- end }}
{{- if and $v.canary.flagger.enabled $v.engineBuild.enabled }}
{{- fail "canary.flagger.enabled with engineBuild.enabled is not supported: build the engines first" }}
{{- end }}
{{- if le (int $v.terminationGracePeriodSeconds) (add $v.preStopSleepSeconds $v.triton.exitTimeoutSeconds | int) }}
{{- fail (printf "terminationGracePeriodSeconds (%d) must exceed preStopSleepSeconds + triton.exitTimeoutSeconds (%d)" (int $v.terminationGracePeriodSeconds) (add $v.preStopSleepSeconds $v.triton.exitTimeoutSeconds | int)) }}
{{- end }}
{{- if and (ne $v.modelRepository.source "pvc") (not $v.modelRepository.objectStore.uri) }}
{{- fail (printf "modelRepository.source=%s needs modelRepository.objectStore.uri (s3://... or gs://...)" $v.modelRepository.source) }}
{{- end }}
{{- if and (eq $v.modelRepository.source "pvc") (not $v.modelRepository.pvc.create) (not $v.modelRepository.pvc.existingClaim) }}
{{- fail "modelRepository.pvc: set create=true or name an existingClaim" }}
{{- end }}
{{- if $v.engineBuild.enabled }}
{{- if ne $v.modelRepository.source "pvc" }}
{{- fail "engineBuild.enabled writes plans into the claim: it needs modelRepository.source=pvc" }}
{{- end }}
{{- if not $v.gpu.enabled }}
{{- fail "engineBuild.enabled builds TensorRT plans on a GPU: it needs gpu.enabled=true" }}
{{- end }}
{{- if not $v.gpu.product }}
{{- fail "engineBuild.enabled needs gpu.product: plans must be built on the GPU type that serves them" }}
{{- end }}
{{- end }}
{{- range $tag := list $v.image.tag (ternary $v.canary.imageTag "" $v.canary.enabled) }}
{{- $release := regexFind "^[0-9]{2}\\.[0-9]{2}" $tag }}
{{- if and $release (not $v.image.allowUnpatchedTriton) (lt (int (replace "." "" $release)) 2607) }}
{{- fail (printf "image tag %s is an NGC Triton release older than 26.07, which NVIDIA's security bulletins list as open to unauthenticated remote code execution and denial of service (README, Security); build the image FROM 26.10-py3, or set image.allowUnpatchedTriton=true to deploy it anyway" $tag) }}
{{- end }}
{{- end }}
{{- if and $v.engineBuild.enabled (or $v.stable.repositorySha256 $v.canary.repositorySha256) }}
{{- fail "repositorySha256 pins the distil.json a build printed, but engineBuild rewrites distil.json in the cluster: leave repositorySha256 empty with engineBuild (the files are still checked against distil.json)" }}
{{- end }}
{{- if $v.capacityTest.enabled }}
{{- $c := $v.capacityTest }}
{{- if not $c.runId }}
{{- fail "capacityTest.enabled needs capacityTest.runId: each run is a deliberate new name (Jobs are immutable), and an upgrade that keeps it enabled starts no new test by itself. Set capacityTest.enabled=false again afterwards" }}
{{- end }}
{{- $routed := or $v.httpRoute.enabled $v.grpcRoute.enabled $v.canary.flagger.enabled }}
{{- if and $routed (not $c.allowLiveTraffic) }}
{{- fail "capacityTest on a release the gateway routes would saturate a replica serving live traffic, and count that traffic in its figures: install a release of its own for the test (docs/deploy.md, \"Capacity test in the cluster\"), or set capacityTest.allowLiveTraffic=true" }}
{{- end }}
{{- $levels := len (splitList "," $c.levels) }}
{{- $needed := add (mul $levels (int $c.stepDurationSeconds)) (int $c.workersWaitSeconds) 300 }}
{{- if lt (int $c.activeDeadlineSeconds) $needed }}
{{- fail (printf "capacityTest.activeDeadlineSeconds (%d) is shorter than the run: %d levels × %ds + %ds for the workers + 300s; raise it to at least %d" (int $c.activeDeadlineSeconds) $levels (int $c.stepDurationSeconds) (int $c.workersWaitSeconds) $needed) }}
{{- end }}
{{- if and (eq $v.capacityTest.track "canary") (not $v.canary.enabled) }}
{{- fail "capacityTest.track=canary needs canary.enabled" }}
{{- end }}
{{- $replicas := ternary (int $v.canary.replicas) (int $v.stable.replicas) (eq $v.capacityTest.track "canary") }}
{{- if and $v.capacityTest.scrapeMetrics (or $v.autoscaling.enabled (gt $replicas 1)) }}
{{- fail (printf "capacityTest.scrapeMetrics reads /metrics through the %s Service, which balances over its pods: test a track of one replica (replicas=1, autoscaling off), or set capacityTest.scrapeMetrics=false" $v.capacityTest.track) }}
{{- end }}
{{- end }}
{{- if $v.autoscaling.enabled }}
{{- if gt (int $v.autoscaling.minReplicas) (int $v.autoscaling.maxReplicas) }}
{{- fail (printf "autoscaling.minReplicas (%d) exceeds autoscaling.maxReplicas (%d)" (int $v.autoscaling.minReplicas) (int $v.autoscaling.maxReplicas)) }}
{{- end }}
{{- if and (eq $v.autoscaling.metric.type "gpuUtilization") (not $v.gpu.enabled) }}
{{- fail "autoscaling.metric.type=gpuUtilization needs gpu.enabled=true; use cpu on the CPU-only profile" }}
{{- end }}
{{- end }}
{{- end }}

{{- define "distil.containerSecurityContext" -}}
{{ toYaml .Values.securityContext }}
{{- end }}

{{/* Node selection and tolerations shared by serving pods and the engine build Job. */}}
{{- define "distil.scheduling" -}}
{{- $v := .Values }}
{{- $nodeSelector := dict }}
{{- if $v.gpu.enabled }}
{{- if $v.gpu.product }}
{{- $_ := set $nodeSelector "nvidia.com/gpu.product" $v.gpu.product }}
{{- else }}
{{- $_ := set $nodeSelector "nvidia.com/gpu.present" "true" }}
{{- end }}
{{- end }}
{{- $nodeSelector = merge (deepCopy $v.nodeSelector) $nodeSelector }}
{{- with $nodeSelector }}
nodeSelector:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- $tolerations := $v.tolerations }}
{{- if $v.gpu.enabled }}
{{- $tolerations = concat $v.gpu.tolerations $v.tolerations }}
{{- end }}
{{- with $tolerations }}
tolerations:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with $v.affinity }}
affinity:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- end }}

{{/*
The exec probe: one real inference through the ensemble (distil.model_repository.probe, stdlib only).
*/}}
{{- define "distil.inferenceProbe" -}}
{{- $p := .Values.probes.inference -}}
["python3", "-m", "distil.model_repository.probe", "--port", "{{ .Values.service.ports.http }}", "--model", {{ $p.model | quote }}, "--timeout", "{{ $p.requestTimeoutSeconds }}"]
{{- end }}

{{/*
Pod template of one serving track: (dict "root" $ "track" $track) where $track comes from distil.tracks.
*/}}
{{- define "distil.podTemplate" -}}
{{- $root := .root }}
{{- $v := $root.Values }}
{{- $track := .track }}
{{- $ctx := dict "root" $root "version" $track.version "imageTag" $track.imageTag }}
{{- $image := include "distil.image" (dict "root" $root "imageTag" $track.imageTag "imageDigest" $track.imageDigest) }}
{{- $source := $v.modelRepository.source }}
{{- $verify := and $v.modelRepository.verify (ne $source "objectStore") }}
metadata:
  labels:
    {{- include "distil.trackSelectorLabels" (dict "root" $root "track" $track.name) | nindent 4 }}
    distil/model-version: {{ $track.version | quote }}
    {{- with $v.podLabels }}
    {{- toYaml . | nindent 4 }}
    {{- end }}
  annotations:
    distil/model-version: {{ $track.version | quote }}
    distil/model-repository: {{ include "distil.repositoryPath" $ctx | quote }}
    {{- if not $v.triton.adminKey.existingSecret }}
    # A new generated admin key (the Secret deleted, then an upgrade) rolls the pods onto it.
    distil/admin-key-sha256: {{ include "distil.generatedAdminKey" $root | sha256sum | quote }}
    {{- end }}
    {{- if eq $source "initCopy" }}
    # EKS: the workload identity (IRSA) goes to the container that copies from the object store, not to
    # Triton, which faces the clients.
    eks.amazonaws.com/skip-containers: "triton,wait-for-engines,verify-repository"
    {{- end }}
    {{- with $v.podAnnotations }}
    {{- toYaml . | nindent 4 }}
    {{- end }}
spec:
  serviceAccountName: {{ include "distil.serviceAccountName" $root }}
  automountServiceAccountToken: {{ $v.serviceAccount.automountToken }}
  {{- with $v.imagePullSecrets }}
  imagePullSecrets:
    {{- range . }}
    - name: {{ if kindIs "string" . }}{{ . }}{{ else }}{{ .name }}{{ end }}
    {{- end }}
  {{- end }}
  {{- with $v.priorityClassName }}
  priorityClassName: {{ . }}
  {{- end }}
  terminationGracePeriodSeconds: {{ $v.terminationGracePeriodSeconds }}
  securityContext:
    {{- toYaml $v.podSecurityContext | nindent 4 }}
  {{- include "distil.scheduling" $root | nindent 2 }}
  {{- /*
  Replicas of a track spread over nodes and zones (soft), so one node's loss takes one replica, as
  the PodDisruptionBudget assumes. Selected without app.kubernetes.io/name, which Flagger rewrites on
  its primary copy.
  */}}
  {{- $spread := $v.topologySpreadConstraints }}
  {{- if and (not $spread) $v.spreadAcrossNodes }}
  {{- $match := dict "app.kubernetes.io/instance" $root.Release.Name "app.kubernetes.io/component" "server" "distil/track" $track.name }}
  {{- $spread = list }}
  {{- range $key := list "kubernetes.io/hostname" "topology.kubernetes.io/zone" }}
  {{- $spread = append $spread (dict "maxSkew" 1 "topologyKey" $key "whenUnsatisfiable" "ScheduleAnyway" "labelSelector" (dict "matchLabels" $match)) }}
  {{- end }}
  {{- end }}
  {{- with $spread }}
  topologySpreadConstraints:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  {{- if or $v.engineBuild.enabled (eq $source "initCopy") $verify }}
  initContainers:
    {{- if $v.engineBuild.enabled }}
    - name: wait-for-engines
      image: {{ $image | quote }}
      imagePullPolicy: {{ $v.image.pullPolicy }}
      # Triton starts only on a repository whose plans passed the accuracy gate: the engine Job writes
      # MARKER after `distil build-engines --from-onnx` switched the repository, FAILED if it did not.
      command:
        - /bin/sh
        - -c
        - |
          deadline=$(( $(date +%s) + {{ $v.engineBuild.waitTimeoutSeconds }} ))
          until [ -f "$MARKER" ]; do
            if [ -f "$FAILED" ]; then
              echo "the engine build for model version {{ $track.version }} failed, so Triton does not start (kubectl logs job/{{ include "distil.engineJobName" $ctx }}):" >&2
              cat "$FAILED" >&2
              exit 1
            fi
            if [ "$(date +%s)" -ge "$deadline" ]; then
              echo "engines for model version {{ $track.version }} not built: no $MARKER after {{ $v.engineBuild.waitTimeoutSeconds }}s; check job/{{ include "distil.engineJobName" $ctx }}" >&2
              exit 1
            fi
            echo "waiting for the engine build Job ($MARKER)"
            sleep 10
          done
      env:
        - name: MARKER
          value: {{ include "distil.engineMarker" $ctx | quote }}
        - name: FAILED
          value: {{ include "distil.engineFailure" $ctx | quote }}
      terminationMessagePolicy: FallbackToLogsOnError
      resources:
        requests: {cpu: 10m, memory: 16Mi}
        limits: {memory: 64Mi}
      securityContext:
        {{- include "distil.containerSecurityContext" $root | nindent 8 }}
      volumeMounts:
        - name: models
          mountPath: /models
          subPath: {{ $track.version | quote }}
          readOnly: true
    {{- end }}
    {{- if eq $source "initCopy" }}
    {{- $src := printf "%s/%s/repository" $v.modelRepository.objectStore.uri $track.version }}
    - name: copy-model-repository
      {{- if hasPrefix "gs://" $src }}
      {{- with $v.modelRepository.initCopy.gcsImage }}
      image: "{{ .repository }}:{{ .tag }}"
      {{- end }}
      command: ["gcloud", "storage", "cp", "--recursive", {{ $src | quote }}, "/models/"]
      {{- else }}
      {{- with $v.modelRepository.initCopy.s3Image }}
      image: "{{ .repository }}:{{ .tag }}"
      {{- end }}
      command: ["aws", "s3", "cp", "--recursive", "--only-show-errors", {{ $src | quote }}, "/models/repository"]
      {{- end }}
      env:
        - name: HOME
          value: /tmp
        - name: CLOUDSDK_CONFIG
          value: /tmp/gcloud
        {{- with $v.modelRepository.objectStore.region }}
        - name: AWS_REGION
          value: {{ . | quote }}
        {{- end }}
      resources:
        {{- toYaml $v.modelRepository.initCopy.resources | nindent 8 }}
      securityContext:
        {{- include "distil.containerSecurityContext" $root | nindent 8 }}
      volumeMounts:
        - name: models
          mountPath: /models
        - name: tmp
          mountPath: /tmp
    {{- end }}
    {{- if $verify }}
    # Triton runs the repository's model.py files: serve only what the build wrote (integrity.py).
    - name: verify-repository
      image: {{ $image | quote }}
      imagePullPolicy: {{ $v.image.pullPolicy }}
      command:
        - python3
        - -m
        - distil.model_repository.integrity
        - /models/repository
        {{- with $track.repositorySha256 }}
        - --sha256
        - {{ . | quote }}
        {{- end }}
      terminationMessagePolicy: FallbackToLogsOnError
      resources:
        requests: {cpu: 100m, memory: 64Mi}
        limits: {memory: 256Mi}
      securityContext:
        {{- include "distil.containerSecurityContext" $root | nindent 8 }}
      volumeMounts:
        - name: models
          mountPath: /models
          {{- if eq $source "pvc" }}
          subPath: {{ $track.version | quote }}
          {{- end }}
          readOnly: true
    {{- end }}
  {{- end }}
  containers:
    - name: triton
      image: {{ $image | quote }}
      imagePullPolicy: {{ $v.image.pullPolicy }}
      command: ["tritonserver"]
      args:
        - --model-repository={{ include "distil.repositoryPath" $ctx }}
        - --strict-readiness={{ $v.triton.strictReadiness }}
        - --exit-timeout-secs={{ $v.triton.exitTimeoutSeconds }}
        - --http-port={{ $v.service.ports.http }}
        - --grpc-port={{ $v.service.ports.grpc }}
        - --metrics-port={{ $v.service.ports.metrics }}
        - --allow-metrics=true
        - --allow-gpu-metrics={{ $v.gpu.enabled }}
        - --metrics-interval-ms={{ $v.triton.metricsIntervalMs }}
        - --metrics-config=summary_latencies=true
        - --metrics-config=summary_quantiles={{ $v.triton.summaryQuantiles }}
        - --log-verbose={{ $v.triton.logVerbose }}
        # The admin APIs answer only requests carrying the key (kubelet expands $(DISTIL_ADMIN_KEY) from env).
        - --http-restricted-api={{ include "distil.restrictedApis" $root }}:distil-admin-key=$(DISTIL_ADMIN_KEY)
        - --grpc-restricted-protocol={{ include "distil.restrictedApis" $root }}:distil-admin-key=$(DISTIL_ADMIN_KEY)
        - --http-max-input-size={{ int $v.triton.httpMaxInputSizeBytes }}
        # Endpoints whose own request paths skipped the restriction in older releases (CVE-2026-24206/24207).
        - --allow-sagemaker=false
        - --allow-vertex-ai=false
        {{- range $v.triton.extraArgs }}
        - {{ . | quote }}
        {{- end }}
      ports:
        - name: http
          containerPort: {{ $v.service.ports.http }}
          protocol: TCP
        - name: grpc
          containerPort: {{ $v.service.ports.grpc }}
          protocol: TCP
        - name: metrics
          containerPort: {{ $v.service.ports.metrics }}
          protocol: TCP
      env:
        # The root filesystem is read-only; the Python backend and cloud clients write under HOME.
        - name: HOME
          value: /tmp
        - name: DISTIL_TRACK
          value: {{ $track.name | quote }}
        - name: DISTIL_MODEL_VERSION
          value: {{ $track.version | quote }}
        - name: DISTIL_ADMIN_KEY
          valueFrom:
            secretKeyRef:
              name: {{ include "distil.adminKeySecret" $root }}
              key: {{ $v.triton.adminKey.secretKey }}
        {{- if and (eq $source "objectStore") (hasPrefix "s3://" $v.modelRepository.objectStore.uri) $v.modelRepository.objectStore.region }}
        - name: AWS_DEFAULT_REGION
          value: {{ $v.modelRepository.objectStore.region | quote }}
        {{- end }}
      {{- $resources := deepCopy $v.resources }}
      {{- if $v.gpu.enabled }}
      {{- $limits := default dict $resources.limits }}
      {{- $requests := default dict $resources.requests }}
      {{- $_ := set $limits "nvidia.com/gpu" (int $v.gpu.count) }}
      {{- $_ := set $requests "nvidia.com/gpu" (int $v.gpu.count) }}
      {{- $_ := set $resources "limits" $limits }}
      {{- $_ := set $resources "requests" $requests }}
      {{- end }}
      resources:
        {{- toYaml $resources | nindent 8 }}
      startupProbe:
        httpGet:
          path: /v2/health/ready
          port: http
        {{- toYaml $v.probes.startup | nindent 8 }}
      {{- /* Triton 2.51 keeps its health endpoints at 200 when a Python-backend stub has died, so
      readiness and liveness send one real inference through distilbert (an overload rejection counts
      as alive): a pod with a broken inference path leaves the Service, then restarts. */}}
      {{- $inference := $v.probes.inference }}
      readinessProbe:
        {{- if $inference.enabled }}
        exec:
          command: {{ include "distil.inferenceProbe" $root }}
        {{- else }}
        httpGet:
          path: /v2/health/ready
          port: http
        {{- end }}
        {{- toYaml $v.probes.readiness | nindent 8 }}
      livenessProbe:
        {{- if $inference.enabled }}
        exec:
          command: {{ include "distil.inferenceProbe" $root }}
        {{- else }}
        httpGet:
          path: /v2/health/live
          port: http
        {{- end }}
        {{- toYaml $v.probes.liveness | nindent 8 }}
      lifecycle:
        preStop:
          exec:
            command: ["sleep", "{{ $v.preStopSleepSeconds }}"]
      securityContext:
        {{- include "distil.containerSecurityContext" $root | nindent 8 }}
      volumeMounts:
        {{- if ne $source "objectStore" }}
        - name: models
          mountPath: /models
          {{- if eq $source "pvc" }}
          subPath: {{ $track.version | quote }}
          {{- end }}
          readOnly: true
        {{- end }}
        - name: dshm
          mountPath: /dev/shm
        - name: tmp
          mountPath: /tmp
  volumes:
    {{- if eq $source "pvc" }}
    - name: models
      persistentVolumeClaim:
        claimName: {{ include "distil.claimName" $root }}
        readOnly: true
    {{- else if eq $source "initCopy" }}
    - name: models
      emptyDir:
        sizeLimit: {{ $v.modelRepository.initCopy.sizeLimit }}
    {{- end }}
    - name: dshm
      emptyDir:
        medium: Memory
        sizeLimit: {{ $v.shm.sizeLimit }}
    - name: tmp
      emptyDir: {}
{{- end }}

{{/* The serving pod: its template (deployment.yaml renders it once per track), probes, scheduling and security context. */}}

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
The exec probe: four real inferences in a row through the ensemble, so every instance of a model with
up to four is reached (distil.model_repository.probe, stdlib only).
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
        # The CPUs a CPU classifier splits its batches over (backends/onnx_classifier.py): the pod's
        # CPU request, rounded up, not the node's cores.
        - name: DISTIL_CPUS
          valueFrom:
            resourceFieldRef:
              containerName: triton
              resource: requests.cpu
              divisor: "1"
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
      readiness and liveness send real inferences through distilbert (an overload rejection counts
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

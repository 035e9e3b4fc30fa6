{{/* The chart's values checks: each refuses, with the value to change, a combination that would deploy something broken. */}}
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

{{/* Names, labels and the Serve config shared by the templates. */}}

{{- define "pixserve.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "pixserve.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" -}}
{{- else if contains (include "pixserve.name" .) .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name (include "pixserve.name" .) | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{- define "pixserve.selectorLabels" -}}
app.kubernetes.io/name: {{ include "pixserve.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "pixserve.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
{{ include "pixserve.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- with .Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end -}}

{{/* The pixserve image, always with an explicit tag: appVersion-variant unless set. */}}
{{- define "pixserve.image" -}}
{{- $tag := .Values.image.tag | default (printf "%s-%s" .Chart.AppVersion .Values.image.variant) -}}
{{- printf "%s:%s" .Values.image.repository $tag -}}
{{- end -}}

{{- define "pixserve.redisHost" -}}
{{- if .Values.redis.enabled -}}
{{- printf "%s-redis:6379" (include "pixserve.fullname" .) -}}
{{- else -}}
{{- .Values.externalRedis.address -}}
{{- end -}}
{{- end -}}

{{- define "pixserve.redisSecret" -}}
{{- if .Values.redis.enabled -}}
{{- .Values.redis.existingSecret | default (printf "%s-redis" (include "pixserve.fullname" .)) -}}
{{- else -}}
{{- .Values.externalRedis.existingSecret -}}
{{- end -}}
{{- end -}}

{{/* Object storage settings: the bundled MinIO when enabled, else externalS3. */}}
{{- define "pixserve.s3Settings" -}}
storage_url: "s3://"
s3_region: {{ .Values.externalS3.region | quote }}
s3_inputs_bucket: {{ .Values.externalS3.inputsBucket | quote }}
s3_outputs_bucket: {{ .Values.externalS3.outputsBucket | quote }}
s3_models_bucket: {{ .Values.externalS3.modelsBucket | quote }}
{{- if .Values.minio.enabled }}
s3_endpoint_url: {{ printf "http://%s-minio:9000" (include "pixserve.fullname" .) | quote }}
{{- else if .Values.externalS3.endpoint }}
s3_endpoint_url: {{ .Values.externalS3.endpoint | quote }}
{{- end }}
{{- end -}}

{{/* The Secret and keys holding S3 credentials, or nothing (IAM roles, workload identity). */}}
{{- define "pixserve.s3Credentials" -}}
{{- if .Values.minio.enabled -}}
{{- dict "secret" (.Values.minio.existingSecret | default (printf "%s-minio" (include "pixserve.fullname" .))) "id" "root-user" "key" "root-password" | toYaml -}}
{{- else if .Values.externalS3.existingSecret -}}
{{- dict "secret" .Values.externalS3.existingSecret "id" "access-key-id" "key" "secret-access-key" | toYaml -}}
{{- end -}}
{{- end -}}

{{- define "pixserve.modelClaim" -}}
{{- .Values.modelStore.existingClaim | default (printf "%s-models" (include "pixserve.fullname" .)) -}}
{{- end -}}

{{/* Restricted pod and container security contexts (Pod Security "restricted"). */}}
{{- define "pixserve.podSecurityContext" -}}
runAsNonRoot: true
runAsUser: 1000
runAsGroup: 100
fsGroup: 100
seccompProfile:
  type: RuntimeDefault
{{- end -}}

{{- define "pixserve.containerSecurityContext" -}}
allowPrivilegeEscalation: false
privileged: false
readOnlyRootFilesystem: true
capabilities:
  drop: [ALL]
{{- end -}}

{{/*
The Serve config: deployments/serve_config.yaml (copied into files/, a test keeps the
two identical) with .Values.settings merged into the app's args and each deployment's
values applied to the deployment of that name. Deployments come from the config, so a
new deployment in the app needs no template change. A model deployment its settings give
nothing to serve is left out, as the app leaves it out of its graph (no replica; Serve
refuses options for a deployment the app lacks): the settings each one needs are
pixserve.servingSettings, which a test keeps equal to services/models/manifest.py.
*/}}
{{- define "pixserve.serveConfig" -}}
{{- $config := .Files.Get "files/serve_config.yaml" | fromYaml -}}
{{- $app := index $config.applications 0 -}}
{{- $redis := dict -}}
{{- if include "pixserve.redisHost" . -}}
{{- $redis = dict "redis_url" (printf "redis://%s/1" (include "pixserve.redisHost" .)) -}}
{{- end -}}
{{- $_ := set $app "args" (mergeOverwrite (deepCopy $app.args) $redis (include "pixserve.s3Settings" . | fromYaml) .Values.settings) -}}
{{- $needs := include "pixserve.servingSettings" . | fromYaml -}}
{{- $kept := list -}}
{{- range $deployment := $app.deployments -}}
{{- $values := index $.Values.deployments $deployment.name | default dict -}}
{{- include "pixserve.applyDeploymentValues" (list $deployment $values) -}}
{{- $fields := index $needs $deployment.name | default list -}}
{{- $used := not $fields -}}
{{- range $field := $fields }}{{ if index $app.args $field }}{{ $used = true }}{{ end }}{{ end -}}
{{- if $used }}{{ $kept = append $kept $deployment }}{{ end -}}
{{- end -}}
{{- $_ := set $app "deployments" $kept -}}
{{- if and .Values.tracing.enabled .Values.otelCollector.enabled -}}
{{- $_ := set $config "tracing_config" (dict "enabled" true "exporter_import_path" "deployments.tracing:otlp_exporter" "sampling_ratio" .Values.tracing.samplingRatio) -}}
{{- end -}}
{{- toYaml $config -}}
{{- end -}}

{{/* The settings, any of which gives an optional model deployment something to serve. */}}
{{- define "pixserve.servingSettings" -}}
Denoiser: [denoise_models]
FaceRestorer: [face_models, face_detectors]
Diffusion: [diffusion_checkpoints]
Vision: [caption_model, tag_model, nsfw_model, vqa_model]
Mesher: [mesh_model, depth_model]
TileFallback: [cpu_fallback]
{{- end -}}

{{- define "pixserve.applyDeploymentValues" -}}
{{- $d := index . 0 -}}
{{- $v := index . 1 -}}
{{- $actor := $d.ray_actor_options | default dict -}}
{{- if hasKey $v "numCpus" }}{{ $_ := set $actor "num_cpus" $v.numCpus }}{{ end -}}
{{- if hasKey $v "numGpus" }}{{ $_ := set $actor "num_gpus" $v.numGpus }}{{ end -}}
{{- if and (hasKey $v "memory") (not (kindIs "invalid" $v.memory)) }}{{ $_ := set $actor "memory" $v.memory }}{{ end -}}
{{- $_ := set $d "ray_actor_options" $actor -}}
{{- if hasKey $v "maxOngoingRequests" }}{{ $_ := set $d "max_ongoing_requests" $v.maxOngoingRequests }}{{ end -}}
{{- with $v.autoscaling -}}
{{- $auto := $d.autoscaling_config | default dict -}}
{{- $keys := dict "minReplicas" "min_replicas" "maxReplicas" "max_replicas" "targetOngoingRequests" "target_ongoing_requests" "upscaleDelayS" "upscale_delay_s" "downscaleDelayS" "downscale_delay_s" "downscaleToZeroDelayS" "downscale_to_zero_delay_s" -}}
{{- range $from, $to := $keys -}}
{{- if and (hasKey $v.autoscaling $from) (not (kindIs "invalid" (index $v.autoscaling $from))) }}{{ $_ := set $auto $to (index $v.autoscaling $from) }}{{ end -}}
{{- end -}}
{{- $_ := set $d "autoscaling_config" $auto -}}
{{- end -}}
{{- with $v.batch -}}
{{- $_ := set $d "user_config" (dict "max_batch_size" .maxBatchSize "batch_wait_timeout_s" .batchWaitTimeoutS) -}}
{{- end -}}
{{- end -}}

{{/* A Ray pod template (head or worker): the pixserve image, restricted security,
the model store mounted at settings.model_store, writable /tmp and $HOME only. */}}
{{- define "pixserve.rayPodTemplate" -}}
{{- $root := .root -}}
metadata:
  labels:
    {{- include "pixserve.selectorLabels" $root | nindent 4 }}
    app.kubernetes.io/component: {{ .role }}
    pixserve.io/ray-node: "true"
spec:
  securityContext:
    {{- include "pixserve.podSecurityContext" $root | nindent 4 }}
  {{- with $root.Values.imagePullSecrets }}
  imagePullSecrets:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  {{- with .group.nodeSelector }}
  nodeSelector:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  {{- with .group.tolerations }}
  tolerations:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  {{- with .group.affinity }}
  affinity:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  containers:
    - name: ray
      image: {{ include "pixserve.image" $root }}
      imagePullPolicy: {{ $root.Values.image.pullPolicy }}
      securityContext:
        {{- include "pixserve.containerSecurityContext" $root | nindent 8 }}
      {{- if eq .role "head" }}
      ports:
        - {containerPort: 6379, name: gcs-server}
        - {containerPort: 8265, name: dashboard}
        - {containerPort: 10001, name: client}
        - {containerPort: 8000, name: serve}
        - {containerPort: 8080, name: metrics}
      {{- else }}
      ports:
        - {containerPort: 8000, name: serve}
        - {containerPort: 8080, name: metrics}
      {{- end }}
      env:
        - {name: HOME, value: /home/ray}
        {{- if include "pixserve.redisSecret" $root }}
        - name: PIXSERVE_REDIS_PASSWORD
          valueFrom:
            secretKeyRef: {name: {{ include "pixserve.redisSecret" $root }}, key: redis-password}
        {{- end }}
        {{- with (include "pixserve.s3Credentials" $root | fromYaml) }}
        - name: PIXSERVE_S3_ACCESS_KEY_ID
          valueFrom:
            secretKeyRef: {name: {{ .secret }}, key: {{ .id }}}
        - name: PIXSERVE_S3_SECRET_ACCESS_KEY
          valueFrom:
            secretKeyRef: {name: {{ .secret }}, key: {{ .key }}}
        {{- end }}
        {{- if $root.Values.otelCollector.enabled }}
        - name: OTEL_EXPORTER_OTLP_ENDPOINT
          value: {{ printf "http://%s-otel-collector:4318" (include "pixserve.fullname" $root) | quote }}
        {{- if $root.Values.tracing.enabled }}
        {{- /* Serve's fallback when its controller restarted and lost the deployed tracing_config */}}
        - name: RAY_SERVE_TRACING_EXPORTER_IMPORT_PATH
          value: "deployments.tracing:otlp_exporter"
        - name: RAY_SERVE_TRACING_SAMPLING_RATIO
          value: {{ $root.Values.tracing.samplingRatio | quote }}
        {{- end }}
        {{- end }}
      resources:
        {{- toYaml .resources | nindent 8 }}
      volumeMounts:
        - {name: models, mountPath: {{ $root.Values.settings.model_store | quote }}}
        - {name: tmp, mountPath: /tmp}
        - {name: home, mountPath: /home/ray}
  volumes:
    - name: models
      persistentVolumeClaim:
        claimName: {{ include "pixserve.modelClaim" $root }}
    - name: tmp
      emptyDir: {}
    - name: home
      emptyDir: {}
{{- end -}}

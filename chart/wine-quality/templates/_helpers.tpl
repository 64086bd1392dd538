{{/*
Chart name, truncated to the 63 characters a DNS label allows.
*/}}
{{- define "wine-quality.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
Full name of the release's resources: the release name, plus the chart name unless the release
name already contains it.
*/}}
{{- define "wine-quality.fullname" -}}
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

{{/*
Chart name and version, for the helm.sh/chart label.
*/}}
{{- define "wine-quality.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
Labels of every resource (not of the pods: see wine-quality.podLabels).
*/}}
{{- define "wine-quality.labels" -}}
helm.sh/chart: {{ include "wine-quality.chart" . }}
{{ include "wine-quality.selectorLabels" . }}
app.kubernetes.io/version: {{ include "wine-quality.imageTag" . | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: wine-quality
{{- with .Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{/*
Labels of a track's pod template, called with (dict "root" $ "track" "stable"|"canary"): the
track's selector labels, `track` (the ServiceMonitor copies it onto every metric) and the labels
that stay the same when the chart or its appVersion changes, plus `commonLabels` and `podLabels`
(podLabels win). No `helm.sh/chart` or `app.kubernetes.io/version`: any change to the template
rolls every pod, and a chart bump alone should not (the image, which does change with the
appVersion, rolls them anyway). The chart's own keys cannot be overridden, so the selectors
always match.
*/}}
{{- define "wine-quality.podLabels" -}}
{{- $values := .root.Values }}
{{- $extra := merge (dict) ($values.podLabels | default dict) ($values.commonLabels | default dict) }}
{{- include "wine-quality.trackSelectorLabels" . }}
app.kubernetes.io/managed-by: {{ .root.Release.Service }}
app.kubernetes.io/part-of: wine-quality
track: {{ .track }}
{{- with omit $extra "app.kubernetes.io/name" "app.kubernetes.io/instance" "app.kubernetes.io/managed-by" "app.kubernetes.io/part-of" "track" }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{/*
Labels that select the pods (immutable once the Deployment exists).
*/}}
{{- define "wine-quality.selectorLabels" -}}
app.kubernetes.io/name: {{ include "wine-quality.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{/*
Labels that select a track's pods, called with (dict "root" $ "track" ...). The stable track keeps
the chart's selector (a Deployment's selector cannot change); the canary's differs in its name,
so neither Deployment ever selects the other's pods.
*/}}
{{- define "wine-quality.trackSelectorLabels" -}}
{{- if eq .track "canary" }}
app.kubernetes.io/name: {{ include "wine-quality.name" .root | trunc 56 | trimSuffix "-" }}-canary
app.kubernetes.io/instance: {{ .root.Release.Name }}
{{- else }}
{{- include "wine-quality.selectorLabels" .root }}
{{- end }}
{{- end }}

{{/*
Labels the Service, the NetworkPolicy and the ServiceMonitor select the pods of both tracks by.
The `helm test` pod has neither label value, so it is never one of them.
*/}}
{{- define "wine-quality.servingPodLabels" -}}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/part-of: wine-quality
{{- end }}

{{/*
Name of a track's Deployment: the full name, with -canary for the canary.
*/}}
{{- define "wine-quality.trackName" -}}
{{- $name := include "wine-quality.fullname" .root }}
{{- if eq .track "canary" }}
{{- printf "%s-canary" ($name | trunc 56 | trimSuffix "-") }}
{{- else }}
{{- $name }}
{{- end }}
{{- end }}

{{/*
Name of the ServiceAccount the pods run as.
*/}}
{{- define "wine-quality.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "wine-quality.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/*
Image tag: the value, else the chart's appVersion (the project version).
*/}}
{{- define "wine-quality.imageTag" -}}
{{- .Values.image.tag | default .Chart.AppVersion | toString }}
{{- end }}

{{/*
An image repository with `global.imageRegistry` applied, called with
(dict "repository" REPOSITORY "context" $). The repositories name their registry
(ghcr.io/wine-quality/wine-quality); `global.imageRegistry`, when set, replaces that registry, as
it overrides `image.registry` in Bitnami and prometheus-community charts, so one value points every
image of the chart (and of a parent chart) at a mirror. The registry is the first path component
when it contains "." or ":" or is "localhost" (Docker's rule); a repository without one gets the
registry put in front.
*/}}
{{- define "wine-quality.imageRepository" -}}
{{- $repository := .repository }}
{{- with dig "imageRegistry" "" (.context.Values.global | default dict) }}
{{- $parts := splitList "/" $repository }}
{{- $host := first $parts }}
{{- if and (gt (len $parts) 1) (or (contains "." $host) (contains ":" $host) (eq $host "localhost")) }}
{{- $repository = rest $parts | join "/" }}
{{- end }}
{{- $repository = printf "%s/%s" (trimSuffix "/" .) $repository }}
{{- end }}
{{- $repository }}
{{- end }}

{{/*
Image reference of the service: repository:tag, or repository:tag@digest when a digest is pinned.
*/}}
{{- define "wine-quality.image" -}}
{{- $repository := include "wine-quality.imageRepository" (dict "repository" .Values.image.repository "context" .) }}
{{- $ref := printf "%s:%s" $repository (include "wine-quality.imageTag" .) }}
{{- if .Values.image.digest }}
{{- $ref = printf "%s@%s" $ref .Values.image.digest }}
{{- end }}
{{- $ref }}
{{- end }}

{{/*
Image of a track, called with (dict "root" $ "track" ...): the canary's `canary.image.tag` and
`canary.image.digest`, each defaulting to the stable image's.
*/}}
{{- define "wine-quality.trackImage" -}}
{{- $root := .root }}
{{- if eq .track "canary" }}
{{- $image := deepCopy $root.Values.image }}
{{- range $key := list "tag" "digest" }}
{{- with index $root.Values.canary.image $key }}
{{- $_ := set $image $key . }}
{{- end }}
{{- end }}
{{- $values := merge (dict "image" $image) $root.Values }}
{{- include "wine-quality.image" (dict "Values" $values "Chart" $root.Chart "Release" $root.Release) }}
{{- else }}
{{- include "wine-quality.image" $root }}
{{- end }}
{{- end }}

{{/*
Image reference of the `helm test` pod.
*/}}
{{- define "wine-quality.testImage" -}}
{{- $repository := include "wine-quality.imageRepository" (dict "repository" .Values.tests.image.repository "context" .) }}
{{- printf "%s:%s" $repository (.Values.tests.image.tag | toString) }}
{{- end }}

{{/*
terminationGracePeriodSeconds: the value, or the sum of the phases of a graceful shutdown plus a
margin. The phases run one after another: preStop sleep, then SIGTERM -> shutdown delay (readiness
turns 503) -> in-flight requests get the graceful timeout.
*/}}
{{- define "wine-quality.shutdownSeconds" -}}
{{- add .Values.preStopSleepSeconds .Values.gunicorn.shutdownDelay .Values.gunicorn.gracefulTimeout }}
{{- end }}

{{- define "wine-quality.terminationGracePeriodSeconds" -}}
{{- $needed := include "wine-quality.shutdownSeconds" . | int }}
{{- if kindIs "invalid" .Values.terminationGracePeriodSeconds }}
{{- add $needed 5 }}
{{- else }}
{{- $value := .Values.terminationGracePeriodSeconds | int }}
{{- if le $value $needed }}
{{- fail (printf "terminationGracePeriodSeconds=%d must exceed preStopSleepSeconds + gunicorn.shutdownDelay + gunicorn.gracefulTimeout = %d, or in-flight requests are cut off" $value $needed) }}
{{- end }}
{{- $value }}
{{- end }}
{{- end }}

{{/*
True ("true") when at least two pods always run, which is when a PodDisruptionBudget helps
instead of blocking node drains.
*/}}
{{- define "wine-quality.alwaysSeveralPods" -}}
{{- if .Values.autoscaling.enabled }}
{{- gt (int .Values.autoscaling.minReplicas) 1 }}
{{- else }}
{{- gt (int .Values.replicaCount) 1 }}
{{- end }}
{{- end }}

{{/*
Name of the ConfigMap holding the service's environment.
*/}}
{{- define "wine-quality.configMapName" -}}
{{- printf "%s-env" (include "wine-quality.fullname" .) | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
Name of the Secret holding the CSRF signing key: `secretKey.existingSecret`, else the chart's own.
*/}}
{{- define "wine-quality.secretKeyName" -}}
{{- if .Values.secretKey.existingSecret }}
{{- .Values.secretKey.existingSecret }}
{{- else }}
{{- printf "%s-secret-key" (include "wine-quality.fullname" .) | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- end }}

{{/*
The base64 value of the CSRF key in the chart's Secret: the installed Secret's (`existing`, its
`data`), so upgrades keep the key, else a new random 48-character key.
*/}}
{{- define "wine-quality.secretKeyData" -}}
{{- if hasKey .existing .key }}
{{- index .existing .key }}
{{- else }}
{{- randAlphaNum 48 | b64enc }}
{{- end }}
{{- end }}

{{/*
The service's environment (names from wine_quality.app.settings.SETTINGS), rendered into the ConfigMap.
*/}}
{{- define "wine-quality.env" -}}
PORT: {{ .Values.containerPort | quote }}
BIND_ADDRESS: {{ .Values.config.bindAddress | quote }}
WINE_QUALITY_MODEL_DIR: {{ .Values.config.modelDir | quote }}
WINE_QUALITY_RUNTIME: {{ .Values.config.runtime | quote }}
WINE_QUALITY_LOG_LEVEL: {{ .Values.config.logLevel | quote }}
WINE_QUALITY_MAX_BODY_BYTES: {{ .Values.config.maxBodyBytes | int64 | quote }}
WINE_QUALITY_MAX_BATCH_ROWS: {{ .Values.config.maxBatchRows | int64 | quote }}
PROMETHEUS_MULTIPROC_DIR: {{ .Values.config.metricsDir | quote }}
FORWARDED_ALLOW_IPS: {{ .Values.config.forwardedAllowIps | quote }}
WINE_QUALITY_PREDICTION_LOG: {{ .Values.config.predictionLog | quote }}
WINE_QUALITY_PREDICTION_LOG_SAMPLE: {{ .Values.config.predictionLogSample | toString | quote }}
GUNICORN_WORKERS: {{ .Values.gunicorn.workers | int | quote }}
GUNICORN_WORKER_CLASS: {{ .Values.gunicorn.workerClass | quote }}
GUNICORN_THREADS: {{ .Values.gunicorn.threads | int | quote }}
GUNICORN_READ_TIMEOUT: {{ .Values.gunicorn.readTimeout | int | quote }}
GUNICORN_WRITE_TIMEOUT: {{ .Values.gunicorn.writeTimeout | int | quote }}
GUNICORN_TIMEOUT: {{ .Values.gunicorn.timeout | int | quote }}
GUNICORN_GRACEFUL_TIMEOUT: {{ .Values.gunicorn.gracefulTimeout | int | quote }}
GUNICORN_SHUTDOWN_DELAY: {{ .Values.gunicorn.shutdownDelay | int | quote }}
{{- end }}

{{/*
topologySpreadConstraints from values for one track, called with (dict "root" $ "track" ...): each
constraint gets the track's selector labels unless it has its own.
*/}}
{{- define "wine-quality.topologySpreadConstraints" -}}
{{- $selector := dict "labelSelector" (dict "matchLabels" (include "wine-quality.trackSelectorLabels" . | fromYaml)) }}
{{- $constraints := list }}
{{- range .root.Values.topologySpreadConstraints }}
{{- $constraints = append $constraints (merge (deepCopy .) $selector) }}
{{- end }}
{{- toYaml $constraints }}
{{- end }}

{{/*
Labels of the `helm test` pod: the chart's labels without the pod selector, so that the Service,
the PodDisruptionBudget and the HPA's Deployment never count it as one of the service's pods.
*/}}
{{- define "wine-quality.testLabels" -}}
helm.sh/chart: {{ include "wine-quality.chart" . }}
{{ include "wine-quality.testSelectorLabels" . }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end }}

{{/*
Labels that select the `helm test` pod (the NetworkPolicy admits it).
*/}}
{{- define "wine-quality.testSelectorLabels" -}}
app.kubernetes.io/name: {{ include "wine-quality.name" . }}-test
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: test
{{- end }}

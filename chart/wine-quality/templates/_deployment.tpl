{{/*
A Deployment of one track, called with (dict "root" $ "track" "stable"|"canary"). Both tracks run
the same pod; the canary has its own name, selector, image, replica count and extra settings.
With canary.shadowOfStable, the stable pods copy the canary's model out of its image and score
every row with it as their shadow.
*/}}
{{- define "wine-quality.deployment" -}}
{{- $args := . }}
{{- $track := .track }}
{{- $canary := eq .track "canary" }}
{{- $shadowOfStable := and (not $canary) .root.Values.canary.enabled .root.Values.canary.shadowOfStable }}
{{- with .root }}
apiVersion: apps/v1
kind: Deployment
metadata:
  name: {{ include "wine-quality.trackName" $args }}
  namespace: {{ .Release.Namespace }}
  labels:
    {{- include "wine-quality.labels" . | nindent 4 }}
    track: {{ $track }}
  annotations:
    checkov.io/skip1: CKV_K8S_35=the service reads its settings from the environment only (wine_quality.app.settings)
spec:
  {{- if $canary }}
  replicas: {{ .Values.canary.replicaCount }}
  {{- else if not .Values.autoscaling.enabled }}
  replicas: {{ .Values.replicaCount }}
  {{- end }}
  revisionHistoryLimit: 5
  strategy:
    type: RollingUpdate
    rollingUpdate:
      # A new pod must be ready before an old one goes: capacity never drops during a rollout.
      maxUnavailable: 0
      maxSurge: 1
  selector:
    matchLabels:
      {{- include "wine-quality.trackSelectorLabels" $args | nindent 6 }}
  template:
    metadata:
      annotations:
        # Rolls the pods when the service's environment changes.
        checksum/config: {{ include "wine-quality.env" . | sha256sum }}
        {{- with .Values.podAnnotations }}
        {{- toYaml . | nindent 8 }}
        {{- end }}
      labels:
        {{- include "wine-quality.podLabels" $args | nindent 8 }}
    spec:
      serviceAccountName: {{ include "wine-quality.serviceAccountName" . }}
      automountServiceAccountToken: {{ .Values.serviceAccount.automountServiceAccountToken }}
      {{- with .Values.imagePullSecrets }}
      imagePullSecrets:
        {{- toYaml . | nindent 8 }}
      {{- end }}
      {{- with .Values.priorityClassName }}
      priorityClassName: {{ . }}
      {{- end }}
      securityContext:
        {{- toYaml .Values.podSecurityContext | nindent 8 }}
      terminationGracePeriodSeconds: {{ include "wine-quality.terminationGracePeriodSeconds" . }}
      containers:
        - name: {{ .Chart.Name }}
          image: {{ include "wine-quality.trackImage" $args | quote }}
          imagePullPolicy: {{ .Values.image.pullPolicy }}
          securityContext:
            {{- toYaml .Values.securityContext | nindent 12 }}
          ports:
            - name: http
              containerPort: {{ .Values.containerPort }}
              protocol: TCP
          envFrom:
            - configMapRef:
                name: {{ include "wine-quality.configMapName" . }}
          env:
            # One key for every replica, so a form served by one pod validates on another.
            - name: WINE_QUALITY_SECRET_KEY
              valueFrom:
                secretKeyRef:
                  name: {{ include "wine-quality.secretKeyName" . }}
                  key: {{ .Values.secretKey.key }}
            {{- with .Values.extraEnv }}
            {{- toYaml . | nindent 12 }}
            {{- end }}
            {{- if $canary }}
            {{- with .Values.canary.extraEnv }}
            {{- toYaml . | nindent 12 }}
            {{- end }}
            {{- else if $shadowOfStable }}
            # The canary's model, copied from its image by the init container, scores every row
            # as this pod's shadow.
            - name: WINE_QUALITY_SHADOW_MODEL_DIR
              value: /shadow-model
            {{- end }}
          startupProbe:
            {{- toYaml .Values.probes.startup | nindent 12 }}
          livenessProbe:
            {{- toYaml .Values.probes.liveness | nindent 12 }}
          readinessProbe:
            {{- toYaml .Values.probes.readiness | nindent 12 }}
          lifecycle:
            # Endpoints are removed asynchronously; serving on for a few seconds after the pod is
            # marked terminating keeps requests routed to it from failing.
            preStop:
              sleep:
                seconds: {{ .Values.preStopSleepSeconds }}
          resources:
            {{- toYaml .Values.resources | nindent 12 }}
          volumeMounts:
            - name: tmp
              mountPath: /tmp
            {{- if $shadowOfStable }}
            - name: shadow-model
              mountPath: /shadow-model
              readOnly: true
            {{- end }}
      {{- if $shadowOfStable }}
      initContainers:
        - name: shadow-model
          image: {{ include "wine-quality.trackImage" (dict "root" . "track" "canary") | quote }}
          imagePullPolicy: {{ .Values.image.pullPolicy }}
          command: ["cp", "-R", "{{ .Values.config.modelDir }}/.", "/shadow-model/"]
          securityContext:
            {{- toYaml .Values.securityContext | nindent 12 }}
          resources:
            {{- toYaml .Values.canary.shadowCopyResources | nindent 12 }}
          volumeMounts:
            - name: shadow-model
              mountPath: /shadow-model
      {{- end }}
      volumes:
        - name: tmp
          emptyDir:
            sizeLimit: {{ .Values.tmpSizeLimit }}
        {{- if $shadowOfStable }}
        - name: shadow-model
          emptyDir:
            sizeLimit: {{ .Values.canary.shadowModelSizeLimit }}
        {{- end }}
      {{- with .Values.nodeSelector }}
      nodeSelector:
        {{- toYaml . | nindent 8 }}
      {{- end }}
      {{- with .Values.affinity }}
      affinity:
        {{- toYaml . | nindent 8 }}
      {{- end }}
      {{- with .Values.tolerations }}
      tolerations:
        {{- toYaml . | nindent 8 }}
      {{- end }}
      {{- with (include "wine-quality.topologySpreadConstraints" $args | fromYamlArray) }}
      topologySpreadConstraints:
        {{- toYaml . | nindent 8 }}
      {{- end }}
{{- end }}
{{- end }}

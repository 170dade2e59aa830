{{/* Chart name, truncated to the 63 characters a label value may have. */}}
{{- define "faultline.name" -}}
{{- .Chart.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* Release-scoped name of every object. */}}
{{- define "faultline.fullname" -}}
{{- if contains .Chart.Name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{/* Labels every object carries. */}}
{{- define "faultline.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
{{ include "faultline.selectorLabels" . }}
{{- end -}}

{{/* Labels the DaemonSet selects its pods by. */}}
{{- define "faultline.selectorLabels" -}}
app.kubernetes.io/name: {{ include "faultline.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: agent
{{- end -}}

{{- define "faultline.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "faultline.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- default "default" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{- define "faultline.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) -}}
{{- end -}}

{{/* The Secret holding tokens.yaml for the API, or "" when there is none. */}}
{{- define "faultline.tokensSecret" -}}
{{- if .Values.api.tokens.existingSecret -}}
{{- .Values.api.tokens.existingSecret -}}
{{- else if .Values.api.tokens.tokensYaml -}}
{{- printf "%s-api-tokens" (include "faultline.fullname" .) -}}
{{- end -}}
{{- end -}}

{{- define "faultline.priorityClassName" -}}
{{- .Values.priorityClass.name -}}
{{- end -}}

{{/* Where the drills.scenarios ConfigMap is mounted (read-only) in the pod. */}}
{{- define "faultline.drillsDir" -}}
/etc/faultline-drills
{{- end -}}

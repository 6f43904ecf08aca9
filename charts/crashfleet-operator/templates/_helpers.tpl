{{- define "crashfleet-operator.name" -}}crashfleet-operator{{- end -}}
{{- define "crashfleet-operator.labels" -}}
app.kubernetes.io/name: crashfleet-operator
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: crashfleet
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
{{- end -}}
{{- define "crashfleet-operator.selector" -}}
app.kubernetes.io/name: crashfleet-operator
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

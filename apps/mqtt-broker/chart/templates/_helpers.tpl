{{- define "mqtt-broker.name" -}}
{{ .Release.Name }}
{{- end -}}
